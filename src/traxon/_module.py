"""Immutable pytree modules: the base class of neurons, synapses, surrogates and weight ops.

A subclass is turned into a frozen dataclass and registered as a JAX pytree. Fields marked
with :func:`static` are part of the tree structure (configuration: names, flags, integer
sizes); all other fields are leaves (numbers or arrays), so a module can be passed through
``jax.jit`` and ``jax.vmap`` like any pytree.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

__all__ = ["Module", "static"]


def static(default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A dataclass field that is part of the pytree structure rather than a leaf."""
    metadata = dict(kwargs.pop("metadata", {}), static=True)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


class Module:
    """Base class: subclasses become frozen dataclasses registered as pytrees.

    Example:
        >>> from traxon._module import Module, static
        >>> class Scale(Module):
        ...     factor: float = 2.0
        ...     name: str = static(default="scale")
        >>> Scale().factor
        2.0
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclasses.dataclass(frozen=True, eq=False, repr=True)(cls)
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        data = [f.name for f in fields if not f.metadata.get("static", False)]
        meta = [f.name for f in fields if f.metadata.get("static", False)]
        jax.tree_util.register_dataclass(cls, data_fields=data, meta_fields=meta)

    def replace(self, **changes: Any) -> Any:
        """A copy of this module with some fields changed (validation runs again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]
