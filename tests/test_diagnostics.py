"""``traxon.diagnostics.compare``: gradient fidelity, trace memory and step time per rule."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import traxon
from traxon.core import LIF, Dense, Expon, Network, Population, Projection, Readout
from traxon.diagnostics import FidelityTable, _label, compare
from traxon.learn import cross_entropy

T, B, N_IN = 20, 2, 4


@pytest.fixture(scope="module")
def net():
    return Network(
        N_IN,
        {"h": Population(LIF(tau=10.0), 6)},
        [Projection("x", "h", Dense(gain=8.0), synapse=Expon(5.0))],
        readout=Readout("h", 2, tau=10.0),
    )


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    xs = (rng.random((T, B, N_IN)) < 0.4).astype(np.float32)
    ys = rng.integers(0, 2, (T, B)).astype(np.int32)
    return xs, ys


@pytest.fixture(scope="module")
def table(net, data):
    xs, ys = data
    algorithms = ["d_rtrl", traxon.trace.ostl(readout_filter=False)]
    return compare(net, xs, ys, algorithms=algorithms, seed=3)


def test_rows_cover_every_algorithm_and_weight(table, net):
    weights = [p.name for p in net.projections if p.trainable]
    assert table.algorithms() == ["d_rtrl", "ostl"]
    assert [(r["algorithm"], r["weight"]) for r in table.rows] == [
        (a, w) for a in table.algorithms() for w in weights
    ]
    assert table.info["steps"] == T and table.info["batch"] == B
    assert table.info["dtype"] == "float32" and table.info["bptt_step_seconds"] > 0


def test_fidelity_numbers(table):
    cos = table.metric("cosine")
    ratio = table.metric("norm_ratio")
    err = table.metric("rel_error")
    for w in cos["d_rtrl"]:  # one population: D-RTRL is exact (float32 here)
        assert cos["d_rtrl"][w] > 0.9999 and abs(ratio["d_rtrl"][w] - 1) < 1e-3
        assert err["d_rtrl"][w] < 1e-3
    # Without the readout filter the hidden weight loses the leaky readout's memory.
    assert ratio["ostl"]["x->h"] < 0.7 and err["ostl"]["x->h"] > 0.3
    assert err["ostl"]["h->readout"] < 1e-3


def test_memory_is_the_tracer_state_and_time_is_measured(table, net):
    params, state = net.init(jax.random.PRNGKey(3), B)
    tracer = traxon.trace.d_rtrl().bind(net, cross_entropy.fn)
    leaves = jax.tree_util.tree_leaves(tracer.init(params, state))
    expected = sum(leaf.size * leaf.dtype.itemsize for leaf in leaves)
    rows = [r for r in table.rows if r["algorithm"] == "d_rtrl"]
    assert all(r["memory_bytes"] == expected for r in rows)
    assert all(0 < r["step_seconds"] < 1.0 for r in table.rows)


def test_markdown_and_plot(table):
    md = table.to_markdown().splitlines()
    assert md[0].startswith("| algorithm | weight | cosine | norm ratio")
    assert len(md) == 2 + len(table.rows)
    assert "| d_rtrl | x->h | 1.0000 |" in md[2] or "| d_rtrl | x->h | 0.9999 |" in md[2]
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    assert table.plot(ax=ax) is fig
    assert len(ax.patches) == len(table.rows)  # one bar per algorithm and weight
    plt.close(fig)


def test_learner_gives_net_weights_and_loss(net, data):
    xs, ys = data
    learner = traxon.online_learner(net, "d_rtrl", loss="mse")
    learner.init_state(B)
    targets = np.zeros((T, B, 2), np.float32)
    masks = np.ones((T, B), np.float32)
    masks[: T // 2] = 0.0
    table = compare(learner, xs, targets, algorithms=["d_rtrl"], masks=masks)
    assert isinstance(table, FidelityTable)
    assert all(r["cosine"] > 0.9999 for r in table.rows)  # the learner's MSE, its weights
    with pytest.raises(TypeError, match="Network or an OnlineLearner"):
        compare("net", xs, ys)
    with pytest.raises(ValueError, match="masks"):
        compare(net, xs, ys, algorithms=["d_rtrl"], masks=np.ones((T, B + 1)))
    with pytest.raises(ValueError, match="ys"):
        compare(net, xs, ys[:, :1], algorithms=["d_rtrl"])


def test_labels_and_unknown_names(net, data):
    xs, ys = data
    taken: set[str] = set()
    labels = [_label(a, taken) for a in ("d_rtrl", traxon.trace.d_rtrl(), traxon.trace.snap())]
    assert labels == ["d_rtrl", "d_rtrl()", "snap"]  # the same rule twice stays apart
    with pytest.raises(ValueError, match="algorithm"):
        compare(net, xs, ys, algorithms=["sgd"])  # refused before any work
