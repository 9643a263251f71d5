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

import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from traxon.core.network import Network
from traxon.trace._quantities import flat_state, sample_objective, sample_step
from traxon.trace.base import Algorithm, BoundRule, LossFn, StepData, StepOutput, register

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

    def _bound(self, net: Network, loss_fn: LossFn, window: int | None) -> BoundRule[UOROState]:
        return _Bound(net, loss_fn, self.seed)


class _Bound(BoundRule[UOROState]):
    """:class:`uoro` bound to a network and a loss: the tracer's functions."""

    trace_fields = ("s", "theta")

    def __init__(self, net: Network, loss_fn: LossFn, seed: int) -> None:
        super().__init__(net, loss_fn)
        self.flat = flat_state(net)
        self.seed = seed

    def init(
        self, params: Mapping[str, jax.Array], state: Any, target_example: Any = None
    ) -> UOROState:
        h = self.flat[0](state)
        theta, _ = ravel_pytree({k: params[k] for k in self.names})
        return UOROState(
            s=jnp.zeros_like(h),
            theta=jnp.zeros((h.shape[0], theta.size), h.dtype),
            grads=jnp.zeros((theta.size,), theta.dtype),
            key=jax.random.PRNGKey(self.seed),
        )

    def _sample(
        self,
        params: Mapping[str, jax.Array],
        nu: jax.Array,
        st: Any,
        xb: Any,
        tb: Any,
        wb: Any,
        cb: Any,
        s: jax.Array,
        th: jax.Array,
    ) -> Any:
        """One sample's step: the new factors ``s``, ``theta`` and its gradient estimate."""
        theta, unravel = ravel_pytree({k: params[k] for k in self.names})
        eps = jnp.asarray(EPS, s.dtype)
        f, h0 = sample_step(self.net, self.flat, params, unravel, st, xb)
        h_new, As, new = jax.jvp(lambda h: f(h, theta), (h0,), (s,), has_aux=True)
        _, vjp = jax.vjp(lambda w: f(h0, w)[0], theta)
        (nuI,) = vjp(nu)
        objective = sample_objective(self.net, self.loss_fn, self.flat[1], new, tb, wb, cb)
        dl, (y, loss) = jax.grad(objective, has_aux=True)(h_new)
        rho0 = jnp.sqrt((jnp.linalg.norm(th) + eps) / (jnp.linalg.norm(As) + eps))
        rho1 = jnp.sqrt((jnp.linalg.norm(nuI) + eps) / (jnp.linalg.norm(nu) + eps))
        s_new = rho0 * As + rho1 * nu
        th_new = th / rho0 + nuI / rho1
        g = jnp.dot(dl, s_new) * th_new
        new0 = jax.tree_util.tree_map(lambda a: a[0], new)
        return new0, s_new, th_new, g, y, loss

    def advance(
        self, params: Mapping[str, jax.Array], state: Any, ts: UOROState, data: StepData
    ) -> tuple[Any, UOROState, StepOutput]:
        key, sub = jax.random.split(ts.key)
        nu = jax.random.rademacher(sub, ts.s.shape[-1:], ts.s.dtype)
        x, target, weight, spike_cost = data
        one = functools.partial(self._sample, params, nu)
        costs = dict(spike_cost or {})
        new_state, s, th, g, y, loss = jax.vmap(one)(
            state, x, target, weight, costs, ts.s, ts.theta
        )
        grads = ts.grads + jnp.sum(g, axis=0).astype(ts.grads.dtype)
        return new_state, UOROState(s, th, grads, key), StepOutput(y, loss)

    def gradients(self, params: Mapping[str, jax.Array], ts: UOROState) -> dict[str, jax.Array]:
        _, unravel = ravel_pytree({k: params[k] for k in self.names})
        return dict(unravel(ts.grads))
