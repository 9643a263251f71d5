r"""A dense weight with low-rank updates not yet written into it.

With plain SGD every step, an eligibility-trace rule's update of a dense weight is a sum of
outer products, :math:`\Delta W_t = -\eta_t\, a_t^\top b_t` with ``K`` rows (batch x
decay groups). Writing it into ``W`` every step reads and writes the whole weight twice
(the product, then ``W - η G``). Held as factors for ``R`` steps, the weight is

.. math::
    W = W_0 + P^\top Q, \qquad P = [-\eta_1 a_1; \dots], \; Q = [b_1; \dots]
    \quad (R K \text{ rows})

and the forward product is :math:`z W = z W_0 + (z P^\top) Q` (two thin products); one GEMM
with ``R K`` rows writes the factors into ``W_0`` every ``R`` steps. The sum is the same,
the weight's memory is read once per step and written once per ``R`` steps
(``docs/decisions.md``, "The learner updating every step").

:class:`DeferredWeight` is what :meth:`~traxon.core.Network.forward` accepts in place of a
plain matmul's weight (``op.plain_matmul``: ``u = z W``, no Dale signs); the learner builds
it inside :meth:`~traxon.learn.OnlineLearner.run` and folds it before the run returns, so a
``LearnerState`` never holds one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["DeferredWeight"]


@dataclasses.dataclass(frozen=True)
class DeferredWeight:
    """``base + preᵀ post``, kept as its parts.

    Attributes:
        base: ``(n_in, n_out)`` the weight as last written.
        pre: ``(R, n_in)`` left factors of the updates not yet written (zero rows add
            nothing).
        post: ``(R, n_out)`` their right factors.

    Example:
        >>> import jax.numpy as jnp
        >>> from traxon.core import Dense
        >>> w = DeferredWeight(jnp.eye(2), jnp.array([[1.0, 0.0]]), jnp.array([[0.0, 2.0]]))
        >>> w.value()
        Array([[1., 2.],
               [0., 1.]], dtype=float32)
        >>> w.apply(Dense(), jnp.array([[1.0, 1.0]]))
        Array([[1., 3.]], dtype=float32)
    """

    base: jax.Array
    pre: jax.Array
    post: jax.Array

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.base.shape)

    @property
    def dtype(self) -> Any:
        return self.base.dtype

    def held(self, z: jax.Array) -> jax.Array:
        """``(z preᵀ) post``: what the updates not yet written add to ``z W``."""
        dtype = jnp.result_type(z.dtype, self.base.dtype)
        return (z.astype(dtype) @ self.pre.T.astype(dtype)) @ self.post.astype(dtype)

    def apply(self, op: Any, z: jax.Array) -> jax.Array:
        """``op.apply(base, z) + (z preᵀ) post``: the op's product with the whole weight,
        for an op that is a plain matmul (``op.plain_matmul``)."""
        return op.apply(self.base, z) + self.held(z)

    def value(self) -> jax.Array:
        """The weight with the updates written in: one GEMM with ``R`` rows."""
        dtype = self.base.dtype
        return self.base + (self.pre.astype(dtype).T @ self.post.astype(dtype))


jax.tree_util.register_dataclass(
    DeferredWeight, data_fields=["base", "pre", "post"], meta_fields=[]
)
