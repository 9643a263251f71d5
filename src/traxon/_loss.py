"""The :class:`Loss` type: a per-step loss with the description of its targets.

It lives below the packages that use it -- ``traxon.learn`` (the learner's losses) and
``traxon.tasks`` (a task's own loss, e.g. region rates) -- so that tasks need not import the
learner. Users import it as ``traxon.learn.Loss``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Loss"]


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
