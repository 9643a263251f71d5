"""The window buffer of the rules that replay buffered steps (:class:`~traxon.trace.bptt`,
:class:`~traxon.trace.synthetic_gradients`): start state, inputs, targets, loss weights and
spike costs of up to ``size`` steps, written one step at a time inside a ``lax.scan``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from traxon.core.network import Network, state_dtype

__all__ = ["add_window", "bound_window", "cleared", "record_step", "step_costs", "window_buffer"]


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
