r"""Electrical synapses (gap junctions): diffusive coupling of a population's graded state.

A gap junction between neurons :math:`i` and :math:`j` with conductance :math:`g_{ij}`
passes the current

.. math::
    I_i = \sum_j g_{ij}\, (V_j - V_i)

into neuron :math:`i` (and, symmetric by default, :math:`g_{ji} = g_{ij}`: the same
junction passes the opposite current into :math:`j`). Both ops here are weight ops for a
projection of a population onto **itself** that reads the membrane with ``delay=1``::

    Projection("h", "h", GapJunction(), signal="V", delay=1)

With ``z = V_{t-1}`` the op is linear in ``z`` and in the conductances:
:math:`u = z\,(G - \mathrm{diag}(G^\top \mathbf 1))` with :math:`G_{ji} = g_{ij}` (the
conductance neuron :math:`i` sees towards :math:`j`; :meth:`GapJunction.effective` gives the
whole matrix). The transition stays element-wise, so every learning rule applies.

* :class:`GapJunction` -- dense: every pair of the population may be coupled; ``W`` is
  ``(n, n)``, of which the strict upper triangle holds the conductances (``symmetric=True``)
  or every off-diagonal entry ``W[j, i]`` the conductance from :math:`j` into :math:`i`
  (``symmetric=False``).
* :class:`SparseGapJunction` -- an edge list of coupled pairs (e.g. a connectome's gap
  junctions), one trainable conductance per pair, optionally times a fixed magnitude per
  pair (``base``, e.g. the number of junctions).

**Gradients.** ``outer`` is exact (the vector-Jacobian product of ``apply``), so the
input/output-dimension rules (``es_d_rtrl``, ``three_factor``) and the exact ones
(``bptt``, ``rtrl``) train every variant. Rules that keep one trace per weight entry
(``d_rtrl``, ``ostl``, ``eprop``, ``snap``) need each entry to drive one neuron: a
directed entry (``symmetric=False``) does -- :math:`\partial u_i / \partial g_{ij} = V_j -
V_i` -- but a shared symmetric conductance drives two, so those rules refuse it when it is
trainable, and say what to use instead.

**Non-negative conductances.** ``positive=True`` uses :math:`|W|` (as Dale's law does for
chemical weights): training cannot make a conductance negative. A conductance at exactly
zero then gets no gradient; the default initial conductances are positive.

**Why delay=1.** With ``delay=0`` the current would depend on this step's membranes,
:math:`V_t = \alpha V_{t-1} + (1-\alpha) R\, L\, V_t + \dots`: a linear system coupling
all neurons to be solved every step (implicit integration), not a step whose neurons move
independently given their inputs. The network refuses a population that reads itself at
``delay=0``. With ``delay=1`` the coupling is the explicit step of the same equation,
:math:`V_t = \alpha V_{t-1} - (1-\alpha) R\, L\, V_{t-1} + \dots` with :math:`L` the
coupling's Laplacian; it is stable when :math:`(1-\alpha) R\, \lambda_{max}(L) < 1 +
\alpha`. Since :math:`d_{max} \le \lambda_{max}(L) \le 2 d_{max}` (:math:`d_{max}` the
largest total conductance :math:`\sum_j g_{ij}` of a neuron), keeping every neuron's total
below :math:`(1 + \alpha) / (2 (1 - \alpha) R)` (:math:`\approx \tau / (R\, \Delta t)`
for :math:`\Delta t \ll \tau`) is enough, and a total above twice that is unstable.
Connectome gap-junction degrees are heavy-tailed: bound the most coupled neuron, not the
mean.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from traxon._checks import check_positive, to_float
from traxon._module import static
from traxon.core.ops import WeightOp, _Frozen, index_data

__all__ = ["GapJunction", "SparseGapJunction"]


def _flag(module: Any, name: str) -> None:
    value = getattr(module, name)
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be True or False; got {value!r}.")
    object.__setattr__(module, name, bool(value))


def _gain(module: Any) -> None:
    gain = to_float(module.gain, None, "gain")
    check_positive(gain, "gain", allow_zero=True)
    object.__setattr__(module, "gain", gain)


_PER_ENTRY_HINT = (
    "A symmetric gap junction shares one conductance between the two neurons of a pair, "
    "so a trace per entry cannot follow it; give the op symmetric=False (one conductance "
    "per direction, traced per entry), or train with algorithm='es_d_rtrl', 'bptt' or "
    "'rtrl'."
)


class _Gap:
    """What the two gap-junction ops share: the size and projection checks, the trace hints."""

    symmetric: bool
    positive: bool

    @property
    def param_traces(self) -> bool:
        """Whether each weight entry drives one neuron (``symmetric=False``)."""
        return not self.symmetric

    @property
    def param_traces_hint(self) -> str:
        """What to do instead when a per-entry rule refuses this op."""
        return _PER_ENTRY_HINT

    def check_sizes(self, n_in: int, n_out: int, where: str) -> None:
        """Raise unless the op maps a population onto itself (of ``n`` neurons, for an op
        that fixes ``n``)."""
        n = getattr(self, "n", None)
        if n_in != n_out or (n is not None and n_out != n):
            count = "" if n is None else f"{n} "
            raise ValueError(
                f"{type(self).__name__} in {where} couples {count}neurons of one population; "
                f"got n_in={n_in}, n_out={n_out}."
            )

    def check_projection(self, projection: Any, where: str) -> None:
        """Raise unless the projection couples a population with itself at ``delay=1``."""
        kind = type(self).__name__
        if projection.source != projection.target:
            raise ValueError(
                f"{where}: {kind} couples neurons of one population (I_i = sum_j g_ij "
                "(V_j - V_i) needs both membranes); source and target differ. Put the "
                "coupled cells in one population (parameters may differ per neuron, e.g. "
                "Graded(tau=<one value per neuron>)) and list the coupled pairs with "
                f"SparseGapJunction.from_pairs; then Projection({projection.target!r}, "
                f"{projection.target!r}, op, signal='V', delay=1)."
            )
        if projection.delay != 1:  # pragma: no cover - Network refuses a self-read at delay 0
            raise ValueError(f"{where}: {kind} needs delay=1.")

    def _magnitude(self, W: jax.Array) -> jax.Array:
        return jnp.abs(W) if self.positive else W

    def _sign(self, W: jax.Array) -> Any:
        return jnp.sign(W) if self.positive else 1.0


class GapJunction(_Gap, WeightOp):
    r"""Dense gap junctions within one population: :math:`u_i = \sum_j G_{ji}\,(z_j - z_i)`.

    ``W`` has shape ``(n, n)``. With ``symmetric=True`` (the default) the strict upper
    triangle ``W[j, i]``, ``j < i``, is the one conductance of the pair :math:`\{i, j\}`
    (:math:`G = U + U^\top`, :math:`U` = that triangle); the other entries are unused (held
    at zero, no gradient). With ``symmetric=False`` every off-diagonal ``W[j, i]`` is the
    conductance from :math:`j` into :math:`i`. Use it on a projection of a population onto
    itself reading ``signal="V"`` at ``delay=1`` (see :mod:`traxon.core.gap`).

    Arguments:
        gain: initial total conductance per neuron: every pair starts at ``gain / (n - 1)``.
        symmetric: one conductance per pair (``True``) or one per direction.
        positive: use :math:`|W|`, so that conductances stay non-negative.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from traxon.core import GapJunction
        >>> op = GapJunction(gain=1.0)
        >>> W = op.init(jax.random.PRNGKey(0), 3, 3, jnp.float32)
        >>> op.apply(W, jnp.array([[1.0, 0.0, 0.0]]))  # neuron 0 shares its charge
        Array([[-1. ,  0.5,  0.5]], dtype=float32)
    """

    gain: float = 1.0
    symmetric: bool = static(default=True)
    positive: bool = static(default=False)

    def __post_init__(self) -> None:
        _flag(self, "symmetric")
        _flag(self, "positive")
        _gain(self)

    def weight_shape(self, n_in: int, n_out: int) -> tuple[int, ...]:
        return (n_out, n_out)

    def _mask(self, n: int, dtype: Any) -> jax.Array:
        ones = jnp.ones((n, n), dtype)
        return jnp.triu(ones, 1) if self.symmetric else ones - jnp.eye(n, dtype=dtype)

    def init(self, key: jax.Array, n_in: int, n_out: int, dtype: Any) -> jax.Array:
        value = self.gain / max(n_out - 1, 1)
        return self._mask(n_out, dtype) * jnp.asarray(value, dtype)

    def conductances(self, W: jax.Array) -> jax.Array:
        """The conductance matrix ``G`` (``G[j, i]``: from ``j`` into ``i``), zero diagonal."""
        g = self._magnitude(W) * self._mask(W.shape[0], W.dtype)
        return g + g.T if self.symmetric else g

    def effective(self, W: jax.Array) -> jax.Array:
        r"""The matrix ``M`` with ``apply(W, z) = z @ M``: :math:`G - \mathrm{diag}(G^\top 1)`."""
        G = self.conductances(W)
        return G - jnp.diag(jnp.sum(G, axis=0))

    def apply(self, W: jax.Array, z: jax.Array) -> jax.Array:
        return z @ self.effective(W)

    def self_weights(self, W: jax.Array, n: int) -> jax.Array:
        r"""Each neuron's self-connection :math:`\partial u_i / \partial z_i = -\sum_j G_{ji}`."""
        return -jnp.sum(self.conductances(W), axis=0)

    def pre_factor(self, W: jax.Array, z: jax.Array) -> jax.Array:
        if self.symmetric:
            raise NotImplementedError(_PER_ENTRY_HINT)
        diff = z[:, :, None] - z[:, None, :]  # [b, j, i] = z_j - z_i
        return diff * (self._mask(W.shape[0], W.dtype) * self._sign(W))[None]

    def to_params(self, x: jax.Array) -> jax.Array:
        return x[:, None]

    def outer(self, W: jax.Array, pre: jax.Array, post: jax.Array) -> jax.Array:
        pre, post = pre.astype(W.dtype), post.astype(W.dtype)
        # A[j, i] = sum_b post_i (pre_j - pre_i): the gradient of a directed conductance.
        a = pre.T @ post - jnp.sum(pre * post, axis=0)[None, :]
        if self.symmetric:
            a = a + a.T
        return a * self._mask(W.shape[0], W.dtype) * self._sign(W)


class SparseGapJunction(_Gap, WeightOp):
    r"""Gap junctions between listed pairs of one population, one conductance per pair.

    Pair ``e`` joins neurons ``a[e]`` and ``b[e]`` with conductance :math:`g_e = W_e\,
    \mathrm{base}_e` (``base`` defaults to ones): with ``symmetric=True`` (the default)
    the junction passes :math:`g_e (z_a - z_b)` into ``b`` and the opposite into ``a``;
    with ``symmetric=False`` the entry is directed, from ``a`` into ``b`` only. ``W`` has
    shape ``(n_pairs,)``; pairs are stored sorted by ``a`` then ``b`` (compressed rows, as
    :class:`~traxon.core.CSR`), and the cost is proportional to the number of pairs.

    Build one with :meth:`from_pairs`.

    Example:
        >>> import jax.numpy as jnp
        >>> from traxon.core import SparseGapJunction
        >>> op = SparseGapJunction.from_pairs([0, 1], [1, 2], n=3)
        >>> op.apply(jnp.array([0.5, 1.0]), jnp.array([[2.0, 0.0, 0.0]]))
        Array([[-1.,  1.,  0.]], dtype=float32)
    """

    a: Any = static(default=None)
    b: Any = static(default=None)
    n: int = static(default=0)
    base: Any = static(default=None)
    gain: float = 1.0
    symmetric: bool = static(default=True)
    positive: bool = static(default=False)

    @staticmethod
    def from_pairs(
        a: Any,
        b: Any,
        n: int,
        base: Any = None,
        symmetric: bool = True,
        positive: bool = False,
        gain: float = 1.0,
    ) -> SparseGapJunction:
        """A gap-junction op from two equal-length integer arrays of neuron indices.

        Arguments:
            a, b: ``(E,)`` the two neurons of each junction (for ``symmetric=False``: from
                ``a`` into ``b``). A pair may be listed once (in either orientation when
                symmetric); a neuron is never coupled to itself.
            n: number of neurons of the population.
            base: ``(E,)`` fixed non-negative magnitude of each pair (e.g. the number of
                junctions); the trainable ``W`` is then a scale of it.
            symmetric, positive: as in :class:`GapJunction`.
            gain: the initial total conductance of the most coupled neuron (every pair
                starts with the same ``W``); keeping it below the stability bound of the
                module docstring keeps the initial network stable.

        Example:
            >>> from traxon.core import SparseGapJunction
            >>> op = SparseGapJunction.from_pairs([2, 0], [0, 1], n=3, base=[3.0, 1.0])
            >>> op.a.array.tolist(), op.b.array.tolist(), op.base.array.tolist()
            ([0, 0], [1, 2], [1.0, 3.0])
        """
        return SparseGapJunction(
            a=a, b=b, n=n, base=base, symmetric=symmetric, positive=positive, gain=gain
        )

    def __post_init__(self) -> None:
        _flag(self, "symmetric")
        _flag(self, "positive")
        _gain(self)
        if isinstance(self.n, bool) or not isinstance(self.n, (int, np.integer)) or self.n < 2:
            raise ValueError(f"`n` must be an integer >= 2 (neurons to couple); got {self.n!r}.")
        object.__setattr__(self, "n", int(self.n))
        a = np.asarray(self.a.array if isinstance(self.a, _Frozen) else self.a)
        b = np.asarray(self.b.array if isinstance(self.b, _Frozen) else self.b)
        if a.ndim != 1 or a.shape != b.shape or a.size == 0:
            raise ValueError(
                f"`a` and `b` must be non-empty 1-D arrays of equal length; got shapes "
                f"{a.shape} and {b.shape}."
            )
        for label, idx in (("a", a), ("b", b)):
            if not np.issubdtype(idx.dtype, np.integer):
                raise ValueError(f"`{label}` must be an integer array; got dtype {idx.dtype}.")
            if idx.min() < 0 or idx.max() >= self.n:
                raise ValueError(
                    f"`{label}` must hold neuron indices in [0, {self.n}); got values in "
                    f"[{idx.min()}, {idx.max()}]."
                )
        same = np.flatnonzero(a == b)
        if same.size:
            raise ValueError(
                f"pair {same[0]} joins neuron {a[same[0]]} to itself: a junction between a "
                "neuron and itself carries no current; leave such pairs out."
            )
        base = None
        if self.base is not None:
            base = np.asarray(self.base.array if isinstance(self.base, _Frozen) else self.base)
            if not np.issubdtype(base.dtype, np.number):
                raise ValueError(f"`base` must be numeric; got dtype {base.dtype}.")
            base = base.astype(np.float64)
            if base.shape != a.shape or not np.all(np.isfinite(base)) or np.any(base < 0):
                raise ValueError(
                    f"`base` must hold one finite non-negative value per pair ({a.size}); got "
                    f"shape {base.shape}."
                )
        lo, hi = (np.minimum(a, b), np.maximum(a, b)) if self.symmetric else (a, b)
        key = lo.astype(np.int64) * self.n + hi
        order = np.argsort(key, kind="stable")
        repeated = np.flatnonzero(key[order][1:] == key[order][:-1])
        if repeated.size:
            k = order[repeated[0] + 1]
            how = " (in either orientation: the op is symmetric)" if self.symmetric else ""
            raise ValueError(
                f"the pair ({a[k]}, {b[k]}) is listed more than once{how}: list each junction "
                "once, with its total magnitude in `base`"
                + (", or use symmetric=False for one conductance per direction." if how else ".")
            )
        # Read through index_data: a jitted network may receive them as arguments
        # (connectivity as data, see traxon.core.ops.bind_indices).
        object.__setattr__(self, "a", _Frozen(lo[order].astype(np.int32)))
        object.__setattr__(self, "b", _Frozen(hi[order].astype(np.int32)))
        if base is not None:
            object.__setattr__(self, "base", _Frozen(base[order].astype(np.float32)))

    @property
    def n_pairs(self) -> int:
        """Number of listed pairs (entries of ``W``)."""
        return int(self.a.array.size)

    def weight_shape(self, n_in: int, n_out: int) -> tuple[int, ...]:
        return (self.n_pairs,)

    def _base(self, dtype: Any) -> Any:
        return 1.0 if self.base is None else jnp.asarray(index_data(self.base), dtype)

    def init(self, key: jax.Array, n_in: int, n_out: int, dtype: Any) -> jax.Array:
        base = np.ones(self.n_pairs) if self.base is None else self.base.array
        total = np.bincount(self.b.array, weights=base, minlength=self.n)
        if self.symmetric:
            total = total + np.bincount(self.a.array, weights=base, minlength=self.n)
        most = float(np.max(total))
        return jnp.full((self.n_pairs,), self.gain / most if most > 0 else 0.0, dtype)

    def conductances(self, W: jax.Array) -> jax.Array:
        """``(n_pairs,)`` conductance :math:`g_e` of every pair (``positive`` and ``base``
        applied)."""
        return self._magnitude(W) * self._base(W.dtype)

    def _pairs(self) -> tuple[Any, Any]:
        return index_data(self.a), index_data(self.b)

    def apply(self, W: jax.Array, z: jax.Array) -> jax.Array:
        a, b = self._pairs()
        flow = (z[:, a] - z[:, b]) * self.conductances(W).astype(z.dtype)[None, :]
        out = jnp.zeros((z.shape[0], self.n), flow.dtype).at[:, b].add(flow)
        return out.at[:, a].add(-flow) if self.symmetric else out

    def self_weights(self, W: jax.Array, n: int) -> jax.Array:
        r"""Each neuron's self-connection :math:`\partial u_i / \partial z_i = -\sum_j g_{ij}`."""
        g = self.conductances(W)
        a, b = self._pairs()
        diag = jnp.zeros((self.n,), g.dtype).at[b].add(-g)
        return diag.at[a].add(-g) if self.symmetric else diag

    def pre_factor(self, W: jax.Array, z: jax.Array) -> jax.Array:
        if self.symmetric:
            raise NotImplementedError(_PER_ENTRY_HINT)
        a, b = self._pairs()
        diff = z[:, a] - z[:, b]
        factor = jnp.ones_like(W) * self._base(W.dtype) * self._sign(W)
        return diff * factor[None, :]

    def to_params(self, x: jax.Array) -> jax.Array:
        return x[:, index_data(self.b)]

    def outer(self, W: jax.Array, pre: jax.Array, post: jax.Array) -> jax.Array:
        pre, post = pre.astype(W.dtype), post.astype(W.dtype)
        a, b = self._pairs()
        into = post[:, b] - post[:, a] if self.symmetric else post[:, b]
        g = jnp.sum(into * (pre[:, a] - pre[:, b]), axis=0)
        return g * self._base(W.dtype) * self._sign(W) * jnp.ones_like(W)
