"""Plots people expect: spike rasters, membrane traces, learning curves, memory lines,
gradient-fidelity bars. matplotlib is imported only when a function is called (it is an
optional extra: ``pip install "traxon[examples]"``).

Every function draws on a given ``ax`` (or a new figure) and returns the figure:

* :func:`raster`: spike rasters, one colour per population (from ``Network.simulate``'s
  ``record`` directly);
* :func:`membrane`: membrane potential traces of a few neurons, with the threshold;
* :func:`readout`: the readout's outputs over time, one line per class;
* :func:`activity`: raster, membrane traces and readout of one run, stacked;
* :func:`learning_curve`: loss and accuracy per sequence of ``OnlineLearner.fit``;
* :func:`memory_lines`: memory (or time) against the run length T or the number of
  neurons N, one line per algorithm;
* :func:`fidelity_bars`: cosine or norm ratio of each weight's gradient to BPTT's
  (a ``{algorithm: {weight: value}}`` dict or a :class:`traxon.diagnostics.FidelityTable`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from traxon._checks import check_positive_int

__all__ = [
    "activity",
    "fidelity_bars",
    "learning_curve",
    "membrane",
    "memory_lines",
    "raster",
    "readout",
]

_UNITS = {"B": 1.0, "KiB": 2.0**10, "MiB": 2.0**20, "GiB": 2.0**30}


def _plt() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # matplotlib is an optional extra
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
    """Spike raster of one sample.

    Arguments:
        spikes: ``(T, B, N)``, ``{population: (T, B, N)}``, or the ``record`` of
            ``Network.simulate`` (``{population: {"spike": (T, B, N), ...}}``; populations
            without spikes, such as the readout, are left out).
        sample: which sample of the batch.
        dt: the time step in ms (the x axis is in ms).
        ax: a matplotlib ``Axes`` to draw on (default: a new figure).
        title: the axes' title.

    Populations are stacked vertically in different colours.

    Example:
        >>> import numpy as np
        >>> from traxon.plot import raster
        >>> fig = raster({"h": (np.random.default_rng(0).random((100, 1, 20)) < 0.05)})
    """
    fig, ax = _axes(ax, (8, 4))
    spikes = _spike_arrays(spikes)
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


def _spike_arrays(spikes: Any) -> dict[str, Any]:
    if not isinstance(spikes, Mapping):
        return {"neurons": spikes}
    out = {}
    for name, value in spikes.items():
        if isinstance(value, Mapping):
            if "spike" in value:
                out[name] = value["spike"]
        else:
            out[name] = value
    if not out:
        raise ValueError(
            "`spikes` has no spike arrays: pass (T, B, N), {population: (T, B, N)} or a "
            f"record with 'spike' entries; got populations {sorted(spikes)}."
        )
    return out


def membrane(
    voltages: Any,
    neurons: Sequence[int] = (0, 1, 2),
    sample: int = 0,
    dt: float = 1.0,
    threshold: float | None = None,
    ax: Any = None,
    title: str | None = None,
) -> Any:
    """Membrane potential traces of a few neurons of one sample.

    Arguments:
        voltages: ``(T, B, N)``, e.g. ``Network.simulate(..., record=("spike", "V"))``'s
            ``record[population]["V"]``.
        neurons: which neurons to draw.
        sample: which sample of the batch.
        dt: the time step in ms.
        threshold: draw the firing threshold as a dashed line.
        ax: a matplotlib ``Axes`` to draw on (default: a new figure).
        title: the axes' title.

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
    if title:
        ax.set_title(title)
    return fig


def readout(
    outputs: Any,
    sample: int = 0,
    dt: float = 1.0,
    target: int | None = None,
    ax: Any = None,
    title: str | None = None,
) -> Any:
    """The readout's outputs over time, one line per output (class) of one sample.

    Arguments:
        outputs: ``(T, B, n_out)``, e.g. ``Network.simulate(...).outputs``.
        sample: which sample of the batch.
        dt: the time step in ms.
        target: the correct class, drawn thick (the others thin).
        ax: a matplotlib ``Axes`` to draw on (default: a new figure).
        title: the axes' title.

    Example:
        >>> import numpy as np
        >>> from traxon.plot import readout
        >>> fig = readout(np.random.default_rng(0).normal(size=(30, 2, 3)).cumsum(0), target=1)
    """
    fig, ax = _axes(ax, (8, 3))
    y = np.asarray(outputs)[:, sample]
    time = np.arange(y.shape[0]) * dt
    for k in range(y.shape[1]):
        thick = target is not None and k == target
        ax.plot(time, y[:, k], lw=2.0 if thick else 0.9, label=f"{k} (target)" if thick else f"{k}")
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("output")
    if y.shape[1] <= 12:
        ax.legend(fontsize="small", ncol=2, loc="upper left", title="class")
    if title:
        ax.set_title(title)
    return fig


def activity(
    record: Mapping[str, Mapping[str, Any]],
    outputs: Any = None,
    sample: int = 0,
    dt: float = 1.0,
    voltage: str | None = None,
    neurons: Sequence[int] = (0, 1, 2),
    threshold: float | None = None,
    target: int | None = None,
) -> Any:
    """One run at a glance: spike raster, membrane traces and readout, stacked in time.

    Arguments:
        record: ``Network.simulate(..., record=("spike", "V"))``'s ``record``.
        outputs: the readout's outputs ``(T, B, n_out)`` (``simulate(...).outputs``), or
            ``None`` to leave the panel out.
        sample: which sample of the batch.
        dt: the time step in ms.
        voltage: the population whose ``V`` to draw (default: the first one recorded with
            ``V``; the panel is left out when none is).
        neurons: which neurons' potentials to draw.
        threshold: the firing threshold, drawn on the membrane panel.
        target: the correct class, drawn thick on the readout panel.

    Example:
        >>> import numpy as np
        >>> from traxon.plot import activity
        >>> rng = np.random.default_rng(0)
        >>> record = {"h": {"spike": rng.random((40, 1, 10)) < 0.1,
        ...                 "V": rng.normal(size=(40, 1, 10))}}
        >>> fig = activity(record, outputs=rng.normal(size=(40, 1, 2)), threshold=1.0)
        >>> len(fig.axes)
        3
    """
    plt = _plt()
    if voltage is None:
        voltage = next((k for k, v in record.items() if "V" in v), None)
    elif voltage not in record or "V" not in record[voltage]:
        raise ValueError(
            f"`voltage` must name a population recorded with 'V'; got {voltage!r} (recorded: "
            f"{sorted(k for k, v in record.items() if 'V' in v)})."
        )
    panels = ["raster"] + (["V"] if voltage else []) + (["out"] if outputs is not None else [])
    ratios = {"raster": 2.0, "V": 1.0, "out": 1.0}
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(8, 1.6 + 1.6 * sum(ratios[p] for p in panels)),
        sharex=True,
        squeeze=False,
        gridspec_kw={"height_ratios": [ratios[p] for p in panels]},
    )
    axes = dict(zip(panels, axes[:, 0], strict=True))
    raster(record, sample=sample, dt=dt, ax=axes["raster"])
    axes["raster"].set_xlabel("")
    if voltage:
        membrane(record[voltage]["V"], neurons, sample, dt, threshold, ax=axes["V"], title=None)
        axes["V"].set_ylabel(f"{voltage}: V")
        axes["V"].set_xlabel("")
    if outputs is not None:
        readout(outputs, sample=sample, dt=dt, target=target, ax=axes["out"])
    axes[panels[-1]].set_xlabel("time (ms)")
    fig.tight_layout()
    return fig


def learning_curve(
    history: Sequence[Mapping[str, float]] | Mapping[str, Sequence[Mapping[str, float]]],
    keys: Sequence[str] = ("loss", "accuracy"),
    evaluations: Sequence[tuple[int, float]] | None = None,
    ax: Any = None,
    smooth: int = 1,
) -> Any:
    """Loss and accuracy per sequence, one panel per key.

    Arguments:
        history: what :meth:`~traxon.learn.OnlineLearner.fit` returns (a list of dicts, one
            per sequence), or ``{run name: history}`` for one curve per run.
        keys: the metrics to draw, one panel each (those no run has are skipped), e.g.
            ``("loss", "accuracy", "rate/hidden")``.
        evaluations: optional ``(sequence, test accuracy)`` points drawn as markers on the
            accuracy panel.
        ax: draw every key on this one ``Axes`` (default: a new figure).
        smooth: a running mean over this many sequences (1: the raw values).

    Example:
        >>> from traxon.plot import learning_curve
        >>> fig = learning_curve([{"loss": 0.7, "accuracy": 0.5}, {"loss": 0.3, "accuracy": 0.9}])
    """
    plt = _plt()
    smooth = check_positive_int(smooth, "smooth")
    runs = history if isinstance(history, Mapping) else {"train": history}
    keys = [k for k in keys if any(k in h for run in runs.values() for h in run)]
    if not keys:
        raise ValueError(
            "`history` has none of the keys to draw; it has "
            f"{sorted({k for run in runs.values() for h in run for k in h})}."
        )
    if ax is None:
        fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5), squeeze=False)
        axes = axes[0]
    else:
        fig, axes = ax.figure, [ax] * len(keys)
    for a, key in zip(axes, keys, strict=False):
        for name, run in runs.items():
            values = np.asarray([h.get(key, np.nan) for h in run], float)
            if smooth > 1 and len(values) >= smooth:
                values = np.convolve(values, np.ones(smooth) / smooth, mode="valid")
                steps = np.arange(smooth, smooth + len(values))
            else:
                steps = np.arange(1, len(values) + 1)
            label = name if ax is None or len(keys) == 1 else f"{name}: {key}"
            a.plot(steps, values, lw=1, label=label)
        if key == "accuracy" and evaluations:
            it, acc = zip(*evaluations, strict=True)
            a.plot(it, acc, "o-", color="k", ms=4, label="test")
        a.set_xlabel("sequence")
        a.xaxis.get_major_locator().set_params(integer=True)
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
    unit: str | None = "MiB",
    ylabel: str | None = None,
    logx: bool = True,
) -> Any:
    """Memory (or any measure) against the run length ``T`` or the size ``N``, one line per
    algorithm, on log-log axes.

    Arguments:
        rows: records (e.g. the benchmarks' JSON lines) with the keys ``algorithm``, ``x``
            and ``y``; rows whose ``y`` is missing or zero are skipped.
        x: the key on the x axis (``"T"``, ``"N"``, ...).
        y: the key on the y axis, in bytes unless ``unit=None``.
        ax: a matplotlib ``Axes`` to draw on (default: a new figure).
        budget_bytes: draw a memory budget as a red dashed line.
        unit: ``"B"``, ``"KiB"``, ``"MiB"`` or ``"GiB"`` for bytes; ``None`` to plot ``y`` as
            it is (a time per step, say; then give ``ylabel``).
        ylabel: the y axis' label (default: ``"memory (<unit>)"``, or ``y``).
        logx: a logarithmic x axis (the y axis is always logarithmic).

    Example:
        >>> from traxon.plot import memory_lines
        >>> rows = [{"algorithm": "bptt", "T": t, "compiled_bytes": 1e3 * t} for t in (10, 100)]
        >>> fig = memory_lines(rows)
        >>> rows = [{"algorithm": "d_rtrl", "N": n, "ms": 0.01 * n} for n in (100, 1000)]
        >>> fig = memory_lines(rows, x="N", y="ms", unit=None, ylabel="ms per step")
    """
    if unit is not None and unit not in _UNITS:
        raise ValueError(f"`unit` must be one of {sorted(_UNITS)} or None; got {unit!r}.")
    scale = _UNITS[unit] if unit is not None else 1.0
    fig, ax = _axes(ax, (5, 3.5))
    for algo in sorted({r["algorithm"] for r in rows}):
        pts = sorted((r[x], r[y]) for r in rows if r["algorithm"] == algo and r.get(y))
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, np.asarray(ys, float) / scale, "o-", label=algo)
    if budget_bytes:
        ax.axhline(budget_bytes / scale, color="r", ls="--", lw=0.8, label="budget")
    if logx:
        ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel or (f"memory ({unit})" if unit is not None else y))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def fidelity_bars(
    table: Any,
    metric: str = "cosine",
    ax: Any = None,
    reference: float | None = 1.0,
) -> Any:
    """Bars of a gradient-fidelity metric (cosine or norm ratio to BPTT) per weight.

    Arguments:
        table: ``{algorithm: {weight: value}}``, or a
            :class:`traxon.diagnostics.FidelityTable` (then ``metric`` names its column:
            ``"cosine"``, ``"norm_ratio"`` or ``"rel_error"``).
        metric: the y axis' label (and the column of a ``FidelityTable``).
        ax: a matplotlib ``Axes`` to draw on (default: a new figure).
        reference: draw this value (exact agreement with BPTT) as a line; ``None``: no line.

    Example:
        >>> from traxon.plot import fidelity_bars
        >>> fig = fidelity_bars({"d_rtrl": {"x->h": 0.99}, "es_d_rtrl": {"x->h": 0.97}})
    """
    if hasattr(table, "metric") and callable(table.metric):
        table = table.metric(metric)
    fig, ax = _axes(ax, (6, 3.5))
    algos = list(table)
    weights = list(dict.fromkeys(w for v in table.values() for w in v))
    width = 0.8 / max(len(algos), 1)
    pos = np.arange(len(weights))
    for i, algo in enumerate(algos):
        vals = [table[algo].get(w, np.nan) for w in weights]
        ax.bar(pos + i * width, vals, width, label=algo)
    if reference is not None:
        ax.axhline(reference, color="k", lw=0.8)
    ax.set_xticks(pos + width * (len(algos) - 1) / 2, weights, rotation=30, ha="right")
    ax.set_ylabel(metric)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig
