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

import functools
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
        b = _Bound(net, loss_fn)
        return Tracer(self.name, b.init, b.step, b.gradients, b.reset_gradients, b.reset_traces)


class _Bound:
    """:class:`rtrl` bound to a network and a loss: the tracer's functions."""

    def __init__(self, net: Network, loss_fn: LossFn) -> None:
        self.net, self.loss_fn = net, loss_fn
        self.names = tuple(p.name for p in trainable(net))
        self.split, self.merge = flat_state(net)

    def init(
        self, params: Mapping[str, jax.Array], state: Any, target_example: Any = None
    ) -> RTRLState:
        h = self.split(state)
        theta, _ = ravel_pytree({k: params[k] for k in self.names})
        J = jnp.zeros((*h.shape, theta.size), h.dtype)
        return RTRLState(J, {k: jnp.zeros_like(params[k]) for k in self.names})

    def _sample(
        self,
        params: Mapping[str, jax.Array],
        st: Any,
        xb: Any,
        tb: Any,
        Jb: jax.Array,
        wb: jax.Array,
        cb: Any,
    ) -> Any:
        r"""One sample's step: :math:`J \leftarrow A J + B` with the full Jacobians ``A``
        (state) and ``B`` (weights), and the gradient :math:`\partial l / \partial h \, J`."""
        net, split, merge = self.net, self.split, self.merge
        theta, unravel = ravel_pytree({k: params[k] for k in self.names})
        st1 = jax.tree_util.tree_map(lambda a: a[None], st)
        x1 = jax.tree_util.tree_map(lambda a: a[None], xb)

        def f(h: jax.Array, th: jax.Array) -> tuple[jax.Array, Any]:
            new, _ = net.forward({**params, **unravel(th)}, merge(h, st1), x1)
            return split(new)[0], new

        h0 = split(st1)[0]
        A = jax.jacfwd(lambda h: f(h[None], theta)[0])(h0)
        Bt = jax.jacfwd(lambda th: f(h0[None], th)[0])(theta)
        h_new, new = f(h0[None], theta)
        J_new = A @ Jb + Bt

        def loss_of(h: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
            sig = net.signals(merge(h[None], new))
            y = net.output(sig)
            loss = self.loss_fn(y, jax.tree_util.tree_map(lambda a: a[None], tb))
            extra = sum(jnp.sum(c * sig[k]["spike"][0]) for k, c in cb.items())
            return wb * loss[0] + extra, (y[0], loss[0])

        dl, (y, loss) = jax.grad(loss_of, has_aux=True)(h_new)
        new0 = jax.tree_util.tree_map(lambda a: a[0], new)
        return new0, J_new, dl @ J_new, y, loss

    def step(
        self,
        params: Mapping[str, jax.Array],
        state: Any,
        ts: RTRLState,
        x: Mapping[str, jax.Array],
        target: Any,
        weight: jax.Array,
        spike_cost: Mapping[str, jax.Array] | None = None,
    ) -> tuple[Any, RTRLState, StepOutput]:
        _, unravel = ravel_pytree({k: params[k] for k in self.names})
        costs = dict(spike_cost or {})
        one = functools.partial(self._sample, params)
        new_state, J, g, y, loss = jax.vmap(one)(state, x, target, ts.J, weight, costs)
        gsum = unravel(jnp.sum(g, axis=0))
        grads = {k: ts.grads[k] + gsum[k] for k in self.names}
        return new_state, RTRLState(J, grads), StepOutput(y, loss)

    def gradients(self, params: Mapping[str, jax.Array], ts: RTRLState) -> dict:
        return dict(ts.grads)

    def reset_gradients(self, ts: RTRLState) -> RTRLState:
        return ts._replace(grads=jax.tree_util.tree_map(jnp.zeros_like, ts.grads))

    def reset_traces(self, params: Any, state: Any, ts: RTRLState) -> RTRLState:
        return ts._replace(J=jnp.zeros_like(ts.J))
