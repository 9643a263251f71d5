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
from traxon.trace._window import (
    add_window,
    bound_window,
    cleared,
    record_step,
    step_costs,
    window_buffer,
)
from traxon.trace.base import (
    Algorithm,
    LossFn,
    StepOutput,
    Tracer,
    check_network,
    register,
    trainable,
)

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
        def body(carry: Any, inp: Any) -> tuple[Any, tuple[jax.Array, jax.Array]]:
            st, t = carry
            x, tgt, w, cost = inp
            if truncation:
                cut = (t % truncation) == 0
                st = jax.tree_util.tree_map(
                    lambda a: jnp.where(cut, jax.lax.stop_gradient(a), a), st
                )
            new, internals = net.forward(p, st, x)
            loss = jnp.sum(w * loss_fn(net.output(internals["signals"]), tgt))
            extra = sum(
                (jnp.sum(c * internals["signals"][k]["spike"]) for k, c in cost.items()),
                start=jnp.zeros((), loss.dtype),
            )
            return (new, t + 1), (loss + extra, loss)

        step_fn = jax.checkpoint(body) if remat else body
        carry0 = (state, jnp.zeros((), jnp.int32))
        inputs = (xs, targets, weights, dict(spike_costs or {}))
        _, (objective, losses) = jax.lax.scan(step_fn, carry0, inputs)
        return jnp.sum(objective), jnp.sum(losses)

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

    def bind(self, net: Network, loss_fn: LossFn, window: int | None = None) -> Tracer:
        check_network(net, self)
        window = bound_window(
            self.window,
            window,
            "bptt needs a `window` (the number of steps buffered before the gradient is "
            "computed); the learner sets it from its update schedule.",
        )
        names = tuple(p.name for p in trainable(net))
        truncation, remat = self.truncation, self.remat

        def init(
            params: Mapping[str, jax.Array], state: Any, target_example: Any = None
        ) -> BPTTState:
            buffer = window_buffer(net, params, state, target_example, window, names, "bptt")
            return BPTTState(**buffer)

        def window_grad(params: Mapping[str, jax.Array], ts: BPTTState) -> dict[str, jax.Array]:
            grads, _ = bptt_gradient(
                net,
                loss_fn,
                params,
                ts.start,
                ts.xs,
                ts.targets,
                ts.weights,
                truncation,
                remat,
                ts.costs,
            )
            return {k: grads[k] for k in names}

        def flush(params: Mapping[str, jax.Array], ts: BPTTState, state: Any) -> BPTTState:
            grads = add_window(ts, window_grad(params, ts), names)
            return ts._replace(**{**cleared(ts), "start": state, "last": state, "grads": grads})

        def step(
            params: Mapping[str, jax.Array],
            state: Any,
            ts: BPTTState,
            x: Mapping[str, jax.Array],
            target: Any,
            weight: jax.Array,
            spike_cost: Mapping[str, jax.Array] | None = None,
        ) -> tuple[Any, BPTTState, StepOutput]:
            new_state, internals = net.forward(params, state, x)
            y = net.output(internals["signals"])
            loss = loss_fn(y, target)
            # The learner reads the gradient at least every `window` steps; past that the last
            # slot would be overwritten, which the learner refuses before it can happen.
            i = jnp.minimum(ts.count, window - 1)
            costs = step_costs(ts.costs, spike_cost)
            ts = ts._replace(last=new_state, **record_step(ts, i, x, target, weight, costs))
            return new_state, ts, StepOutput(y, loss)

        def gradients(params: Mapping[str, jax.Array], ts: BPTTState) -> dict[str, jax.Array]:
            return add_window(ts, window_grad(params, ts), names)

        def reset_gradients(ts: BPTTState) -> BPTTState:
            return ts._replace(**cleared(ts))

        def reset_traces(params: Mapping[str, jax.Array], state: Any, ts: BPTTState) -> BPTTState:
            return flush(params, ts, state)

        return Tracer(self.name, init, step, gradients, reset_gradients, reset_traces)
