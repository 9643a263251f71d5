"""One matmul on concatenated signals, or feeding several gates, split into blocks.

brainstate.nn's recurrent cells apply one ``Linear`` to ``concatenate([x, h])`` and split
its output into gates (``LSTMCell``: ``i, g, f, o = split(W(concat([x, h])), 4)``); an
e-prop network may be written with one ``Linear(n_in + n_rec, n_rec)`` on
``concatenate([x, spikes])``. Such a weight reads several sources and feeds several gates
at once, while every algorithm of traxon needs a weight that reads one population's signal
(or the input) and gives one value per neuron of the population it feeds.

:func:`split` rewrites those matmuls before the step is analysed. With the data operand
``concatenate([z_1, ..., z_K])`` (row blocks, one per part) and the output -- the bias
added, perhaps through element-wise functions -- split along its features into
``J`` gates (column blocks),

.. math::
    \\mathrm{split}_j\\big([z_1 \\dots z_K] W + b\\big) = \\sum_k z_k W_{kj} + b_j,

one matmul per block ``W_kj`` and one bias per gate ``b_j``, concatenated again where the
module splits them. Each block is a weight of its own for the traces, named after the
module's weight and its rows and columns (``cell.W.weight['weight'][6:16, 10:20]``, the
bias ``cell.W.weight['bias'][10:20]``); the module's weight is assembled from its blocks
when the learner writes it back (:class:`~traxon.adapters._writeback.ModuleWeights`).
The sum is the module's own, computed in another order.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from traxon.adapters._graph import Lit, Node, flatten

__all__ = ["Block", "split"]

#: Element-wise functions of one value that may stand between a weight's output and the
#: split into gates (``GRUCell``'s ``split(sigmoid(Wrz(xh)), 2)``).
_UNARY = {"logistic", "tanh", "exp", "neg", "abs", "sin", "cos", "convert_element_type"}


@dataclasses.dataclass(frozen=True)
class Block:
    """The rows and columns of a weight one block holds (``rows`` is ``None`` for a bias).

    Example:
        >>> Block((6, 16), (10, 20)).label, Block(None, (10, 20)).label
        ('[6:16, 10:20]', '[10:20]')
    """

    rows: tuple[int, int] | None
    cols: tuple[int, int]

    @property
    def label(self) -> str:
        """The block's rows and columns as a numpy index, appended to the weight's name."""
        cols = f"{self.cols[0]}:{self.cols[1]}"
        return f"[{cols}]" if self.rows is None else f"[{self.rows[0]}:{self.rows[1]}, {cols}]"

    @property
    def index(self) -> tuple[slice, ...]:
        """The block's entries of the whole weight (``weight[block.index]``)."""
        cols = slice(*self.cols)
        return (cols,) if self.rows is None else (slice(*self.rows), cols)


@dataclasses.dataclass
class _Site:
    """One matmul to split: ``dot`` (data operand ``parts`` concatenated, weight leaf
    ``weight``), the bias addition ``add`` of leaf ``bias`` when there is one, ``out`` the
    value the gates are split from (the sum's id) and the gates' ``widths``."""

    dot: Node
    weight: int
    parts: list[int]
    add: Node | None
    bias: int | None
    out: int
    widths: list[int]


def split(
    nodes: list[Node],
    avals: dict[int, Any],
    params: Sequence[int],
) -> tuple[list[Node], dict[int, list[tuple[int, Block]]]]:
    """Rewrite every matmul of a weight leaf (an id in ``params``) on a concatenation, or
    whose output is split into gates, as one matmul per block (see the module docstring).

    Returns the new nodes (in execution order, ``avals`` extended with the new ids) and,
    for each leaf split, its blocks: ``{leaf id: [(block's id, Block), ...]}``. Leaves
    used in another way, and matmuls with one row block and one gate, are left as they are.
    """
    users: dict[int, list[Node]] = {}
    producer: dict[int, Node] = {}
    for node in nodes:
        for i in node.input_ids():
            users.setdefault(i, []).append(node)
        for o in node.outs:
            producer[o] = node
    sites = [s for n in nodes if (s := _site(n, set(params), users, producer, avals)) is not None]
    if not sites:
        return nodes, {}
    counter = [max(avals)]

    def new_id(aval: Any) -> int:
        counter[0] += 1
        avals[counter[0]] = aval
        return counter[0]

    blocks: dict[int, list[tuple[int, Block]]] = {}
    replace: dict[int, list[Node]] = {}  # the index of the last node replaced -> new nodes
    dropped: set[int] = set()
    for s in sites:
        spliced, made = _splice(s, avals, new_id)
        for leaf, items in made.items():
            blocks.setdefault(leaf, []).extend(items)
        last = s.add if s.add is not None else s.dot
        replace[last.index] = spliced
        dropped |= {s.dot.index} | ({s.add.index} if s.add is not None else set())
    out: list[Node] = []
    for node in nodes:
        if node.index in replace:
            out.extend(replace[node.index])
        elif node.index not in dropped:
            out.append(node)
    return [dataclasses.replace(n, index=k) for k, n in enumerate(out)], blocks


def _site(
    node: Node,
    params: set[int],
    users: dict[int, list[Node]],
    producer: dict[int, Node],
    avals: dict[int, Any],
) -> _Site | None:
    """The matmul ``node`` as a :class:`_Site` when it is one to split, else ``None``."""
    if node.name != "dot_general" or len(node.ins) != 2:
        return None
    data, weight = node.ins
    if not isinstance(data, int) or not isinstance(weight, int) or weight not in params:
        return None
    (lc, rc), (lb, rb) = node.params["dimension_numbers"]
    if tuple(lc) != (1,) or tuple(rc) != (0,) or lb or rb or len(avals[data].shape) != 2:
        return None
    if [n.index for n in users.get(weight, ())] != [node.index]:
        return None  # the weight is used elsewhere too: the analysis says how
    cat = producer.get(data)
    parts = [data]
    if (
        cat is not None
        and cat.name == "concatenate"
        and cat.params.get("dimension") == 1
        and all(isinstance(a, int) for a in cat.ins)
    ):
        parts = [_uncast(a, producer, avals) for a in cat.input_ids()]
    out, add, bias = node.outs[0], None, None
    after = users.get(out, ())
    if len(after) == 1 and after[0].name == "add":
        other = [a for a in after[0].input_ids() if a != out]
        b = producer.get(other[0]) if len(other) == 1 else None
        leaf = b.ins[0] if b is not None and b.name == "broadcast_in_dim" else None
        if (
            isinstance(leaf, int)
            and leaf in params
            and [n.index for n in users.get(leaf, ())] == [b.index]  # type: ignore[union-attr]
            and len(avals[leaf].shape) == 1
        ):
            add, bias, out = after[0], leaf, after[0].outs[0]
    widths = _gates(out, users, avals)
    if len(parts) == 1 and len(widths) == 1:
        return None
    return _Site(node, weight, parts, add, bias, out, widths)


def _uncast(i: int, producer: dict[int, Node], avals: dict[int, Any]) -> int:
    """Value ``i`` before a change of its dtype only (a float32 input concatenated with
    float64 signals): the matmul takes it as it is, as it takes an input of its own."""
    node = producer.get(i)
    if node is None or node.name != "convert_element_type" or not isinstance(node.ins[0], int):
        return i
    return node.ins[0] if avals[node.ins[0]].shape == avals[i].shape else i


def _gates(out: int, users: dict[int, list[Node]], avals: dict[int, Any]) -> list[int]:
    """The widths of the gates value ``out`` (``(batch, features)``) is split into along
    its features, through element-wise functions of it alone; one width when it is not."""
    width = int(avals[out].shape[-1])
    i = out
    for _ in range(8):
        after = users.get(i, ())
        sliced = _slices(after, width)
        if sliced is not None:  # gates taken by slicing (`gates[:, :n]`, `gates[:, n:2 * n]`)
            return sliced
        if len(after) != 1:
            break
        node = after[0]
        if node.name == "split" and int(node.params.get("axis", -1)) in (1, -1):
            return [int(w) for w in node.params["sizes"]]
        if node.name not in _UNARY and not (
            node.name in ("add", "mul", "sub") and any(isinstance(a, Lit) for a in node.ins)
        ):
            break
        i = node.outs[0]
    return [width]


def _slices(after: Sequence[Node], width: int) -> list[int] | None:
    """The widths of the feature ranges ``after`` (every use of a ``(batch, width)`` value)
    take, when they are two or more slices of whole rows that tile the features; else
    ``None``."""
    if len(after) < 2 or any(n.name != "slice" or n.params.get("strides") for n in after):
        return None
    ranges = set()
    for n in after:
        start, limit = n.params["start_indices"], n.params["limit_indices"]
        if start[0] != 0 or len(start) != 2:
            return None
        ranges.add((int(start[1]), int(limit[1])))
    edges = sorted(ranges)
    tiled = edges[0][0] == 0 and edges[-1][1] == width
    if not tiled or any(a[1] != b[0] for a, b in itertools.pairwise(edges)):
        return None
    return [b - a for a, b in edges]


def _spans(sizes: Sequence[int]) -> list[tuple[int, int]]:
    """Consecutive ``(start, stop)`` ranges of the given sizes, from 0.

    Example:
        >>> _spans([6, 10])
        [(0, 6), (6, 16)]
    """
    stops = list(itertools.accumulate(sizes))
    return [(stop - size, stop) for size, stop in zip(sizes, stops, strict=True)]


def _splice(
    s: _Site, avals: dict[int, Any], new_id: Callable[[Any], int]
) -> tuple[list[Node], dict[int, list[tuple[int, Block]]]]:
    """The nodes computing ``s.out`` block by block, and the new leaves (the blocks)."""
    rows = _spans([int(avals[p].shape[1]) for p in s.parts])
    cols = _spans(s.widths)
    w_aval = avals[s.weight]
    blocks: dict[int, list[tuple[int, Block]]] = {s.weight: []}
    w_ids = []
    for r0, r1 in rows:
        for c0, c1 in cols:
            i = new_id(w_aval.update(shape=(r1 - r0, c1 - c0)))
            blocks[s.weight].append((i, Block((r0, r1), (c0, c1))))
            w_ids.append(i)
    b_ids = []
    if s.bias is not None and len(cols) == 1:
        b_ids = [s.bias]  # one gate: the bias stays whole
    elif s.bias is not None:
        blocks[s.bias] = []
        for c0, c1 in cols:
            i = new_id(avals[s.bias].update(shape=(c1 - c0,)))
            blocks[s.bias].append((i, Block(None, (c0, c1))))
            b_ids.append(i)
    n_rows, n_cols, has_bias = len(rows), len(cols), s.bias is not None
    dtype = avals[s.dot.outs[0]].dtype

    def blockwise(parts: list[Any], ws: list[Any], bs: list[Any]) -> Any:
        def matmul(k: int, j: int) -> Any:
            w = ws[k * n_cols + j]
            dims = (((1,), (0,)), ((), ()))
            return jax.lax.dot_general(parts[k], w, dims, preferred_element_type=dtype)

        gates = []
        for j in range(n_cols):
            total = sum((matmul(k, j) for k in range(1, n_rows)), matmul(0, j))
            gates.append(total + bs[j] if has_bias else total)
        out = gates[0] if n_cols == 1 else jnp.concatenate(gates, axis=1)
        return out.astype(avals[s.out].dtype)  # a no-op unless the bias's dtype differs

    def spec(i: int) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(avals[i].shape, avals[i].dtype)

    closed = jax.make_jaxpr(blockwise)(
        [spec(p) for p in s.parts], [spec(i) for i in w_ids], [spec(i) for i in b_ids]
    )
    inner, inputs, outputs, consts, inner_avals = flatten(closed)
    if consts:  # pragma: no cover - the block sums hold no constants
        raise ValueError("internal: a block matmul traced with constants")
    ids: dict[int, int] = {}
    for a, outer in zip(inputs, [*s.parts, *w_ids, *b_ids], strict=True):
        ids[int(a)] = outer  # type: ignore[arg-type]
    (result,) = outputs
    for node in inner:
        for o in node.outs:
            ids[o] = s.out if o == result else new_id(inner_avals[o])
    spliced = [
        dataclasses.replace(
            node,
            ins=tuple(a if isinstance(a, Lit) else ids[a] for a in node.ins),
            outs=tuple(ids[o] for o in node.outs),
        )
        for node in inner
    ]
    return spliced, blocks
