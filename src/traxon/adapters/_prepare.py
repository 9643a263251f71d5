"""Getting a module ready to be read: batched states and the number of input channels.

A brainstate module is usually written without saying how many channels its input has
(``Linear(n_in, n)`` says it, deep inside), and its states may not be initialised yet, or
initialised without a batch axis. :func:`ensure_batched_states` initialises them with a
batch axis when they are missing; :func:`infer_input_size` finds the input width by trying
the input sizes the module's layers declare, in the order they are defined, until one step
of the module traces.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["ensure_batched_states", "infer_input_size", "modules"]


def _has_batched_hidden_state(module: Any) -> bool:
    """Whether some ``HiddenState`` of ``module`` already has a batch axis."""
    import brainstate
    import brainunit as u

    for s in module.states(brainstate.HiddenState).values():
        leaves = jax.tree_util.tree_leaves(s.value, is_leaf=lambda v: isinstance(v, u.Quantity))
        if leaves and jnp.ndim(u.get_mantissa(leaves[0])) >= 2:
            return True
    return False


def ensure_batched_states(module: Any) -> bool:
    """Initialise the module's states with a batch axis (of 1) when it has none.

    Returns whether it did. A module already initialised with a batch axis is left as it is.
    """
    import brainstate

    if len(module.states()) and _has_batched_hidden_state(module):
        return False
    brainstate.nn.init_all_states(module, batch_size=1)
    return True


def modules(module: Any) -> Iterator[Any]:
    """The module and its submodules, depth first in the order they are defined."""
    import brainstate

    seen: set[int] = set()

    def walk(m: Any) -> Iterator[Any]:
        if id(m) in seen:
            return
        seen.add(id(m))
        yield m
        for value in vars(m).values():
            children = (
                value.values()
                if isinstance(value, dict)
                else (value if isinstance(value, (list, tuple)) else [value])
            )
            for child in children:
                if isinstance(child, brainstate.nn.Module):
                    yield from walk(child)

    yield from walk(module)


def _declared_sizes(module: Any) -> list[int]:
    """Input sizes the layers declare: layers with weights first, then the rest."""
    import brainstate

    weighted: list[int] = []
    other: list[int] = []
    for m in modules(module):
        size = getattr(m, "in_size", None)
        if isinstance(size, (tuple, list)) and len(size) >= 1:
            size = size[-1]
        if not isinstance(size, int) or size < 1:
            continue
        owns_weight = any(isinstance(v, brainstate.ParamState) for v in vars(m).values())
        (weighted if owns_weight else other).append(size)
    out: list[int] = []
    for size in weighted + other:
        if size not in out:
            out.append(size)
    return out


def infer_input_size(module: Any, call: Callable[[Any, Any], Any], batch: int) -> int:
    """The number of input channels: the first declared input size with which one step of
    the module traces (states are left untouched)."""
    import brainstate
    import brainunit as u

    tried = []
    first: Exception | None = None
    for size in _declared_sizes(module):
        tried.append(size)
        x = jnp.zeros((batch, size), jnp.float32)

        def step(v: Any) -> Any:
            with brainstate.environ.context(i=0, t=0.0 * u.ms):
                return call(module, v)

        try:
            brainstate.transform.StatefulFunction(step).make_jaxpr(x)
        except Exception as err:  # a size the step cannot take: try the next one
            first = first or err
            continue
        return size
    raise ValueError(
        "could not tell how many input channels the module takes (tried the input sizes its "
        f"layers declare: {tried}); pass `input_size=` (the input channels per sample)."
        + (
            f" With {tried[0]} channels its step fails: {type(first).__name__}: {first}"
            + (
                " (an input with units? pass input_unit=, e.g. u.nA)"
                if "nit" in type(first).__name__
                else ""
            )
            if first
            else ""
        )
    )
