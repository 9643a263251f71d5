r"""Connectomes: FlyWire-style edge tables in, signed sparse traxon networks out.

A connectome is an edge table, one row per connected neuron pair (or per pair and
neuropil): presynaptic id, postsynaptic id, synapse count and the predicted
neurotransmitter of the presynaptic neuron. :func:`load_edges` reads one (CSV with the
standard library; Feather/Parquet through pandas + pyarrow if installed) into a
:class:`Connectome`; :func:`synthetic_connectome` generates one of full *Drosophila* size
with heavy-tailed degrees; :func:`connectome_network` turns one into a
:class:`~traxon.core.Network`:

* one population ``"brain"`` of LIF neurons with exponential AlignPost synapses;
* recurrent weights ``"brain->brain"``: a :class:`~traxon.core.CSR` op with Dale's law (the
  sign of each presynaptic neuron from its transmitter) and magnitude
  :math:`w_e = |W_e|\, c_e\, \sigma` from the synapse count :math:`c_e` (``base``), with a
  trainable scale :math:`W_e` per connection, or one per cell-type group (``groups``);
* an input encoder ``"x->brain"`` (:class:`~traxon.core.Dense`, trainable);
* a fixed readout ``"brain->readout"`` giving each region's mean firing rate (Hz),
  exponentially averaged over ``rate_window`` steps.

Memory for the full fly brain (139,255 neurons, 1.5e7 connections): two int32 indices and
one float32 count per connection on the host (~180 MB), one int32 index and one float
weight per connection on the device.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "COLUMN_NAMES",
    "INHIBITORY",
    "Connectome",
    "connectome_network",
    "load_edges",
    "synthetic_connectome",
]

COLUMN_NAMES: dict[str, tuple[str, ...]] = {
    "pre": ("pre_root_id", "pre_pt_root_id", "pre_id", "pre", "presynaptic", "source"),
    "post": ("post_root_id", "post_pt_root_id", "post_id", "post", "postsynaptic", "target"),
    "count": ("syn_count", "synapse_count", "n_synapses", "count", "weight"),
    "nt": ("nt_type", "neurotransmitter", "nt", "transmitter"),
    "region": ("neuropil", "region"),
}
"""Accepted column names, tried in order (case-insensitive), per field of an edge table."""

INHIBITORY: frozenset[str] = frozenset({"gaba", "glut"})
"""Transmitters treated as inhibitory by default (FlyWire's ``nt_type`` codes, lowercase)."""


@dataclasses.dataclass(frozen=True, eq=False)
class Connectome:
    """A connectome with neurons renumbered ``0 .. N-1``.

    Attributes:
        ids: ``(N,)`` int64 original neuron ids (index ``i`` is neuron ``ids[i]``); uint64
            when an id exceeds the int64 range.
        pre, post: ``(E,)`` int32 neuron indices of each connection, sorted by ``pre`` then
            ``post`` (the layout of :class:`~traxon.core.CSR`); no repeated pairs.
        count: ``(E,)`` float32 synapse count of each connection.
        transmitter: ``(N,)`` int8 code of each neuron's transmitter (its synapse-weighted
            majority over its outgoing rows; ``-1`` where unknown), see ``transmitters``.
        transmitters: names of the transmitter codes.
        region: ``(N,)`` int16 region index of each neuron, or ``None``; see ``regions``.
        regions: names of the regions.
        inhibitory: transmitter names (lowercase) whose neurons are inhibitory.

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
            [name.lower() in self.inhibitory for name in self.transmitters] + [False], bool
        )
        return np.where(inhib[self.transmitter], -1.0, 1.0).astype(np.float32)

    def region_sizes(self) -> np.ndarray:
        """``(R,)`` number of neurons in each region."""
        if self.region is None:
            raise ValueError("this connectome has no regions; give `region` when building it.")
        return np.bincount(self.region, minlength=self.n_regions)

    def with_inhibitory(self, names: Sequence[str]) -> Connectome:
        """The same connectome with another set of inhibitory transmitters."""
        return dataclasses.replace(self, inhibitory=frozenset(n.lower() for n in names))

    @staticmethod
    def from_edges(
        pre_ids: Any,
        post_ids: Any,
        count: Any = None,
        nt: Any = None,
        region: Any = None,
        neuron_region: Mapping[Any, str] | None = None,
        inhibitory: Sequence[str] = tuple(INHIBITORY),
    ) -> Connectome:
        """Build a connectome from per-row arrays (one row per connection, or per connection
        and region; repeated pairs are merged and their counts summed).

        Arguments:
            pre_ids, post_ids: ``(R,)`` integer neuron ids.
            count: ``(R,)`` synapse counts (ones if ``None``).
            nt: ``(R,)`` transmitter names of the presynaptic neuron (e.g. ``"ACH"``,
                ``"GABA"``); a neuron's transmitter is its synapse-weighted majority.
            region: ``(R,)`` region (neuropil) name of each row; a neuron's region is where
                it receives most synapses (or sends most, if it receives none).
            neuron_region: ``{neuron id: region name}``, overriding ``region``.
            inhibitory: transmitter names treated as inhibitory (case-insensitive).

        Example:
            >>> from traxon.connectome import Connectome
            >>> c = Connectome.from_edges([10, 10, 20], [20, 30, 30], [5, 2, 7],
            ...                           ["ACH", "ACH", "GABA"])
            >>> c.ids.tolist(), c.pre.tolist(), c.post.tolist(), c.sign.tolist()
            ([10, 20, 30], [0, 0, 1], [1, 2, 2], [1.0, -1.0, 1.0])
        """
        pre_a, post_a = np.asarray(pre_ids), np.asarray(post_ids)
        if pre_a.ndim != 1 or pre_a.shape != post_a.shape:
            raise ValueError(
                f"`pre_ids` and `post_ids` must be 1-D arrays of equal length; got shapes "
                f"{pre_a.shape} and {post_a.shape}."
            )
        for label, a in (("pre_ids", pre_a), ("post_ids", post_a)):
            if a.size and not np.issubdtype(a.dtype, np.integer):
                raise ValueError(f"`{label}` must hold integer neuron ids; got dtype {a.dtype}.")
        # One integer dtype for both (int64 and uint64 would concatenate to float64).
        pre_a, post_a = _as_ids({"pre_ids": pre_a, "post_ids": post_a})
        rows = pre_a.size
        if rows == 0:
            raise ValueError("the edge list is empty: `pre_ids` has no rows.")
        if count is None:
            cnt = np.ones(rows, np.float64)
        else:
            cnt = np.asarray(count, np.float64)
            if cnt.shape != pre_a.shape or not np.all(np.isfinite(cnt)) or np.any(cnt <= 0):
                raise ValueError(
                    f"`count` must hold one positive synapse count per row ({rows}); got "
                    f"shape {cnt.shape}"
                    + (f", values in [{cnt.min()}, {cnt.max()}]" if cnt.size else "")
                    + "."
                )
        ids, inverse = _unique(np.concatenate([pre_a, post_a]), return_inverse=True)
        n = ids.size
        pre_i = inverse[:rows].astype(np.int64)
        post_i = inverse[rows:].astype(np.int64)
        # Transmitter per neuron: synapse-weighted majority over its outgoing rows.
        names, transmitter = _categorical_majority(nt, pre_i, cnt, n, "nt", rows)
        region_names: tuple[str, ...] = ()
        region_idx = None
        if neuron_region is not None:
            labels = [neuron_region.get(int(i), neuron_region.get(str(i), "")) for i in ids]
            region_names = tuple(sorted({lab for lab in labels if lab}))
            lookup = {name: k for k, name in enumerate(region_names)}
            missing = [int(i) for i, lab in zip(ids, labels, strict=True) if not lab][:5]
            if missing:
                raise ValueError(
                    f"`neuron_region` gives no region for neurons {missing} (first five)."
                )
            region_idx = np.asarray([lookup[lab] for lab in labels], np.int16)
        elif region is not None:
            both = np.concatenate([post_i, pre_i])
            # Incoming synapses count fully; outgoing ones only break ties for silent targets.
            weight = np.concatenate([cnt, cnt * 1e-9])
            reg = np.concatenate([np.asarray(region), np.asarray(region)])
            region_names, region_idx8 = _categorical_majority(
                reg, both, weight, n, "region", 2 * rows
            )
            region_idx = region_idx8.astype(np.int16)
        # Merge repeated pairs, sort by (pre, post).
        key = pre_i * n + post_i
        uniq, where = _unique(key, return_inverse=True)
        merged = np.bincount(where, weights=cnt, minlength=uniq.size)
        wide = ids.dtype == np.uint64 and ids.size and ids.max() > np.iinfo(np.int64).max
        return Connectome(
            ids=ids if wide else ids.astype(np.int64),
            pre=(uniq // n).astype(np.int32),
            post=(uniq % n).astype(np.int32),
            count=merged.astype(np.float32),
            transmitter=transmitter,
            transmitters=names,
            region=region_idx,
            regions=region_names,
            inhibitory=frozenset(s.lower() for s in inhibitory),
        )


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


def _as_ids(columns: Mapping[str, Any]) -> list[np.ndarray]:
    """The id columns as one integer dtype: int64, or uint64 when an id exceeds int64 (and
    none is negative). Errors name the column and the offending id."""
    out = []
    for column, values in columns.items():
        a = np.asarray(values)
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
    inhibitory: Sequence[str] = tuple(INHIBITORY),
    min_count: float = 0.0,
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
        inhibitory: transmitter names whose neurons are inhibitory (default GABA, glutamate).
        min_count: drop rows with fewer synapses than this (FlyWire commonly uses 5).

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

    return Connectome.from_edges(
        sel(pre),
        sel(post),
        sel(count),
        sel(table[c_nt]) if c_nt is not None else None,
        sel(table[c_region]) if c_region is not None else None,
        neuron_region=neuron_region,
        inhibitory=inhibitory,
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
    from traxon.core import (
        CSR,
        LIF,
        Dense,
        Expon,
        LeakyIntegrator,
        Network,
        Population,
        Projection,
    )

    if not isinstance(connectome, Connectome):
        raise TypeError(f"`connectome` must be a Connectome; got {type(connectome).__name__}.")
    if connectome.region is None or connectome.n_regions == 0:
        raise ValueError(
            "the connectome has no regions: the region-rate readout needs one region per "
            "neuron (a region column, or `neuron_region=` when loading)."
        )
    if trainable not in ("connection", "cell_type"):
        raise ValueError(f"`trainable` must be 'connection' or 'cell_type'; got {trainable!r}.")
    if isinstance(rate_window, bool) or not isinstance(rate_window, int) or rate_window < 1:
        raise ValueError(f"`rate_window` must be a positive integer; got {rate_window!r}.")
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
    kappa = math.exp(-1.0 / rate_window)
    sizes = connectome.region_sizes().astype(np.float64)
    region = connectome.region.astype(np.int64)
    scale = (1.0 - kappa) * (1000.0 / dt) / np.maximum(sizes[region], 1.0)
    readout_op = CSR.from_edges(
        np.arange(n),
        region,
        n,
        connectome.n_regions,
        base=scale.astype(np.float32),
        groups=np.zeros(n, np.int32),  # one fixed weight (1.0): a pure region average
    )
    return Network(
        inputs={"x": int(n_inputs)},
        populations={
            "brain": Population(LIF(tau=tau_mem), n),
            "readout": Population(LeakyIntegrator(kappa=kappa), connectome.n_regions),
        },
        projections=[
            Projection("x", "brain", Dense(gain=input_gain), synapse=Expon(tau_syn)),
            Projection("brain", "brain", recurrent, synapse=Expon(tau_syn), delay=1),
            Projection("brain", "readout", readout_op, trainable=False),
        ],
        dt=dt,
    )
