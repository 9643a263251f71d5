r"""UORO: unbiased online recurrent optimisation (Tallec & Ollivier 2018, ICLR).

With :math:`h` all traced state variables of all populations (size :math:`H`) and
:math:`\theta` all trainable weights (size :math:`P`), exact RTRL carries
:math:`J_t = \partial h_t / \partial \theta` (:math:`H \times P`). UORO carries a rank-one
estimate :math:`\tilde J_t = \tilde s_t\, \tilde\theta_t^\top` per sample whose expectation
is :math:`J_t`:

.. math::
    \tilde s_t = \rho_0\, A_t \tilde s_{t-1} + \rho_1\, \nu_t, \qquad
    \tilde\theta_t = \tilde\theta_{t-1} / \rho_0 + \big(\nu_t^\top I_t\big) / \rho_1

    \nabla\theta \mathrel{+}= \sum_b \Big(\frac{\partial (w_{t,b}\, l_t^{(b)})}{\partial h_t}
        \cdot \tilde s_t\Big)\, \tilde\theta_t

where :math:`A_t \tilde s_{t-1}` is a JVP of the network step in the state (all paths:
recurrent weights, other populations, the readout), :math:`\nu_t^\top I_t` a VJP of the step
in the weights, :math:`\nu_t \in \{\pm 1\}^H` random signs, and
:math:`\rho_0 = \sqrt{(\lVert\tilde\theta_{t-1}\rVert + \epsilon) / (\lVert A_t \tilde s_{t-1}
\rVert + \epsilon)}`, :math:`\rho_1 = \sqrt{(\lVert \nu_t^\top I_t\rVert + \epsilon) /
(\lVert\nu_t\rVert + \epsilon)}` the variance-reducing scales of the paper.

The signs come from a PRNG key carried in the state (``seed`` gives the first), so a run is
reproducible. One draw per step is shared by all samples of the batch: a batch then gives
exactly the sum of its samples' estimates run one at a time, each of which is unbiased (the
batch's noise is correlated across samples). Spike costs add their term to
:math:`\partial / \partial h_t`.

* Memory: :math:`O(B \cdot (H + P))`.
* Compute per step: one JVP and one VJP of the network step per sample, plus :math:`O(B P)`.
* Unbiased: :math:`\mathbb{E}[\tilde J_t] = J_t` on any network, so the mean over seeds
  converges to the BPTT gradient (the error of a mean of :math:`K` estimates shrinks as
  :math:`1/\sqrt{K}`). A single estimate is noisy: its variance grows with :math:`H`, with
  :math:`P` and with the memory of the dynamics. Never exact for a single seed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from traxon.core.network import Network
from traxon.trace._quantities import flat_state
from traxon.trace.base import (
    Algorithm,
    LossFn,
    StepOutput,
    Tracer,
    check_network,
    register,
    trainable,
)

__all__ = ["UOROState", "uoro"]

EPS = 1e-7


class UOROState(NamedTuple):
    """State of :class:`uoro`.

    Attributes:
        s: ``(B, H)`` state factor :math:`\\tilde s` of the rank-one estimate.
        theta: ``(B, P)`` weight factor :math:`\\tilde\\theta` (all trainable weights, flat).
        grads: ``(P,)`` accumulated gradient estimate (flat, summed over the batch).
        key: PRNG key (``uint32[2]``) of the random signs.

    Example:
        >>> from traxon.trace.uoro import UOROState
        >>> UOROState._fields
        ('s', 'theta', 'grads', 'key')
    """

    s: jax.Array
    theta: jax.Array
    grads: jax.Array
    key: jax.Array


@register("uoro")
class uoro(Algorithm):
    """UORO, an unbiased rank-one estimate of RTRL (see the module docstring).

    Arguments:
        seed: seed of the PRNG key carried in the state (the random signs).

    Example:
        >>> import traxon
        >>> traxon.trace.uoro(seed=1).seed
        1
    """

    name = "uoro"
    online = False  # credit flows through every path in time, as in RTRL

    def __init__(self, seed: int = 0) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"`seed` must be an integer; got {seed!r}.")
        self.seed = seed

    def bind(self, net: Network, loss_fn: LossFn, window: int | None = None) -> Tracer:
        check_network(net, self)
        names = tuple(p.name for p in trainable(net))
        split, merge = flat_state(net)
        seed = self.seed

        def init(
            params: Mapping[str, jax.Array], state: Any, target_example: Any = None
        ) -> UOROState:
            h = split(state)
            theta, _ = ravel_pytree({k: params[k] for k in names})
            return UOROState(
                s=jnp.zeros_like(h),
                theta=jnp.zeros((h.shape[0], theta.size), h.dtype),
                grads=jnp.zeros((theta.size,), theta.dtype),
                key=jax.random.PRNGKey(seed),
            )

        def step(
            params: Mapping[str, jax.Array],
            state: Any,
            ts: UOROState,
            x: Mapping[str, jax.Array],
            target: Any,
            weight: jax.Array,
            spike_cost: Mapping[str, jax.Array] | None = None,
        ) -> tuple[Any, UOROState, StepOutput]:
            theta, unravel = ravel_pytree({k: params[k] for k in names})
            dtype = ts.s.dtype
            key, sub = jax.random.split(ts.key)
            nu = jax.random.rademacher(sub, ts.s.shape[-1:], dtype)
            eps = jnp.asarray(EPS, dtype)
            costs = dict(spike_cost or {})

            def one(st: Any, xb: Any, tb: Any, wb: Any, cb: Any, s: Any, th: Any) -> Any:
                one_of = lambda a: a[None]  # noqa: E731
                st1 = jax.tree_util.tree_map(one_of, st)
                x1 = jax.tree_util.tree_map(one_of, xb)

                def f(h: jax.Array, w: jax.Array) -> tuple[jax.Array, Any]:
                    new, _ = net.forward({**params, **unravel(w)}, merge(h[None], st1), x1)
                    return split(new)[0], new

                h0 = split(st1)[0]
                h_new, As, new = jax.jvp(lambda h: f(h, theta), (h0,), (s,), has_aux=True)
                _, vjp = jax.vjp(lambda w: f(h0, w)[0], theta)
                (nuI,) = vjp(nu)

                def objective(h: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
                    sig = net.signals(merge(h[None], new))
                    y = net.output(sig)
                    loss = loss_fn(y, jax.tree_util.tree_map(one_of, tb))
                    extra = sum(
                        (jnp.sum(c * sig[k]["spike"][0]) for k, c in cb.items()),
                        start=jnp.zeros((), dtype),
                    )
                    return wb * loss[0] + extra, (y[0], loss[0])

                dl, (y, loss) = jax.grad(objective, has_aux=True)(h_new)
                rho0 = jnp.sqrt((jnp.linalg.norm(th) + eps) / (jnp.linalg.norm(As) + eps))
                rho1 = jnp.sqrt((jnp.linalg.norm(nuI) + eps) / (jnp.linalg.norm(nu) + eps))
                s_new = rho0 * As + rho1 * nu
                th_new = th / rho0 + nuI / rho1
                g = jnp.dot(dl, s_new) * th_new
                new0 = jax.tree_util.tree_map(lambda a: a[0], new)
                return new0, s_new, th_new, g, y, loss

            new_state, s, th, g, y, loss = jax.vmap(one)(
                state, x, target, weight, costs, ts.s, ts.theta
            )
            grads = ts.grads + jnp.sum(g, axis=0).astype(ts.grads.dtype)
            return new_state, UOROState(s, th, grads, key), StepOutput(y, loss)

        def gradients(params: Mapping[str, jax.Array], ts: UOROState) -> dict[str, jax.Array]:
            _, unravel = ravel_pytree({k: params[k] for k in names})
            return dict(unravel(ts.grads))

        def reset_gradients(ts: UOROState) -> UOROState:
            return ts._replace(grads=jnp.zeros_like(ts.grads))

        def reset_traces(params: Any, state: Any, ts: UOROState) -> UOROState:
            return ts._replace(s=jnp.zeros_like(ts.s), theta=jnp.zeros_like(ts.theta))

        return Tracer(self.name, init, step, gradients, reset_gradients, reset_traces)
