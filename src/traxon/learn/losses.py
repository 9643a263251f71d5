"""Per-step losses: ``fn(output (B, n_out), target) -> (B,)`` per-sample values.

A :class:`Loss` also says what a target looks like (to check user data before any work) and
whether accuracy is meaningful (classification).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["LOSSES", "Loss", "cross_entropy", "get_loss", "mse"]


class Loss(NamedTuple):
    """A per-sample loss with the description of its targets.

    Attributes:
        name: its name.
        fn: ``(output (B, n_out), target) -> (B,)``.
        kind: ``"classification"`` (integer targets ``(B,)``, accuracy reported),
            ``"regression"`` (float targets ``(B, n_out)``) or ``"custom"``.
        example: ``(batch, n_out) -> target`` of one step (zeros), used to size buffers;
            ``None`` for custom losses.
    """

    name: str
    fn: Callable[[jax.Array, Any], jax.Array]
    kind: str
    example: Callable[[int, int], Any] | None = None

    def check_target(self, target: Any, batch: int, n_out: int, leading: int = 0) -> None:
        """Raise ``ValueError``/``TypeError`` if ``target`` does not fit this loss."""
        if self.kind == "custom":
            return
        arr = np.asarray(target) if not isinstance(target, jax.Array) else target
        lead = "T, " * leading
        if self.kind == "classification":
            want = (*arr.shape[:leading], batch)
            if arr.shape != want:
                raise ValueError(
                    f"`y` for {self.name} must hold one class index per sample, shape "
                    f"({lead}{batch},); got {tuple(arr.shape)}."
                )
            if not jnp.issubdtype(arr.dtype, jnp.integer):
                raise TypeError(
                    f"`y` for {self.name} must be integer class indices; got dtype {arr.dtype}."
                )
            if isinstance(arr, np.ndarray) and arr.size and (arr.min() < 0 or arr.max() >= n_out):
                raise ValueError(
                    f"`y` for {self.name} must hold classes in [0, {n_out}); got values in "
                    f"[{arr.min()}, {arr.max()}]."
                )
        else:
            want = (*arr.shape[:leading], batch, n_out)
            if arr.shape != want:
                raise ValueError(
                    f"`y` for {self.name} must have shape ({lead}{batch}, {n_out}); "
                    f"got {tuple(arr.shape)}."
                )
            if not jnp.issubdtype(arr.dtype, jnp.floating):
                raise TypeError(f"`y` for {self.name} must be floating; got dtype {arr.dtype}.")
            if isinstance(arr, np.ndarray) and not np.all(np.isfinite(arr)):
                raise ValueError("`y` contains NaN/Inf values; clean the targets first.")


def _cross_entropy(output: jax.Array, target: jax.Array) -> jax.Array:
    logp = jax.nn.log_softmax(output, axis=-1)
    return -jnp.take_along_axis(logp, target[:, None].astype(jnp.int32), axis=-1)[:, 0]


def _mse(output: jax.Array, target: jax.Array) -> jax.Array:
    return jnp.mean(jnp.square(output - target), axis=-1)


cross_entropy = Loss(
    "cross_entropy",
    _cross_entropy,
    "classification",
    lambda b, n: jnp.zeros((b,), jnp.int32),
)
"""Softmax cross-entropy with integer class targets ``(B,)``.

Example:
    >>> import jax.numpy as jnp
    >>> from traxon.learn import cross_entropy
    >>> cross_entropy.fn(jnp.zeros((1, 2)), jnp.array([1])).round(4)
    Array([0.6931], dtype=float32)
"""

mse = Loss("mse", _mse, "regression", lambda b, n: jnp.zeros((b, n)))
"""Mean squared error over the outputs, targets ``(B, n_out)``."""

LOSSES = {"cross_entropy": cross_entropy, "mse": mse}


def get_loss(loss: str | Loss | Callable[..., jax.Array]) -> Loss:
    """A :class:`Loss` from a name (``"cross_entropy"``, ``"mse"``), a Loss, or a callable.

    A plain callable ``fn(output, target) -> (B,)`` becomes a custom loss (no accuracy, no
    target checks).

    Example:
        >>> from traxon.learn import get_loss
        >>> get_loss("mse").kind
        'regression'
    """
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"`loss` must be one of {sorted(LOSSES)} or a callable; got {loss!r}.")
        return LOSSES[loss]
    if callable(loss):
        return Loss(getattr(loss, "__name__", "custom"), loss, "custom", None)
    raise TypeError(f"`loss` must be a name, a Loss or a callable; got {loss!r}.")
