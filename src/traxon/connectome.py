r"""Connectomes: FlyWire-style edge tables in, signed sparse traxon networks out.

A connectome is an edge table, one row per connected neuron pair (or per pair and
neuropil): presynaptic id, postsynaptic id, synapse count and the predicted
neurotransmitter of the presynaptic neuron. Neuron ids are integers (FlyWire root ids) or
names (``"AVAL"``). :func:`load_edges` reads one (CSV with the standard library;
Feather/Parquet through pandas + pyarrow if installed), optionally with a node table, into
a :class:`Connectome`; :func:`load_cect` reads the *C. elegans* connectomes shipped by the
``cect`` package (chemical synapses, gap junctions as a separate symmetric table,
transmitters and cell classes); :func:`synthetic_connectome` generates one of full
*Drosophila* size with heavy-tailed degrees; :func:`connectome_network` turns one into a
:class:`~traxon.core.Network`:

* one population ``"brain"`` of LIF neurons (or any cell model, ``neuron=``, e.g. graded
  neurons for the worm) with exponential AlignPost synapses;
* recurrent weights ``"brain->brain"``: a :class:`~traxon.core.CSR` op with Dale's law (the
  sign of each presynaptic neuron from its transmitter) and magnitude
  :math:`w_e = |W_e|\, c_e\, \sigma` from the synapse count :math:`c_e` (``base``), with a
  trainable scale :math:`W_e` per connection, or one per cell-type group (``groups``);
* an input encoder ``"x->brain"`` (:class:`~traxon.core.Dense`, trainable; or
  :class:`~traxon.core.Sparse` onto chosen cells only, ``input_cells``);
* with ``electrical=True``, the gap junctions: a projection ``"gap"`` of the brain onto
  itself reading the membranes at ``delay=1`` through a
  :class:`~traxon.core.SparseGapJunction` (one non-negative conductance per coupled pair);
* a fixed readout ``"brain->readout"`` giving each region's mean firing rate (Hz),
  exponentially averaged over ``rate_window`` steps (for graded neurons the mean output
  :math:`f(V)`).

Memory for the full fly brain (139,255 neurons, 1.5e7 connections): two int32 indices and
one float32 count per connection on the host (~180 MB), one int32 index and one float
weight per connection on the device.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "CECT_DATASETS",
    "CELL_CLASSES",
    "COLUMN_NAMES",
    "INHIBITORY",
    "TRANSMITTERS",
    "Connectome",
    "Edges",
    "connectome_network",
    "load_cect",
    "load_edges",
    "synthetic_connectome",
]

COLUMN_NAMES: dict[str, tuple[str, ...]] = {
    "pre": ("pre_root_id", "pre_pt_root_id", "pre_id", "pre", "presynaptic", "source"),
    "post": ("post_root_id", "post_pt_root_id", "post_id", "post", "postsynaptic", "target"),
    "count": ("syn_count", "synapse_count", "n_synapses", "count", "weight"),
    "nt": ("nt_type", "neurotransmitter", "nt", "transmitter"),
    "region": ("neuropil", "region"),
    "id": ("root_id", "id", "neuron", "name", "cell"),
    "class": ("cell_class", "class", "super_class", "type"),
}
"""Accepted column names, tried in order (case-insensitive), per field of an edge table
(``pre`` .. ``region``) or a node table (``id``, ``nt``, ``region``, ``class``)."""

TRANSMITTERS: dict[str, dict[str, frozenset[str]]] = {
    "flywire": {
        "inhibitory": frozenset({"gaba", "glut"}),
        "excitatory": frozenset({"ach", "da", "ser", "oct"}),
    },
    "celegans": {
        "inhibitory": frozenset({"gaba"}),
        "excitatory": frozenset(
            {"acetylcholine", "glutamate", "betaine", "dopamine", "serotonin", "tyramine"}
            | {"octopamine"}
        ),
    },
}
"""Per dataset, the transmitter names (lowercase) treated as inhibitory by default and those
known to be excitatory. Any other name is *unknown*: its neurons are excitatory and building
the connectome warns (:class:`~traxon.TraxonWarning`). FlyWire's ``nt_type`` codes make GABA
and glutamate inhibitory; in *C. elegans* only GABA is (glutamate acts on both excitatory and
inhibitory receptors; pass ``inhibitory=`` to choose otherwise)."""

INHIBITORY: frozenset[str] = TRANSMITTERS["flywire"]["inhibitory"]
"""Transmitters treated as inhibitory by default (FlyWire's ``nt_type`` codes, lowercase)."""

CELL_CLASSES: tuple[str, ...] = ("sensory", "interneuron", "motor", "neuron", "muscle", "other")
"""Cell classes of :func:`load_cect` (``"neuron"``: a neuron of none of the first three)."""

_NEURON_CLASSES = frozenset({"sensory", "interneuron", "motor", "neuron"})

SELF_LOOPS = ("warn", "keep", "drop")


class Edges(NamedTuple):
    """A table of connections between neurons ``0 .. N-1`` of a :class:`Connectome`.

    Attributes:
        pre, post: ``(E,)`` int32 neuron indices, sorted by ``pre`` then ``post``.
        weight: ``(E,)`` float32 weight of each connection (synapse count, or the number of
            serial sections for ``cect``'s datasets).
    """

    pre: np.ndarray
    post: np.ndarray
    weight: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class Connectome:
    """A connectome with neurons renumbered ``0 .. N-1``.

    Attributes:
        ids: ``(N,)`` original neuron ids (index ``i`` is neuron ``ids[i]``): int64 (uint64
            when an id exceeds the int64 range), or strings for named neurons.
        pre, post: ``(E,)`` int32 neuron indices of each chemical connection, sorted by
            ``pre`` then ``post`` (the layout of :class:`~traxon.core.CSR`); no repeated pairs.
        count: ``(E,)`` float32 synapse count of each connection.
        transmitter: ``(N,)`` int8 code of each neuron's transmitter (its synapse-weighted
            majority over its outgoing rows, or the node table's; ``-1`` where unknown), see
            ``transmitters``. A neuron with several transmitters has one name joining them
            with ``"+"``; it is inhibitory when all of them are.
        transmitters: names of the transmitter codes.
        region: ``(N,)`` int16 region index of each neuron, or ``None``; see ``regions``.
        regions: names of the regions.
        inhibitory: transmitter names (lowercase) whose neurons are inhibitory.
        excitatory: transmitter names (lowercase) known to be excitatory (others than these
            and ``inhibitory`` are unknown: excitatory, with a warning when built).
        electrical: gap junctions (:class:`Edges`), symmetric: ``i -> j`` and ``j -> i``
            with the same count; ``None`` when not loaded. Never used as chemical synapses.
        cell_class: ``(N,)`` int8 class index of each neuron, or ``None``; see
            ``cell_classes``.
        cell_classes: names of the classes.
        self_loops_dropped: how many self-connections were dropped (``self_loops="drop"``).

    Example:
        >>> from traxon.connectome import synthetic_connectome
        >>> c = synthetic_connectome(n_neurons=500, n_connections=5_000, n_regions=4, seed=0)
        >>> c.n_neurons, c.n_regions, c.sign.shape
        (500, 4, (500,))
    """

    ids: np.ndarray
    pre: np.ndarray
    post: np.ndarray
    count: np.ndarray
    transmitter: np.ndarray
    transmitters: tuple[str, ...]
    region: np.ndarray | None = None
    regions: tuple[str, ...] = ()
    inhibitory: frozenset[str] = INHIBITORY
    excitatory: frozenset[str] = TRANSMITTERS["flywire"]["excitatory"]
    electrical: Edges | None = None
    cell_class: np.ndarray | None = None
    cell_classes: tuple[str, ...] = ()
    self_loops_dropped: int = 0

    @property
    def n_neurons(self) -> int:
        """Number of neurons ``N``."""
        return int(self.ids.size)

    @property
    def n_connections(self) -> int:
        """Number of connected pairs ``E``."""
        return int(self.pre.size)

    @property
    def n_synapses(self) -> int:
        """Total synapse count."""
        return int(np.sum(self.count, dtype=np.int64))

    @property
    def n_regions(self) -> int:
        """Number of regions (0 without regions)."""
        return len(self.regions)

    @property
    def sign(self) -> np.ndarray:
        """``(N,)`` float32 Dale sign of every neuron: ``-1`` for inhibitory transmitters."""
        inhib = np.asarray(
            [_inhibitory(name, self.inhibitory) for name in self.transmitters] + [False], bool
        )
        return np.where(inhib[self.transmitter], -1.0, 1.0).astype(np.float32)

    @property
    def is_neuron(self) -> np.ndarray:
        """``(N,)`` bool: ``True`` for neurons (all cells when there are no cell classes)."""
        if self.cell_class is None:
            return np.ones(self.n_neurons, bool)
        neuron = np.asarray([c in _NEURON_CLASSES for c in self.cell_classes] + [True], bool)
        return neuron[self.cell_class]

    def cells_of(self, classes: str | Sequence[str]) -> np.ndarray:
        """``(N,)`` bool: the cells of the given class(es), e.g. ``"sensory"``."""
        names = (classes,) if isinstance(classes, str) else tuple(classes)
        if self.cell_class is None:
            raise ValueError(
                f"this connectome has no cell classes, so cells cannot be chosen by class "
                f"{list(names)}; give `cell_class` when building it (load_cect does)."
            )
        unknown = sorted(set(names) - set(self.cell_classes))
        if unknown:
            raise ValueError(
                f"unknown cell class(es) {unknown}; this connectome has {list(self.cell_classes)}."
            )
        wanted = [k for k, c in enumerate(self.cell_classes) if c in names]
        return np.isin(self.cell_class, wanted)

    def index_of(self, ids: Any) -> np.ndarray:
        """``(K,)`` int64 indices of the neurons with the given ids (names or integers)."""
        return _index_of(self.ids, _coerce_like(np.atleast_1d(np.asarray(ids)), self.ids), "ids")

    def region_sizes(self) -> np.ndarray:
        """``(R,)`` number of neurons in each region."""
        if self.region is None:
            raise ValueError("this connectome has no regions; give `region` when building it.")
        return np.bincount(self.region, minlength=self.n_regions)

    def with_inhibitory(self, names: Sequence[str]) -> Connectome:
        """The same connectome with another set of inhibitory transmitters."""
        return dataclasses.replace(self, inhibitory=frozenset(n.lower() for n in names))

    def subset(self, keep: Any) -> Connectome:
        """The connectome of the cells ``keep`` (a ``(N,)`` bool mask, or indices): the
        connections (chemical and electrical) among them, renumbered ``0 .. K-1`` in their
        order here; regions left without a cell are dropped.

        Example:
            >>> from traxon.connectome import Connectome
            >>> c = Connectome.from_edges(["A", "B", "C"], ["B", "C", "A"], [1, 2, 3])
            >>> s = c.subset([True, True, False])
            >>> s.ids.tolist(), s.pre.tolist(), s.post.tolist()
            (['A', 'B'], [0], [1])
        """
        k = np.asarray(keep)
        if k.dtype == np.bool_:
            if k.shape != (self.n_neurons,):
                raise ValueError(
                    f"`keep` as a mask must have shape ({self.n_neurons},); got {k.shape}."
                )
            idx = np.flatnonzero(k)
        else:
            idx = np.unique(k.astype(np.int64))
            if idx.size and (idx[0] < 0 or idx[-1] >= self.n_neurons):
                raise ValueError(f"`keep` holds indices outside [0, {self.n_neurons}).")
        if idx.size == 0:
            raise ValueError("`keep` selects no cell.")
        new = np.full(self.n_neurons, -1, np.int64)
        new[idx] = np.arange(idx.size)

        def cut(e: Edges) -> Edges:
            ok = (new[e.pre] >= 0) & (new[e.post] >= 0)
            return Edges(
                new[e.pre[ok]].astype(np.int32), new[e.post[ok]].astype(np.int32), e.weight[ok]
            )

        chem = cut(Edges(self.pre, self.post, self.count))
        region, regions = None, self.regions
        if self.region is not None:  # regions left without a cell are dropped
            used, region = np.unique(self.region[idx], return_inverse=True)
            region = region.astype(np.int16)
            regions = tuple(self.regions[r] for r in used)
        return dataclasses.replace(
            self,
            ids=self.ids[idx],
            pre=chem.pre,
            post=chem.post,
            count=chem.weight,
            transmitter=self.transmitter[idx],
            region=region,
            regions=regions,
            electrical=None if self.electrical is None else cut(self.electrical),
            cell_class=None if self.cell_class is None else self.cell_class[idx],
        )

    @staticmethod
    def from_edges(
        pre_ids: Any,
        post_ids: Any,
        count: Any = None,
        nt: Any = None,
        region: Any = None,
        neuron_region: Mapping[Any, str] | None = None,
        inhibitory: Sequence[str] | None = None,
        *,
        nodes: Any = None,
        neuron_transmitter: Mapping[Any, str] | None = None,
        neuron_class: Mapping[Any, str] | None = None,
        electrical: Any = None,
        self_loops: str = "warn",
        dataset: str = "flywire",
        excitatory: Sequence[str] = (),
    ) -> Connectome:
        """Build a connectome from per-row arrays (one row per connection, or per connection
        and region; repeated pairs are merged and their counts summed).

        Arguments:
            pre_ids, post_ids: ``(R,)`` neuron ids: integers, or names (strings).
            count: ``(R,)`` synapse counts (ones if ``None``).
            nt: ``(R,)`` transmitter names of the presynaptic neuron (e.g. ``"ACH"``,
                ``"GABA"``); a neuron's transmitter is its synapse-weighted majority.
            region: ``(R,)`` region (neuropil) name of each row; a neuron's region is where
                it receives most synapses (or sends most, if it receives none).
            neuron_region: ``{neuron id: region name}``, overriding ``region``.
            inhibitory: transmitter names treated as inhibitory (case-insensitive); default
                the dataset's (:data:`TRANSMITTERS`).
            nodes: ``(N,)`` ids of all neurons, in the order to number them: cells without
                chemical connections (e.g. only gap junctions) are kept. Default: the ids
                in the edges, sorted.
            neuron_transmitter: ``{neuron id: transmitter name}``, overriding ``nt``.
            neuron_class: ``{neuron id: class name}`` (e.g. ``"sensory"``, ``"muscle"``).
            electrical: gap junctions ``(pre_ids, post_ids, count)`` (``count`` may be
                ``None``). Made symmetric: the weight of a pair is the larger of its two
                directions (sources list a junction once or in both directions).
            self_loops: connections of a neuron onto itself: ``"warn"`` (kept, with a
                :class:`~traxon.TraxonWarning` giving their number), ``"keep"`` or
                ``"drop"`` (counted in ``self_loops_dropped``). Self gap junctions carry no
                current and are always dropped.
            dataset: ``"flywire"`` or ``"celegans"``: the default inhibitory and known
                excitatory transmitters (:data:`TRANSMITTERS`).
            excitatory: more transmitter names known to be excitatory (no warning).

        Example:
            >>> from traxon.connectome import Connectome
            >>> c = Connectome.from_edges([10, 10, 20], [20, 30, 30], [5, 2, 7],
            ...                           ["ACH", "ACH", "GABA"])
            >>> c.ids.tolist(), c.pre.tolist(), c.post.tolist(), c.sign.tolist()
            ([10, 20, 30], [0, 0, 1], [1, 2, 2], [1.0, -1.0, 1.0])
        """
        if dataset not in TRANSMITTERS:
            raise ValueError(f"`dataset` must be one of {sorted(TRANSMITTERS)}; got {dataset!r}.")
        if self_loops not in SELF_LOOPS:
            raise ValueError(f"`self_loops` must be one of {list(SELF_LOOPS)}; got {self_loops!r}.")
        pre_a, post_a = np.asarray(pre_ids), np.asarray(post_ids)
        if pre_a.ndim != 1 or pre_a.shape != post_a.shape:
            raise ValueError(
                f"`pre_ids` and `post_ids` must be 1-D arrays of equal length; got shapes "
                f"{pre_a.shape} and {post_a.shape}."
            )
        id_columns = {"pre_ids": pre_a, "post_ids": post_a}
        gap = None
        if electrical is not None:
            if not isinstance(electrical, (tuple, list)) or len(electrical) not in (2, 3):
                raise ValueError(
                    "`electrical` must be (pre_ids, post_ids) or (pre_ids, post_ids, count); "
                    f"got {type(electrical).__name__}."
                )
            gap = [np.asarray(a) for a in electrical[:2]]
            gap_count = electrical[2] if len(electrical) == 3 else None
            id_columns |= {"electrical pre_ids": gap[0], "electrical post_ids": gap[1]}
        if nodes is not None:
            id_columns["nodes"] = np.asarray(nodes)
        # One id kind for all columns: integers (one dtype), or names.
        cols = _as_ids(id_columns)
        pre_a, post_a = cols[0], cols[1]
        rows = pre_a.size
        if rows == 0:
            raise ValueError("the edge list is empty: `pre_ids` has no rows.")
        cnt = _counts(count, rows, "count")
        if nodes is None:
            both = [pre_a, post_a] + ([cols[2], cols[3]] if gap is not None else [])
            ids = _unique(np.concatenate(both))
        else:
            ids = cols[-1]
            if ids.ndim != 1 or ids.size == 0:
                raise ValueError(f"`nodes` must be a non-empty 1-D array; got shape {ids.shape}.")
            dup = _duplicates(ids)
            if dup:
                raise ValueError(f"`nodes` lists ids more than once: {dup} (first five).")
        n = ids.size
        pre_i = _index_of(ids, pre_a, "pre_ids")
        post_i = _index_of(ids, post_a, "post_ids")
        loops = pre_i == post_i
        n_loops = int(loops.sum())
        dropped = 0
        if n_loops and self_loops == "drop":
            keep = ~loops
            pre_i, post_i, cnt = pre_i[keep], post_i[keep], cnt[keep]
            nt = None if nt is None else np.asarray(nt)[keep]
            region = None if region is None else np.asarray(region)[keep]
            rows, dropped = int(keep.sum()), n_loops
            if rows == 0:
                raise ValueError("every connection is a self-loop: none is left to keep.")
        elif n_loops and self_loops == "warn":
            names = ", ".join(str(ids[i]) for i in np.unique(pre_i[loops])[:5])
            _warn(
                f"the edge table has {n_loops} self-loops (a neuron onto itself: {names}, ...); "
                "they are kept. Pass self_loops='drop' to drop them or 'keep' to keep them "
                "without this warning."
            )
        # Transmitter per neuron: synapse-weighted majority over its outgoing rows.
        names_t, transmitter = _categorical_majority(nt, pre_i, cnt, n, "nt", rows)
        if neuron_transmitter is not None:
            names_t, transmitter = _per_neuron(ids, neuron_transmitter, "neuron_transmitter")
            names_t = tuple(t.upper() for t in names_t)
        region_names: tuple[str, ...] = ()
        region_idx = None
        if neuron_region is not None:
            region_names, codes = _per_neuron(ids, neuron_region, "neuron_region", True)
            region_idx = codes.astype(np.int16)
        elif region is not None:
            both_i = np.concatenate([post_i, pre_i])
            # Incoming synapses count fully; outgoing ones only break ties for silent targets.
            weight = np.concatenate([cnt, cnt * 1e-9])
            reg = np.concatenate([np.asarray(region), np.asarray(region)])
            region_names, region_idx8 = _categorical_majority(
                reg, both_i, weight, n, "region", 2 * rows
            )
            region_idx = region_idx8.astype(np.int16)
        classes: tuple[str, ...] = ()
        class_idx = None
        if neuron_class is not None:
            classes, class_idx = _per_neuron(ids, neuron_class, "neuron_class")
        electrical_edges = None
        if gap is not None:
            g_pre = _index_of(ids, cols[2], "electrical pre_ids")
            g_post = _index_of(ids, cols[3], "electrical post_ids")
            g_cnt = _counts(gap_count, g_pre.size, "electrical count")
            electrical_edges = _symmetric(g_pre, g_post, g_cnt, n)
        # Merge repeated pairs, sort by (pre, post).
        merged = _merge(pre_i, post_i, cnt, n)
        wide = ids.dtype == np.uint64 and ids.size and ids.max() > np.iinfo(np.int64).max
        out = Connectome(
            ids=ids if (wide or ids.dtype.kind == "U") else ids.astype(np.int64),
            pre=merged.pre,
            post=merged.post,
            count=merged.weight,
            transmitter=transmitter,
            transmitters=names_t,
            region=region_idx,
            regions=region_names,
            inhibitory=frozenset(
                s.lower()
                for s in (TRANSMITTERS[dataset]["inhibitory"] if inhibitory is None else inhibitory)
            ),
            excitatory=TRANSMITTERS[dataset]["excitatory"]
            | frozenset(s.lower() for s in excitatory),
            electrical=electrical_edges,
            cell_class=class_idx,
            cell_classes=classes,
            self_loops_dropped=dropped,
        )
        out._check_transmitters()
        return out

    def _check_transmitters(self) -> None:
        """Warn about transmitter names that are neither inhibitory nor known excitatory."""
        known = self.inhibitory | self.excitatory
        unknown = [
            k
            for k, name in enumerate(self.transmitters)
            if any(part not in known for part in name.lower().split("+"))
        ]
        if not unknown:
            return
        n_cells = int(np.isin(self.transmitter, unknown).sum())
        _warn(
            f"unknown transmitter(s) {[self.transmitters[k] for k in unknown]} ({n_cells} "
            f"neurons): treated as excitatory. Known: inhibitory {sorted(self.inhibitory)}, "
            f"excitatory {sorted(self.excitatory)}. Name them with `inhibitory=` or "
            "`excitatory=` (or choose `dataset=`)."
        )


def _warn(message: str) -> None:
    from traxon._checks import TraxonWarning

    warnings.warn(message, TraxonWarning, stacklevel=4)


def _inhibitory(name: str, inhibitory: frozenset[str]) -> bool:
    parts = name.lower().split("+")
    return all(p in inhibitory for p in parts)


def _counts(count: Any, rows: int, label: str) -> np.ndarray:
    if count is None:
        return np.ones(rows, np.float64)
    cnt = np.asarray(count, np.float64)
    if cnt.shape != (rows,) or not np.all(np.isfinite(cnt)) or np.any(cnt <= 0):
        raise ValueError(
            f"`{label}` must hold one positive synapse count per row ({rows}); got "
            f"shape {cnt.shape}"
            + (f", values in [{cnt.min()}, {cnt.max()}]" if cnt.size else "")
            + "."
        )
    return cnt


def _merge(pre_i: np.ndarray, post_i: np.ndarray, cnt: np.ndarray, n: int) -> Edges:
    """Repeated ``(pre, post)`` pairs merged (counts summed), sorted by ``(pre, post)``."""
    key = pre_i.astype(np.int64) * n + post_i
    uniq, where = _unique(key, return_inverse=True)
    merged = np.bincount(where, weights=cnt, minlength=uniq.size)
    return Edges(
        (uniq // n).astype(np.int32), (uniq % n).astype(np.int32), merged.astype(np.float32)
    )


def _symmetric(pre_i: np.ndarray, post_i: np.ndarray, cnt: np.ndarray, n: int) -> Edges:
    """Gap junctions as a symmetric table: per unordered pair the larger of its two
    directions (each direction's repeated rows summed), listed both ways; self pairs dropped."""
    one = _merge(pre_i, post_i, cnt, n)
    ok = one.pre != one.post
    a = np.minimum(one.pre[ok], one.post[ok]).astype(np.int64)
    b = np.maximum(one.pre[ok], one.post[ok]).astype(np.int64)
    key = a * n + b
    uniq, where = _unique(key, return_inverse=True)
    weight = np.zeros(uniq.size)
    np.maximum.at(weight, where, one.weight[ok])
    lo, hi = uniq // n, uniq % n
    return _merge(np.concatenate([lo, hi]), np.concatenate([hi, lo]), np.tile(weight, 2), n)


def _duplicates(ids: np.ndarray) -> list[Any]:
    s = np.sort(ids)
    return [v.item() for v in np.unique(s[1:][s[1:] == s[:-1]])[:5]]


def _index_of(ids: np.ndarray, values: np.ndarray, label: str) -> np.ndarray:
    """Index of each value in ``ids`` (unique); an error names values that are missing."""
    order = np.argsort(ids, kind="stable")
    pos = np.searchsorted(ids[order], values)
    pos = np.minimum(pos, ids.size - 1)
    found = ids[order][pos] == values
    if not np.all(found):
        missing = [v.item() for v in np.unique(values[~found])[:5]]
        raise ValueError(
            f"`{label}` holds ids that are not in the node table: {missing} (first five)."
        )
    return order[pos].astype(np.int64)


def _per_neuron(
    ids: np.ndarray, table: Mapping[Any, str], what: str, sort: bool = False
) -> tuple[tuple[str, ...], np.ndarray]:
    """Names and ``(N,)`` codes of a ``{neuron id: label}`` table (``-1``: no label)."""
    labels = [table.get(i.item(), table.get(str(i), "")) for i in ids]
    labels = [lab if isinstance(lab, str) and lab.strip() else "" for lab in labels]
    if sort:
        missing = [i.item() for i, lab in zip(ids, labels, strict=True) if not lab][:5]
        if missing:
            raise ValueError(f"`{what}` gives no label for neurons {missing} (first five).")
    names: list[str] = []
    for lab in labels:
        if lab and lab not in names:
            names.append(lab)
    if sort:
        names.sort()
    lookup = {name: k for k, name in enumerate(names)}
    codes = np.asarray([lookup.get(lab, -1) for lab in labels], np.int64)
    dtype = np.int8 if len(names) < 127 else np.int16
    return tuple(names), codes.astype(dtype)


def _unique(a: np.ndarray, return_inverse: bool = False) -> Any:
    """Sorted unique values (and the inverse map) by one sort: numpy's own ``unique`` is
    many times slower on tens of millions of integers."""
    order = np.argsort(a, kind="stable") if return_inverse else None
    s = a[order] if order is not None else np.sort(a)
    first = np.empty(s.size, bool)
    first[:1] = True
    np.not_equal(s[1:], s[:-1], out=first[1:])
    values = s[first]
    if not return_inverse:
        return values
    inverse = np.empty(a.size, np.int64)
    inverse[order] = np.cumsum(first) - 1
    return values, inverse


def _categorical_majority(
    labels: Any, owner: np.ndarray, weight: np.ndarray, n: int, what: str, rows: int
) -> tuple[tuple[str, ...], np.ndarray]:
    """Names and, per owner ``0..n-1``, the code of its weight-majority label (-1: none)."""
    if labels is None:
        return (), np.full(n, -1, np.int8)
    arr = np.asarray(labels)
    if arr.shape != (rows,):
        raise ValueError(f"`{what}` must hold one value per row ({rows}); got shape {arr.shape}.")
    text = np.char.lower(np.char.strip(arr.astype(str)))
    names, codes = np.unique(text, return_inverse=True)
    unknown = np.isin(names, ("", "nan", "none", "unknown"))
    n_names = names.size
    flat = owner.astype(np.int64) * n_names + codes
    score = np.bincount(flat, weights=weight, minlength=n * n_names).reshape(n, n_names)
    score[:, unknown] = 0.0
    best = np.argmax(score, axis=1)
    best = np.where(score.max(axis=1) > 0, best, -1)
    kept = [k for k in range(n_names) if not unknown[k]]
    if len(kept) > 32767:
        raise ValueError(f"`{what}` has {len(kept)} distinct values; at most 32767 are allowed.")
    remap = np.full(n_names + 1, -1, np.int64)
    remap[kept] = np.arange(len(kept))
    out = remap[best]  # best == -1 reads remap[-1] == -1
    dtype = np.int8 if len(kept) < 127 else np.int16
    return tuple(str(names[k]).upper() for k in kept), out.astype(dtype)


# ----------------------------------------------------------------------------------------
# Reading edge tables.


def _pick(columns: Sequence[str], field: str, given: str | None, required: bool) -> str | None:
    lower = {c.lower(): c for c in columns}
    if given is not None:
        if given not in columns and given.lower() not in lower:
            raise ValueError(
                f"column {given!r} (for {field}) is not in the table; its columns are "
                f"{list(columns)}."
            )
        return given if given in columns else lower[given.lower()]
    for cand in COLUMN_NAMES[field]:
        if cand in lower:
            return lower[cand]
    if required:
        raise ValueError(
            f"no {field} column found: tried {list(COLUMN_NAMES[field])}; the table has "
            f"{list(columns)}. Name it with `{field}_col=`."
        )
    return None


def _read_table(path: str) -> dict[str, np.ndarray]:
    lower = path.lower()
    if lower.endswith((".feather", ".parquet", ".pq", ".arrow")):
        try:
            import pandas as pd
        except ImportError as err:
            raise ImportError(
                f"reading {os.path.basename(path)!r} (Feather/Parquet) needs pandas and "
                'pyarrow: pip install "traxon[connectome]" (or convert the table to CSV).'
            ) from err
        try:
            frame = (
                pd.read_feather(path)
                if lower.endswith((".feather", ".arrow"))
                else pd.read_parquet(path)
            )
        except ImportError as err:
            raise ImportError(
                f"reading {os.path.basename(path)!r} needs pyarrow: pip install pyarrow."
            ) from err
        return {str(c): frame[c].to_numpy() for c in frame.columns}
    if not lower.endswith((".csv", ".csv.gz", ".tsv", ".txt")):
        raise ValueError(
            f"unknown edge table format {os.path.basename(path)!r}: use .csv, .csv.gz, .tsv, "
            ".feather or .parquet."
        )
    import gzip

    opener: Any = gzip.open if lower.endswith(".gz") else open
    # utf-8-sig: spreadsheets export CSV with a byte-order mark before the first header.
    with opener(path, "rt", newline="", encoding="utf-8-sig") as fh:
        delimiter = "\t" if lower.endswith(".tsv") else ","
        reader = csv.reader(fh, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration as err:
            raise ValueError(f"the edge table {path!r} is empty (no header row).") from err
        cols: list[list[str]] = [[] for _ in header]
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise ValueError(
                    f"{os.path.basename(path)}, line {line}: {len(row)} fields, the header "
                    f"has {len(header)}."
                )
            for c, v in zip(cols, row, strict=True):
                c.append(v)
    return {h.strip(): np.asarray(c) for h, c in zip(header, cols, strict=True)}


_INT64_MAX = np.iinfo(np.int64).max


def _id_kind(a: np.ndarray, column: str) -> str:
    """``"int"`` for integer ids (also strings of digits, integral floats), ``"name"``."""
    if a.dtype.kind in "iu" or a.size == 0:
        return "int"
    if a.dtype.kind == "f":
        if np.all(np.isfinite(a)) and np.all(a == np.round(a)):
            return "int"
        raise ValueError(
            f"column {column!r} must hold integer neuron ids or names; got non-integral "
            f"numbers ({a.dtype})."
        )
    if a.dtype.kind not in "USO":
        raise ValueError(
            f"column {column!r} must hold integer neuron ids or names; got dtype {a.dtype}."
        )
    text = np.char.strip(a.astype(str))
    digits = np.char.isdigit(np.char.lstrip(text, "+-"))
    return "int" if bool(np.all(digits)) else "name"


def _coerce_like(values: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``values`` as ids of the kind of ``ids`` (for lookups)."""
    if ids.dtype.kind == "U":
        return np.char.strip(values.astype(str))
    return _as_ids({"ids": values})[0].astype(ids.dtype)


def _as_ids(columns: Mapping[str, Any]) -> list[np.ndarray]:
    """The id columns as one kind: neuron names (strings), or one integer dtype (int64, or
    uint64 when an id exceeds int64 and none is negative). Errors name the column and the
    offending id."""
    arrays = {column: np.asarray(values) for column, values in columns.items()}
    kinds = {column: _id_kind(a, column) for column, a in arrays.items()}
    named = [column for column, kind in kinds.items() if kind == "name"]
    if named:
        numbered = [c for c, kind in kinds.items() if kind == "int" and arrays[c].size]
        first = named[0]
        example = next(
            v
            for v in np.char.strip(arrays[first].astype(str)).tolist()
            if not v.lstrip("+-").isdigit()
        )
        if numbered:
            raise ValueError(
                f"column {first!r} holds neuron names (e.g. {example!r}) while column "
                f"{numbered[0]!r} holds integer neuron ids: use one kind of id in all columns."
            )
        out_names = [np.char.strip(a.astype(str)) for a in arrays.values()]
        for column, a in zip(arrays, out_names, strict=True):
            if a.size and np.any(np.char.str_len(a) == 0):
                raise ValueError(f"column {column!r} holds an empty neuron name.")
        return out_names
    out = []
    for column, a in arrays.items():
        if a.dtype.kind in "USO":
            a = np.char.strip(a.astype(str))
        if a.dtype.kind not in "iu":
            try:
                a = a.astype(np.int64)
            except OverflowError:
                try:
                    a = a.astype(np.uint64)
                except OverflowError as err:
                    bad = next(v for v in a.tolist() if not 0 <= int(v) <= 2 * _INT64_MAX + 1)
                    raise ValueError(
                        f"column {column!r} holds neuron id {bad}, outside the 64-bit integer "
                        f"range [{-_INT64_MAX - 1}, {2 * _INT64_MAX + 1}]."
                    ) from err
            except (TypeError, ValueError) as err:
                raise ValueError(f"column {column!r} must hold integer neuron ids.") from err
        out.append(a)
    wide = [a.dtype == np.uint64 and a.size and a.max() > _INT64_MAX for a in out]
    if not any(wide):
        return [a.astype(np.int64, copy=False) for a in out]
    names = list(columns)
    for name, a in zip(names, out, strict=True):
        if a.dtype.kind == "i" and a.size and a.min() < 0:
            big = names[wide.index(True)]
            raise ValueError(
                f"column {name!r} holds negative neuron ids while column {big!r} holds ids "
                f"beyond {_INT64_MAX}: no 64-bit integer type holds both."
            )
    return [a.astype(np.uint64, copy=False) for a in out]


def load_edges(
    path: str | os.PathLike,
    pre_col: str | None = None,
    post_col: str | None = None,
    count_col: str | None = None,
    nt_col: str | None = None,
    region_col: str | None = None,
    neuron_region: Mapping[Any, str] | None = None,
    inhibitory: Sequence[str] | None = None,
    min_count: float = 0.0,
    *,
    nodes: Any = None,
    self_loops: str = "warn",
    dataset: str = "flywire",
    excitatory: Sequence[str] = (),
) -> Connectome:
    """Read a FlyWire-style edge table into a :class:`Connectome`.

    Columns are found by name (:data:`COLUMN_NAMES`: ``pre_root_id``, ``post_root_id``,
    ``syn_count``, ``nt_type``, ``neuropil``, ...) unless given. CSV (optionally gzipped) and
    TSV are read with the standard library; Feather and Parquet need pandas and pyarrow.

    Arguments:
        path: the table file.
        pre_col, post_col, count_col, nt_col, region_col: column names, if not the usual ones
            (the count, transmitter and region columns are optional).
        neuron_region: ``{neuron id: region name}`` (instead of a region column).
        inhibitory: transmitter names whose neurons are inhibitory (default: the dataset's,
            :data:`TRANSMITTERS`; FlyWire: GABA, glutamate).
        min_count: drop rows with fewer synapses than this (FlyWire commonly uses 5).
        nodes: the node table: a file (one row per neuron: an id column, :data:`COLUMN_NAMES`
            ``id``, and optionally ``nt``, ``region`` and ``class`` columns, which override
            what the edges say), or a sequence of ids. Every neuron in it is kept, in its
            order, also those without chemical connections.
        self_loops, dataset, excitatory: as in :meth:`Connectome.from_edges`.

    Example:
        >>> import os, tempfile
        >>> from traxon.connectome import load_edges
        >>> path = os.path.join(tempfile.mkdtemp(), "edges.csv")
        >>> with open(path, "w") as f:
        ...     _ = f.write("pre_root_id,post_root_id,neuropil,syn_count,nt_type\\n"
        ...                 "7,8,AL_L,12,ACH\\n8,7,AL_L,6,GABA\\n8,9,MB_L,3,GABA\\n")
        >>> c = load_edges(path)
        >>> c.n_neurons, c.n_connections, c.sign.tolist(), c.regions
        (3, 3, [1.0, -1.0, 1.0], ('AL_L', 'MB_L'))
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no edge table at {path!r}.")
    table = _read_table(path)
    columns = list(table)
    c_pre = _pick(columns, "pre", pre_col, True)
    c_post = _pick(columns, "post", post_col, True)
    c_count = _pick(columns, "count", count_col, False)
    c_nt = _pick(columns, "nt", nt_col, False)
    c_region = _pick(columns, "region", region_col, False) if neuron_region is None else None
    assert c_pre is not None and c_post is not None  # required columns
    if c_pre == c_post:
        raise ValueError(f"the pre and post columns must differ; both are {c_pre!r}.")
    pre, post = _as_ids({c_pre: table[c_pre], c_post: table[c_post]})
    count = None
    if c_count is not None:
        try:
            count = np.asarray(table[c_count]).astype(np.float64)
        except ValueError as err:
            raise ValueError(f"column {c_count!r} must hold numeric synapse counts.") from err
    elif min_count > 0:
        raise ValueError(
            f"`min_count={min_count}` needs a synapse count column, and the table has none "
            f"(tried {list(COLUMN_NAMES['count'])}; its columns are {columns}). Name it with "
            "`count_col=`, or leave `min_count` at 0 to keep every row."
        )
    keep = slice(None)
    if min_count > 0 and count is not None:
        keep_mask = count >= min_count
        if not keep_mask.any():
            raise ValueError(f"no row has at least min_count={min_count} synapses.")
        keep = keep_mask  # type: ignore[assignment]  # a boolean row selection

    def sel(a: Any) -> Any:
        return None if a is None else np.asarray(a)[keep]

    node_ids = None
    per_neuron: dict[str, dict[Any, str] | None] = {"nt": None, "region": None, "class": None}
    if nodes is not None:
        if isinstance(nodes, (str, os.PathLike)):
            node_ids, per_neuron = _read_nodes(os.fspath(nodes))
        else:
            node_ids = np.asarray(nodes)
    if neuron_region is None:
        neuron_region = per_neuron["region"]
    return Connectome.from_edges(
        sel(pre),
        sel(post),
        sel(count),
        sel(table[c_nt]) if c_nt is not None else None,
        sel(table[c_region]) if c_region is not None and neuron_region is None else None,
        neuron_region=neuron_region,
        inhibitory=inhibitory,
        nodes=node_ids,
        neuron_transmitter=per_neuron["nt"],
        neuron_class=per_neuron["class"],
        self_loops=self_loops,
        dataset=dataset,
        excitatory=excitatory,
    )


def _read_nodes(path: str) -> tuple[np.ndarray, dict[str, dict[Any, str] | None]]:
    """The ids and the per-neuron labels (``nt``, ``region``, ``class``) of a node table."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no node table at {path!r}.")
    table = _read_table(path)
    columns = list(table)
    c_id = _pick(columns, "id", None, True)
    assert c_id is not None
    (ids,) = _as_ids({c_id: table[c_id]})
    labels: dict[str, dict[Any, str] | None] = {}
    for field in ("nt", "region", "class"):
        col = _pick(columns, field, None, False)
        if col is None or col == c_id:
            labels[field] = None
            continue
        values = [str(v).strip() for v in np.asarray(table[col]).tolist()]
        labels[field] = {
            i.item(): v
            for i, v in zip(ids, values, strict=True)
            if v and v.lower() not in ("nan", "none", "unknown")
        }
    return ids, labels


# ----------------------------------------------------------------------------------------
# The C. elegans connectomes of the `cect` package.

CECT_DATASETS: dict[str, str] = {
    "Cook2019Herm": "Cook2019HermReader",
    "Cook2019Male": "Cook2019MaleReader",
    **{f"Witvliet{k}": f"WitvlietDataReader{k}" for k in range(1, 9)},
    "White_whole": "White_whole",
    "WhiteJSH": "DurbinJSHDataReader",
    "WhiteN2U": "DurbinN2UDataReader",
    "Varshney": "VarshneyDataReader",
}
"""Datasets :func:`load_cect` reads, by name, with the ``cect`` reader module of each
(Cook et al. 2019 hermaphrodite and male; Witvliet et al. 2021, eight worms from L1 to
adult; White et al. 1986, whole animal and the JSH / N2U series; Varshney et al. 2011)."""

# Chemical transmitters of Wang et al. 2024 that set a synapse's sign (fast transmission);
# a neuron with none of them but a monoamine is named by its monoamine(s).
_FAST = ("Acetylcholine", "Glutamate", "GABA", "Betaine")
_MONOAMINES = ("Dopamine", "Serotonin", "Tyramine", "Octopamine")


def _cect_module(name: str) -> Any:
    import importlib

    try:
        import cect  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "load_cect needs the cect package (C. elegans Connectome Toolbox): pip install "
            '"traxon[celegans]" (or pip install cect).'
        ) from err
    return importlib.import_module(f"cect.readers.{name}")


def _cect_dataset(name: str) -> Any:
    """A ``cect`` dataset from the cache shipped in the package (no download, no Excel)."""
    import contextlib
    import io

    module = _cect_module(name)
    with contextlib.redirect_stdout(io.StringIO()):  # cect prints as it loads
        return module.get_instance(from_cache=True)


@functools.lru_cache(maxsize=2)
def _cect_transmitters(male: bool) -> dict[str, str]:
    """``{neuron name: transmitter}`` from Wang et al. 2024 (through ``cect``): the fast
    chemical transmitters a neuron releases, joined by ``"+"``, else its monoamine(s)."""
    data = _cect_dataset("Wang2024MaleReader" if male else "Wang2024HermReader")
    found: dict[str, list[str]] = {}
    for nt in (*_FAST, *_MONOAMINES):
        matrix = data.connections.get(nt)
        if matrix is None:
            continue
        for i in np.flatnonzero(np.any(np.asarray(matrix) != 0, axis=1)):
            found.setdefault(data.nodes[i], []).append(nt)
    out = {}
    for cell, nts in found.items():
        fast = [t for t in nts if t in _FAST]
        out[cell] = "+".join(fast or nts)
    return out


def _cect_class(cell: str) -> str:
    from cect.Cells import get_SIM_class, is_any_neuron, is_known_muscle

    if is_any_neuron(cell, allow_modelled_neurons=True):
        kind = get_SIM_class(cell)
        return {"Sensory": "sensory", "Interneuron": "interneuron", "Motorneuron": "motor"}.get(
            kind, "neuron"
        )
    return "muscle" if is_known_muscle(cell) else "other"


def load_cect(
    dataset: str = "Cook2019Herm",
    region: str | None = "class",
    inhibitory: Sequence[str] | None = None,
    self_loops: str = "warn",
) -> Connectome:
    """Read a *C. elegans* connectome shipped by ``cect`` (the C. elegans Connectome
    Toolbox; ``pip install "traxon[celegans]"``), from the data inside the package.

    Every cell of the dataset is a node, named (``ids`` are strings such as ``"AVAL"``),
    also those with gap junctions only. Chemical synapses are the connections (``count``:
    the source's weight, e.g. the number of EM serial sections for Cook et al. 2019); gap
    junctions are kept apart in ``electrical``, symmetric, never as chemical edges. Each
    neuron's transmitter comes from Wang et al. 2024 (through ``cect``): the fast chemical
    transmitters it releases (acetylcholine, glutamate, GABA, betaine) joined by ``"+"``,
    else its monoamine; cells without an entry (muscles, glia, a few neurons) have none
    (excitatory). Only GABA is inhibitory by default (:data:`TRANSMITTERS`). Cell classes
    (:data:`CELL_CLASSES`) follow Cook et al. 2019 (``cect.Cells``).

    Arguments:
        dataset: one of :data:`CECT_DATASETS` (default Cook et al. 2019, hermaphrodite).
        region: what the region-rate readout of :func:`connectome_network` averages over:
            ``"class"`` (one region per cell class), ``"neuron"`` (one per cell) or
            ``None`` (no regions).
        inhibitory: transmitter names whose neurons are inhibitory (default GABA only).
        self_loops: ``"warn"``, ``"keep"`` or ``"drop"`` (see
            :meth:`Connectome.from_edges`); chemical self-connections exist in the sources.

    Example:
        >>> from traxon.connectome import load_cect
        >>> worm = load_cect("Cook2019Herm", self_loops="keep")  # doctest: +SKIP
        >>> worm.n_neurons, worm.n_connections, worm.n_synapses  # doctest: +SKIP
        (473, 4879, 28113)
    """
    if dataset not in CECT_DATASETS:
        raise ValueError(f"unknown cect dataset {dataset!r}; choose one of {list(CECT_DATASETS)}.")
    if region not in ("class", "neuron", None):
        raise ValueError(f"`region` must be 'class', 'neuron' or None; got {region!r}.")
    data = _cect_dataset(CECT_DATASETS[dataset])
    nodes = np.asarray([str(n) for n in data.nodes])
    tables = {}
    for kind in ("Generic_CS", "Generic_GJ"):
        matrix = np.asarray(data.connections.get(kind, np.zeros((nodes.size, nodes.size))))
        if matrix.shape != (nodes.size, nodes.size):
            raise ValueError(
                f"cect dataset {dataset!r}: the {kind} matrix has shape {matrix.shape}, the "
                f"dataset {nodes.size} cells."
            )
        pre, post = np.nonzero(matrix)
        tables[kind] = (nodes[pre], nodes[post], matrix[pre, post])
    transmitters = _cect_transmitters(male="Male" in dataset)
    classes = {cell: _cect_class(cell) for cell in nodes.tolist()}
    if region == "class":
        neuron_region: dict[Any, str] | None = classes
    elif region == "neuron":
        neuron_region = {cell: cell for cell in nodes.tolist()}
    else:
        neuron_region = None
    pre, post, count = tables["Generic_CS"]
    return Connectome.from_edges(
        pre,
        post,
        count,
        neuron_region=neuron_region,
        inhibitory=inhibitory,
        nodes=nodes,
        neuron_transmitter={c: t for c, t in transmitters.items() if c in classes},
        neuron_class=classes,
        electrical=tables["Generic_GJ"],
        self_loops=self_loops,
        dataset="celegans",
    )


# ----------------------------------------------------------------------------------------
# A synthetic connectome of full fly-brain size.

_TRANSMITTERS = ("ACH", "GABA", "GLUT", "DA", "SER", "OCT")
_TRANSMITTER_P = (0.58, 0.19, 0.15, 0.04, 0.02, 0.02)


def synthetic_connectome(
    n_neurons: int = 139_255,
    n_connections: int = 15_000_000,
    n_regions: int = 80,
    seed: int = 0,
    within_region: float = 0.7,
    degree_sigma: float = 1.0,
    count_mean: float = 3.3,
) -> Connectome:
    """A random connectome with heavy-tailed (lognormal) in- and out-degrees and synapse
    counts, neurons grouped in regions of lognormal sizes, most connections within a region.

    Defaults match the size of FlyWire v783 (139,255 neurons, ~1.5e7 connected pairs, ~5e7
    synapses, ~80 neuropils). Vectorised numpy with int32 indices: the full size takes a few
    seconds and about 1 GB of peak host memory.

    Arguments:
        n_neurons, n_connections, n_regions: sizes (the number of connections is met to
            within a fraction of a percent: self-loops and repeats are dropped).
        seed: random seed.
        within_region: fraction of connections whose target is in the source's region.
        degree_sigma: sigma of the lognormal degree propensities (larger: heavier tails).
        count_mean: mean synapse count per connection (``1 + lognormal``, heavy-tailed).

    Example:
        >>> from traxon.connectome import synthetic_connectome
        >>> c = synthetic_connectome(n_neurons=1_000, n_connections=20_000, n_regions=8, seed=1)
        >>> c.n_neurons, abs(c.n_connections - 20_000) < 200, c.pre.dtype.name
        (1000, True, 'int32')
    """
    for label, v, low in (
        ("n_neurons", n_neurons, 2),
        ("n_connections", n_connections, 1),
        ("n_regions", n_regions, 1),
    ):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
            raise ValueError(f"`{label}` must be an integer >= {low}; got {v!r}.")
    if n_regions > n_neurons:
        raise ValueError(f"`n_regions` ({n_regions}) must not exceed `n_neurons` ({n_neurons}).")
    if n_connections > 0.5 * n_neurons * (n_neurons - 1):
        raise ValueError(
            f"`n_connections` ({n_connections}) is more than half of all {n_neurons}^2 "
            "ordered pairs; use fewer connections or more neurons."
        )
    if not 0.0 <= within_region <= 1.0:
        raise ValueError(f"`within_region` must lie in [0, 1]; got {within_region!r}.")
    if not count_mean > 1.0:
        raise ValueError(f"`count_mean` must be > 1; got {count_mean!r}.")
    rng = np.random.default_rng(seed)
    n = int(n_neurons)
    # Regions of lognormal sizes, at least one neuron each; neurons are numbered by region.
    sizes = rng.lognormal(0.0, 0.8, n_regions)
    sizes = np.maximum(1, np.floor(sizes / sizes.sum() * (n - n_regions)).astype(np.int64) + 1)
    sizes[np.argmax(sizes)] += n - sizes.sum()
    region = np.repeat(np.arange(n_regions, dtype=np.int16), sizes)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    out_p = rng.lognormal(0.0, degree_sigma, n)
    in_p = rng.lognormal(0.0, degree_sigma, n)
    cum_out = np.cumsum(out_p)
    cum_in = np.cumsum(in_p)
    want = int(n_connections)
    have = 0
    key = np.zeros(0, np.int64)
    for _ in range(8):  # top up until the target is met (repeats and self-loops dropped)
        draw = int((want - have) * 1.03) + 16
        pre = np.searchsorted(cum_out, rng.random(draw) * cum_out[-1], side="right")
        pre = np.minimum(pre, n - 1)
        local = rng.random(draw) < within_region
        r = region[pre].astype(np.int64)
        first = starts[r]
        lo = np.where(first > 0, cum_in[np.maximum(first - 1, 0)], 0.0)
        hi = cum_in[starts[r + 1] - 1]
        u = rng.random(draw)
        target = np.where(local, lo + u * (hi - lo), u * cum_in[-1])
        post = np.minimum(np.searchsorted(cum_in, target, side="right"), n - 1)
        ok = pre != post
        new_key = pre[ok].astype(np.int64) * n + post[ok]
        key = _unique(np.concatenate([key, new_key]))
        have = key.size
        if have >= want:
            break
    if key.size > want:
        key = np.sort(rng.choice(key, want, replace=False))
    pre_i = (key // n).astype(np.int32)
    post_i = (key % n).astype(np.int32)
    # Synapse counts: 1 + lognormal with the requested mean (heavy-tailed, FlyWire-like).
    sigma = 1.0
    mu = math.log(count_mean - 1.0) - sigma**2 / 2
    count = (1.0 + np.floor(rng.lognormal(mu, sigma, key.size) + 0.5)).astype(np.float32)
    transmitter = rng.choice(len(_TRANSMITTERS), n, p=_TRANSMITTER_P).astype(np.int8)
    return Connectome(
        ids=np.arange(n, dtype=np.int64),
        pre=pre_i,
        post=post_i,
        count=count,
        transmitter=transmitter,
        transmitters=_TRANSMITTERS,
        region=region,
        regions=tuple(f"R{k:02d}" for k in range(n_regions)),
    )


# ----------------------------------------------------------------------------------------
# Connectome -> traxon Network.


def connectome_network(
    connectome: Connectome,
    n_inputs: int = 16,
    trainable: str = "connection",
    cell_types: Any = None,
    weight_scale: float | None = None,
    tau_mem: float = 20.0,
    tau_syn: float = 5.0,
    input_gain: float = 2.0,
    rate_window: int = 50,
    max_active: int | None = None,
    dt: float = 1.0,
    pad_to: int = 1,
    *,
    cells: Any = None,
    input_cells: Any = None,
    electrical: bool = False,
    neuron: Any = None,
    gap_conductance: float = 1.0,
    gap_trainable: bool = True,
) -> Any:
    r"""A traxon :class:`~traxon.core.Network` of a connectome (see the module docstring).

    Arguments:
        connectome: the :class:`Connectome` (it must have regions for the readout).
        n_inputs: width of the external input ``"x"`` (encoded by a trainable Dense op).
        trainable: ``"connection"`` (one trainable scale per connection, ``W`` of shape
            ``(E,)``) or ``"cell_type"`` (one per presynaptic cell type, ``(n_types,)``;
            give ``cell_types``, one integer per neuron).
        cell_types: ``(N,)`` integer cell type of each neuron (for ``trainable="cell_type"``).
        weight_scale: :math:`\sigma`, the weight of one synapse (default
            :math:`0.3 / \sqrt{\text{mean synapses in}}`: about 10-20 Hz with sparse input).
        tau_mem, tau_syn: membrane and synaptic time constants (ms).
        input_gain: scale of the encoder's initial weights.
        rate_window: the readout's averaging window (steps): each region's rate is
            :math:`r_t = \kappa r_{t-1} + (1-\kappa)\,\bar s_t\, 1000/dt` (Hz) with
            :math:`\kappa = e^{-1/\text{rate_window}}`.
        max_active: event-driven forward over at most this many active neurons per sample
            (``None``: all entries every step).
        dt: time step (ms).
        pad_to: pad the recurrent connections with inert entries to a multiple of this
            (see :meth:`traxon.core.CSR.from_edges`), e.g. the ``neuron_shards`` of
            :func:`traxon.parallel.data_parallel`, which then splits the per-connection
            weights over the devices; ``W`` then has ``E`` plus at most ``pad_to - 1``
            entries.
        cells: the cells to simulate (``None``: all): ``"neurons"`` (drop muscles and other
            non-neurons; needs cell classes), class names (e.g. ``("sensory", "motor")``),
            a ``(N,)`` bool mask or cell indices (see :meth:`Connectome.subset`).
        input_cells: the cells the input ``"x"`` drives (``None``: all), chosen like
            ``cells`` (e.g. ``"sensory"``), or cell ids (names); the others are reached only
            through the connectome. The encoder is then a :class:`~traxon.core.Sparse` op
            from every input to every chosen cell (trainable, ``(n_inputs * K,)``).
        electrical: simulate the gap junctions (``connectome.electrical``) too: one
            projection ``"gap"`` of the brain onto itself reading the membrane
            (``signal="V"``, ``delay=1``) through a
            :class:`~traxon.core.SparseGapJunction` with one non-negative conductance per
            coupled pair, :math:`g_e = |W_e|\, c_e` for a junction of weight :math:`c_e`
            (the source's count). ``False``: chemical synapses only.
        neuron: the cell model (a :class:`~traxon.core.Neuron`), e.g.
            :class:`~traxon.core.Graded` for the worm's mostly graded neurons; default
            ``LIF(tau=tau_mem)``. With a non-spiking model the readout averages each
            region's output :math:`f(V)` (no conversion to Hz).
        gap_conductance: initial total gap-junction conductance of the most coupled cell
            (the initial :math:`W_e` is the same for every pair). Gap-junction degrees are
            heavy-tailed (in the worm the most coupled neuron has about 35 times the mean
            total); with graded cells the explicit step is stable while every cell's total
            stays below about :math:`(1 + \alpha) / (2 (1 - \alpha) R)` (10 for
            :math:`\tau = 10\,\Delta t`, :math:`R = 1`; see :mod:`traxon.core.gap`).
        gap_trainable: whether the gap-junction conductances are trained. Trained, they need
            a rule that traces a shared conductance: ``es_d_rtrl``, ``bptt`` or ``rtrl``
            (the per-entry rules refuse it and say so).

    Returns:
        The network; its populations are ``"brain"`` and ``"readout"`` (one unit per region).

    Example:
        >>> import jax
        >>> from traxon.connectome import connectome_network, synthetic_connectome
        >>> c = synthetic_connectome(n_neurons=300, n_connections=3_000, n_regions=4, seed=0)
        >>> net = connectome_network(c, n_inputs=8)
        >>> params, state = net.init(jax.random.PRNGKey(0), batch_size=2)
        >>> {k: v.shape for k, v in sorted(params.items())}
        {'brain->brain': (3000,), 'brain->readout': (1,), 'x->brain': (8, 300)}
    """
    from traxon._checks import check_positive, check_positive_int, to_float
    from traxon.core import (
        CSR,
        LIF,
        Dense,
        Expon,
        LeakyIntegrator,
        Network,
        Neuron,
        Population,
        Projection,
        Sparse,
        SparseGapJunction,
    )

    if not isinstance(connectome, Connectome):
        raise TypeError(f"`connectome` must be a Connectome; got {type(connectome).__name__}.")
    if neuron is None:
        neuron = LIF(tau=tau_mem)
    elif not isinstance(neuron, Neuron):
        raise TypeError(
            f"`neuron` must be a traxon Neuron (e.g. Graded(tau=10.0)); got "
            f"{type(neuron).__name__}."
        )
    if not isinstance(electrical, (bool, np.bool_)):
        raise TypeError(f"`electrical` must be True or False; got {electrical!r}.")
    if electrical and connectome.electrical is None:
        raise ValueError(
            "electrical=True, but this connectome has no gap junctions (`electrical` is "
            "None): load them (load_cect does; Connectome.from_edges(electrical=...)) or "
            "leave electrical=False."
        )
    gap_conductance = float(to_float(gap_conductance, None, "gap_conductance"))
    check_positive(gap_conductance, "gap_conductance", allow_zero=True)
    if electrical and "V" not in neuron.state_names:
        raise ValueError(
            f"electrical=True couples the cells' membranes, and {type(neuron).__name__} has "
            f"no state 'V' (its states: {list(neuron.state_names)}); use a neuron with a "
            "membrane potential V (Graded, LIF, ALIF)."
        )
    if cells is not None:
        connectome = connectome.subset(_choose_cells(connectome, cells, "cells"))
    if connectome.region is None or connectome.n_regions == 0:
        raise ValueError(
            "the connectome has no regions: the region-rate readout needs one region per "
            "neuron (a region column, or `neuron_region=` when loading)."
        )
    no_region = np.flatnonzero(connectome.region < 0)
    if no_region.size:
        raise ValueError(
            f"{no_region.size} cells have no region (no synapses to place them, none in the "
            f"node table), e.g. {[connectome.ids[i].item() for i in no_region[:5]]}: give "
            "them one (`neuron_region=`, a region column in the node table) or leave them "
            "out (`cells=`)."
        )
    if trainable not in ("connection", "cell_type"):
        raise ValueError(f"`trainable` must be 'connection' or 'cell_type'; got {trainable!r}.")
    rate_window = check_positive_int(rate_window, "rate_window")
    n = connectome.n_neurons
    in_syn = np.bincount(connectome.post, weights=connectome.count, minlength=n)
    if weight_scale is None:
        weight_scale = 0.3 / math.sqrt(max(float(in_syn.mean()), 1.0))
    base = connectome.count.astype(np.float32) * np.float32(weight_scale)
    groups = None
    n_groups = None
    if trainable == "cell_type":
        if cell_types is None:
            raise ValueError("trainable='cell_type' needs `cell_types`, one integer per neuron.")
        types = np.asarray(cell_types)
        if types.shape != (n,) or not np.issubdtype(types.dtype, np.integer) or types.min() < 0:
            raise ValueError(
                f"`cell_types` must hold one non-negative integer per neuron ({n}); got "
                f"{types.dtype} array of shape {types.shape}."
            )
        groups = types[connectome.pre].astype(np.int32)
        n_groups = int(types.max()) + 1
    recurrent = CSR.from_edges(
        connectome.pre,
        connectome.post,
        n,
        n,
        gain=1.0,
        sign=connectome.sign,
        max_active=max_active,
        base=base,
        groups=groups,
        n_groups=n_groups,
        pad_to=pad_to,
    )
    if input_cells is None:
        encoder: Any = Dense(gain=input_gain)
    else:
        driven = np.flatnonzero(_choose_cells(connectome, input_cells, "input_cells"))
        if driven.size == 0:
            raise ValueError("`input_cells` selects no cell: the input would drive nothing.")
        k = driven.size
        # Initial weights N(0, input_gain^2 / n_inputs), as the Dense encoder's.
        encoder = Sparse.from_edges(
            np.repeat(np.arange(int(n_inputs)), k),
            np.tile(driven, int(n_inputs)),
            n_out=n,
            gain=input_gain * math.sqrt(k / n),
        )
    kappa = math.exp(-1.0 / rate_window)
    sizes = connectome.region_sizes().astype(np.float64)
    region = connectome.region.astype(np.int64)
    per_second = 1000.0 / dt if neuron.spiking else 1.0  # spikes per step -> Hz
    scale = (1.0 - kappa) * per_second / np.maximum(sizes[region], 1.0)
    readout_op = CSR.from_edges(
        np.arange(n),
        region,
        n,
        connectome.n_regions,
        base=scale.astype(np.float32),
        groups=np.zeros(n, np.int32),  # one fixed weight (1.0): a pure region average
    )
    projections = [
        Projection("x", "brain", encoder, synapse=Expon(tau_syn)),
        Projection("brain", "brain", recurrent, synapse=Expon(tau_syn), delay=1),
        Projection("brain", "readout", readout_op, trainable=False),
    ]
    if electrical:
        gap = connectome.electrical
        assert gap is not None  # checked above
        one_way = gap.pre < gap.post  # each pair is listed in both directions
        if np.any(one_way):
            op = SparseGapJunction.from_pairs(
                gap.pre[one_way],
                gap.post[one_way],
                n,
                base=gap.weight[one_way],
                positive=True,
                gain=gap_conductance,
            )
            projections.append(
                Projection(
                    "brain", "brain", op, signal="V", delay=1, name="gap", trainable=gap_trainable
                )
            )
    return Network(
        inputs={"x": int(n_inputs)},
        populations={
            "brain": Population(neuron, n),
            "readout": Population(LeakyIntegrator(kappa=kappa), connectome.n_regions),
        },
        projections=projections,
        dt=dt,
    )


def _choose_cells(connectome: Connectome, choice: Any, label: str) -> np.ndarray:
    """``(N,)`` bool mask of the cells named by ``choice``: ``"neurons"``, class name(s),
    a bool mask, cell indices (integers) or cell names (strings)."""
    n = connectome.n_neurons
    if isinstance(choice, str) and choice == "neurons":
        if connectome.cell_class is None:
            raise ValueError(
                f'`{label}="neurons"` needs cell classes; this connectome has none (load_cect '
                "gives them; or pass a mask)."
            )
        return connectome.is_neuron
    if isinstance(choice, str) or (
        isinstance(choice, (list, tuple))
        and choice
        and all(isinstance(c, str) for c in choice)
        and set(choice) <= set(connectome.cell_classes)
    ):
        return connectome.cells_of(choice)
    a = np.asarray(choice)
    if a.dtype == np.bool_:
        if a.shape != (n,):
            raise ValueError(f"`{label}` as a mask must have shape ({n},); got {a.shape}.")
        return a
    if a.dtype.kind in "iu":  # cell indices (integer ids: use connectome.index_of)
        idx = a.astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"`{label}` holds cell indices outside [0, {n}).")
    else:
        idx = connectome.index_of(a)
    mask = np.zeros(n, bool)
    mask[idx] = True
    return mask
