"""Immutable pytree modules: the base class of neurons, synapses, surrogates and weight ops.

A subclass is turned into a frozen dataclass and registered as a JAX pytree. Fields marked
with :func:`static` are part of the tree structure (configuration: names, flags, integer
sizes); all other fields are leaves (numbers or arrays), so a module can be passed through
``jax.jit`` and ``jax.vmap`` like any pytree.
"""

from __future__ import annotations

import dataclasses
from typing import Any, dataclass_transform

import jax

__all__ = ["Module", "static"]


def static(default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A dataclass field that is part of the pytree structure rather than a leaf."""
    metadata = dict(kwargs.pop("metadata", {}), static=True)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


@dataclass_transform(
    frozen_default=True, eq_default=False, field_specifiers=(dataclasses.field, static)
)
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
        data = tuple(f.name for f in fields if not f.metadata.get("static", False))
        meta = tuple(f.name for f in fields if f.metadata.get("static", False))
        keys = tuple(jax.tree_util.GetAttrKey(n) for n in data)

        def flatten_with_keys(obj: Any) -> tuple:
            return (
                tuple(zip(keys, (getattr(obj, n) for n in data), strict=True)),
                tuple(getattr(obj, n) for n in meta),
            )

        def flatten(obj: Any) -> tuple:
            return tuple(getattr(obj, n) for n in data), tuple(getattr(obj, n) for n in meta)

        def unflatten(aux: tuple, children: Any) -> Any:
            # Rebuild without calling __init__/__post_init__: JAX unflattens with
            # placeholder leaves (None, object(), ShapeDtypeStruct) that validation rejects.
            obj = object.__new__(cls)
            for n, v in zip(meta, aux, strict=True):
                object.__setattr__(obj, n, v)
            for n, v in zip(data, children, strict=True):
                object.__setattr__(obj, n, v)
            return obj

        jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)

    def replace(self, **changes: Any) -> Any:
        """A copy of this module with some fields changed (validation runs again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]
