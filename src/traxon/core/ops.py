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
  (input/output-dimension traces and readout gradients);
* ``outer_sq_norm(W, pre, post)`` -- optional: the squared norm of that outer product from the
  factors alone (``Dense``: two Gram matrices), or ``None``.

Dale's law: give ``sign`` (``+1``, ``-1`` or one sign per presynaptic neuron); the op then
uses :math:`|W|` times the sign, so training cannot flip a synapse's type.

**Connectivity is data.** The index arrays of the sparse ops (``pre_index``, ``post_index``,
``indptr``, ``post``, ``base``, ``groups``, ``sign``, ``mask``) are kept as read-only NumPy
arrays, listed by :meth:`WeightOp.index_arrays`. A jitted function that receives them as
arguments makes the ops read them there: inside :func:`bind_indices` every op method reads
:func:`index_data` -- the bound (traced) array -- instead of the NumPy constant, so the
compiled program holds no copy of the connectivity and runs any connectome of the same
shapes. Outside a binding the ops read the NumPy arrays, as before.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from traxon._checks import check_positive, check_positive_int, to_float
from traxon._module import Module, static

__all__ = [
    "CSR",
    "Bias",
    "Dense",
    "ElementWise",
    "FixedInDegree",
    "FixedOutDegree",
    "Sparse",
    "WeightOp",
    "auto_max_active",
    "bind_indices",
    "index_arrays",
    "index_data",
    "index_values",
]


def _gram_sq_norm(W: jax.Array, pre: jax.Array, post: jax.Array) -> jax.Array:
    """``||preᵀ post||²_F = Σ (pre preᵀ) ⊙ (post postᵀ)`` in ``W``'s dtype, from the two
    Gram matrices of the rows (no pass over an ``n_in x n_out`` matrix)."""
    a, b = pre.astype(W.dtype), post.astype(W.dtype)
    # A Frobenius product of two positive semi-definite matrices is >= 0; rounding may
    # not be (NaN and Inf pass through `maximum`).
    return jnp.maximum(jnp.sum((a @ a.T) * (b @ b.T)), 0.0)


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

    def outer_sq_norm(self, W: jax.Array, pre: jax.Array, post: jax.Array) -> jax.Array | None:
        """``sum(outer(W, pre, post) ** 2)`` computed from the factors without forming the
        outer product, or ``None`` when this op has no such shortcut (the caller then sums
        the squares of the outer product it formed). A learner updating every step reads
        its gradient norm from here instead of making one more pass over every weight."""
        return None

    def stacks_rows(self) -> bool:
        """Whether ``outer(W, pre, post)`` sums one term per row of ``pre``/``post``, for
        any number of rows: then several pairs' outer products are one outer product of
        their rows stacked (one GEMM for a dense weight). The built-in ops do; an op that
        does not say so gets one outer product per pair."""
        return False

    def plain_matmul(self, n_in: int) -> bool:
        """Whether ``outer(W, pre, post)`` is exactly ``preᵀ post`` (a dense weight applied
        as it is, ``u = z W``): the tracers may then defer it as low-rank factors and take
        its norm from :meth:`outer_sq_norm`."""
        return False

    def check_sizes(self, n_in: int, n_out: int, where: str) -> None:
        """Raise if this op cannot connect ``n_in`` to ``n_out`` neurons."""

    def with_events(self, n_in: int, n_out: int) -> WeightOp:
        """This op with its event-driven forward turned on at the automatic capacity
        (:func:`auto_max_active`), as a network uses it for a projection that reads spikes
        (``event="auto"``). Itself when the op has no event-driven path, or when its
        ``max_active`` is already set (the caller's choice is kept)."""
        return self

    def sized(self, n_in: int, n_out: int) -> WeightOp:
        """This op as used between ``n_in`` and ``n_out`` neurons (after :meth:`check_sizes`):
        itself, or a copy that knows a size it could not infer. Never mutates ``self``."""
        return self

    def index_arrays(self) -> tuple[_Frozen, ...]:
        """The read-only arrays this op's methods read through :func:`index_data` (its
        connectivity): every ``_Frozen`` field, then arrays derived from them. A jitted
        function can receive their values as arguments (see :func:`bind_indices`)."""
        fields = getattr(self, "__dataclass_fields__", {})
        return tuple(v for v in (getattr(self, k) for k in fields) if isinstance(v, _Frozen))


def _edge_list(pre: Any, post: Any, integer: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``pre`` and ``post`` as NumPy arrays, checked to be 1-D, of equal length and (with
    ``integer``) of an integer dtype; errors name the array."""
    pre_a, post_a = np.asarray(pre), np.asarray(post)
    if pre_a.ndim != 1 or pre_a.shape != post_a.shape:
        raise ValueError(
            f"`pre` and `post` must be 1-D arrays of equal length; got shapes {pre_a.shape} "
            f"and {post_a.shape}."
        )
    if integer:
        for label, idx in (("pre", pre_a), ("post", post_a)):
            if idx.size and not np.issubdtype(idx.dtype, np.integer):
                raise ValueError(f"`{label}` must be an integer array; got dtype {idx.dtype}.")
    return pre_a, post_a


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


#: Capacity of the automatic event-driven path, as a fraction of the presynaptic neurons
#: (``max_active = ceil(fraction * n_in)``), per op type; ops not listed keep their
#: all-rows path. Measured with ``benchmarks/event_forward.py`` (``docs/benchmarks.md``,
#: ``docs/decisions.md``): CSR's per-sample gather was slower than its all-entries scatter
#: at every firing rate measured on the CPU, so it is left to an explicit ``max_active``.
EVENT_FRACTION = {"Dense": 0.25, "FixedOutDegree": 0.1}

#: Dense gathers only for at least this many postsynaptic neurons: finding the active rows
#: reads the whole signal (``B * n_in``), which must stay small beside the product it saves
#: (``B * n_in * n_out``); a narrow readout is left as a plain product.
EVENT_MIN_OUT = 64


def auto_max_active(op: WeightOp, n_in: int, n_out: int) -> int | None:
    """The ``max_active`` that ``event="auto"`` gives ``op`` between ``n_in`` presynaptic
    and ``n_out`` postsynaptic neurons: ``ceil(EVENT_FRACTION[type] * n_in)``, or ``None``
    (no event-driven path) when the op type is not listed, when a ``Dense`` op has fewer
    than ``EVENT_MIN_OUT`` outputs, or when the capacity would cover every neuron.

    Dense gathers the rows active in *any* sample of the batch (a quarter of the capacity
    when few are), FixedOutDegree those of each sample; above the capacity the op uses all
    rows, which the measurements show to be the faster choice there.

    Example:
        >>> from traxon.core import Dense
        >>> from traxon.core.ops import auto_max_active
        >>> auto_max_active(Dense(), 1000, 1000), auto_max_active(Dense(), 1000, 10)
        (250, None)
    """
    fraction = EVENT_FRACTION.get(type(op).__name__)
    if fraction is None or (isinstance(op, Dense) and n_out < EVENT_MIN_OUT):
        return None
    k = max(1, math.ceil(fraction * n_in))
    return k if k < n_in else None


def _with_events(op: Any, n_in: int, n_out: int) -> Any:
    if op.max_active is not None:
        return op
    k = auto_max_active(op, n_in, n_out)
    return op if k is None else op.replace(max_active=k)


def _event_apply(forward: Any, full: Any, W: jax.Array, z: jax.Array) -> jax.Array:
    """``forward(W, z)`` -- an event-driven op that reads only the rows of active presynaptic
    neurons -- with exact derivatives: with respect to ``W`` through ``forward`` itself
    (linear in ``W`` once ``z`` fixes the active rows, so event-driven too), with respect to
    ``z`` through ``full``, the all-rows op (a silent neuron's signal still has a
    derivative: its surrogate gradient is not zero)."""
    from jax.custom_derivatives import SymbolicZero

    @jax.custom_jvp
    def run(W: jax.Array, z: jax.Array) -> jax.Array:
        return forward(W, z)

    def run_jvp(primals: tuple, tangents: tuple) -> tuple[jax.Array, jax.Array]:
        W, z = primals
        dW, dz = tangents
        out = forward(W, z)
        tangent = jnp.zeros_like(out)
        if not isinstance(dW, SymbolicZero):
            tangent = tangent + jax.jvp(lambda w: forward(w, z), (W,), (dW,))[1]
        if not isinstance(dz, SymbolicZero):
            tangent = tangent + full(W, dz)
        return out, tangent

    run.defjvp(run_jvp, symbolic_zeros=True)
    return run(W, z)


class Dense(WeightOp):
    r"""All-to-all weights ``W`` of shape ``(n_in, n_out)``: :math:`u = z W`.

    Arguments:
        gain: initial weights are :math:`\mathcal{N}(0, \mathrm{gain}^2 / n_{in})`.
        sign: Dale's law (``+1``/``-1``/per-presynaptic array); weights used as ``sign * |W|``.
        max_active: event-driven forward: the rows of ``W`` of the presynaptic neurons with a
            non-zero signal in any sample of the batch (at most ``max_active`` of them) are
            gathered and multiplied, instead of all ``n_in`` rows (a batch with at most
            ``max_active // 4`` active rows gathers only that many, when that is 8 or more);
            when more are active the full product is used, so no event is lost. ``None``
            (the default here) always uses the full product; a :class:`~traxon.core.Network`
            sets it for projections that read spikes (``event="auto"``, see
            :func:`~traxon.core.ops.auto_max_active`).

    Derivatives are exact on either path: with respect to ``W`` they are event-driven too
    (only gathered rows get a gradient -- the others' is zero); with respect to the signal
    they use every row (a silent neuron's surrogate gradient is not zero).

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
    max_active: int | None = static(default=None)

    def __post_init__(self) -> None:
        _gain(self)
        if self.sign is not None:
            object.__setattr__(self, "sign", tuple(_sign_values(self.sign, "Dense").tolist()))
        if self.max_active is not None:
            object.__setattr__(
                self, "max_active", check_positive_int(self.max_active, "max_active")
            )

    def with_events(self, n_in: int, n_out: int) -> WeightOp:
        return _with_events(self, n_in, n_out)

    def _signs(self, n_in: int, where: str = "Dense") -> Any:
        if self.sign is None:
            return None
        s = self.sign[0] if len(self.sign) == 1 else np.asarray(self.sign)
        return _sign_of(s, n_in, where)

    def plain_matmul(self, n_in: int) -> bool:
        return self._signs(n_in) is None

    def check_sizes(self, n_in: int, n_out: int, where: str) -> None:
        self._signs(n_in, where)

    def weight_shape(self, n_in: int, n_out: int) -> tuple[int, ...]:
        return (n_in, n_out)

    def init(self, key: jax.Array, n_in: int, n_out: int, dtype: Any) -> jax.Array:
        w = jax.random.normal(key, (n_in, n_out), dtype) * (self.gain / math.sqrt(n_in))
        return jnp.abs(w) if self.sign is not None else w

    def _effective(self, W: jax.Array) -> jax.Array:
        signs = self._signs(W.shape[0])
        if signs is None:
            return W
        return jnp.abs(W) * jnp.asarray(signs, W.dtype)[:, None]

    def _full(self, W: jax.Array, z: jax.Array) -> jax.Array:
        return z @ self._effective(W)

    def _capacities(self) -> tuple[int, ...]:
        """Gather sizes, smallest first: ``max_active // 4`` (when at least 8) and
        ``max_active``; a batch uses the smallest that holds its active rows."""
        k = int(self.max_active)  # type: ignore[arg-type]
        return (k // 4, k) if k // 4 >= 8 else (k,)

    def _rows(self, W: jax.Array, z: jax.Array, cap: int | None = None) -> jax.Array:
        """``z @ W`` over the rows active in any sample (at most ``cap`` of them, by default
        ``max_active``)."""
        cap, n_in = int(self.max_active if cap is None else cap), W.shape[0]  # type: ignore[arg-type]
        (rows,) = jnp.nonzero(jnp.any(z != 0, axis=0), size=cap, fill_value=n_in)
        valid = rows < n_in
        rows = jnp.where(valid, rows, 0)
        w = W[rows]
        signs = self._signs(n_in)
        if signs is not None:
            w = jnp.abs(w) * jnp.asarray(signs, W.dtype)[rows][:, None]
        # Padding slots repeat row 0 with a zero signal: they add nothing, value or gradient.
        return jnp.where(valid[None, :], z[:, rows], 0.0) @ w

    def _forward(self, W: jax.Array, z: jax.Array) -> jax.Array:
        if self.max_active is None or self.max_active >= W.shape[0]:
            return self._full(W, z)
        caps = self._capacities()
        count = jnp.sum(jnp.any(z != 0, axis=0))
        index = sum((count > c).astype(jnp.int32) for c in caps)  # len(caps): too many
        branches = [functools.partial(self._rows, cap=c) for c in caps] + [self._full]
        return jax.lax.switch(index, branches, W, z)

    def apply(self, W: jax.Array, z: jax.Array) -> jax.Array:
        if self.max_active is None or self.max_active >= W.shape[0]:
            return self._full(W, z)
        return _event_apply(self._forward, self._full, W, z)

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

    def outer_sq_norm(self, W: jax.Array, pre: jax.Array, post: jax.Array) -> jax.Array | None:
        """``||preᵀ post||²_F = Σ (pre preᵀ) ⊙ (post postᵀ)``: two ``K × K`` Gram matrices of
        the ``K`` batch rows, ``O(K² (n_in + n_out))`` instead of a pass over ``W``. ``None``
        with Dale's signs (the outer product is masked by ``sign(W)`` entry by entry).

        Example:
            >>> import jax.numpy as jnp
            >>> pre, post = jnp.array([[1.0, 2.0]]), jnp.array([[3.0, 0.0, 4.0]])
            >>> float(Dense().outer_sq_norm(jnp.zeros((2, 3)), pre, post))  # 5 * 25
            125.0
        """
        if self._signs(W.shape[0]) is not None:
            return None
        return _gram_sq_norm(W, pre, post)


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

    def _freeze_rows(self, label: str, rows: str, bound: int | None, where: str) -> np.ndarray:
        """Check field ``label`` (an integer array, one row of ``K`` partners per ``rows``
        neuron, indices below ``bound``), store it as a gather index and return it."""
        value = getattr(self, label)
        if value is None:
            raise ValueError(f"{where} needs `{label}`, an integer array ({rows}, K).")
        idx = _unfreeze(value)
        if idx.ndim != 2 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(
                f"`{label}` must be an integer array of shape ({rows}, K); got {idx.dtype} "
                f"array of shape {idx.shape}."
            )
        self._check_index(idx, bound, label, where)
        object.__setattr__(self, label, _Frozen(idx.astype(np.int32), gather_index=True))
        return idx


def _random_partners(key: jax.Array, n_rows: int, n_choices: int, degree: int, of: str) -> Any:
    """``(n_rows, degree)`` distinct random indices below ``n_choices`` per row, drawn from
    ``key`` (``of`` names ``n_choices`` in the error)."""
    if not 0 < degree <= n_choices:
        raise ValueError(f"`degree` must lie in [1, {of}={n_choices}]; got {degree}.")
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
    return np.stack([rng.choice(n_choices, degree, replace=False) for _ in range(n_rows)])


class FixedInDegree(_Indexed):
    r"""Each postsynaptic neuron ``i`` receives ``K`` inputs ``pre_index[i, :]`` (ELL layout).

    ``W`` has shape ``(n_out, K)``; :math:`u_i = \sum_k W_{ik} z_{\mathrm{pre}[i,k]}`. Cost is
    proportional to the number of synapses, not to ``n_in * n_out``.

    Build one at random with :meth:`random` (``FixedInDegree.random(key, n_in, n_out, K)``),
    or from an edge list with :meth:`from_edges`, which pads every row to the largest
    in-degree with masked entries (``mask[i, k]`` false): their weight is held at zero and
    gets no gradient. Padding costs ``n_out * max in-degree`` entries, so heavy-tailed
    in-degrees are better served by :class:`CSR`.

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
    mask: Any = static(default=None)

    @staticmethod
    def edge_slots(post: Any, n_out: int) -> tuple[np.ndarray, np.ndarray]:
        """``(row, column)`` of every edge in the layout :meth:`from_edges` builds.

        Edges keep their given order within each postsynaptic row, so
        ``W0[row, col] = values`` lays per-edge values out like the op's weights.

        Example:
            >>> from traxon.core import FixedInDegree
            >>> row, col = FixedInDegree.edge_slots([1, 0, 1], n_out=2)
            >>> row.tolist(), col.tolist()
            ([1, 0, 1], [0, 0, 1])
        """
        post_a = np.asarray(post)
        if post_a.ndim != 1 or (post_a.size and not np.issubdtype(post_a.dtype, np.integer)):
            raise ValueError(
                f"`post` must be a 1-D integer array; got {post_a.dtype} array of shape "
                f"{post_a.shape}."
            )
        _Indexed()._check_index(post_a, int(n_out), "post", "FixedInDegree.from_edges")
        order = np.argsort(post_a, kind="stable")
        counts = np.bincount(post_a, minlength=int(n_out))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        col = np.empty(post_a.size, np.int64)
        col[order] = np.arange(post_a.size) - np.repeat(starts, counts)
        return post_a.astype(np.int64), col

    @staticmethod
    def from_edges(
        pre: Any, post: Any, n_in: int, n_out: int, gain: float = 1.0, sign: Any = None
    ) -> FixedInDegree:
        """ELL layout of an edge list: row ``i`` holds the presynaptic partners of neuron ``i``,
        padded to the largest in-degree with masked zero-weight entries.

        Example:
            >>> import jax.numpy as jnp
            >>> from traxon.core import FixedInDegree
            >>> op = FixedInDegree.from_edges(pre=[0, 2, 1], post=[1, 1, 0], n_in=3, n_out=2)
            >>> op.pre_index.array.tolist(), op.mask.array.tolist()
            ([[1, 0], [0, 2]], [[True, False], [True, True]])
            >>> op.apply(jnp.ones((2, 2)), jnp.array([[1.0, 2.0, 3.0]]))
            Array([[2., 4.]], dtype=float32)
        """
        pre_a, post_a = _edge_list(pre, post)
        _Indexed()._check_index(pre_a, int(n_in), "pre", "FixedInDegree.from_edges")
        row, col = FixedInDegree.edge_slots(post_a, n_out)
        k = max(int(col.max()) + 1 if col.size else 1, 1)
        idx = np.zeros((int(n_out), k), np.int32)
        mask = np.zeros((int(n_out), k), bool)
        idx[row, col] = pre_a
        mask[row, col] = True
        return FixedInDegree(pre_index=idx, gain=gain, sign=sign, mask=mask)

    @staticmethod
    def random(
        key: jax.Array, n_in: int, n_out: int, degree: int, gain: float = 1.0, sign: Any = None
    ) -> FixedInDegree:
        """``degree`` distinct random presynaptic partners for every postsynaptic neuron."""
        idx = _random_partners(key, n_out, n_in, degree, "n_in")
        return FixedInDegree(pre_index=idx, gain=gain, sign=sign)

    def __post_init__(self) -> None:
        idx = self._freeze_rows("pre_index", "n_out", None, "FixedInDegree")
        _gain(self)
        if self.sign is not None:
            sign = _sign_values(_unfreeze(self.sign), "FixedInDegree")
            object.__setattr__(self, "sign", _Frozen(sign))
        if self.mask is not None:
            mask = _unfreeze(self.mask)
            if mask.shape != idx.shape or mask.dtype != np.bool_:
                raise ValueError(
                    f"`mask` must be a boolean array of the shape of `pre_index` {idx.shape}; "
                    f"got {mask.dtype} array of shape {mask.shape}."
                )
            object.__setattr__(self, "mask", _Frozen(mask))

    @property
    def _idx(self) -> np.ndarray:
        return self.pre_index.array

    def index_arrays(self) -> tuple[_Frozen, ...]:
        table = (self._sign_frozen(),) if self.sign is not None else ()
        return (*super().index_arrays(), *table)

    def _sign_frozen(self) -> _Frozen:
        """The sign of every entry, ``(n_out, K)``, derived once from ``sign`` and the indices."""
        cached = self.__dict__.get("_sign_table_cache")
        if cached is None:
            s = self.sign.array
            cached = _Frozen(s[0] * np.ones(self._idx.shape) if s.size == 1 else s[self._idx])
            object.__setattr__(self, "_sign_table_cache", cached)
        return cached

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
        w = jax.random.normal(key, self._idx.shape, dtype) * (self.gain / math.sqrt(max(k, 1)))
        return self._masked(jnp.abs(w) if self.sign is not None else w)

    def _masked(self, x: jax.Array) -> jax.Array:
        """``x`` with the padded entries (``mask`` false) set to zero."""
        if self.mask is None:
            return x
        data = index_data(self.mask)
        mask = data.reshape((1,) * (x.ndim - 2) + self.mask.array.shape)
        return jnp.where(jnp.asarray(mask), x, jnp.zeros((), x.dtype))

    def _effective(self, W: jax.Array) -> jax.Array:
        if self.sign is None:
            return self._masked(W)
        return self._masked(jnp.abs(W) * self._sign_table(W.dtype))

    def _sign_table(self, dtype: Any) -> jax.Array:
        return jnp.asarray(index_data(self._sign_frozen()), dtype)

    def apply(self, W: jax.Array, z: jax.Array) -> jax.Array:
        return jnp.einsum("bik,ik->bi", _cols(z, self.pre_index), self._effective(W))

    def pre_factor(self, W: jax.Array, z: jax.Array) -> jax.Array:
        f = _cols(z, self.pre_index)
        if self.sign is not None:
            f = f * (self._sign_table(W.dtype) * jnp.sign(W))[None]
        return self._masked(f)

    def to_params(self, x: jax.Array) -> jax.Array:
        return x[:, :, None]

    def outer(self, W: jax.Array, pre: jax.Array, post: jax.Array) -> jax.Array:
        g = jnp.einsum("bik,bi->ik", _cols(pre, self.pre_index), post).astype(W.dtype)
        if self.sign is not None:
            g = g * (self._sign_table(W.dtype) * jnp.sign(W))
        return self._masked(g)


class FixedOutDegree(_Indexed):
    r"""Each presynaptic neuron ``j`` projects to ``K`` targets ``post_index[j, :]``.

    ``W`` has shape ``(n_in, K)``; :math:`u_i = \sum_{(j,k): \mathrm{post}[j,k]=i} W_{jk} z_j`.
    With ``max_active`` set, only the rows of presynaptic neurons with a non-zero signal are
    gathered and scattered (event-driven: cost proportional to active spikes); if more than
    ``max_active`` are active in any sample the full scatter is used instead, so no event is
    ever dropped. Derivatives are exact: with respect to ``W`` they are event-driven too; with
    respect to the signal they use every row (a silent neuron's surrogate gradient is not
    zero). A :class:`~traxon.core.Network` sets ``max_active`` for projections that read
    spikes (``event="auto"``, see :func:`~traxon.core.ops.auto_max_active`).

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
        idx = _random_partners(key, n_in, n_out, degree, "n_out")
        return FixedOutDegree(post_index=idx, gain=gain, max_active=max_active, n_out=n_out)

    def __post_init__(self) -> None:
        idx = self._freeze_rows("post_index", "n_in", self.n_out, "FixedOutDegree")
        if self.n_out is None:
            object.__setattr__(self, "n_out", int(idx.max()) + 1 if idx.size else 0)
        if self.max_active is not None:
            object.__setattr__(
                self, "max_active", check_positive_int(self.max_active, "max_active")
            )
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

    def with_events(self, n_in: int, n_out: int) -> WeightOp:
        return _with_events(self, n_in, n_out)

    def sized(self, n_in: int, n_out: int) -> FixedOutDegree:
        # n_out inferred from the largest index may be smaller than the target population.
        return self if self.n_out == n_out else self.replace(n_out=n_out)

    def weight_shape(self, n_in: int, n_out: int) -> tuple[int, ...]:
        return tuple(self._idx.shape)

    def init(self, key: jax.Array, n_in: int, n_out: int, dtype: Any) -> jax.Array:
        fan_in = max(self._idx.size / max(n_out, 1), 1.0)
        return jax.random.normal(key, self._idx.shape, dtype) * (self.gain / math.sqrt(fan_in))

    def _scatter_all(self, W: jax.Array, z: jax.Array) -> jax.Array:
        contrib = z[:, :, None] * W[None]
        out = jnp.zeros((z.shape[0], self.n_out), contrib.dtype)
        return _add_cols(out, self.post_index, contrib)

    def _scatter_active(self, W: jax.Array, z: jax.Array) -> jax.Array:
        cap = int(self.max_active)  # type: ignore[arg-type]
        n_in = z.shape[1]
        # a numpy array cannot be indexed by a tracer
        post_index = jnp.asarray(index_data(self.post_index))

        def one(zb: jax.Array) -> jax.Array:
            (rows,) = jnp.nonzero(zb, size=cap, fill_value=n_in)
            valid = rows < n_in
            safe = jnp.where(valid, rows, 0)
            vals = jnp.where(valid, zb[safe], 0.0)[:, None] * W[safe]
            return jnp.zeros((self.n_out,), vals.dtype).at[post_index[safe]].add(vals)

        return jax.vmap(one)(z)

    def _forward(self, W: jax.Array, z: jax.Array) -> jax.Array:
        overflow = jnp.any(jnp.sum(z != 0, axis=1) > int(self.max_active))  # type: ignore[arg-type]
        return jax.lax.cond(overflow, self._scatter_all, self._scatter_active, W, z)

    def apply(self, W: jax.Array, z: jax.Array) -> jax.Array:
        if self.max_active is None or self.max_active >= z.shape[1]:
            return self._scatter_all(W, z)
        return _event_apply(self._forward, self._scatter_all, W, z)

    def pre_factor(self, W: jax.Array, z: jax.Array) -> jax.Array:
        return z[:, :, None]

    def to_params(self, x: jax.Array) -> jax.Array:
        return _cols(x, self.post_index)

    def outer(self, W: jax.Array, pre: jax.Array, post: jax.Array) -> jax.Array:
        idx = index_data(self.post_index)
        return jnp.einsum("bj,bjk->jk", pre, post[:, idx]).astype(W.dtype)


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
        pre, post = _edge_list(_unfreeze(self.pre), _unfreeze(self.post))
        check_positive_int(self.n_out, "n_out")
        self._check_index(pre, None, "pre", "Sparse")
        self._check_index(post, int(self.n_out), "post", "Sparse")
        object.__setattr__(self, "pre", _Frozen(pre.astype(np.int32), gather_index=True))
        object.__setattr__(self, "post", _Frozen(post.astype(np.int32), gather_index=True))
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
        return jax.random.normal(key, (self.pre.array.size,), dtype) * (
            self.gain / math.sqrt(fan_in)
        )

    def apply(self, W: jax.Array, z: jax.Array) -> jax.Array:
        vals = _cols(z, self.pre) * W[None, :]
        out = jnp.zeros((z.shape[0], self.n_out), vals.dtype)
        return _add_cols(out, self.post, vals)

    def pre_factor(self, W: jax.Array, z: jax.Array) -> jax.Array:
        return _cols(z, self.pre)

    def to_params(self, x: jax.Array) -> jax.Array:
        return _cols(x, self.post)

    def outer(self, W: jax.Array, pre: jax.Array, post: jax.Array) -> jax.Array:
        g = _cols(pre, self.pre) * _cols(post, self.post)
        return jnp.sum(g, axis=0).astype(W.dtype)


def _unfreeze(x: Any) -> np.ndarray:
    return x.array if isinstance(x, _Frozen) else np.asarray(x)


class _Frozen:
    """A read-only numpy array usable as static pytree metadata (hashed by identity).

    ``gather_index``: the array only ever indexes (gathers or scatters), and holds no
    negative values; passed as data it is unsigned, so that JAX adds no pass that wraps
    negative indices."""

    __slots__ = ("array", "gather_index")

    def __init__(self, array: np.ndarray, gather_index: bool = False) -> None:
        array = np.array(array)
        array.setflags(write=False)
        self.array = array
        self.gather_index = gather_index

    def __repr__(self) -> str:
        return f"array(shape={self.array.shape}, dtype={self.array.dtype})"


# ------------------------------------------------------------------------------------------
# Connectivity as data: index arrays bound to (traced) values while a function is traced.

_BOUND: contextvars.ContextVar[dict[int, tuple[_Frozen, Any]] | None] = contextvars.ContextVar(
    "traxon_bound_indices", default=None
)


def index_data(frozen: _Frozen) -> Any:
    """The value an op reads for one of its index arrays: the array bound to it by
    :func:`bind_indices` (a jitted function's argument), else the NumPy array itself.

    Example:
        >>> import numpy as np
        >>> from traxon.core import CSR
        >>> from traxon.core.ops import bind_indices, index_data
        >>> op = CSR.from_edges([0, 1], [1, 0], n_in=2, n_out=2)
        >>> index_data(op.post).tolist()
        [1, 0]
        >>> with bind_indices([op.post], [np.array([0, 0], np.int32)]):
        ...     index_data(op.post).tolist()
        [0, 0]
    """
    bound = _BOUND.get()
    if bound is not None:
        hit = bound.get(id(frozen))
        if hit is not None and hit[0] is frozen:
            return hit[1]
    return frozen.array


@contextlib.contextmanager
def bind_indices(keys: Sequence[_Frozen], values: Sequence[Any]) -> Iterator[None]:
    """While active, every op reads ``values[i]`` wherever it reads the index array
    ``keys[i]`` (see :func:`index_data`).

    Bind the arguments of a jitted function to the arrays of :func:`index_arrays`: the
    compiled program then receives the connectivity as data, and runs again, without
    compiling, with the index arrays of another network of the same shapes.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from traxon.core import CSR
        >>> from traxon.core.ops import bind_indices, index_arrays
        >>> op = CSR.from_edges([0, 1], [1, 0], n_in=2, n_out=2)
        >>> keys = index_arrays([op])
        >>> @jax.jit
        ... def apply(indices, W, z):
        ...     with bind_indices(keys, indices):
        ...         return op.apply(W, z)
        >>> apply(tuple(jnp.asarray(k.array) for k in keys), jnp.ones(2), jnp.ones((1, 2)))
        Array([[1., 1.]], dtype=float32)
    """
    keys, values = tuple(keys), tuple(values)
    if len(keys) != len(values):
        raise ValueError(
            f"bind_indices needs one value per index array; got {len(keys)} arrays and "
            f"{len(values)} values."
        )
    for key, value in zip(keys, values, strict=True):
        if not isinstance(key, _Frozen):
            raise TypeError(f"index arrays must come from index_arrays(); got {type(key)}.")
        if tuple(np.shape(value)) != key.array.shape:
            raise ValueError(
                f"an index array of shape {key.array.shape} cannot be bound to a value of "
                f"shape {tuple(np.shape(value))}: the connectivity must have the same shapes."
            )
    bound = dict(_BOUND.get() or {})
    bound.update({id(k): (k, v) for k, v in zip(keys, values, strict=True)})
    token = _BOUND.set(bound)
    try:
        yield
    finally:
        _BOUND.reset(token)


def index_arrays(ops: Iterable[WeightOp]) -> tuple[_Frozen, ...]:
    """The index arrays of some ops, each once, in order (see :meth:`WeightOp.index_arrays`).

    Example:
        >>> from traxon.core import CSR, Dense
        >>> from traxon.core.ops import index_arrays
        >>> op = CSR.from_edges([0, 1], [1, 0], n_in=2, n_out=2)
        >>> [k.array.tolist() for k in index_arrays([Dense(), op, op])]
        [[0, 1, 2], [1, 0], [0, 1]]
    """
    seen: dict[int, _Frozen] = {}
    for op in ops:
        for key in op.index_arrays():
            seen.setdefault(id(key), key)
    return tuple(seen.values())


def index_values(keys: Iterable[_Frozen]) -> tuple[jax.Array, ...]:
    """The values of index arrays as device arrays, as a jitted function receives them
    (pure gather indices unsigned: no wrapping of negative indices in the program)."""
    with jax.ensure_compile_time_eval():  # concrete arrays, even when first asked in a jit
        return tuple(
            jnp.asarray(k.array.astype(np.uint32) if k.gather_index else k.array) for k in keys
        )


def _cols(x: jax.Array, key: _Frozen) -> jax.Array:
    """``x[:, idx]`` for the index array ``key`` (bound or not): ``(B, N) -> (B, *idx.shape)``.

    One gather with the indices as they are: no pass that converts them or wraps negative
    ones (they are checked to lie in range when the op is built). The gather reads rows of
    ``x.T`` -- each index one contiguous slice of ``B`` values -- which XLA's CPU backend
    runs several times faster than a strided column per index."""
    idx = index_data(key)
    flat = jnp.reshape(idx, (-1, 1))
    out = jax.lax.gather(
        x.T,
        flat,
        jax.lax.GatherDimensionNumbers(
            offset_dims=(1,), collapsed_slice_dims=(0,), start_index_map=(0,)
        ),
        slice_sizes=(1, x.shape[0]),
        mode=jax.lax.GatherScatterMode.PROMISE_IN_BOUNDS,
    )
    return jnp.reshape(out.T, (x.shape[0], *np.shape(idx)))


def _add_cols(out: jax.Array, key: _Frozen, vals: jax.Array) -> jax.Array:
    """``out.at[:, idx].add(vals)`` for the index array ``key`` (bound or not), one scatter
    (into rows of ``out.T``, contiguous slices of ``B`` values, like :func:`_cols`)."""
    idx = index_data(key)
    flat = jnp.reshape(idx, (-1, 1))
    return jax.lax.scatter_add(
        out.T,
        flat,
        jnp.reshape(vals, (out.shape[0], -1)).T,
        jax.lax.ScatterDimensionNumbers(
            update_window_dims=(1,), inserted_window_dims=(0,), scatter_dims_to_operand_dims=(0,)
        ),
        mode=jax.lax.GatherScatterMode.FILL_OR_DROP,
    ).T


def indices_bound(keys: Iterable[_Frozen]) -> bool:
    """Whether every one of ``keys`` is bound by an enclosing :func:`bind_indices`."""
    bound = _BOUND.get() or {}
    return all(bound.get(id(k), (None,))[0] is k for k in keys)


class CSR(_Indexed):
    r"""Sparse weights in compressed rows by presynaptic neuron (CSR), built from an edge list.

    Entry ``e`` connects presynaptic neuron :math:`\mathrm{pre}(e)` to postsynaptic neuron
    ``post[e]``; the entries of presynaptic neuron ``j`` are ``indptr[j]:indptr[j+1]``, so
    memory is one index per entry plus one per presynaptic neuron.
    :math:`u_i = \sum_{e:\, \mathrm{post}[e] = i} w_e\, s_{\mathrm{pre}(e)}\, z_{\mathrm{pre}(e)}`.

    **Weights.** Without ``groups``, ``W`` has shape ``(nnz,)`` -- one trainable weight per
    entry (:math:`w_e = W_e`, times ``base[e]`` when ``base`` is given). With ``groups``
    (one group id per entry), ``W`` has shape ``(n_groups,)`` and :math:`w_e =
    W_{\mathrm{groups}[e]}\, \mathrm{base}[e]`: a trainable scale per group (e.g. per cell
    type) of fixed magnitudes (e.g. synapse counts).

    **Dale's law.** ``sign`` (``+1``, ``-1`` or one per presynaptic neuron) makes the op use
    :math:`|W|` times the sign of the presynaptic neuron; training cannot flip a synapse's
    type. The sign is applied to the presynaptic signal (``n_in`` multiplies, no table per
    entry).

    **Event-driven forward.** With ``max_active`` set, each sample gathers only the rows of
    its presynaptic neurons with a non-zero signal (at most ``max_active`` of them, at most
    ``max_events`` entries in all; by default the sum of the ``max_active`` largest
    out-degrees, which can never overflow) and scatters them into the output: the cost is
    proportional to the active spikes' synapses. If any sample exceeds either capacity the
    exact all-entries scatter is used instead, so no event is ever dropped. Derivatives are
    exact: with respect to ``W`` they are event-driven too; with respect to the signal they
    use every entry (a silent neuron's surrogate gradient is not zero). A
    :class:`~traxon.core.Network` sets ``max_active`` for projections that read spikes
    (``event="auto"``, see :func:`~traxon.core.ops.auto_max_active`).

    **Gradients** (``outer``) live on the non-zeros only: one gather of the pre- and one of
    the postsynaptic factor per entry, skipped entirely when the postsynaptic factor is all
    zero (steps without a learning signal).

    Build one with :meth:`from_edges`; entries are ordered by presynaptic then postsynaptic
    id (:meth:`edge_order` gives the permutation of your edge list).

    Example:
        >>> import jax.numpy as jnp
        >>> from traxon.core import CSR
        >>> op = CSR.from_edges(pre=[1, 0, 1], post=[0, 1, 1], n_in=2, n_out=2, max_active=1)
        >>> op.indptr.array.tolist(), op.post.array.tolist()
        ([0, 1, 3], [1, 0, 1])
        >>> op.apply(jnp.array([1.0, 2.0, 3.0]), jnp.array([[0.0, 1.0]]))
        Array([[2., 3.]], dtype=float32)
    """

    indptr: Any = static(default=None)
    post: Any = static(default=None)
    n_out: int = static(default=0)
    gain: float = 1.0
    sign: Any = static(default=None)
    max_active: int | None = static(default=None)
    max_events: int | None = static(default=None)
    base: Any = static(default=None)
    groups: Any = static(default=None)
    n_groups: int | None = static(default=None)

    @staticmethod
    def edge_order(pre: Any, post: Any) -> np.ndarray:
        """The permutation that sorts an edge list by presynaptic, then postsynaptic id.

        ``values[CSR.edge_order(pre, post)]`` lays per-edge values (initial weights, synapse
        counts) out like the entries of ``CSR.from_edges(pre, post, ...)``.

        Example:
            >>> from traxon.core import CSR
            >>> CSR.edge_order([1, 0, 1], [0, 1, 1]).tolist()
            [1, 0, 2]
        """
        pre, post = _edge_list(pre, post, integer=False)
        if pre.size and np.all(pre[1:] >= pre[:-1]):
            same = pre[1:] == pre[:-1]
            if not np.any(same & (post[1:] < post[:-1])):
                return np.arange(pre.size)  # already sorted: no lexsort of a large list
        return np.lexsort((post, pre))

    @staticmethod
    def from_edges(
        pre: Any,
        post: Any,
        n_in: int,
        n_out: int,
        gain: float = 1.0,
        sign: Any = None,
        max_active: int | None = None,
        max_events: int | None = None,
        base: Any = None,
        groups: Any = None,
        n_groups: int | None = None,
        pad_to: int = 1,
    ) -> CSR:
        """A CSR op from equal-length integer arrays of presynaptic and postsynaptic ids.

        ``base`` and ``groups`` are per edge, in the order given (they are permuted with the
        edges). Repeated ``(pre, post)`` pairs are kept as separate entries (their weights add).

        ``pad_to`` appends inert entries (``base`` 0, from the last presynaptic to the last
        postsynaptic neuron) until the number of entries is a multiple of it, so that
        :func:`traxon.parallel.data_parallel` can split the per-entry weights evenly over
        that many devices. They never carry current or gradient.

        Example:
            >>> from traxon.core import CSR
            >>> op = CSR.from_edges([2, 0], [0, 0], n_in=3, n_out=1, sign=[1, 1, -1])
            >>> op.weight_shape(3, 1), op.nnz
            ((2,), 2)
        """
        n_in, n_out = check_positive_int(n_in, "n_in"), check_positive_int(n_out, "n_out")
        pre_a, post_a = _edge_list(pre, post)
        pad_to = check_positive_int(pad_to, "pad_to")
        n_pad = -pre_a.size % int(pad_to)
        if n_pad:
            inert = np.concatenate([np.ones(pre_a.size, np.float32), np.zeros(n_pad, np.float32)])
            base = inert if base is None else np.concatenate([np.asarray(base), inert[-n_pad:]])
            if groups is not None:
                groups = np.concatenate([np.asarray(groups), np.zeros(n_pad, np.int64)])
            pre_a = np.concatenate([pre_a, np.full(n_pad, int(n_in) - 1, pre_a.dtype)])
            post_a = np.concatenate([post_a, np.full(n_pad, int(n_out) - 1, post_a.dtype)])
        order = CSR.edge_order(pre_a, post_a)
        op_pre = _Indexed()
        op_pre._check_index(pre_a, int(n_in), "pre", "CSR.from_edges")
        counts = np.bincount(pre_a.astype(np.int64), minlength=int(n_in))
        indptr = np.concatenate([[0], np.cumsum(counts)])

        def permuted(x: Any) -> Any:
            if x is None:
                return None
            arr = np.asarray(x)
            if arr.shape != pre_a.shape:
                raise ValueError(
                    f"per-edge arrays must have one value per edge ({pre_a.size}); got shape "
                    f"{arr.shape}."
                )
            return arr[order]

        return CSR(
            indptr=indptr,
            post=post_a[order],
            n_out=int(n_out),
            gain=gain,
            sign=sign,
            max_active=max_active,
            max_events=max_events,
            base=permuted(base),
            groups=permuted(groups),
            n_groups=n_groups,
        )

    def __post_init__(self) -> None:
        indptr, post = _unfreeze(self.indptr), _unfreeze(self.post)
        if indptr.ndim != 1 or indptr.size < 2 or not np.issubdtype(indptr.dtype, np.integer):
            raise ValueError(
                "`indptr` must be a 1-D integer array of n_in + 1 row offsets; got "
                f"{indptr.dtype} array of shape {indptr.shape}."
            )
        if post.ndim != 1 or (post.size and not np.issubdtype(post.dtype, np.integer)):
            raise ValueError(
                f"`post` must be a 1-D integer array; got {post.dtype} array of shape {post.shape}."
            )
        if indptr[0] != 0 or np.any(np.diff(indptr) < 0) or indptr[-1] != post.size:
            raise ValueError(
                "`indptr` must start at 0, never decrease and end at len(post) = "
                f"{post.size}; got [{indptr[0]}, ..., {indptr[-1]}]."
            )
        object.__setattr__(self, "n_out", check_positive_int(self.n_out, "n_out"))
        self._check_index(post, self.n_out, "post", "CSR")
        wide = np.int64 if post.size >= 2**31 else np.int32
        object.__setattr__(self, "indptr", _Frozen(indptr.astype(wide)))
        object.__setattr__(self, "post", _Frozen(post.astype(np.int32), gather_index=True))
        n_in = indptr.size - 1
        if self.sign is not None:
            s = _sign_values(_unfreeze(self.sign), "CSR")
            object.__setattr__(
                self, "sign", _Frozen(_sign_of(s[0] if s.size == 1 else s, n_in, "CSR"))
            )
        for label in ("max_active", "max_events"):
            value = check_positive_int(getattr(self, label), label, optional=True)
            object.__setattr__(self, label, value)
        if self.max_events is not None and self.max_active is None:
            raise ValueError("`max_events` needs `max_active` (the event-driven path); got None.")
        if self.base is not None:
            base = np.asarray(_unfreeze(self.base))
            if not np.issubdtype(base.dtype, np.floating):
                base = base.astype(np.float32)  # counts: exact in float32 below 2**24
            if base.shape != post.shape or not np.all(np.isfinite(base)):
                raise ValueError(
                    f"`base` must hold one finite value per entry ({post.size}); got shape "
                    f"{base.shape}."
                )
            object.__setattr__(self, "base", _Frozen(base))
        if self.groups is not None:
            groups = _unfreeze(self.groups)
            if groups.shape != post.shape or (
                groups.size and not np.issubdtype(groups.dtype, np.integer)
            ):
                raise ValueError(
                    f"`groups` must be an integer array with one group id per entry "
                    f"({post.size}); got {groups.dtype} array of shape {groups.shape}."
                )
            n_groups = self.n_groups
            if n_groups is None:
                n_groups = int(groups.max()) + 1 if groups.size else 1
            n_groups = check_positive_int(n_groups, "n_groups")
            self._check_index(groups, int(n_groups), "groups", "CSR")
            object.__setattr__(self, "groups", _Frozen(groups.astype(np.int32), gather_index=True))
            object.__setattr__(self, "n_groups", int(n_groups))
        elif self.n_groups is not None:
            raise ValueError(f"`n_groups` needs `groups`; got n_groups={self.n_groups!r}.")
        _gain(self)

    # ----------------------------------------------------------------------------------
    @property
    def nnz(self) -> int:
        """Number of stored entries (synapses, or connected pairs)."""
        return int(self.post.array.size)

    @property
    def n_in(self) -> int:
        """Number of presynaptic neurons (rows)."""
        return int(self.indptr.array.size - 1)

    @property
    def param_traces(self) -> bool:
        """Whether each weight drives one postsynaptic neuron (not so with ``groups``)."""
        return self.groups is None

    @property
    def out_degree(self) -> np.ndarray:
        """Entries per presynaptic neuron, ``(n_in,)``."""
        return np.diff(self.indptr.array)

    @property
    def pre(self) -> np.ndarray:
        """Presynaptic neuron of every entry, ``(nnz,)`` (expanded from ``indptr``)."""
        return self._pre_frozen().array

    def _pre_frozen(self) -> _Frozen:
        cached = self.__dict__.get("_pre_cache")
        if cached is None:
            pre = np.repeat(np.arange(self.n_in, dtype=np.int32), self.out_degree)
            cached = _Frozen(pre, gather_index=True)
            object.__setattr__(self, "_pre_cache", cached)
        return cached

    def index_arrays(self) -> tuple[_Frozen, ...]:
        return (*super().index_arrays(), self._pre_frozen())

    @property
    def event_capacity(self) -> int | None:
        """Entries gathered per sample on the event-driven path (``None`` without it)."""
        if self.max_active is None:
            return None
        if self.max_events is not None:
            return int(self.max_events)
        k = min(int(self.max_active), self.n_in)
        deg = self.out_degree
        return max(int(np.sum(np.partition(deg, deg.size - k)[deg.size - k :])), 1)

    def check_sizes(self, n_in: int, n_out: int, where: str) -> None:
        if self.n_in != n_in:
            raise ValueError(
                f"`indptr` of {where} describes {self.n_in} presynaptic neurons; the source "
                f"has {n_in}."
            )
        if self.n_out != n_out:
            raise ValueError(f"`n_out` of {where} is {self.n_out}; the target has {n_out}.")

    def weight_shape(self, n_in: int, n_out: int) -> tuple[int, ...]:
        return (int(self.n_groups or 1),) if self.groups is not None else (self.nnz,)

    def init(self, key: jax.Array, n_in: int, n_out: int, dtype: Any) -> jax.Array:
        shape = self.weight_shape(n_in, n_out)
        if self.base is not None or self.groups is not None:
            return jnp.full(shape, self.gain, dtype)  # a scale of the fixed magnitudes
        fan_in = max(self.nnz / max(self.n_out, 1), 1.0)
        w = jax.random.normal(key, shape, dtype) * (self.gain / math.sqrt(fan_in))
        return jnp.abs(w) if self.sign is not None else w

    # ----------------------------------------------------------------------------------
    def _entries(self, W: jax.Array, idx: Any) -> jax.Array:
        """Effective weights of the entries ``idx`` (an index array, or ``None`` for all)."""

        def take(a: Any) -> Any:
            return a if idx is None else a[idx]

        if self.groups is not None:
            w = W[take(jnp.asarray(index_data(self.groups)))]
        else:
            w = take(W)
        if self.sign is not None:
            w = jnp.abs(w)  # after the gather: only the gathered entries
        if self.base is not None:
            w = w * take(jnp.asarray(index_data(self.base), W.dtype))
        return w

    def _signed(self, z: jax.Array) -> jax.Array:
        if self.sign is None:
            return z
        return z * jnp.asarray(index_data(self.sign), z.dtype)[None, :]

    def _scatter_all(self, W: jax.Array, z: jax.Array) -> jax.Array:
        vals = _cols(z, self._pre_frozen()) * self._entries(W, None)[None, :]
        out = jnp.zeros((z.shape[0], self.n_out), vals.dtype)
        return _add_cols(out, self.post, vals)

    def _scatter_active(self, W: jax.Array, z: jax.Array) -> jax.Array:
        cap, n_in = int(self.max_active), self.n_in  # type: ignore[arg-type]
        n_events = int(self.event_capacity)  # type: ignore[arg-type]
        indptr = jnp.asarray(index_data(self.indptr))
        post = jnp.asarray(index_data(self.post))
        positions = jnp.arange(n_events, dtype=indptr.dtype)

        def one(zb: jax.Array) -> jax.Array:
            (rows,) = jnp.nonzero(zb, size=cap, fill_value=n_in)
            valid = rows < n_in
            r = jnp.where(valid, rows, 0)
            start = indptr[r]
            length = jnp.where(valid, indptr[r + 1] - start, 0)
            ends = jnp.cumsum(length)
            slot = jnp.minimum(jnp.searchsorted(ends, positions, side="right"), cap - 1)
            inside = positions < ends[-1]
            edge = jnp.where(inside, start[slot] + positions - (ends[slot] - length[slot]), 0)
            vals = jnp.where(inside, zb[r[slot]] * self._entries(W, edge), 0.0)
            return jnp.zeros((self.n_out,), vals.dtype).at[post[edge]].add(vals)

        return jax.vmap(one)(z)

    def _forward(self, W: jax.Array, z: jax.Array) -> jax.Array:
        if self.max_active is None or self.max_active >= self.n_in:
            return self._scatter_all(W, z)
        active = z != 0
        # Integer event counts: a float32 sum loses exactness above 2**24 synapses.
        indptr = jnp.asarray(index_data(self.indptr))
        deg = indptr[1:] - indptr[:-1]
        events = jnp.sum(jnp.where(active, deg[None, :], 0), axis=1)
        overflow = jnp.any(jnp.sum(active, axis=1) > self.max_active) | jnp.any(
            events > int(self.event_capacity)  # type: ignore[arg-type]
        )
        return jax.lax.cond(overflow, self._scatter_all, self._scatter_active, W, z)

    def apply(self, W: jax.Array, z: jax.Array) -> jax.Array:
        z = self._signed(z)
        if self.max_active is None or self.max_active >= self.n_in:
            return self._scatter_all(W, z)
        return _event_apply(self._forward, self._scatter_all, W, z)

    def pre_factor(self, W: jax.Array, z: jax.Array) -> jax.Array:
        if self.groups is not None:
            raise NotImplementedError(
                "CSR with `groups` shares one weight among many entries; parameter-dimension "
                "traces are not available (use algorithm='es_d_rtrl' or 'bptt')."
            )
        f = _cols(self._signed(z), self._pre_frozen())
        if self.sign is not None:
            f = f * jnp.sign(W)[None, :]
        if self.base is not None:
            f = f * jnp.asarray(index_data(self.base), f.dtype)[None, :]
        return f

    def to_params(self, x: jax.Array) -> jax.Array:
        return _cols(x, self.post)

    def outer(self, W: jax.Array, pre: jax.Array, post: jax.Array) -> jax.Array:
        def compute(pre: jax.Array, post: jax.Array) -> jax.Array:
            pre_e = _cols(self._signed(pre), self._pre_frozen())
            g = jnp.sum(pre_e * _cols(post, self.post), axis=0)
            if self.base is not None:
                g = g * jnp.asarray(index_data(self.base), g.dtype)
            if self.groups is not None:
                g = jax.ops.segment_sum(g, jnp.asarray(index_data(self.groups)), self.n_groups)
            g = g.astype(W.dtype)
            return g * jnp.sign(W) if self.sign is not None else g

        pre, post = pre.astype(W.dtype), post.astype(W.dtype)
        # No learning signal this step: no gather over the entries at all.
        return jax.lax.cond(jnp.any(post != 0), compute, lambda a, b: jnp.zeros_like(W), pre, post)
