"""Argument checks and unit conversion shared by the whole package.

Every message names the argument, shows what was received and says what is allowed.
Checks run on concrete values (at construction or before ``jit``); under tracing they are
skipped, because a traced value cannot be inspected.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "TraxonWarning",
    "all_finite",
    "check_finite",
    "check_in",
    "check_positive",
    "check_positive_int",
    "check_shape",
    "first_nonfinite",
    "is_concrete",
    "to_float",
    "warn",
]


class TraxonWarning(UserWarning):
    """Warnings raised by traxon itself (the test suite turns them into errors).

    Example:
        >>> import warnings, traxon
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("error", traxon.TraxonWarning)
        ...     try:
        ...         warnings.warn("a demo warning", traxon.TraxonWarning)
        ...     except traxon.TraxonWarning as err:
        ...         print("raised:", err)
        raised: a demo warning
    """


def warn(message: str) -> None:
    warnings.warn(message, TraxonWarning, stacklevel=3)


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds a value (not a tracer inside ``jit``/``vmap``/``grad``)."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(x))


def _describe(value: Any) -> str:
    if isinstance(value, (np.ndarray, jax.Array)) and np.ndim(value) > 0:
        return f"an array of shape {tuple(np.shape(value))}"
    return repr(value)


def to_float(value: Any, unit: str | None, name: str) -> Any:
    """Strip a brainunit Quantity to a float (or array) expressed in ``unit`` (a brainunit
    unit name such as ``"ms"`` or ``"mV"``; ``None`` for unitless arguments).

    Plain numbers are taken to be in ``unit`` already. A Quantity of another dimension
    raises ``TypeError`` naming the argument. brainunit is looked up, never imported: a
    Quantity can only exist once its package is loaded, so ``import traxon`` stays light.
    """
    bu = sys.modules.get("brainunit")
    if bu is not None and isinstance(value, bu.Quantity):
        if unit is None:
            raise TypeError(f"`{name}` must be a unitless number; got {value}.")
        try:
            value = value.to_decimal(getattr(bu, unit))
        except Exception as err:  # brainunit raises its own UnitMismatchError
            raise TypeError(
                f"`{name}` must be in units of {unit} (or a plain number in {unit}); got {value}."
            ) from err
    if isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, (bool, str, bytes)) or value is None:
        raise TypeError(f"`{name}` must be a number; got {value!r}.")
    if isinstance(value, (list, tuple, np.ndarray)):
        arr = np.asarray(value)
        if arr.dtype.kind not in "iuf":
            raise TypeError(
                f"`{name}` must be a number or an array of numbers; got {value!r} "
                f"(dtype {arr.dtype})."
            )
        return arr if isinstance(value, np.ndarray) else jnp.asarray(arr)
    return jnp.asarray(value)


def check_positive(value: Any, name: str, *, allow_zero: bool = False) -> None:
    """Raise ``ValueError`` unless every element of a concrete ``value`` is > 0 (or >= 0)."""
    if not is_concrete(value):
        return
    arr = np.asarray(value)
    bad = (arr < 0) if allow_zero else (arr <= 0)
    if np.any(bad) or np.any(~np.isfinite(arr)):
        need = "non-negative" if allow_zero else "positive"
        shown = arr.item() if arr.ndim == 0 else f"{arr.min()} (smallest element)"
        raise ValueError(f"`{name}` must be {need} and finite; got {shown}.")


def check_positive_int(
    value: Any,
    name: str,
    *,
    optional: bool = False,
    allow_zero: bool = False,
    owner: str | None = None,
) -> Any:
    """Return ``value`` as an ``int`` if it is an integer >= 1 (>= 0 with ``allow_zero``;
    ``None`` passes through when ``optional``); otherwise raise ``ValueError`` naming
    ``name`` (and the ``owner`` it is an argument of, when given). ``True`` is not an integer.

    Example:
        >>> from traxon._checks import check_positive_int
        >>> check_positive_int(3, "window"), check_positive_int(None, "window", optional=True)
        (3, None)
        >>> check_positive_int(0, "window", optional=True)
        Traceback (most recent call last):
        ValueError: `window` must be a positive integer or None; got 0.
        >>> check_positive_int(-1, "padding", allow_zero=True, owner="Conv2D")
        Traceback (most recent call last):
        ValueError: `padding` of Conv2D must be a non-negative integer; got -1.
    """
    if optional and value is None:
        return None
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        allowed = "a non-negative integer" if allow_zero else "a positive integer"
        if optional:
            allowed += " or None"
        where = f" of {owner}" if owner else ""
        raise ValueError(f"`{name}`{where} must be {allowed}; got {value!r}.")
    return int(value)


def check_in(value: Any, name: str, low: float, high: float) -> None:
    """Raise ``ValueError`` unless a concrete ``value`` lies in the closed range [low, high]."""
    if not is_concrete(value):
        return
    arr = np.asarray(value)
    if np.any(arr < low) or np.any(arr > high) or np.any(~np.isfinite(arr)):
        raise ValueError(f"`{name}` must lie in [{low}, {high}]; got {_describe(value)}.")


def check_shape(x: Any, expected: tuple[int | None, ...], name: str) -> None:
    """Raise ``ValueError`` unless ``x`` has ``expected`` shape (``None`` matches any size)."""
    shape = tuple(np.shape(x))
    if len(shape) != len(expected) or any(
        e is not None and e != s for e, s in zip(expected, shape, strict=False)
    ):
        want = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
        raise ValueError(f"`{name}` must have shape {want}; got {shape}.")


def all_finite(tree: Any) -> jax.Array:
    """A scalar bool: every floating element of every leaf of ``tree`` is finite.

    Works under ``jit`` (one reduction XLA fuses with the code that made the values);
    integer and boolean leaves are always finite and are not looked at.
    """
    checks = [
        jnp.all(jnp.isfinite(leaf))
        for leaf in jax.tree_util.tree_leaves(tree)
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
    ]
    if not checks:
        return jnp.ones((), bool)
    return jnp.all(jnp.stack(checks))


def first_nonfinite(x: Any, name: str) -> tuple[str, int, list[int]] | None:
    """For a concrete pytree: ``(label, count, index)`` of the first leaf holding NaN/Inf
    (``label`` is ``name`` followed by the leaf's path), or ``None`` when all are finite."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(x):
        arr = np.asarray(leaf)
        if not np.issubdtype(arr.dtype, np.inexact):
            continue
        bad = ~np.isfinite(arr)
        if np.any(bad):
            return name + jax.tree_util.keystr(path), int(bad.sum()), np.argwhere(bad)[0].tolist()
    return None


def check_finite(
    x: Any, name: str, fix: str = "Clean the input (or the state) before stepping."
) -> None:
    """Raise ``ValueError`` if a concrete array contains NaN or Inf, saying where."""
    if not is_concrete(x):
        return
    found = first_nonfinite(x, name)
    if found is not None:
        label, count, where = found
        raise ValueError(
            f"`{label}` contains {count} NaN/Inf value(s); the first is at index {where}. {fix}"
        )
