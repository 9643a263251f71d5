r"""Weight operations: how a projection turns presynaptic signals into postsynaptic input.

Every op is linear in its weight and its output is indexed by postsynaptic neuron
(neuron-aligned). Each weight entry :math:`w_p` reaches exactly one postsynaptic neuron
:math:`\mathrm{post}(p)`. An op provides

* ``init(key, n_in, n_out, dtype)`` and ``weight_shape(n_in, n_out)``;
* ``apply(W, z)`` -- :math:`u = \mathrm{op}(W, z)`, ``z`` of shape ``(B, n_in)``, ``u`` of
  shape ``(B, n_out)``;
* ``pre_factor(W, z)`` -- :math:`\partial u_{\mathrm{post}(p)} / \partial w_p`, broadcastable to
  ``(B, *W.shape)`` (parameter-dimension traces);
* ``to_params(x)`` -- a per-postsynaptic-neuron array ``(B, n_out, ...)`` laid out per weight
  entry, broadcastable to ``(B, *W.shape, ...)``;
* ``outer(W, pre, post)`` -- :math:`\sum_b \partial \langle post_b, \mathrm{op}(W, pre_b)\rangle
  / \partial W`: the batch-summed outer product of a presynaptic and a postsynaptic factor
  (input/output-dimension traces and readout gradients).

Dale's law: give ``sign`` (``+1``, ``-1`` or one sign per presynaptic neuron); the op then
uses :math:`|W|` times the sign, so training cannot flip a synapse's type.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from traxon._checks import check_positive, to_float
from traxon._module import Module, static

__all__ = ["Bias", "Dense", "ElementWise", "FixedInDegree", "FixedOutDegree", "Sparse", "WeightOp"]


class WeightOp(Module):
    """Base class of weight operations (see the module docstring for the interface)."""

    def weight_shape(self, n_in: int, n_out: int) -> tuple[int, ...]:
        raise NotImplementedError

    def init(self, key: jax.Array, n_in: int, n_out: int, dtype: Any) -> jax.Array:
        raise NotImplementedError

    def apply(self, W: jax.Array, z: jax.Array) -> jax.Array:
        raise NotImplementedError

    def pre_factor(self, W: jax.Array, z: jax.Array) -> jax.Array:
        raise NotImplementedError

    def to_params(self, x: jax.Array) -> jax.Array:
        raise NotImplementedError

    def outer(self, W: jax.Array, pre: jax.Array, post: jax.Array) -> jax.Array:
        _, vjp = jax.vjp(lambda w: self.apply(w, pre), W)
        return vjp(post.astype(W.dtype))[0]

    def check_sizes(self, n_in: int, n_out: int, where: str) -> None:
        """Raise if this op cannot connect ``n_in`` to ``n_out`` neurons."""


def _sign_of(sign: Any, n_in: int, where: str) -> Any:
    if sign is None:
        return None
    arr = np.asarray(sign, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full((n_in,), float(arr))
    if arr.shape != (n_in,) or not np.all(np.isin(arr, (-1.0, 1.0))):
        raise ValueError(
            f"`sign` of {where} must be +1, -1 or an array of {n_in} entries in {{+1, -1}}; "
            f"got {sign!r}."
        )
    return arr


def _sign_values(sign: Any, where: str) -> np.ndarray:
    """``sign`` as a 1-D float64 array, checked to hold only +1/-1 (its length is checked later)."""
    try:
        arr = np.atleast_1d(np.asarray(sign, dtype=np.float64))
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.ndim != 1 or arr.size == 0 or not np.all(np.isin(arr, (-1.0, 1.0))):
        raise ValueError(
            f"`sign` of {where} must be +1, -1 or a 1-D array of entries in {{+1, -1}}; "
            f"got {sign!r}."
        )
    return arr


def _gain(module: Module) -> None:
    gain = to_float(module.gain, None, "gain")  # type: ignore[attr-defined]
    check_positive(gain, "gain", allow_zero=True)
    object.__setattr__(module, "gain", gain)


class Dense(WeightOp):
    r"""All-to-all weights ``W`` of shape ``(n_in, n_out)``: :math:`u = z W`.

    Arguments:
        gain: initial weights are :math:`\mathcal{N}(0, \mathrm{gain}^2 / n_{in})`.
        sign: Dale's law (``+1``/``-1``/per-presynaptic array); weights used as ``sign * |W|``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from traxon.core import Dense
        >>> op = Dense(gain=1.0)
        >>> W = op.init(jax.random.PRNGKey(0), 3, 2, jnp.float32)
        >>> op.apply(W, jnp.ones((4, 3))).shape
        (4, 2)
    """

    gain: float = 1.0
    sign: Any = static(default=None)

    def __post_init__(self) -> None:
        _gain(self)
        if self.sign is not None:
            object.__setattr__(self, "sign", tuple(_sign_values(self.sign, "Dense").tolist()))

    def _signs(self, n_in: int, where: str = "Dense") -> Any:
        if self.sign is None:
            return None
        s = self.sign[0] if len(self.sign) == 1 else np.asarray(self.sign)
        return _sign_of(s, n_in, where)

    def check_sizes(self, n_in: int, n_out: int, where: str) -> None:
        self._signs(n_in, where)

    def weight_shape(self, n_in: int, n_out: int) -> tuple[int, ...]:
        return (n_in, n_out)

    def init(self, key: jax.Array, n_in: int, n_out: int, dtype: Any) -> jax.Array:
        w = jax.random.normal(key, (n_in, n_out), dtype) * (self.gain / np.sqrt(n_in))
        return jnp.abs(w) if self.sign is not None else w

    def _effective(self, W: jax.Array) -> jax.Array:
        signs = self._signs(W.shape[0])
        if signs is None:
            return W
        return jnp.abs(W) * jnp.asarray(signs, W.dtype)[:, None]

    def apply(self, W: jax.Array, z: jax.Array) -> jax.Array:
        return z @ self._effective(W)

    def pre_factor(self, W: jax.Array, z: jax.Array) -> jax.Array:
        signs = self._signs(W.shape[0])
        if signs is None:
            return z[:, :, None]
        return z[:, :, None] * (jnp.asarray(signs, W.dtype)[:, None] * jnp.sign(W))[None]

    def to_params(self, x: jax.Array) -> jax.Array:
        return x[:, None]

    def outer(self, W: jax.Array, pre: jax.Array, post: jax.Array) -> jax.Array:
        g = pre.astype(W.dtype).T @ post.astype(W.dtype)
        signs = self._signs(W.shape[0])
        if signs is None:
            return g
        return g * (jnp.asarray(signs, W.dtype)[:, None] * jnp.sign(W))


class ElementWise(WeightOp):
    r"""One weight per neuron, one-to-one: :math:`u_i = w_i z_i` (requires ``n_in == n_out``).

    Example:
        >>> import jax.numpy as jnp
        >>> from traxon.core import ElementWise
        >>> ElementWise().apply(jnp.array([1.0, 2.0]), jnp.ones((1, 2)))
        Array([[1., 2.]], dtype=float32)
    """

    init_value: float = 1.0

    def check_sizes(self, n_in: int, n_out: int, where: str) -> None:
        if n_in != n_out:
            raise ValueError(
                f"ElementWise in {where} connects equal-sized populations; got n_in={n_in}, "
                f"n_out={n_out}."
            )

    def weight_shape(self, n_in: int, n_out: int) -> tuple[int, ...]:
        return (n_out,)

    def init(self, key: jax.Array, n_in: int, n_out: int, dtype: Any) -> jax.Array:
        return jnp.full((n_out,), self.init_value, dtype)

    def apply(self, W: jax.Array, z: jax.Array) -> jax.Array:
        return z * W[None, :]

    def pre_factor(self, W: jax.Array, z: jax.Array) -> jax.Array:
        return z

    def to_params(self, x: jax.Array) -> jax.Array:
        return x

    def outer(self, W: jax.Array, pre: jax.Array, post: jax.Array) -> jax.Array:
        return jnp.sum(pre * post, axis=0).astype(W.dtype)


class Bias(WeightOp):
    r"""A trainable constant input per postsynaptic neuron: :math:`u_i = b_i` (``z`` ignored).

    Example:
        >>> import jax.numpy as jnp
        >>> from traxon.core import Bias
        >>> Bias().apply(jnp.array([0.5, -1.0]), jnp.ones((2, 1)))
        Array([[ 0.5, -1. ],
               [ 0.5, -1. ]], dtype=float32)
    """

    def weight_shape(self, n_in: int, n_out: int) -> tuple[int, ...]:
        return (n_out,)

    def init(self, key: jax.Array, n_in: int, n_out: int, dtype: Any) -> jax.Array:
        return jnp.zeros((n_out,), dtype)

    def apply(self, W: jax.Array, z: jax.Array) -> jax.Array:
        return jnp.broadcast_to(W, (z.shape[0], W.shape[0]))

    def pre_factor(self, W: jax.Array, z: jax.Array) -> jax.Array:
        return jnp.ones((z.shape[0], W.shape[0]), W.dtype)

    def to_params(self, x: jax.Array) -> jax.Array:
        return x

    def outer(self, W: jax.Array, pre: jax.Array, post: jax.Array) -> jax.Array:
        # The presynaptic factor of a bias is its (filtered) constant input, one column.
        return jnp.sum(pre[:, :1] * post, axis=0).astype(W.dtype)


class _Indexed(WeightOp):
    """Shared checks of the index-based sparse formats."""

    def _check_index(self, idx: np.ndarray, bound: int | None, label: str, where: str) -> None:
        """Indices must lie in ``[0, bound)`` (only ``>= 0`` while ``bound`` is unknown)."""
        if idx.size and (idx.min() < 0 or (bound is not None and idx.max() >= bound)):
            allowed = f"[0, {bound})" if bound is not None else "[0, n)"
            raise ValueError(
                f"`{label}` of {where} must hold indices in {allowed}; got values in "
                f"[{idx.min()}, {idx.max()}]."
            )


class FixedInDegree(_Indexed):
    r"""Each postsynaptic neuron ``i`` receives ``K`` inputs ``pre_index[i, :]`` (ELL layout).

    ``W`` has shape ``(n_out, K)``; :math:`u_i = \sum_k W_{ik} z_{\mathrm{pre}[i,k]}`. Cost is
    proportional to the number of synapses, not to ``n_in * n_out``.

    Build one at random with :meth:`random` (``FixedInDegree.random(key, n_in, n_out, K)``).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from traxon.core import FixedInDegree
        >>> op = FixedInDegree.random(jax.random.PRNGKey(0), n_in=10, n_out=4, degree=3)
        >>> W = op.init(jax.random.PRNGKey(1), 10, 4, jnp.float32)
        >>> W.shape, op.apply(W, jnp.ones((2, 10))).shape
        ((4, 3), (2, 4))
    """

    pre_index: Any = static(default=None)
    gain: float = 1.0
    sign: Any = static(default=None)

    @staticmethod
    def random(
        key: jax.Array, n_in: int, n_out: int, degree: int, gain: float = 1.0, sign: Any = None
    ) -> FixedInDegree:
        """``degree`` distinct random presynaptic partners for every postsynaptic neuron."""
        if not 0 < degree <= n_in:
            raise ValueError(f"`degree` must lie in [1, n_in={n_in}]; got {degree}.")
        rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
        idx = np.stack([rng.choice(n_in, degree, replace=False) for _ in range(n_out)])
        return FixedInDegree(pre_index=idx, gain=gain, sign=sign)

    def __post_init__(self) -> None:
        if self.pre_index is None:
            raise ValueError("FixedInDegree needs `pre_index`, an integer array (n_out, K).")
        idx = _unfreeze(self.pre_index)
        if idx.ndim != 2 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(
                f"`pre_index` must be an integer array of shape (n_out, K); got {idx.dtype} "
                f"array of shape {idx.shape}."
            )
        self._check_index(idx, None, "pre_index", "FixedInDegree")
        object.__setattr__(self, "pre_index", _Frozen(idx.astype(np.int32)))
        _gain(self)
        if self.sign is not None:
            sign = _sign_values(_unfreeze(self.sign), "FixedInDegree")
            object.__setattr__(self, "sign", _Frozen(sign))

    @property
    def _idx(self) -> np.ndarray:
        return self.pre_index.array

    def _signs(self, n_in: int, where: str = "FixedInDegree") -> Any:
        if self.sign is None:
            return None
        s = self.sign.array
        return _sign_of(s[0] if s.size == 1 else s, n_in, where)

    def check_sizes(self, n_in: int, n_out: int, where: str) -> None:
        if self._idx.shape[0] != n_out:
            raise ValueError(
                f"`pre_index` of {where} has {self._idx.shape[0]} rows; the target has "
                f"{n_out} neurons."
            )
        self._check_index(self._idx, n_in, "pre_index", where)
        self._signs(n_in, where)

    def weight_shape(self, n_in: int, n_out: int) -> tuple[int, ...]:
        return tuple(self._idx.shape)

    def init(self, key: jax.Array, n_in: int, n_out: int, dtype: Any) -> jax.Array:
        k = self._idx.shape[1]
        w = jax.random.normal(key, self._idx.shape, dtype) * (self.gain / np.sqrt(max(k, 1)))
        return jnp.abs(w) if self.sign is not None else w

    def _effective(self, W: jax.Array) -> jax.Array:
        if self.sign is None:
            return W
        return jnp.abs(W) * jnp.asarray(self._sign_table(), W.dtype)

    def _sign_table(self) -> np.ndarray:
        s = self.sign.array
        return s[0] * np.ones(self._idx.shape) if s.size == 1 else s[self._idx]

    def apply(self, W: jax.Array, z: jax.Array) -> jax.Array:
        return jnp.einsum("bik,ik->bi", z[:, self._idx], self._effective(W))

    def pre_factor(self, W: jax.Array, z: jax.Array) -> jax.Array:
        f = z[:, self._idx]
        if self.sign is None:
            return f
        return f * (jnp.asarray(self._sign_table(), W.dtype) * jnp.sign(W))[None]

    def to_params(self, x: jax.Array) -> jax.Array:
        return x[:, :, None]

    def outer(self, W: jax.Array, pre: jax.Array, post: jax.Array) -> jax.Array:
        g = jnp.einsum("bik,bi->ik", pre[:, self._idx], post).astype(W.dtype)
        if self.sign is None:
            return g
        return g * (jnp.asarray(self._sign_table(), W.dtype) * jnp.sign(W))


class FixedOutDegree(_Indexed):
    r"""Each presynaptic neuron ``j`` projects to ``K`` targets ``post_index[j, :]``.

    ``W`` has shape ``(n_in, K)``; :math:`u_i = \sum_{(j,k): \mathrm{post}[j,k]=i} W_{jk} z_j`.
    With ``max_active`` set, only the rows of presynaptic neurons with a non-zero signal are
    gathered and scattered (event-driven: cost proportional to active spikes); if more than
    ``max_active`` are active in any sample the full scatter is used instead, so no event is
    ever dropped.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from traxon.core import FixedOutDegree
        >>> op = FixedOutDegree.random(jax.random.PRNGKey(0), n_in=10, n_out=6, degree=2)
        >>> W = op.init(jax.random.PRNGKey(1), 10, 6, jnp.float32)
        >>> op.apply(W, jnp.ones((2, 10))).shape
        (2, 6)
    """

    post_index: Any = static(default=None)
    gain: float = 1.0
    max_active: int | None = static(default=None)
    n_out: int | None = static(default=None)

    @staticmethod
    def random(
        key: jax.Array,
        n_in: int,
        n_out: int,
        degree: int,
        gain: float = 1.0,
        max_active: int | None = None,
    ) -> FixedOutDegree:
        """``degree`` distinct random postsynaptic partners for every presynaptic neuron."""
        if not 0 < degree <= n_out:
            raise ValueError(f"`degree` must lie in [1, n_out={n_out}]; got {degree}.")
        rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
        idx = np.stack([rng.choice(n_out, degree, replace=False) for _ in range(n_in)])
        return FixedOutDegree(post_index=idx, gain=gain, max_active=max_active, n_out=n_out)

    def __post_init__(self) -> None:
        if self.post_index is None:
            raise ValueError("FixedOutDegree needs `post_index`, an integer array (n_in, K).")
        idx = _unfreeze(self.post_index)
        if idx.ndim != 2 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(
                f"`post_index` must be an integer array of shape (n_in, K); got {idx.dtype} "
                f"array of shape {idx.shape}."
            )
        self._check_index(idx, self.n_out, "post_index", "FixedOutDegree")
        object.__setattr__(self, "post_index", _Frozen(idx.astype(np.int32)))
        if self.n_out is None:
            object.__setattr__(self, "n_out", int(idx.max()) + 1 if idx.size else 0)
        if self.max_active is not None and self.max_active < 1:
            raise ValueError(f"`max_active` must be a positive integer; got {self.max_active}.")
        _gain(self)

    @property
    def _idx(self) -> np.ndarray:
        return self.post_index.array

    def check_sizes(self, n_in: int, n_out: int, where: str) -> None:
        if self._idx.shape[0] != n_in:
            raise ValueError(
                f"`post_index` of {where} has {self._idx.shape[0]} rows; the source has "
                f"{n_in} neurons."
            )
        self._check_index(self._idx, n_out, "post_index", where)
        if self.n_out is not None and self.n_out > n_out:
            raise ValueError(f"`n_out` of {where} is {self.n_out}; the target has {n_out}.")
        object.__setattr__(self, "n_out", n_out)

    def weight_shape(self, n_in: int, n_out: int) -> tuple[int, ...]:
        return tuple(self._idx.shape)

    def init(self, key: jax.Array, n_in: int, n_out: int, dtype: Any) -> jax.Array:
        fan_in = max(self._idx.size / max(n_out, 1), 1.0)
        return jax.random.normal(key, self._idx.shape, dtype) * (self.gain / np.sqrt(fan_in))

    def _scatter_all(self, W: jax.Array, z: jax.Array) -> jax.Array:
        contrib = z[:, :, None] * W[None]
        out = jnp.zeros((z.shape[0], self.n_out), contrib.dtype)
        return out.at[:, self._idx].add(contrib)

    def _scatter_active(self, W: jax.Array, z: jax.Array) -> jax.Array:
        cap = int(self.max_active)  # type: ignore[arg-type]
        n_in = z.shape[1]
        post_index = jnp.asarray(self._idx)  # a numpy array cannot be indexed by a tracer

        def one(zb: jax.Array) -> jax.Array:
            (rows,) = jnp.nonzero(zb, size=cap, fill_value=n_in)
            valid = rows < n_in
            safe = jnp.where(valid, rows, 0)
            vals = jnp.where(valid, zb[safe], 0.0)[:, None] * W[safe]
            return jnp.zeros((self.n_out,), vals.dtype).at[post_index[safe]].add(vals)

        return jax.vmap(one)(z)

    def apply(self, W: jax.Array, z: jax.Array) -> jax.Array:
        if self.max_active is None or self.max_active >= z.shape[1]:
            return self._scatter_all(W, z)
        overflow = jnp.any(jnp.sum(z != 0, axis=1) > self.max_active)
        return jax.lax.cond(overflow, self._scatter_all, self._scatter_active, W, z)

    def pre_factor(self, W: jax.Array, z: jax.Array) -> jax.Array:
        return z[:, :, None]

    def to_params(self, x: jax.Array) -> jax.Array:
        return x[:, self._idx]

    def outer(self, W: jax.Array, pre: jax.Array, post: jax.Array) -> jax.Array:
        return jnp.einsum("bj,bjk->jk", pre, post[:, self._idx]).astype(W.dtype)


class Sparse(_Indexed):
    r"""Arbitrary sparse connectivity from an edge list (COO): weight ``k`` connects
    ``pre[k] -> post[k]``; ``W`` has shape ``(nnz,)``.

    :math:`u_i = \sum_{k: \mathrm{post}[k] = i} W_k z_{\mathrm{pre}[k]}`. Build one with
    :meth:`from_edges`; gradients live on the non-zeros only.

    Example:
        >>> import jax.numpy as jnp
        >>> from traxon.core import Sparse
        >>> op = Sparse.from_edges(pre=[0, 1, 1], post=[1, 0, 1], n_out=2)
        >>> op.apply(jnp.array([1.0, 2.0, 3.0]), jnp.array([[1.0, 1.0]]))
        Array([[2., 4.]], dtype=float32)
    """

    pre: Any = static(default=None)
    post: Any = static(default=None)
    n_out: int = static(default=0)
    gain: float = 1.0

    @staticmethod
    def from_edges(pre: Any, post: Any, n_out: int, gain: float = 1.0) -> Sparse:
        """Connectivity from two equal-length integer arrays of presynaptic/postsynaptic ids."""
        return Sparse(pre=pre, post=post, n_out=n_out, gain=gain)

    def __post_init__(self) -> None:
        pre, post = _unfreeze(self.pre), _unfreeze(self.post)
        if pre.ndim != 1 or pre.shape != post.shape:
            raise ValueError(
                f"`pre` and `post` must be 1-D arrays of equal length; got shapes {pre.shape} "
                f"and {post.shape}."
            )
        for label, idx in (("pre", pre), ("post", post)):
            if idx.size and not np.issubdtype(idx.dtype, np.integer):
                raise ValueError(f"`{label}` must be an integer array; got dtype {idx.dtype}.")
        if not isinstance(self.n_out, (int, np.integer)) or self.n_out < 1:
            raise ValueError(f"`n_out` must be a positive integer; got {self.n_out!r}.")
        self._check_index(pre, None, "pre", "Sparse")
        self._check_index(post, int(self.n_out), "post", "Sparse")
        object.__setattr__(self, "pre", _Frozen(pre.astype(np.int32)))
        object.__setattr__(self, "post", _Frozen(post.astype(np.int32)))
        _gain(self)

    def check_sizes(self, n_in: int, n_out: int, where: str) -> None:
        self._check_index(self.pre.array, n_in, "pre", where)
        self._check_index(self.post.array, n_out, "post", where)
        if self.n_out != n_out:
            raise ValueError(f"`n_out` of {where} is {self.n_out}; the target has {n_out}.")

    def weight_shape(self, n_in: int, n_out: int) -> tuple[int, ...]:
        return (self.pre.array.size,)

    def init(self, key: jax.Array, n_in: int, n_out: int, dtype: Any) -> jax.Array:
        fan_in = max(self.pre.array.size / max(n_out, 1), 1.0)
        return jax.random.normal(key, (self.pre.array.size,), dtype) * (self.gain / np.sqrt(fan_in))

    def apply(self, W: jax.Array, z: jax.Array) -> jax.Array:
        vals = z[:, self.pre.array] * W[None, :]
        return jnp.zeros((z.shape[0], self.n_out), vals.dtype).at[:, self.post.array].add(vals)

    def pre_factor(self, W: jax.Array, z: jax.Array) -> jax.Array:
        return z[:, self.pre.array]

    def to_params(self, x: jax.Array) -> jax.Array:
        return x[:, self.post.array]

    def outer(self, W: jax.Array, pre: jax.Array, post: jax.Array) -> jax.Array:
        return jnp.sum(pre[:, self.pre.array] * post[:, self.post.array], axis=0).astype(W.dtype)


def _unfreeze(x: Any) -> np.ndarray:
    return x.array if isinstance(x, _Frozen) else np.asarray(x)


class _Frozen:
    """A read-only numpy array usable as static pytree metadata (hashed by identity)."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray) -> None:
        array = np.array(array)
        array.setflags(write=False)
        self.array = array

    def __repr__(self) -> str:
        return f"array(shape={self.array.shape}, dtype={self.array.dtype})"
