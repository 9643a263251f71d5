"""The C. elegans connectomes of ``cect``, named neurons, node tables, gap junctions kept
apart, per-dataset transmitter signs, self-loops and the worm as a traxon network.

The counts are those of the matrices ``cect`` ships (its cache, read without traxon below):
Cook et al. 2019 hermaphrodite, 473 cells, 4,879 chemical connections of total weight
28,113 (38 of them self-loops), 2,883 non-zero gap-junction entries (a symmetric matrix,
17 on the diagonal).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

from traxon import TraxonWarning

COOK_CELLS = 473
COOK_CHEMICAL = 4_879
COOK_CHEMICAL_WEIGHT = 28_113
COOK_SELF_LOOPS = 38
COOK_GAP_ENTRIES = 2_883  # both directions of each pair, plus 17 self entries
COOK_GAP_SELF = 17


@pytest.fixture(scope="module")
def cect_cook():
    """The raw Cook 2019 hermaphrodite dataset as cect gives it (its packaged cache)."""
    pytest.importorskip("cect")
    from cect.readers.Cook2019HermReader import get_instance

    return get_instance(from_cache=True)


@pytest.fixture(scope="module")
def worm():
    pytest.importorskip("cect")
    from traxon.connectome import load_cect

    return load_cect("Cook2019Herm", self_loops="keep")


def test_cect_source_counts_are_those_the_issue_measured(cect_cook):
    chem = np.asarray(cect_cook.connections["Generic_CS"])
    gap = np.asarray(cect_cook.connections["Generic_GJ"])
    assert len(cect_cook.nodes) == COOK_CELLS
    assert np.count_nonzero(chem) == COOK_CHEMICAL and chem.sum() == COOK_CHEMICAL_WEIGHT
    assert np.count_nonzero(np.diag(chem)) == COOK_SELF_LOOPS
    assert np.count_nonzero(gap) == COOK_GAP_ENTRIES and np.array_equal(gap, gap.T)
    assert np.count_nonzero(np.diag(gap)) == COOK_GAP_SELF


def test_cook2019_chemical_synapses_match_the_source(worm, cect_cook):
    chem = np.asarray(cect_cook.connections["Generic_CS"])
    assert worm.ids.tolist() == list(cect_cook.nodes)  # named, in the source's order
    assert worm.n_neurons == COOK_CELLS
    assert worm.n_connections == COOK_CHEMICAL and worm.n_synapses == COOK_CHEMICAL_WEIGHT
    assert int(np.sum(worm.pre == worm.post)) == COOK_SELF_LOOPS
    dense = np.zeros_like(chem)
    dense[worm.pre, worm.post] = worm.count
    np.testing.assert_array_equal(dense, chem)  # every connection, weight and degree
    # AVAL's strongest input: by name.
    aval = worm.index_of("AVAL")[0]
    assert worm.ids[aval] == "AVAL"
    assert (
        worm.count[(worm.post == aval)].sum() == chem[:, list(cect_cook.nodes).index("AVAL")].sum()
    )


def test_gap_junctions_are_a_separate_symmetric_table(worm, cect_cook):
    gap = np.asarray(cect_cook.connections["Generic_GJ"])
    e = worm.electrical
    assert e is not None
    # Self gap junctions dropped (they carry no current); the rest kept in both directions.
    assert e.pre.size == COOK_GAP_ENTRIES - COOK_GAP_SELF
    off = gap - np.diag(np.diag(gap))
    dense = np.zeros_like(gap)
    dense[e.pre, e.post] = e.weight
    np.testing.assert_array_equal(dense, off)
    # Not chemical: no gap-junction-only pair became a chemical connection.
    chem_pairs = set(zip(worm.pre.tolist(), worm.post.tolist(), strict=True))
    gap_only = [
        (i, j)
        for i, j in zip(e.pre.tolist(), e.post.tolist(), strict=True)
        if (i, j) not in chem_pairs
    ]
    assert len(gap_only) > 0
    assert worm.n_connections == COOK_CHEMICAL
    # Cells with gap junctions only are nodes too (the issue counted 27 such cells).
    chem_cells = np.union1d(worm.pre, worm.post)
    gap_cells = np.union1d(e.pre, e.post)
    only_gap = np.setdiff1d(gap_cells, chem_cells)
    assert only_gap.size == 27
    present = np.union1d(chem_cells, gap_cells)
    assert present.size <= worm.n_neurons


def test_worm_transmitters_and_classes(worm):
    names = dict(zip(worm.ids.tolist(), worm.transmitter.tolist(), strict=True))

    def nt(cell):
        code = names[cell]
        return None if code < 0 else worm.transmitters[code]

    assert nt("AVAL") == "ACETYLCHOLINE" and nt("DD1") == "GABA" and nt("AVAR") != "GABA"
    assert nt("AIBL") == "GLUTAMATE"
    assert nt("DVB").split("+")[0] in ("GABA",)
    sign = dict(zip(worm.ids.tolist(), worm.sign.tolist(), strict=True))
    # GABA only by default in the worm: glutamatergic neurons stay excitatory.
    assert sign["DD1"] == -1.0 and sign["AIBL"] == 1.0 and sign["AVAL"] == 1.0
    glu = np.asarray(["GLUTAMATE" in t.split("+") for t in worm.transmitters] + [False])
    # Wang et al. 2024 via cect: 84 cells release glutamate (74 of them nothing else but
    # glutamate); under the fly's default all 84 would be inhibitory.
    assert int(glu[worm.transmitter].sum()) == 84
    assert int(np.sum(worm.transmitter == worm.transmitters.index("GLUTAMATE"))) == 74
    assert int((worm.sign < 0).sum()) == int(
        np.isin(worm.transmitter, [worm.transmitters.index("GABA")]).sum()
    )
    flyish = worm.with_inhibitory(["gaba", "glutamate"])
    assert int((flyish.sign < 0).sum()) > int((worm.sign < 0).sum())
    # ACh + GABA co-release: not inhibitory (a neuron is inhibitory when all of its are).
    both = worm.transmitters.index("ACETYLCHOLINE+GABA")
    assert np.all(worm.sign[worm.transmitter == both] == 1.0)
    # Classes: sensory / inter / motor neurons, muscles, other cells.
    cls = dict(zip(worm.ids.tolist(), worm.cell_class.tolist(), strict=True))
    assert worm.cell_classes[cls["ASEL"]] == "sensory"
    assert worm.cell_classes[cls["AVAL"]] == "interneuron"
    assert worm.cell_classes[cls["DD1"]] == "motor"
    assert worm.cell_classes[cls["MDL08"]] == "muscle"
    assert int(worm.is_neuron.sum()) == 302  # the hermaphrodite's neurons
    assert int(worm.cells_of("muscle").sum()) > 90
    assert worm.regions == tuple(sorted(worm.cell_classes))  # region="class"


def test_self_loops_warn_or_drop_with_a_count():
    pytest.importorskip("cect")
    from traxon.connectome import Connectome, load_cect

    with pytest.warns(TraxonWarning, match="38 self-loops"):
        load_cect("Cook2019Herm")
    dropped = load_cect("Cook2019Herm", self_loops="drop")
    assert dropped.self_loops_dropped == COOK_SELF_LOOPS
    assert dropped.n_connections == COOK_CHEMICAL - COOK_SELF_LOOPS
    assert not np.any(dropped.pre == dropped.post)
    with pytest.warns(TraxonWarning, match="1 self-loops"):
        Connectome.from_edges(["A", "A"], ["A", "B"])
    with pytest.raises(ValueError, match="self_loops"):
        Connectome.from_edges(["A"], ["B"], self_loops="silently")


@pytest.mark.parametrize("dataset", ["Witvliet8", "White_whole"])
def test_other_cect_datasets_load_by_the_same_reader(dataset):
    pytest.importorskip("cect")
    from cect.readers import White_whole, WitvlietDataReader8

    from traxon.connectome import load_cect

    module = {"Witvliet8": WitvlietDataReader8, "White_whole": White_whole}[dataset]
    raw = module.get_instance(from_cache=True)
    chem = np.asarray(raw.connections["Generic_CS"])
    c = load_cect(dataset, self_loops="keep", region="neuron")
    assert c.n_neurons == len(raw.nodes) and c.n_regions == len(raw.nodes)
    assert c.n_connections == np.count_nonzero(chem) and c.n_synapses == chem.sum()
    gap = np.asarray(raw.connections["Generic_GJ"])
    assert c.electrical.pre.size == np.count_nonzero(gap) - np.count_nonzero(np.diag(gap))


def test_string_ids_node_table_and_unknown_transmitters(tmp_path):
    from traxon.connectome import Connectome, load_edges

    (tmp_path / "edges.csv").write_text(
        "pre,post,weight,nt\nAVAL,AVAR,3,acetylcholine\nDD1,AVAL,2,GABA\nAVAR,DD1,1,acetylcholine\n"
    )
    (tmp_path / "nodes.csv").write_text(
        "name,class,region\nAVAL,interneuron,head\nAVAR,interneuron,head\nDD1,motor,body\n"
        "ASEL,sensory,head\n"
    )
    c = load_edges(tmp_path / "edges.csv", nodes=tmp_path / "nodes.csv", dataset="celegans")
    assert c.ids.tolist() == ["AVAL", "AVAR", "DD1", "ASEL"]  # ASEL: no chemical synapse
    assert c.n_connections == 3 and c.sign.tolist() == [1.0, 1.0, -1.0, 1.0]
    assert c.cell_classes == ("interneuron", "motor", "sensory")
    assert [c.regions[r] for r in c.region] == ["head", "head", "body", "head"]
    assert c.cells_of("sensory").tolist() == [False, False, False, True]
    # A cell without synapses and without a region in the node table has no region.
    from traxon.connectome import connectome_network

    lone = load_edges(
        tmp_path / "edges.csv",
        nodes=["AVAL", "AVAR", "DD1", "ASEL"],
        region_col="nt",
        dataset="celegans",
    )
    assert lone.region[3] == -1
    with pytest.raises(ValueError, match=r"1 cells have no region.*'ASEL'"):
        connectome_network(lone)
    assert connectome_network(lone, cells=[0, 1, 2]).populations["brain"].size == 3
    with pytest.raises(ValueError, match="not in the node table"):
        Connectome.from_edges(["A"], ["B"], nodes=["A"])
    with pytest.raises(ValueError, match="more than once"):
        Connectome.from_edges(["A"], ["B"], nodes=["A", "B", "A"])
    with pytest.raises(ValueError, match="integer neuron ids"):
        Connectome.from_edges(["A", "B"], [1, 2])
    # The fly's defaults: glutamate inhibitory; an unknown name warns, stays excitatory.
    fly = Connectome.from_edges([1, 2], [2, 1], nt=["GLUT", "ACH"])
    assert fly.sign.tolist() == [-1.0, 1.0]
    with pytest.warns(TraxonWarning, match=r"unknown transmitter.*'HISTAMINE'"):
        odd = Connectome.from_edges([1, 2], [2, 1], nt=["histamine", "ACH"])
    assert odd.sign.tolist() == [1.0, 1.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        named = Connectome.from_edges(
            [1, 2], [2, 1], nt=["histamine", "ACH"], excitatory=["histamine"]
        )
    assert named.sign.tolist() == [1.0, 1.0]
    # Gap junctions given once per pair are made symmetric.
    g = Connectome.from_edges(["A"], ["B"], electrical=(["A", "C"], ["C", "B"], [2, 5]))
    assert g.ids.tolist() == ["A", "B", "C"]
    pairs = dict(
        zip(
            zip(g.electrical.pre.tolist(), g.electrical.post.tolist(), strict=True),
            g.electrical.weight.tolist(),
            strict=True,
        )
    )
    assert pairs == {(0, 2): 2.0, (2, 0): 2.0, (1, 2): 5.0, (2, 1): 5.0}


def test_the_worm_as_a_network_runs(worm):
    import jax
    import jax.numpy as jnp

    from traxon.connectome import connectome_network

    net = connectome_network(worm, n_inputs=4, cells="neurons", input_cells="sensory")
    assert net.populations["brain"].size == 302
    # One readout unit per class left: interneuron, motor, "neuron" (CANL/R), sensory.
    assert net.populations["readout"].size == 4
    params, state = net.init(jax.random.PRNGKey(0), batch_size=1)
    n_sensory = int(worm.cells_of("sensory").sum())
    assert params["x->brain"].shape == (4 * n_sensory,)
    neurons_only = worm.subset(worm.is_neuron)
    assert params["brain->brain"].shape == (neurons_only.n_connections,)
    xs = jnp.ones((5, 1, 4)) * 0.5
    res = net.simulate(params, state, xs)
    spikes = np.asarray(res.record["brain"]["spike"])
    assert spikes.shape == (5, 1, 302) and np.all(np.isfinite(np.asarray(res.outputs)))
    # Only the sensory neurons are driven by the input; the others through the connectome.
    sensory = neurons_only.cells_of("sensory")
    drive = np.asarray(net.projections[0].op.apply(params["x->brain"], jnp.ones((1, 4))))
    assert np.all(drive[0, ~sensory] == 0.0) and np.any(drive[0, sensory] != 0.0)


def test_negative_targets_load_as_region_rates_take_them(tmp_path):
    from traxon.tasks import RegionRates, load_targets

    dff = np.random.default_rng(0).normal(0.0, 0.5, (200, 3)).astype(np.float32)  # dF/F
    assert dff.min() < 0
    np.save(tmp_path / "dff.npy", dff)
    targets, _ = load_targets(tmp_path / "dff.npy")
    np.testing.assert_array_equal(targets, dff)
    assert RegionRates(n_in=2, n_steps=100, window=25, targets=targets).n_out == 3
    bad = dff.copy()
    bad[5, 1] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(ValueError, match="finite"):
        load_targets(tmp_path / "bad.npy")
    with pytest.raises(ValueError, match="finite"):
        RegionRates(n_in=2, n_steps=100, window=25, targets=bad)


def test_a_network_rebuilds_from_another(worm):
    from traxon.connectome import connectome_network

    net = connectome_network(worm.subset(worm.is_neuron), n_inputs=3)
    with pytest.raises(TypeError, match="rebuild"):
        type(net)(net.inputs, net.spec["populations"], net.projections)
    again = net.rebuild()
    assert [p.name for p in again.projections] == [p.name for p in net.projections]
    wider = net.rebuild(inputs={"x": 5})
    assert wider.inputs == {"x": 5}
    with pytest.raises(TypeError, match="rebuild"):
        net.rebuild(neurons=3)


def test_the_worm_with_graded_neurons_and_gap_junctions(worm, cect_cook):
    """Graded neurons, chemical synapses and the gap junctions of the source as one
    trainable conductance per coupled pair, input through the sensory neurons only."""
    import jax
    import jax.numpy as jnp

    from traxon.connectome import connectome_network
    from traxon.core import Graded, SparseGapJunction

    net = connectome_network(
        worm,
        n_inputs=3,
        cells="neurons",
        input_cells="sensory",
        neuron=Graded(tau=10.0, activation="tanh"),
        electrical=True,
    )
    assert isinstance(net.populations["brain"].neuron, Graded)
    gap = next(p for p in net.projections if p.name == "gap")
    assert (gap.source, gap.target, gap.signal, gap.delay) == ("brain", "brain", "V", 1)
    op = gap.op
    assert isinstance(op, SparseGapJunction) and op.symmetric and op.positive
    # Against the source: every junction between two neurons, once, with its weight.
    names = list(cect_cook.nodes)
    source = np.asarray(cect_cook.connections["Generic_GJ"])
    neurons = worm.ids[worm.is_neuron].tolist()
    cols = [names.index(c) for c in neurons]
    among = np.triu(source[np.ix_(cols, cols)], 1)
    assert op.n_pairs == np.count_nonzero(among) == 1091
    got = np.zeros_like(among)
    got[op.a.array, op.b.array] = op.base.array
    np.testing.assert_array_equal(got, among)
    # The current it passes: I = V (G - diag(G 1)), G the source's symmetric matrix times
    # the (initially equal) trainable scale.
    params, state = net.init(jax.random.PRNGKey(0), batch_size=2)
    W = np.asarray(params["gap"])
    assert np.all(W[0] == W) and W[0] > 0
    G = (among + among.T) * W[0]
    v = np.random.default_rng(0).normal(size=(2, len(neurons))).astype(np.float32)
    expected = v @ (G - np.diag(G.sum(axis=0)))
    np.testing.assert_allclose(
        op.apply(params["gap"], jnp.asarray(v)), expected, rtol=1e-4, atol=1e-4
    )
    # Total conductance of the most coupled neuron: gap_conductance (1.0 by default).
    np.testing.assert_allclose(G.sum(axis=0).max(), 1.0, rtol=1e-5)
    # The chemical synapses are those of the source among the neurons, unchanged.
    chem = np.asarray(cect_cook.connections["Generic_CS"])[np.ix_(cols, cols)]
    assert params["brain->brain"].shape == (np.count_nonzero(chem),)
    # Graded cells: the readout averages f(V) per class, not a rate in Hz.
    res = net.simulate(params, state, jnp.full((6, 2, 3), 0.5), record=("spike", "V"))
    rate = np.asarray(res.record["brain"]["spike"])
    np.testing.assert_allclose(rate, np.tanh(np.asarray(res.record["brain"]["V"])), rtol=1e-5)
    assert np.all(np.isfinite(np.asarray(res.outputs))) and np.all(np.abs(res.outputs) <= 1.0)


def test_worm_gap_junctions_with_the_learning_rules(worm):
    """A trainable shared conductance: es_d_rtrl (and bptt) train it, the per-entry rules
    refuse it with advice; fixed junctions leave every rule free."""
    from traxon.connectome import connectome_network
    from traxon.core import Graded, Izhikevich
    from traxon.learn import mse
    from traxon.trace import get_algorithm

    small = worm.subset(worm.index_of(["AVAL", "AVAR", "AVBL", "AVBR", "ASHL", "ASHR", "RIML"]))
    assert small.electrical is not None and small.electrical.pre.size > 0
    graded = Graded(tau=10.0)
    net = connectome_network(
        small, n_inputs=2, input_cells="sensory", neuron=graded, electrical=True
    )
    for name in ("es_d_rtrl", "bptt"):
        get_algorithm(name).bind(net, mse.fn, window=5)
    with pytest.raises(ValueError, match=r"weight `gap`: d_rtrl .*symmetric=False.*'es_d_rtrl'"):
        get_algorithm("d_rtrl").bind(net, mse.fn)
    fixed = connectome_network(
        small, n_inputs=2, neuron=graded, electrical=True, gap_trainable=False
    )
    get_algorithm("d_rtrl").bind(fixed, mse.fn)
    with pytest.raises(ValueError, match="no state 'V'"):
        connectome_network(small, neuron=Izhikevich(), electrical=True)
    with pytest.raises(TypeError, match="`neuron` must be a traxon Neuron"):
        connectome_network(small, neuron="graded")
    with pytest.raises(ValueError, match="no gap junctions"):
        connectome_network(dataclasses.replace(small, electrical=None), electrical=True)
