"""Optimisers the learner knows more about than optax tells it.

Any optax ``GradientTransformation`` drives :class:`~traxon.learn.OnlineLearner`. One that
declares its update linear in the gradient, ``u = -η_t g`` with ``η_t`` independent of the
gradient and the weights, lets the learner keep a rule's low-rank updates as factors for a
few steps instead of writing every weight every step (``traxon.core._deferred``): the same
weights, fewer passes over them. :func:`sgd` is that optimiser.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import optax

__all__ = ["SGD", "sgd"]


class SGD(NamedTuple):
    """Plain SGD as an optax ``GradientTransformation`` (``init``, ``update``: optax's own
    ``optax.sgd(learning_rate)``), with ``learning_rate`` kept for the learner."""

    init: Any
    update: Any
    learning_rate: float | optax.Schedule


def sgd(learning_rate: float | optax.Schedule) -> SGD:
    """Plain SGD (no momentum, no weight decay): ``optax.sgd(learning_rate)``, recognisable.

    Under optax it is ``optax.sgd`` exactly: the same state, the same updates. Given to a
    learner that updates every step with ``es_d_rtrl``, the dense weights' updates are held
    as factors and written every few steps (``es_d_rtrl(defer=...)``); the weights are the
    same as ``optax.sgd``'s at every step, to rounding.

    Arguments:
        learning_rate: a float or an optax schedule (a function of the update count).

    Example:
        >>> import jax.numpy as jnp, traxon
        >>> opt = traxon.learn.sgd(0.1)
        >>> updates, _ = opt.update({"w": jnp.ones(2)}, opt.init({"w": jnp.zeros(2)}))
        >>> updates["w"]
        Array([-0.1, -0.1], dtype=float32)
    """
    if not callable(learning_rate):
        learning_rate = float(learning_rate)
        if not 0 <= learning_rate < float("inf"):
            raise ValueError(f"`learning_rate` must be finite and >= 0; got {learning_rate!r}.")
    inner = optax.sgd(learning_rate)
    return SGD(inner.init, inner.update, learning_rate)
