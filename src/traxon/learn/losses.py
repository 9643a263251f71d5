"""Per-step losses: ``fn(output (B, n_out), target) -> (B,)`` per-sample values.

A :class:`Loss` also says what a target looks like (to check user data before any work) and
whether accuracy is meaningful (classification).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from traxon._loss import Loss

__all__ = ["LOSSES", "Loss", "cross_entropy", "get_loss", "mse"]


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
