"""The module's weights: read them from its ``ParamState`` objects, write trained ones back.

The learner trains mantissas, keyed by weight name (``"inp.comm.weight['weight']"``).
:class:`ModuleWeights` reads them from the module (:meth:`~ModuleWeights.read`), writes
them back with their units after every update (:meth:`~ModuleWeights.write`), tells which
weights the user has assigned since (:meth:`~ModuleWeights.changed`) and refuses to go on
when the ``ParamState`` objects themselves were replaced (:meth:`~ModuleWeights.check`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from traxon.adapters._analysis import StateLeaf
from traxon.adapters._values import is_quantity, leaf_keys, leaves, mantissa, unit_of

__all__ = ["ModuleWeights"]


class ModuleWeights:
    """The weights of a module as the adapter found them.

    Arguments:
        module: the brainstate module.
        params: every weight, by name: the ``ParamState`` leaf it is (an analysis's
            ``params``).
        paths: the attribute path of every state, by ``id`` (the names :attr:`written`
            is keyed by).
    """

    def __init__(
        self, module: Any, params: Mapping[str, StateLeaf], paths: Mapping[int, str]
    ) -> None:
        self.module = module
        self.params = dict(params)
        self.paths = paths
        self.states = {id(lf.state): lf.state for lf in self.params.values()}
        #: The value last written into each ``ParamState``, by its path.
        self.written: dict[str, Any] = {}

    def read(self, dtype: Any = None) -> dict[str, jax.Array]:
        """The module's current weights (mantissas, in ``dtype`` when given), by name (a
        split weight by block)."""
        out = {}
        for name, lf in self.params.items():
            arr = _module_value(lf)
            if lf.block is not None:  # one block of a split weight (adapters/_blocks.py)
                arr = arr[lf.block.index]
            out[name] = jnp.array(arr, dtype=dtype if dtype is not None else arr.dtype)  # not weak
        return out

    def whole(self, values: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        """``values`` keyed by weight name (the weights, or their gradients) with the
        blocks of a split weight assembled into the module's weight, keyed by its name.

        ``AdaptedNetwork.as_module_weights`` is this method."""
        out: dict[str, jax.Array] = {}
        for name, lf in self.params.items():
            whole = lf.path + lf.key
            if lf.block is None:
                out[whole] = values[name]
                continue
            if whole not in out:  # the blocks tile the weight: every entry is set below
                shape = jnp.shape(_module_value(lf))
                out[whole] = jnp.zeros(shape, jnp.asarray(values[name]).dtype)
            out[whole] = out[whole].at[lf.block.index].set(values[name])
        return out

    def write(self, params: Mapping[str, jax.Array]) -> None:
        """Write weights (mantissas, by name) into the module's ``ParamState`` objects, each
        in its leaf's dtype and unit (a split weight assembled from its blocks)."""
        self.check()
        whole = self.whole(params)
        by_state: dict[int, dict[str, Any]] = {}
        for lf in self.params.values():
            by_state.setdefault(id(lf.state), {})[lf.key] = whole[lf.path + lf.key]
        for sid, items in by_state.items():
            state = self.states[sid]
            new = []
            for key, old in zip(leaf_keys(state.value), leaves(state.value), strict=True):
                if key in items:
                    value = jnp.asarray(items[key]).astype(jnp.asarray(mantissa(old)).dtype)
                    unit = unit_of(old)
                    new.append(value * unit if unit is not None else value)
                else:
                    new.append(old)
            treedef = jax.tree_util.tree_structure(state.value, is_leaf=is_quantity)
            state.value = jax.tree_util.tree_unflatten(treedef, new)
            self.written[self.paths[sid]] = state.value

    def changed(self) -> list[str]:
        """Weights whose module value is not the one :meth:`write` last wrote."""
        return [
            name
            for name, lf in self.params.items()
            if self.written.get(lf.path) is not lf.state.value
        ]

    def check(self) -> None:
        """Raise if the module's weights were replaced since they were found."""
        current = {id(s) for s in self.module.states().values()}
        for lf in self.params.values():
            if id(lf.state) not in current:
                raise ValueError(
                    f"weight `{lf.name}` is no longer part of the module (it was replaced or "
                    "re-initialised after attaching); adapt the module again."
                )


def _module_value(lf: StateLeaf) -> jax.Array:
    """The mantissa of the module's value of weight leaf ``lf`` (the whole leaf)."""
    value = dict(zip(leaf_keys(lf.state.value), leaves(lf.state.value), strict=True))[lf.key]
    return jnp.asarray(mantissa(value))
