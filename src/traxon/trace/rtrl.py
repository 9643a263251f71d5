r"""Exact real-time recurrent learning with the full Jacobian (a reference for tiny networks).

With :math:`h` all traced state variables of all populations (size :math:`H`) and
:math:`\theta` all trainable weights (size :math:`P`), every sample carries
:math:`J_t = \partial h_t / \partial \theta`:

.. math::
    J_t = \frac{\partial h_t}{\partial h_{t-1}} J_{t-1} + \frac{\partial h_t}{\partial \theta},
    \qquad \nabla\theta \mathrel{+}= \sum_b w_b\, \frac{\partial l_t}{\partial h_t} J_t

* Memory: :math:`O(B \cdot H \cdot P)`; compute per step :math:`O(B \cdot H \cdot (H + P))`
  forward-mode products plus an :math:`H \times H` by :math:`H \times P` product.
* Exact: equals BPTT to float precision on any network. Use it only on tiny networks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from traxon.core.network import Network
from traxon.trace._quantities import stack, unstack
from traxon.trace.base import (
    Algorithm,
    LossFn,
    StepOutput,
    Tracer,
    check_network,
    register,
    trainable,
)

__all__ = ["RTRLState", "rtrl"]


class RTRLState(NamedTuple):
    """State of :class:`rtrl`: ``J`` ``(B, H, P)`` and the accumulated gradient."""

    J: jax.Array
    grads: dict[str, jax.Array]


@register("rtrl")
class rtrl(Algorithm):
    """Exact RTRL (see the module docstring). Tiny networks only.

    Example:
        >>> import traxon
        >>> traxon.trace.rtrl().name
        'rtrl'
    """

    name = "rtrl"
    online = False

    def bind(self, net: Network, loss_fn: LossFn, window: int | None = None) -> Tracer:
        check_network(net, self)
        names = tuple(p.name for p in trainable(net))
        pops = tuple(net.populations)

        def split(state: Any) -> tuple[jax.Array, Any]:
            h = jnp.concatenate(
                [
                    stack(net.populations[k], state[k]).reshape(
                        state[k][net.populations[k].traced[0]].shape[0], -1
                    )
                    for k in pops
                ],
                axis=-1,
            )
            return h, state

        def merge(h: jax.Array, like: Any) -> Any:
            out = {k: dict(v) for k, v in like.items()}
            offset = 0
            for k in pops:
                plan = net.populations[k]
                S = len(plan.traced)
                n = plan.size * S
                block = h[..., offset : offset + n].reshape((*h.shape[:-1], plan.size, S))
                offset += n
                aux = {a: like[k][a] for a in plan.aux}
                out[k] = unstack(plan, block, aux)
            return out

        def init(
            params: Mapping[str, jax.Array], state: Any, target_example: Any = None
        ) -> RTRLState:
            h, _ = split(state)
            theta, _ = ravel_pytree({k: params[k] for k in names})
            J = jnp.zeros((*h.shape, theta.size), h.dtype)
            return RTRLState(J, {k: jnp.zeros_like(params[k]) for k in names})

        def step(
            params: Mapping[str, jax.Array],
            state: Any,
            ts: RTRLState,
            x: Mapping[str, jax.Array],
            target: Any,
            weight: jax.Array,
            spike_cost: Mapping[str, jax.Array] | None = None,
        ) -> tuple[Any, RTRLState, StepOutput]:
            theta, unravel = ravel_pytree({k: params[k] for k in names})

            costs = dict(spike_cost or {})

            def one(st: Any, xb: Any, tb: Any, Jb: jax.Array, wb: jax.Array, cb: Any) -> Any:
                st1 = jax.tree_util.tree_map(lambda a: a[None], st)
                x1 = jax.tree_util.tree_map(lambda a: a[None], xb)
                hb, _ = split(st1)

                def f(h: jax.Array, th: jax.Array) -> tuple[jax.Array, Any]:
                    p = {**params, **unravel(th)}
                    new, _ = net.forward(p, merge(h, st1), x1)
                    return split(new)[0][0], new

                h0 = hb[0]
                A = jax.jacfwd(lambda h: f(h[None], theta)[0])(h0)
                Bt = jax.jacfwd(lambda th: f(h0[None], th)[0])(theta)
                h_new, new = f(h0[None], theta)
                J_new = A @ Jb + Bt

                def loss_of(h: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
                    sig = net.signals(merge(h[None], new))
                    y = net.output(sig)
                    loss = loss_fn(y, jax.tree_util.tree_map(lambda a: a[None], tb))
                    extra = sum(jnp.sum(c * sig[k]["spike"][0]) for k, c in cb.items())
                    return wb * loss[0] + extra, (y[0], loss[0])

                dl, (y, loss) = jax.grad(loss_of, has_aux=True)(h_new)
                g = dl @ J_new
                new0 = jax.tree_util.tree_map(lambda a: a[0], new)
                return new0, J_new, g, y, loss

            new_state, J, g, y, loss = jax.vmap(one)(state, x, target, ts.J, weight, costs)
            gsum = unravel(jnp.sum(g, axis=0))
            grads = {k: ts.grads[k] + gsum[k] for k in names}
            return new_state, RTRLState(J, grads), StepOutput(y, loss)

        def gradients(params: Mapping[str, jax.Array], ts: RTRLState) -> dict[str, jax.Array]:
            return dict(ts.grads)

        def reset_gradients(ts: RTRLState) -> RTRLState:
            return ts._replace(grads=jax.tree_util.tree_map(jnp.zeros_like, ts.grads))

        def reset_traces(params: Any, state: Any, ts: RTRLState) -> RTRLState:
            return ts._replace(J=jnp.zeros_like(ts.J))

        return Tracer(self.name, init, step, gradients, reset_gradients, reset_traces)
