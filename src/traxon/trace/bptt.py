r"""Backpropagation through time: ``jax.grad`` through a ``lax.scan`` (the reference).

:func:`bptt_gradient` is the offline reference every online rule is tested against.
:class:`bptt` wraps it as a tracer for the learner: steps are buffered (inputs, targets,
loss weights) from the state at the start of the window, and the gradient is computed when
it is read or when a new sequence starts.

* Memory: :math:`O(T \cdot B \cdot (N S + I))` -- grows with the window length.
* Compute: about twice the forward pass, once per window.
* The learner reads (and resets) the gradient at least every ``window`` steps.
* Exact by definition; ``truncation=k`` cuts the gradient flow through the state every ``k``
  steps (block-truncated BPTT), ``remat=True`` recomputes each step in the backward pass
  instead of storing its internals (``jax.checkpoint``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from traxon._checks import check_positive_int
from traxon.core.network import Network
from traxon.trace._window import WindowRule, bound_window, replay, step_costs
from traxon.trace.base import Algorithm, LossFn, StepData, StepOutput, register

__all__ = ["BPTTState", "bptt", "bptt_gradient"]


def bptt_gradient(
    net: Network,
    loss_fn: LossFn,
    params: Mapping[str, jax.Array],
    state: Any,
    xs: Mapping[str, jax.Array],
    targets: Any,
    weights: jax.Array,
    truncation: int | None = None,
    remat: bool = False,
    spike_costs: Mapping[str, jax.Array] | None = None,
) -> tuple[dict[str, jax.Array], jax.Array]:
    r"""Gradient of :math:`\sum_t \sum_b w_{t,b}\, l_t^{(b)}` with respect to ``params``.

    Arguments:
        xs: ``{input: (T, B, n)}``; targets: a pytree with leading ``T``; weights: ``(T, B)``.
        truncation: cut the gradient through the state every ``truncation`` steps.
        remat: rematerialise each step in the backward pass.
        spike_costs: ``{population: (T, B, N)}`` coefficients of extra terms
            :math:`\sum c_{t,b,i} s_{t,b,i}` on the spikes (not part of the returned loss).

    Returns:
        ``(grads, total_loss)``.

    Example:
        >>> import jax, jax.numpy as jnp, traxon
        >>> from traxon.core import LIF, Dense, Network, Population, Projection, Readout
        >>> from traxon.learn import cross_entropy
        >>> net = Network(3, {"h": Population(LIF(), 8)}, [Projection("x", "h", Dense(3.0))],
        ...               readout=Readout("h", 2))
        >>> params, state = net.init(jax.random.PRNGKey(0), 2)
        >>> xs, ys = {"x": jnp.ones((5, 2, 3))}, jnp.zeros((5, 2), jnp.int32)
        >>> ws = jnp.full((5, 2), 0.5)  # mean over the batch, sum over time
        >>> grads, loss = traxon.bptt_gradient(net, cross_entropy.fn, params, state, xs, ys, ws)
        >>> {k: g.shape for k, g in sorted(grads.items())}
        {'h->readout': (8, 2), 'readout.bias': (2,), 'x->h': (3, 8)}
    """

    def total(p: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        steps = (xs, targets, weights, dict(spike_costs or {}))
        return replay(net, loss_fn, p, state, steps, truncation=truncation, remat=remat)

    (_, value), grads = jax.value_and_grad(total, has_aux=True)(dict(params))
    return grads, value


class BPTTState(NamedTuple):
    """State of :class:`bptt`: the window's start state, the buffered steps and the sums.

    Attributes:
        start: network state at the start of the buffered window.
        last: network state after the last step.
        xs, targets, weights: buffered inputs ``(window, B, n)``, targets and loss weights.
        costs: buffered spike costs ``{population: (window, B, N)}``.
        count: number of buffered steps.
        grads: gradient of windows already flushed.
    """

    start: Any
    last: Any
    xs: Any
    targets: Any
    weights: jax.Array
    costs: dict[str, jax.Array]
    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count
    grads: dict[str, jax.Array]


@register("bptt")
class bptt(Algorithm):
    """BPTT as a tracer (see the module docstring).

    Arguments:
        truncation: gradient truncation (steps) inside each window, or ``None``.
        remat: rematerialise steps in the backward pass.
        window: buffered steps; by default the learner's update period.

    Example:
        >>> import traxon
        >>> traxon.trace.bptt(truncation=50).truncation
        50
    """

    name = "bptt"
    online = False
    replays_window = True

    def __init__(
        self, truncation: int | None = None, remat: bool = False, window: int | None = None
    ) -> None:
        self.truncation = check_positive_int(truncation, "truncation", optional=True)
        self.remat = bool(remat)
        self.window = check_positive_int(window, "window", optional=True)

    def _bound(self, net: Network, loss_fn: LossFn, window: int | None) -> WindowRule[BPTTState]:
        size = bound_window(
            self.window,
            window,
            "bptt needs a `window` (the number of steps buffered before the gradient is "
            "computed); the learner sets it from its update schedule.",
        )
        return _Bound(net, loss_fn, size, self.truncation, self.remat)


class _Bound(WindowRule[BPTTState]):
    """:class:`bptt` bound to a network and a loss: the tracer's functions."""

    def __init__(
        self, net: Network, loss_fn: LossFn, size: int, truncation: int | None, remat: bool
    ) -> None:
        super().__init__(net, loss_fn, size, "bptt")
        self.truncation, self.remat = truncation, remat

    def init(
        self, params: Mapping[str, jax.Array], state: Any, target_example: Any = None
    ) -> BPTTState:
        return BPTTState(**self.buffer(params, state, target_example))

    def window_grad(
        self, params: Mapping[str, jax.Array], ts: BPTTState, inject: bool
    ) -> dict[str, jax.Array]:
        """BPTT over the buffered steps from ``start`` (nothing to inject)."""
        grads, _ = bptt_gradient(
            self.net,
            self.loss_fn,
            params,
            ts.start,
            ts.xs,
            ts.targets,
            ts.weights,
            self.truncation,
            self.remat,
            ts.costs,
        )
        return {k: grads[k] for k in self.names}

    def advance(
        self, params: Mapping[str, jax.Array], state: Any, ts: BPTTState, data: StepData
    ) -> tuple[Any, BPTTState, StepOutput]:
        new_state, internals = self.net.forward(params, state, data.x)
        y = self.net.output(internals["signals"])
        loss = self.loss_fn(y, data.target)
        # The learner reads the gradient at least every `window` steps; past that the last
        # slot would be overwritten, which the learner refuses before it can happen.
        i = jnp.minimum(ts.count, self.size - 1)
        ts = self.recorded(ts, i, new_state, data, step_costs(ts.costs, data.spike_cost))
        return new_state, ts, StepOutput(y, loss)

    def reset_traces(self, params: Mapping[str, jax.Array], state: Any, ts: BPTTState) -> BPTTState:
        return self.closed(params, ts, False)._replace(start=state, last=state)
