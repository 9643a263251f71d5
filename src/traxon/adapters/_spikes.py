"""A population's real spikes: its neuron's own ``get_spike()``, read off the module.

A population's ``spike`` signal (rates, the rate regulariser) must be its neurons' spikes,
not whatever full-width value it happens to send (an AlignPre population sends a filtered
trace). Every submodule with a ``get_spike`` method is traced once, as a function of the
states it reads; a population whose states include all of them gets that function.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from traxon.adapters._graph import Graph, flatten
from traxon.adapters._prepare import modules

__all__ = ["SpikeFunction", "spike_functions"]


@dataclasses.dataclass
class SpikeFunction:
    """``get_spike()`` of one neuron module as a graph over the state leaves it reads."""

    graph: Graph
    leaves: list[tuple[int, str, int]]  # (id of the State, leaf key, graph input id)
    out: int

    def reads(self) -> set[tuple[int, str]]:
        """The ``(id(state), leaf key)`` pairs the function reads."""
        return {(s, k) for s, k, _ in self.leaves}

    def __call__(self, values: Mapping[tuple[int, str], jax.Array]) -> jax.Array:
        """The spikes, given the values it reads."""
        inputs = {
            i: jnp.asarray(values[(s, k)]).astype(self.graph.dtype(i)) for s, k, i in self.leaves
        }
        (out,), _ = self.graph.evaluate(inputs, [self.out])
        return jnp.asarray(out)


def spike_functions(module: Any) -> list[SpikeFunction]:
    """Trace ``get_spike()`` of every neuron module (states as they are now)."""
    import brainstate
    import brainunit as u

    def is_q(v: Any) -> bool:
        return isinstance(v, u.Quantity)

    out = []
    for m in modules(module):
        if not callable(getattr(m, "get_spike", None)) or m is module:
            continue
        try:
            sf = brainstate.transform.StatefulFunction(lambda m=m: u.get_mantissa(m.get_spike()))
            sf.make_jaxpr()
            states = list(sf.get_states())
            closed = sf.get_jaxpr()
        except Exception:  # a get_spike that needs arguments or more context: not used
            continue
        nodes, inputs, outputs, consts, avals = flatten(closed)
        leaves = []
        cursor = 0
        for s in states:
            for path, _ in jax.tree_util.tree_flatten_with_path(s.value, is_leaf=is_q)[0]:
                leaves.append((id(s), jax.tree_util.keystr(path), int(inputs[cursor])))  # type: ignore[arg-type]
                cursor += 1
        if not isinstance(outputs[0], int):
            continue
        out.append(SpikeFunction(Graph(nodes, inputs, outputs, consts, avals), leaves, outputs[0]))
    return out
