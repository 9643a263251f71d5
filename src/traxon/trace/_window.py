"""The window buffer of the rules that replay buffered steps (:class:`~traxon.trace.bptt`,
:class:`~traxon.trace.synthetic_gradients`): start state, inputs, targets, loss weights and
spike costs of up to ``size`` steps, written one step at a time inside a ``lax.scan``
(:func:`window_buffer`, :func:`record_step`, :func:`cleared`); :func:`replay`, the
objective of the buffered steps run again from the window's start; and :class:`WindowRule`,
the part of the bound rule that both share."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from traxon.core.network import Network, state_dtype
from traxon.trace.base import TS, BoundRule, LossFn, StepData

__all__ = [
    "WindowRule",
    "add_window",
    "bound_window",
    "cleared",
    "record_step",
    "replay",
    "step_costs",
    "step_objective",
    "window_buffer",
]


def window_buffer(
    net: Network,
    params: Mapping[str, jax.Array],
    state: Any,
    target_example: Any,
    size: int,
    names: tuple[str, ...],
    who: str,
) -> dict[str, Any]:
    """The fields of an empty window of ``size`` buffered steps (start and last state,
    inputs, targets, loss weights, spike costs, count) and a zero gradient sum: what
    :class:`bptt` and :class:`~traxon.trace.synthetic_gradients` keep between updates."""
    if target_example is None:
        raise ValueError(
            f"{who}.init needs `target_example` (one step's target) to size its buffer."
        )
    batch = net.batch_size(state)
    dtype = state_dtype(state)
    return {
        "start": state,
        "last": state,
        "xs": {k: jnp.zeros((size, batch, n), dtype) for k, n in net.inputs.items()},
        "targets": jax.tree_util.tree_map(
            lambda a: jnp.zeros((size, *jnp.shape(a)), jnp.asarray(a).dtype), target_example
        ),
        "weights": jnp.zeros((size, batch), dtype),
        "costs": {
            k: jnp.zeros((size, batch, plan.size), dtype)
            for k, plan in net.populations.items()
            if plan.neuron.spiking
        },
        "count": jnp.zeros((), jnp.int32),
        "grads": {k: jnp.zeros_like(params[k]) for k in names},
    }


def step_costs(
    buffers: Mapping[str, jax.Array], spike_cost: Mapping[str, jax.Array] | None
) -> dict[str, jax.Array]:
    """One step's spike cost for every buffered population (zero where none is given)."""
    return {
        k: (
            spike_cost[k].astype(buf.dtype)
            if spike_cost is not None and k in spike_cost
            else jnp.zeros_like(buf[0])
        )
        for k, buf in buffers.items()
    }


def record_step(
    ts: Any, i: jax.Array, x: Mapping[str, jax.Array], target: Any, weight: jax.Array, costs: Any
) -> dict[str, Any]:
    """The buffer fields of ``ts`` with one step written at slot ``i`` (``count = i + 1``)."""
    return {
        "xs": {k: ts.xs[k].at[i].set(x[k].astype(ts.xs[k].dtype)) for k in ts.xs},
        "targets": jax.tree_util.tree_map(
            lambda buf, a: buf.at[i].set(jnp.asarray(a, buf.dtype)), ts.targets, target
        ),
        "weights": ts.weights.at[i].set(weight.astype(ts.weights.dtype)),
        "costs": {k: ts.costs[k].at[i].set(costs[k]) for k in ts.costs},
        "count": i + 1,
    }


def cleared(ts: Any) -> dict[str, Any]:
    """The buffer fields of ``ts`` emptied, the next window starting where the last ended."""
    return {
        "start": ts.last,
        "weights": jnp.zeros_like(ts.weights),
        "costs": jax.tree_util.tree_map(jnp.zeros_like, ts.costs),
        "count": jnp.zeros_like(ts.count),
        "grads": jax.tree_util.tree_map(jnp.zeros_like, ts.grads),
    }


def bound_window(own: int | None, given: int | None, missing: str) -> int:
    """The window a rule is bound with: its own ``window`` if set, else the one the learner
    gives; ``ValueError(missing)`` when neither is."""
    size = own or given
    if size is None:
        raise ValueError(missing)
    return size


def add_window(ts: Any, g: Mapping[str, jax.Array], names: tuple[str, ...]) -> dict[str, jax.Array]:
    """The gradient sum of ``ts`` plus one window's gradient ``g`` (in the sum's dtype)."""
    return {k: ts.grads[k] + g[k].astype(ts.grads[k].dtype) for k in names}


def step_objective(
    net: Network,
    loss_fn: LossFn,
    params: Mapping[str, jax.Array],
    state: Any,
    step: tuple[Mapping[str, jax.Array], Any, jax.Array, Mapping[str, jax.Array]],
) -> tuple[Any, jax.Array, jax.Array, jax.Array, jax.Array]:
    """One network step on ``step = (x, target, weight, costs)`` and its terms of the
    objective: ``(new_state, output, loss, weighted, extra)`` with ``loss`` ``(B,)``,
    ``weighted`` the weighted loss summed over the batch and ``extra`` the spike costs
    ``sum c * spikes``."""
    x, target, weight, costs = step
    new, internals = net.forward(params, state, x)
    sig = internals["signals"]
    y = net.output(sig)
    loss = loss_fn(y, target)
    weighted = jnp.sum(weight * loss)
    extra = sum(
        (jnp.sum(c * sig[k]["spike"]) for k, c in costs.items()),
        start=jnp.zeros((), weighted.dtype),
    )
    return new, y, loss, weighted, extra


def replay(
    net: Network,
    loss_fn: LossFn,
    params: Mapping[str, jax.Array],
    start: Any,
    steps: tuple[Any, Any, jax.Array, Mapping[str, jax.Array]],
    *,
    truncation: int | None = None,
    remat: bool = False,
    final: Callable[[jax.Array, Any], jax.Array] | None = None,
) -> tuple[jax.Array, jax.Array]:
    """``(objective, loss)`` of the steps ``(xs, targets, weights, costs)`` (leading axis:
    time) run from ``start``: the weighted losses plus the spike costs (plus ``final(t,
    state)`` after every step ``t``), and the weighted losses alone.

    ``truncation`` cuts the gradient through the state every ``truncation`` steps;
    ``remat`` recomputes each step in the backward pass (``jax.checkpoint``).
    """

    def body(carry: Any, inp: Any) -> tuple[Any, tuple[jax.Array, jax.Array]]:
        st, t = carry
        if truncation:
            cut = (t % truncation) == 0
            st = jax.tree_util.tree_map(lambda a: jnp.where(cut, jax.lax.stop_gradient(a), a), st)
        new, _, _, loss, extra = step_objective(net, loss_fn, params, st, inp)
        if final is not None:
            extra = extra + final(t, new)
        return (new, t + 1), (loss + extra, loss)

    step_fn = jax.checkpoint(body) if remat else body
    _, (objective, losses) = jax.lax.scan(step_fn, (start, jnp.zeros((), jnp.int32)), steps)
    return jnp.sum(objective), jnp.sum(losses)


class WindowRule(BoundRule[TS]):
    """A rule bound to a network and a loss that buffers the steps of a window of ``size``
    and replays them: a subclass gives :meth:`window_grad`, the gradient of the buffered
    window (``inject``: whether anything follows its end)."""

    def __init__(self, net: Network, loss_fn: LossFn, size: int, who: str) -> None:
        super().__init__(net, loss_fn)
        self.size, self.who = size, who

    def buffer(
        self, params: Mapping[str, jax.Array], state: Any, target_example: Any
    ) -> dict[str, Any]:
        """The fields of an empty window (:func:`window_buffer`)."""
        return window_buffer(
            self.net, params, state, target_example, self.size, self.names, self.who
        )

    def recorded(self, ts: TS, i: jax.Array, new_state: Any, data: StepData, costs: Any) -> TS:
        """``ts`` after a step to ``new_state``, its data written at slot ``i``."""
        x, target, weight, _ = data
        return ts._replace(last=new_state, **record_step(ts, i, x, target, weight, costs))

    def window_grad(
        self, params: Mapping[str, jax.Array], ts: TS, inject: bool
    ) -> dict[str, jax.Array]:
        """The gradient of the buffered window."""
        raise NotImplementedError

    def closed(self, params: Mapping[str, jax.Array], ts: TS, inject: bool) -> TS:
        """``ts`` with its window's gradient added to the sum and the window emptied."""
        grads = add_window(ts, self.window_grad(params, ts, inject), self.names)
        return ts._replace(**{**cleared(ts), "grads": grads})

    def gradients(self, params: Mapping[str, jax.Array], ts: TS) -> dict[str, jax.Array]:
        return add_window(ts, self.window_grad(params, ts, True), self.names)

    def reset_gradients(self, ts: TS) -> TS:
        return ts._replace(**cleared(ts))
