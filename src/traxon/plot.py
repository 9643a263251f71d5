"""Plots people expect: spike rasters, membrane traces, learning curves, memory lines,
gradient-fidelity bars. matplotlib is imported only when a function is called (it is an
optional extra: ``pip install "traxon[examples]"``).

Every function draws on a given ``ax`` (or a new figure) and returns the figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["fidelity_bars", "learning_curve", "membrane", "memory_lines", "raster"]


def _plt() -> Any:
    try:
        import matplotlib

        if matplotlib.get_backend().lower() not in (
            "agg",
            "module://matplotlib_inline.backend_inline",
        ):
            try:
                import matplotlib.pyplot as plt
            except Exception:  # pragma: no cover - headless fallback
                matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - matplotlib is an optional extra
        raise ImportError('plotting needs matplotlib: pip install "traxon[examples]"') from err
    return plt


def _axes(ax: Any, figsize: tuple[float, float]) -> tuple[Any, Any]:
    plt = _plt()
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def raster(
    spikes: Mapping[str, Any] | Any,
    sample: int = 0,
    dt: float = 1.0,
    ax: Any = None,
    title: str | None = None,
) -> Any:
    """Spike raster of one sample: ``spikes`` is ``(T, B, N)`` or ``{population: (T, B, N)}``.

    Populations are stacked vertically in different colours.

    Example:
        >>> import numpy as np
        >>> from traxon.plot import raster
        >>> fig = raster({"h": (np.random.default_rng(0).random((100, 1, 20)) < 0.05)})
    """
    fig, ax = _axes(ax, (8, 4))
    if not isinstance(spikes, Mapping):
        spikes = {"neurons": spikes}
    offset = 0
    for i, (name, s) in enumerate(spikes.items()):
        s = np.asarray(s)[:, sample]
        t, n = np.nonzero(s > 0)
        ax.scatter(t * dt, n + offset, s=2, marker="|", color=f"C{i}", label=name)
        offset += s.shape[1]
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("neuron")
    ax.set_ylim(-0.5, offset - 0.5)
    if len(spikes) > 1:
        ax.legend(loc="upper right", markerscale=4, fontsize="small")
    if title:
        ax.set_title(title)
    return fig


def membrane(
    voltages: Any,
    neurons: Sequence[int] = (0, 1, 2),
    sample: int = 0,
    dt: float = 1.0,
    threshold: float | None = None,
    ax: Any = None,
) -> Any:
    """Membrane potential traces ``(T, B, N)`` of a few neurons of one sample.

    Example:
        >>> import numpy as np
        >>> from traxon.plot import membrane
        >>> fig = membrane(np.random.default_rng(0).normal(size=(50, 1, 4)), threshold=1.0)
    """
    fig, ax = _axes(ax, (8, 3))
    v = np.asarray(voltages)[:, sample]
    time = np.arange(v.shape[0]) * dt
    for i in neurons:
        ax.plot(time, v[:, i], lw=1, label=f"neuron {i}")
    if threshold is not None:
        ax.axhline(threshold, color="k", ls="--", lw=0.8, label="threshold")
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("V (mV)")
    ax.legend(fontsize="small")
    return fig


def learning_curve(
    history: Sequence[Mapping[str, float]] | Mapping[str, Sequence[Mapping[str, float]]],
    keys: Sequence[str] = ("loss", "accuracy"),
    evaluations: Sequence[tuple[int, float]] | None = None,
    ax: Any = None,
) -> Any:
    """Loss and accuracy per sequence (one curve per run when given ``{name: history}``).

    ``evaluations``: optional ``(iteration, test accuracy)`` points drawn as markers.

    Example:
        >>> from traxon.plot import learning_curve
        >>> fig = learning_curve([{"loss": 0.7, "accuracy": 0.5}, {"loss": 0.3, "accuracy": 0.9}])
    """
    plt = _plt()
    runs = history if isinstance(history, Mapping) else {"train": history}
    keys = [k for k in keys if any(k in h for run in runs.values() for h in run)]
    if ax is None:
        fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5), squeeze=False)
        axes = axes[0]
    else:
        fig, axes = ax.figure, [ax] * len(keys)
    for a, key in zip(axes, keys, strict=False):
        for name, run in runs.items():
            values = [h.get(key, np.nan) for h in run]
            a.plot(np.arange(1, len(values) + 1), values, lw=1, label=name)
        if key == "accuracy" and evaluations:
            it, acc = zip(*evaluations, strict=True)
            a.plot(it, acc, "o-", color="k", ms=4, label="test")
        a.set_xlabel("sequence")
        a.set_ylabel(key)
        a.grid(alpha=0.3)
        a.legend(fontsize="small")
    fig.tight_layout()
    return fig


def memory_lines(
    rows: Sequence[Mapping[str, Any]],
    x: str = "T",
    y: str = "compiled_bytes",
    ax: Any = None,
    budget_bytes: float | None = None,
) -> Any:
    """Memory against ``T`` or ``N``, one line per algorithm, log-log.

    ``rows`` are benchmark records with keys ``algorithm``, ``x`` and ``y``.

    Example:
        >>> from traxon.plot import memory_lines
        >>> rows = [{"algorithm": "bptt", "T": t, "compiled_bytes": 1e3 * t} for t in (10, 100)]
        >>> fig = memory_lines(rows)
    """
    fig, ax = _axes(ax, (5, 3.5))
    for algo in sorted({r["algorithm"] for r in rows}):
        pts = sorted((r[x], r[y]) for r in rows if r["algorithm"] == algo and r.get(y))
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, np.asarray(ys) / 2**20, "o-", label=algo)
    if budget_bytes:
        ax.axhline(budget_bytes / 2**20, color="r", ls="--", lw=0.8, label="budget")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel("memory (MiB)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def fidelity_bars(
    table: Mapping[str, Mapping[str, float]], metric: str = "cosine", ax: Any = None
) -> Any:
    """Bars of a gradient-fidelity metric per algorithm and weight.

    ``table`` is ``{algorithm: {weight: value}}`` (e.g. cosine with BPTT).

    Example:
        >>> from traxon.plot import fidelity_bars
        >>> fig = fidelity_bars({"d_rtrl": {"x->h": 0.99}, "es_d_rtrl": {"x->h": 0.97}})
    """
    fig, ax = _axes(ax, (6, 3.5))
    algos = list(table)
    weights = sorted({w for v in table.values() for w in v})
    width = 0.8 / max(len(algos), 1)
    pos = np.arange(len(weights))
    for i, algo in enumerate(algos):
        vals = [table[algo].get(w, np.nan) for w in weights]
        ax.bar(pos + i * width, vals, width, label=algo)
    ax.set_xticks(pos + width * (len(algos) - 1) / 2, weights, rotation=30, ha="right")
    ax.set_ylabel(metric)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig
