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
from traxon.trace._quantities import flat_state, sample_objective, sample_step
from traxon.trace.base import Algorithm, BoundRule, LossFn, StepData, StepOutput, register

__all__ = ["RTRLState", "rtrl"]


class RTRLState(NamedTuple):
    """State of :class:`rtrl`: ``J`` ``(B, H, P)`` and the accumulated gradient."""

    J: jax.Array
    grads: dict[str, jax.Array]


@register("rtrl")
class rtrl(Algorithm):
    """Exact RTRL (see the module docstring). Tiny networks only.

    Example:
        >>> from traxon.trace import get_algorithm
        >>> get_algorithm("rtrl").online  # credit flows through time, not only within a step
        False
    """

    name = "rtrl"
    online = False

    def _bound(self, net: Network, loss_fn: LossFn, window: int | None) -> BoundRule[RTRLState]:
        return _Bound(net, loss_fn)


class _Bound(BoundRule[RTRLState]):
    """:class:`rtrl` bound to a network and a loss: the tracer's functions."""

    trace_fields = ("J",)

    def __init__(self, net: Network, loss_fn: LossFn) -> None:
        super().__init__(net, loss_fn)
        self.flat = flat_state(net)

    def init(
        self, params: Mapping[str, jax.Array], state: Any, target_example: Any = None
    ) -> RTRLState:
        h = self.flat[0](state)
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
        theta, unravel = ravel_pytree({k: params[k] for k in self.names})
        f, h0 = sample_step(self.net, self.flat, params, unravel, st, xb)
        A = jax.jacfwd(lambda h: f(h, theta)[0])(h0)
        Bt = jax.jacfwd(lambda th: f(h0, th)[0])(theta)
        h_new, new = f(h0, theta)
        J_new = A @ Jb + Bt
        objective = sample_objective(self.net, self.loss_fn, self.flat[1], new, tb, wb, cb)
        dl, (y, loss) = jax.grad(objective, has_aux=True)(h_new)
        new0 = jax.tree_util.tree_map(lambda a: a[0], new)
        return new0, J_new, dl @ J_new, y, loss

    def advance(
        self, params: Mapping[str, jax.Array], state: Any, ts: RTRLState, data: StepData
    ) -> tuple[Any, RTRLState, StepOutput]:
        _, unravel = ravel_pytree({k: params[k] for k in self.names})
        x, target, weight, spike_cost = data
        one = functools.partial(self._sample, params)
        new_state, J, g, y, loss = jax.vmap(one)(
            state, x, target, ts.J, weight, dict(spike_cost or {})
        )
        gsum = unravel(jnp.sum(g, axis=0))
        grads = {k: ts.grads[k] + gsum[k] for k in self.names}
        return new_state, RTRLState(J, grads), StepOutput(y, loss)
