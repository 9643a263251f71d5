"""traxon.plot: every plot draws what it is given (Agg backend), and importing traxon does not
import matplotlib."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from traxon import plot  # noqa: E402
from traxon.diagnostics import FidelityTable  # noqa: E402

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_importing_traxon_does_not_import_matplotlib() -> None:
    code = "import traxon, traxon.plot, sys; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_raster_stacks_populations_and_reads_a_simulate_record() -> None:
    spikes = RNG.random((50, 2, 10)) < 0.2
    record = {
        "exc": {"spike": spikes, "V": RNG.normal(size=(50, 2, 10))},
        "inh": {"spike": RNG.random((50, 2, 4)) < 0.2},
        "readout": {"r": RNG.normal(size=(50, 2, 3))},  # no spikes: left out
    }
    fig = plot.raster(record, sample=1, dt=0.5, title="t")
    (ax,) = fig.axes
    assert [c.get_label() for c in ax.collections] == ["exc", "inh"]
    points = np.concatenate([c.get_offsets() for c in ax.collections])
    assert len(points) == spikes[:, 1].sum() + record["inh"]["spike"][:, 1].sum()
    assert points[:, 0].max() <= 49 * 0.5  # time in ms
    assert ax.get_ylim() == (-0.5, 13.5)
    assert ax.get_title() == "t"
    # a plain array and an explicit axes
    fig2, ax2 = plt.subplots()
    assert plot.raster(spikes, ax=ax2) is fig2
    with pytest.raises(ValueError, match="no spike arrays"):
        plot.raster({"readout": {"r": np.zeros((5, 1, 2))}})


def test_membrane_and_readout_draw_one_line_per_neuron_or_class() -> None:
    v = RNG.normal(size=(30, 1, 5))
    fig = plot.membrane(v, neurons=(0, 3), threshold=1.0)
    lines = fig.axes[0].get_lines()
    assert len(lines) == 3  # two neurons and the threshold
    np.testing.assert_allclose(lines[1].get_ydata(), v[:, 0, 3])
    fig = plot.readout(RNG.normal(size=(30, 2, 4)), sample=1, target=2)
    lines = fig.axes[0].get_lines()
    assert len(lines) == 4
    assert lines[2].get_linewidth() > lines[0].get_linewidth()


def test_activity_stacks_raster_membrane_and_readout() -> None:
    record = {"h": {"spike": RNG.random((40, 1, 8)) < 0.1, "V": RNG.normal(size=(40, 1, 8))}}
    fig = plot.activity(record, outputs=RNG.normal(size=(40, 1, 2)), threshold=1.0, target=0)
    assert len(fig.axes) == 3
    assert plot.activity({"h": {"spike": record["h"]["spike"]}}).axes[0].collections
    assert len(plot.activity({"h": {"spike": record["h"]["spike"]}}).axes) == 1
    with pytest.raises(ValueError, match="`voltage` must name"):
        plot.activity(record, voltage="nope")


def test_learning_curve_one_panel_per_key_one_line_per_run() -> None:
    run = [{"loss": 1.0 / (i + 1), "accuracy": i / 10, "rate/h": 0.01} for i in range(10)]
    fig = plot.learning_curve({"a": run, "b": run[:5]}, evaluations=[(5, 0.5), (10, 0.9)])
    assert len(fig.axes) == 2
    loss, acc = fig.axes
    assert [line.get_label() for line in loss.get_lines()] == ["a", "b"]
    assert len(acc.get_lines()) == 3  # two runs and the test points
    fig = plot.learning_curve(run, keys=("loss", "rate/h", "missing"), smooth=3)
    assert len(fig.axes) == 2
    assert len(fig.axes[0].get_lines()[0].get_ydata()) == 8
    with pytest.raises(ValueError, match="none of the keys"):
        plot.learning_curve(run, keys=("missing",))
    with pytest.raises(ValueError, match="`smooth`"):
        plot.learning_curve(run, smooth=0)


def test_memory_lines_against_T_and_N() -> None:
    rows = [
        {"algorithm": alg, "T": t, "compiled_bytes": (t if alg == "bptt" else 1) * 2**20}
        for alg in ("bptt", "d_rtrl")
        for t in (10, 100, 1000)
    ]
    rows.append({"algorithm": "es_d_rtrl", "T": 10, "compiled_bytes": None})  # skipped
    fig = plot.memory_lines(rows, budget_bytes=2**29)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"bptt", "d_rtrl", "budget"}
    np.testing.assert_allclose(lines["bptt"].get_ydata(), [10, 100, 1000])  # MiB
    assert ax.get_xscale() == ax.get_yscale() == "log"
    rows = [{"algorithm": "d_rtrl", "N": n, "ms": 0.01 * n} for n in (100, 1000)]
    fig = plot.memory_lines(rows, x="N", y="ms", unit=None, ylabel="ms per step", logx=False)
    assert fig.axes[0].get_ylabel() == "ms per step"
    assert fig.axes[0].get_xscale() == "linear"
    with pytest.raises(ValueError, match="`unit`"):
        plot.memory_lines(rows, unit="MB")


def test_fidelity_bars_from_a_dict_and_from_a_fidelity_table() -> None:
    values = {"d_rtrl": {"x->h": 1.0, "h->h": 0.9}, "es_d_rtrl": {"x->h": 0.95}}
    fig = plot.fidelity_bars(values)
    ax = fig.axes[0]
    assert len(ax.patches) == 4  # two algorithms x two weights (one NaN bar)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["x->h", "h->h"]
    rows = [
        {"algorithm": a, "weight": w, "cosine": c, "norm_ratio": 2 * c}
        for a, w, c in (("d_rtrl", "x->h", 1.0), ("es_d_rtrl", "x->h", 0.5))
    ]
    fig = plot.fidelity_bars(FidelityTable(rows), metric="norm_ratio", reference=None)
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == [2.0, 1.0]
    assert fig.axes[0].get_ylabel() == "norm_ratio"
    assert not fig.axes[0].get_lines()
