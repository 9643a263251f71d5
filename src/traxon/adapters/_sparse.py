r"""brainevent / brainstate sparse connectivity in a traced step, mapped onto traxon's :class:`CSR`.

A ``brainstate.nn.EventFixedProb`` / ``FixedNumConn`` applies its weights through one of
brainevent's fixed-number kernels (``binary_fcnmm`` for spikes, a named ``fcnmm`` call for
a float signal); a ``FixedNumConn`` with ``afferent_ratio < 1`` and a
``brainstate.nn.SparseLinear`` go through a CSR kernel (brainevent's ``binary_csrmm`` /
``csrmm``, or ``csr_matmat`` for a ``brainunit.sparse.CSR``; a CSC goes through the same
kernels untransposed; a ``brainunit.sparse.COO`` through ``coo_matmat``). This module

* recognises those kernels by name (a set of names per family, so that renamings across
  brainevent releases are matched) and refuses an unknown sparse kernel with an error that
  names the weight, its module and the primitive;
* reads the connectivity (indices, row pointers, shape, direction) from the kernel's
  constant operands and parameters into an edge list in the kernel's own weight order;
* builds the equivalent :class:`~traxon.core.CSR` op -- event-driven in the forward pass
  (only the rows of active presynaptic neurons are gathered), gradients on the non-zeros --
  and evaluates the step's kernel with it, so the module's brainevent backend plays no part
  in training. A homogeneous weight (one value shared by every connection) is one trainable
  scalar: the CSR op's single group.

Event (binary) kernels multiply each weight by an activity mask -- a value is active when
positive (brainevent before 0.3) or non-zero (0.3 on), or by the value itself for brainevent's
weighted events -- and their derivative with respect to the signal is the float product's;
:meth:`SparseConn.kernel` keeps both.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from traxon.core.ops import CSR, _Frozen, index_data

__all__ = [
    "SparseConn",
    "ensure_cpu_backend",
    "install",
    "is_sparse",
    "kernel_name",
    "looks_sparse",
    "opaque_call",
    "read",
    "unknown_kernel_error",
]

# Kernel families (names as primitives, or as brainevent's named jit calls, across releases).
FIXED_NUM_EVENT = frozenset(
    {"binary_fcnmv", "binary_fcnmm", "ell_binary_matvec", "fcn_binary_mv", "fcn_binary_mm"}
)
FIXED_NUM_FLOAT = frozenset({"fcnmv", "fcnmm", "float_fcnmv", "float_fcnmm"})
CSR_EVENT = frozenset({"binary_csrmv", "binary_csrmm", "csr_binary_csrmv", "csr_binary_csrmm"})
CSR_FLOAT = frozenset(
    {"csrmv", "csrmm", "csr_float_csrmv", "csr_float_csrmm", "csr_matvec", "csr_matmat"}
)
COO_FLOAT = frozenset({"coo_matvec", "coo_matmat"})
KNOWN = FIXED_NUM_EVENT | FIXED_NUM_FLOAT | CSR_EVENT | CSR_FLOAT | COO_FLOAT
_CALLS = ("jit", "pjit", "closed_call")
# Names that look like a sparse or event kernel (brainevent, brainunit, jax.experimental.sparse).
_LOOKS_SPARSE = re.compile(r"csr|csc|coo|bsr|fcn|ell_|jit[cnsu]|sparse|spmv|spmm|binary_|event")

# Event-driven forward: a sample with up to one in this many presynaptic neurons active takes
# the gather path; beyond it the exact all-entries scatter is used (no event is dropped).
_ACTIVE_FRACTION = 8


def _active_when_nonzero() -> bool:
    """brainevent 0.3 counts any non-zero value as an event; earlier releases a positive one."""
    be = sys.modules.get("brainevent")
    version = getattr(be, "__version_info__", None)
    if not isinstance(version, tuple):
        version = tuple(
            int(p) for p in re.findall(r"\d+", str(getattr(be, "__version__", "0")))[:2]
        )
    return tuple(version[:2]) >= (0, 3)


def kernel_name(node: Any) -> str:
    """The kernel a node applies: its primitive's name, or a named call's last component
    (``brainevent.fcnmm`` -> ``fcnmm``)."""
    if node.name in _CALLS:
        return str(node.params.get("name", "")).rsplit(".", 1)[-1]
    return str(node.name)


def opaque_call(eqn: Any) -> bool:
    """Whether a jit call of the traced step is one of brainevent's float fixed-number
    products (plain JAX inside a named jit): kept whole so that it is read as one kernel."""
    name = str(eqn.params.get("name", ""))
    return name.startswith("brainevent") and name.rsplit(".", 1)[-1] in FIXED_NUM_FLOAT


def is_sparse(node: Any) -> bool:
    """Whether the node is a sparse kernel traxon maps onto its CSR op."""
    return kernel_name(node) in KNOWN


def looks_sparse(node: Any) -> bool:
    """Whether the node looks like a sparse or event kernel (brainevent's registry, or its name)."""
    name = kernel_name(node)
    be = sys.modules.get("brainevent")
    try:
        registered = set(be.get_all_primitive_names()) if be is not None else set()
    except Exception:  # an older or newer brainevent without the registry
        registered = set()
    return name in registered or bool(_LOOKS_SPARSE.search(name))


def unknown_kernel_error(node: Any, weight: str, module: str) -> ValueError:
    """The error for a sparse kernel traxon does not map, naming the weight, module, kernel."""
    return ValueError(
        f"weight `{weight}` (module `{module}`) enters the step through the sparse or event kernel "
        f"`{kernel_name(node)}`, which traxon does not know. traxon maps the fixed-number and "
        "CSR kernels of brainstate.nn.EventFixedProb, FixedNumConn and SparseLinear "
        "(binary_fcnmm, fcnmm, binary_csrmm, csrmm, brainunit's csr_matmat and coo_matmat, "
        "and their matrix-vector forms): apply the weight with one of those layers, or report the "
        "brainevent version and the layer."
    )


def ensure_cpu_backend() -> None:
    """Select brainevent's pure-JAX CPU kernels when numba (its default CPU backend) is absent.

    A backend the user chose (``brainevent.config.set_backend('cpu', ...)``) is kept.
    """
    if importlib.util.find_spec("numba") is not None:
        return
    if "brainevent" not in sys.modules and importlib.util.find_spec("brainevent") is None:
        return
    import brainevent

    config = getattr(brainevent, "config", None)
    get = getattr(config, "get_backend", None)
    if config is None or get is None or get("cpu") is not None:
        return
    config.set_backend("cpu", "jax_raw")


# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SparseConn:
    """A sparse kernel's connectivity as a traxon :class:`CSR` op.

    Entry ``c`` of ``op`` is entry ``take[c]`` of the kernel's flattened weights (``take``
    ``None``: the same order); ``pre``/``post`` are the presynaptic and postsynaptic neuron
    of every kernel entry, in the kernel's weight layout. A ``homogeneous`` kernel reads one
    weight for all its entries (the op's single group). ``w_pos``/``z_pos`` are the
    positions of the weight and the signal among the node's operands; ``avals`` the node's
    output shapes and dtypes.

    ``take``, ``pre`` and ``post`` are index arrays as the op's own are (read through
    :func:`~traxon.core.ops.index_data`, listed by :meth:`index_arrays`): a jitted step that
    binds them receives the connectivity as data and captures none of it.
    """

    op: CSR
    take: _Frozen | None
    pre: _Frozen
    post: _Frozen
    homogeneous: bool
    event: bool  # the kernel multiplies by an activity mask
    nonzero: bool  # active: non-zero (else positive)
    w_pos: int
    z_pos: int
    avals: tuple[Any, ...]

    def index_arrays(self) -> tuple[_Frozen, ...]:
        """The connectivity this kernel reads: the op's index arrays, then ``take``,
        ``pre`` and ``post`` (see :meth:`traxon.core.WeightOp.index_arrays`)."""
        own = (self.pre, self.post) if self.take is None else (self.take, self.pre, self.post)
        return (*self.op.index_arrays(), *own)

    def connects(
        self, pre: np.ndarray, post: np.ndarray, n_in: int, n_out: int, homogeneous: bool
    ) -> bool:
        """Whether this kernel has the connectivity of the edge list ``pre -> post`` between
        ``n_in`` and ``n_out`` neurons (in the kernel's entry order), its weight shared or
        not alike."""
        return (
            self.homogeneous == homogeneous
            and (self.op.n_in, self.op.n_out) == (n_in, n_out)
            and np.array_equal(self.pre.array.reshape(-1), pre)
            and np.array_equal(self.post.array.reshape(-1), post)
        )

    def entries(self, W: jax.Array) -> jax.Array:
        """The op's weights from the kernel's weight operand."""
        flat = jnp.reshape(W, (-1,))
        if self.homogeneous:
            return flat[:1]
        return flat if self.take is None else flat[index_data(self.take)]

    def apply(self, W: jax.Array, z: jax.Array) -> jax.Array:
        """``u = op(W, z)`` with float semantics (``z`` of shape ``(B, n_in)``)."""
        return self.op.apply(self.entries(W).astype(z.dtype), z)

    def pre_factor(self, z: jax.Array) -> jax.Array:
        """Each kernel entry's presynaptic signal, ``(B, *weight shape)``."""
        return z[:, index_data(self.pre)]

    def to_params(self, x: jax.Array) -> jax.Array:
        """A per-postsynaptic-neuron array laid out per kernel entry, ``(B, *shape, ...)``."""
        return x[:, index_data(self.post)]

    def kernel(self, *args: Any) -> list[Any]:
        """The node's evaluation through the op: the same outputs (the first is the product;
        any others, such as brainevent's scheduling buffers, are zeros). Event kernels count
        a positive value as a spike; the derivative is the float product's."""
        W, m = args[self.w_pos], args[self.z_pos]
        out = self.avals[0]
        vector = jnp.ndim(m) == 1
        z = jnp.reshape(m, (1, -1)) if vector else jnp.transpose(m)
        if not jnp.issubdtype(z.dtype, jnp.floating):
            z = (z != 0).astype(out.dtype) if self.event else z.astype(out.dtype)
        elif self.event:
            active = (z != 0) if self.nonzero else (z > 0)
            z = z + jax.lax.stop_gradient(active.astype(z.dtype) - z)
        y = self.op.apply(self.entries(W).astype(z.dtype), z)
        y = y[0] if vector else jnp.transpose(y)
        rest = [jnp.zeros(a.shape, a.dtype) for a in self.avals[1:]]
        return [y.astype(out.dtype), *rest]


def _const(g: Any, atom: Any, what: str, weight: str, module: str, kernel: str) -> np.ndarray:
    """The constant value of a kernel operand (connectivity indices); raises naming the
    weight, its module and the kernel when the step computes it."""
    if isinstance(atom, int) and atom in g.consts:
        return np.asarray(g.consts[atom])
    raise ValueError(
        f"weight `{weight}` (module `{module}`) goes through `{kernel}` with {what} computed "
        "within the step; traxon reads sparse connectivity that is fixed when the module is "
        "built."
    )


def _index(idx: np.ndarray, shape: tuple[int, ...]) -> _Frozen:
    """An index array of the kernel (non-negative, in range) in ``shape``, read-only."""
    return _Frozen(idx.astype(np.int32).reshape(shape), gather_index=True)


def _body_scatters(node: Any) -> bool:
    """Whether a kernel's inner jaxpr scatters (a transposed, post-indexed kernel)."""
    body = node.params.get("jaxpr")
    jaxpr = getattr(body, "jaxpr", body)
    return any("scatter" in e.primitive.name for e in getattr(jaxpr, "eqns", ()))


def read(
    g: Any,
    node: Any,
    pin: int,
    data_in: int,
    weight: str,
    module: str,
    known: SparseConn | None = None,
) -> SparseConn:
    """The connectivity of a sparse kernel node (see the module docstring).

    Arguments:
        g: the step's :class:`~traxon.adapters._graph.Graph`.
        node: the kernel's node; ``pin`` its weight operand, ``data_in`` its signal operand.
        weight, module: names for errors.
        known: the same weight's kernel read before (the step traced at another batch
            size): when it has this connectivity, its op and index arrays are reused, so
            that every batch size's step reads one set of index arrays (the network's
            ``index_arrays()``, which the learner passes to its jitted steps as data).
    """
    name = kernel_name(node)
    ins = list(node.ins)
    w_pos, z_pos = ins.index(pin), ins.index(data_in)
    m_shape = g.shape(data_in)
    out_shape = g.shape(node.outs[0])
    n_w = int(np.prod(g.shape(pin), dtype=np.int64))
    if name in FIXED_NUM_EVENT | FIXED_NUM_FLOAT:
        idx_atoms = [a for i, a in enumerate(ins) if i not in (w_pos, z_pos)]
        if len(idx_atoms) != 1:
            raise ValueError(
                f"weight `{weight}` (module `{module}`) uses `{name}` with {len(ins)} operands; "
                "traxon reads fixed-number kernels of (weights, indices, signal)."
            )
        indices = _const(g, idx_atoms[0], "indices", weight, module, name)
        if indices.ndim != 2:
            raise ValueError(
                f"weight `{weight}` (module `{module}`): `{name}` has indices of shape "
                f"{indices.shape}; traxon reads (rows, connections per row)."
            )
        rows, k = indices.shape
        if "transpose" in node.params:
            transpose = bool(node.params["transpose"])
            n_rows, n_cols = (int(s) for s in node.params["shape"])
        else:  # a named call: its static arguments are read off the shapes it maps between
            transpose = m_shape[0] == rows if m_shape[0] != out_shape[0] else _body_scatters(node)
            n_rows, n_cols = (rows, out_shape[0]) if transpose else (rows, m_shape[0])
        row_of = np.repeat(np.arange(rows, dtype=np.int64), k)
        cols = indices.reshape(-1).astype(np.int64)
        kshape: tuple[int, ...] = (rows, k)
        event = name in FIXED_NUM_EVENT and not node.params.get("weighted", False)
    elif name in CSR_EVENT | CSR_FLOAT:
        indices = _const(g, ins[1], "column indices", weight, module, name)
        indptr = _const(g, ins[2], "row pointers", weight, module, name)
        if w_pos != 0 or z_pos != 3 or indices.ndim != 1 or indptr.ndim != 1:
            raise ValueError(
                f"weight `{weight}` (module `{module}`) uses `{name}` in a layout traxon does "
                "not know; it reads CSR kernels of (data, indices, indptr, signal)."
            )
        transpose = bool(node.params.get("transpose", False))
        n_rows, n_cols = (int(s) for s in node.params["shape"])
        row_of = np.repeat(np.arange(indptr.size - 1, dtype=np.int64), np.diff(indptr))
        cols = indices.astype(np.int64)
        kshape = (indices.size,)
        event = name in CSR_EVENT and not node.params.get("weighted", False)
    elif name in COO_FLOAT:
        rows_ = _const(g, ins[1], "row indices", weight, module, name)
        cols_ = _const(g, ins[2], "column indices", weight, module, name)
        info = node.params.get("spinfo")
        if w_pos != 0 or z_pos != 3 or info is None or rows_.shape != cols_.shape:
            raise ValueError(
                f"weight `{weight}` (module `{module}`) uses `{name}` in a layout traxon does "
                "not know; it reads COO kernels of (data, row, col, signal)."
            )
        transpose = bool(node.params.get("transpose", False))
        n_rows, n_cols = (int(s) for s in info.shape)
        row_of, cols = rows_.astype(np.int64), cols_.astype(np.int64)
        kshape = (rows_.size,)
        event = False
    else:
        raise unknown_kernel_error(node, weight, module)
    if transpose:  # signal @ matrix: rows are presynaptic
        pre, post, n_in, n_out = row_of, cols, n_rows, n_cols
    else:  # matrix @ signal: rows are postsynaptic
        pre, post, n_in, n_out = cols, row_of, n_cols, n_rows
    nnz = pre.size
    homogeneous = n_w == 1 and nnz != 1
    if not homogeneous and n_w != nnz:
        raise ValueError(
            f"weight `{weight}` (module `{module}`): `{name}` reads {n_w} weights for {nnz} "
            "connections; traxon maps one weight per connection or one for all."
        )
    if known is not None and known.connects(pre, post, n_in, n_out, homogeneous):
        csr, take, pre_f, post_f = known.op, known.take, known.pre, known.post
    else:
        order = CSR.edge_order(pre, post)
        identity = bool(np.array_equal(order, np.arange(nnz)))
        csr = CSR.from_edges(
            pre,
            post,
            n_in=n_in,
            n_out=n_out,
            max_active=max(1, -(-n_in // _ACTIVE_FRACTION)),
            groups=np.zeros(nnz, np.int64) if homogeneous else None,
            n_groups=1 if homogeneous else None,
        )
        take = None if identity or homogeneous else _index(order, order.shape)
        shape = kshape if homogeneous else tuple(g.shape(pin))
        pre_f, post_f = _index(pre, shape), _index(post, shape)
    return SparseConn(
        op=csr,
        take=take,
        pre=pre_f,
        post=post_f,
        homogeneous=homogeneous,
        event=event,
        nonzero=_active_when_nonzero(),
        w_pos=w_pos,
        z_pos=z_pos,
        avals=tuple(g.avals[o] for o in node.outs),
    )


def install(node: Any, conn: SparseConn) -> None:
    """Evaluate ``node`` through ``conn``'s op from now on (the module's kernel is not run)."""
    setattr(node, "apply", conn.kernel)  # noqa: B010  (an instance's evaluation, not the class's)
