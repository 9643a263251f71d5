"""A battery of networks written the way brainpy.state's documentation and examples write
them, each trained through the adapter with no change to the model code: e-prop ALIF, COBA
E/I (a shared ``EventFixedProb`` weight) and CUBA E/I (one ``EventFixedProb`` weight per
connection) read on the E cells, Linear (bias) -> LIF -> Linear (bias) -> LIF as a class and
as ``Sequential``, brainpy.state's surrogate-gradient example, AlignPre, currents in nA,
``FixedNumConn`` and ``SparseLinear`` recurrent layers; three of them draw a random initial V.

For every network: it attaches; traxon's BPTT equals brainstate's own gradient
(``brainstate.transform.grad`` over ``brainstate.transform.for_loop`` of the module) in
float64 on every weight, biases included; the online rules run and their per-weight cosine
against that reference is reported by ``traxon.diagnostics.compare``; ``evaluate`` and
``fit`` work at another batch size. A few hundred steps of a simple task lower the loss
(marked slow).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

pytest.importorskip("brainpy.state")  # the optional extra; the rest are core

import traxon

# The networks, as brainpy.state's docs and examples write them: tests/_bp_networks.py.
from tests._bp_networks import (
    N_IN,
    AlignPre,
    AlignPreProjection,
    BraintraceCell,
    BraintraceRSNN,
    CellDropoutReadout,
    CellLinearReadout,
    CellNetwork,
    CobaEI,
    CubaEI,
    Currents,
    EncodedTwoLayer,
    EpropALIF,
    EpropConcatenated,
    FixedNumRecurrent,
    HandWrittenLSTM,
    HodgkinHuxley,
    HybridEncoder,
    LinearReadoutLIF,
    NoisyTwoLayer,
    PointNeurons,
    ShortTermPlasticity,
    SparseRecurrent,
    SpikingLinearReadout,
    SurrogateTutorial,
    TwoLayer,
    brainstate,
    mantissas_by_leaf,
    two_layer_sequential,
    u,
)
from tests.helpers import float64, rel_error, spike_data
from traxon.diagnostics import compare
from traxon.learn import cross_entropy
from traxon.trace import bptt_gradient

B, T = 3, 25
ONLINE = ("d_rtrl", "es_d_rtrl")

UNITLESS = 1.0
NETWORKS = {
    "eprop_alif": (EpropALIF, UNITLESS),
    "coba_ei": (CobaEI, UNITLESS),
    "two_layer": (TwoLayer, UNITLESS),
    "two_layer_sequential": (two_layer_sequential, UNITLESS),
    "surrogate_tutorial": (SurrogateTutorial, UNITLESS),
    "align_pre": (AlignPre, UNITLESS),
    "currents_in_nA": (Currents, u.nA),
    "cuba_ei_event_fixed_prob": (CubaEI, UNITLESS),
    "fixed_num_conn": (FixedNumRecurrent, UNITLESS),
    "sparse_linear": (SparseRecurrent, UNITLESS),
    "hodgkin_huxley": (HodgkinHuxley, UNITLESS),
    "short_term_depression": (lambda: ShortTermPlasticity("STD"), UNITLESS),
    "short_term_facilitation": (lambda: ShortTermPlasticity("STP"), UNITLESS),
    "valina_rnn": (lambda: CellNetwork("ValinaRNNCell"), UNITLESS),
    "lstm": (lambda: CellNetwork("LSTMCell"), UNITLESS),
    "eprop_concatenated": (EpropConcatenated, UNITLESS),
    "lstm_linear_readout": (CellLinearReadout, UNITLESS),
    "spiking_linear_readout": (SpikingLinearReadout, UNITLESS),
    "hybrid_encoder": (HybridEncoder, UNITLESS),
    # built with braintrace's layers (its own primitives), as braintrace's examples do
    "braintrace_rsnn": (BraintraceRSNN, UNITLESS),
    "braintrace_lstm": (BraintraceCell, UNITLESS),
    "hand_written_lstm": (HandWrittenLSTM, UNITLESS),
}
# Networks whose input size the adapter cannot tell from their layers (one Linear on
# `concatenate([x, spikes])` declares n_in + n_rec inputs).
INPUT_SIZE = {"eprop_concatenated": N_IN, "braintrace_rsnn": N_IN, "hand_written_lstm": N_IN}
# Time steps other than 1 ms: exponential Euler on Hodgkin-Huxley's channels needs a
# fraction of a millisecond (at 1 ms its membrane runs away to about +1 V); and sequences
# other than T steps for the gradient checks (at 0.1 ms, 25 steps end before the first
# spike reaches the recurrent weights).
DT_MS = {"hodgkin_huxley": 0.1}
STEPS_OF = {"hodgkin_huxley": 150}


def dt_of(name):
    """The time step network ``name`` is simulated with."""
    return DT_MS.get(name, 1.0) * u.ms


# -------------------------------------------------------------------------------------
# The harness.


@pytest.fixture(autouse=True)
def environment():
    import brainevent

    brainevent.config.set_backend("cpu", "jax_raw")
    # brainstate's Linear adds a (N,) bias to (B, N): its own code broadcasts ranks.
    with brainstate.environ.context(dt=1.0 * u.ms), jax.numpy_rank_promotion("allow"):
        yield


def data(steps=T, batch=B, seed=1):
    return spike_data(steps, batch, N_IN, seed, np.float64)


def brainstate_reference(module, xs, ts, ws, unit, start):
    """brainstate's own gradient through its own for_loop, from the given start values."""
    params = module.states(brainstate.ParamState)
    batch = xs.shape[1]

    dt = brainstate.environ.get_dt()

    def total():
        brainstate.nn.reset_all_states(module, batch)  # in place: the State objects stay
        for state, value in start.items():
            state.value = value

        def step(i, x, t, w):
            with brainstate.environ.context(i=i, t=i * dt):
                out = u.get_mantissa(module.update(x * unit))
            return jnp.sum(w * cross_entropy.fn(out, t))

        steps = jnp.arange(xs.shape[0])
        return jnp.sum(brainstate.transform.for_loop(step, steps, xs, ts, ws))

    grads = mantissas_by_leaf(brainstate.transform.grad(total, params)())
    return {".".join(str(p) for p in path) + key: g for (path, key), g in grads.items()}


def _match(reference, name):
    if name in reference:
        return reference[name]
    hits = [v for k, v in reference.items() if k.endswith(name) or name.endswith(k)]
    assert len(hits) == 1, (name, sorted(reference))
    return hits[0]


def _start_values(net, state):
    """The module's hidden states set to the adapted network's start values."""
    a = net.analysis(net.batch_size(state))
    out = {}
    for pop in a.pops.values():
        for lf in pop.traced + pop.aux:
            value = state[pop.name][lf.short or lf.path.split(".")[-1] + lf.key]
            out[lf.state] = value * lf.unit if lf.unit is not None else value
    return out


def bptt_and_reference(module, learner, xs, ts, ws, unit):
    """traxon's bptt gradient of ``learner``'s adapted network and brainstate's own gradient
    of ``module`` (float64), both from the network's initial state; brainstate's global
    random state starts where the network's does when its step draws noise."""
    from traxon.adapters.brainstate import GLOBAL

    net, params = learner.net, learner.params
    state = net.init_state(B, jnp.float64)
    ours, _ = bptt_gradient(net, cross_entropy.fn, params, state, {"x": xs}, ts, ws)
    ours = net.as_module_weights(ours)  # a weight split into blocks, whole again
    if "random" in state.get(GLOBAL, {}):
        brainstate.random.DEFAULT.value = state[GLOBAL]["random"][0]
    return ours, brainstate_reference(module, xs, ts, ws, unit, _start_values(net, state))


def assert_equals_reference(grads, reference, tol, *where):
    """Every gradient in ``grads`` equals its weight's in ``reference`` to relative error
    ``tol``, and that reference is not zero (so the check can tell a wrong gradient)."""
    for weight, grad in grads.items():
        ref = _match(reference, weight)
        assert np.abs(ref).max() > 0, (*where, weight)
        assert rel_error(grad, ref) < tol, (*where, weight, rel_error(grad, ref))


# The whole battery runs under `-m slow`; the default run keeps it cheap: every network's
# exactness check but AlignPre's (also checked in test_adapter.py) and the sparse ones'
# (each sparse construct is also checked by tests/test_adapter_sparse.py), and the online
# rules, evaluate and fit on one network.
CHEAP = {"two_layer_sequential"}
SPARSE = {"cuba_ei_event_fixed_prob", "fixed_num_conn", "sparse_linear"}


ALIGN_PRE = {"align_pre", "short_term_depression", "short_term_facilitation"}


def networks(cheap=frozenset(NETWORKS) - ALIGN_PRE - SPARSE):
    return [
        pytest.param(n, marks=() if n in cheap else pytest.mark.slow, id=n)
        for n in sorted(NETWORKS)
    ]


def attach(name, algorithm, optimizer, **options):
    """``(module, learner, input unit)``: the network ``name`` of ``NETWORKS`` built as
    written (its weights drawn from seed 0) and attached to a learner."""
    make, unit = {**NETWORKS, **TRAINED_ONLY}[name]
    brainstate.random.seed(0)
    input_unit = unit if isinstance(unit, u.Unit) else None
    with brainstate.environ.context(dt=dt_of(name)):
        module = make()
        if name in INPUT_SIZE:
            options = {"input_size": INPUT_SIZE[name], **options}
        learner = traxon.online_learner(
            module, algorithm, optimizer, input_unit=input_unit, **options
        )
    return module, learner, unit


def exact_bptt(steps):
    """A float64 BPTT learner's options: one update per whole sequence of ``steps``."""
    return {
        "optimizer": optax.adam(1e-3),
        "update_every": "sequence",
        "sequence_length": steps,
        "dtype": jnp.float64,
    }


@pytest.fixture(scope="module")
def attached(request):
    """A network built as written, attached to a float64 BPTT learner (module-scoped)."""
    import brainevent

    brainevent.config.set_backend("cpu", "jax_raw")
    with (
        float64(),
        brainstate.environ.context(dt=dt_of(request.param), precision=64),
        jax.numpy_rank_promotion("allow"),
    ):
        steps = STEPS_OF.get(request.param, T)
        module, learner, unit = attach(request.param, "bptt", **exact_bptt(steps))
        xs, ts, ws = data(steps)
        learner.init_state(B)
        yield request.param, module, learner, unit, (xs, ts, ws)


@pytest.mark.parametrize("attached", networks(), indirect=True)
def test_bptt_equals_brainstate_grad_on_every_weight(attached):
    name, module, learner, unit, (xs, ts, ws) = attached
    with float64(), brainstate.environ.context(dt=dt_of(name), precision=64):
        ours, reference = bptt_and_reference(module, learner, xs, ts, ws, unit)
    assert set(ours) == {k for k in reference if not k.endswith("conn_weight")} | set(ours)
    assert len(ours) == len(reference), (sorted(ours), sorted(reference))
    assert_equals_reference(ours, reference, 1e-6, name)


@pytest.mark.parametrize("attached", networks(CHEAP), indirect=True)
def test_online_rules_run_and_are_compared(attached):
    name, _, learner, _, (xs, ts, _) = attached
    with float64(), brainstate.environ.context(dt=dt_of(name), precision=64):
        algorithms = [a for a in ONLINE if _binds(learner.net, a)]
        table = compare(learner, xs, ts, algorithms=algorithms)
    assert {r["algorithm"] for r in table.rows} == set(algorithms)
    for row in table.rows:
        assert np.isfinite(row["cosine"]), (name, row)
    print(name, [(r["algorithm"], r["weight"], round(r["cosine"], 3)) for r in table.rows])


def _binds(net, algorithm):
    from traxon.trace import get_algorithm

    try:
        get_algorithm(algorithm).bind(net, cross_entropy.fn)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("attached", networks(CHEAP), indirect=True)
def test_evaluate_and_fit_at_another_batch_size(attached):
    name, _, learner, unit, _ = attached
    with float64(), brainstate.environ.context(dt=dt_of(name), precision=64):
        xs, ts, _ = data(steps=8, batch=5, seed=2)
        result = learner.evaluate(learner.state, xs * unit, ts)
        assert np.isfinite(result["loss"]), name
        learner.init_state(5)
        history = learner.fit([(xs * unit, ts)])
        assert np.isfinite(history[0]["loss"]), name
        assert learner.state.net_state is not None


# Steps of the learning check other than 300: where 300 steps of es_d_rtrl, d_rtrl and
# BPTT alike end no better than the constant predictor (AlignPre and short-term depression
# start far above it; the two-layer network ends at 0.90-0.92 of it), and Hodgkin-Huxley's
# 0.1 ms steps (100 ms).
STEPS = {
    "align_pre": 1000,
    "hodgkin_huxley": 1000,
    "short_term_depression": 1000,
    "two_layer": 1000,
    "two_layer_sequential": 1000,
    "noisy_two_layer": 1000,
}
# Networks checked by the training check only: noise drawn in the step (the gradient
# checks' reference cannot replay it; its own test compares from the same random state).
TRAINED_ONLY = {"noisy_two_layer": (NoisyTwoLayer, UNITLESS)}
# Networks that do not learn the task: short-term facilitation (U = 0.1) stays at the
# constant predictor under BPTT too, at every drive tried (scales 100-1,000, 1,000 steps).
NOT_LEARNING = {"short_term_facilitation"}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted((set(NETWORKS) | set(TRAINED_ONLY)) - NOT_LEARNING))
def test_training_beats_the_constant_predictor(name):
    """es_d_rtrl, updating every 10 steps, lowers the loss of a two-class rate task by a
    tenth and ends a tenth below the constant predictor's (log 2: equal logits), on the
    30 steps before each step's update (online, so each sample is unseen)."""
    _, learner, unit = attach(name, "es_d_rtrl", optax.adam(1e-2), update_every=10)
    rng = np.random.default_rng(0)
    label = rng.integers(0, 2, 8)
    rates = np.where(label[:, None] == (np.arange(N_IN) >= N_IN // 2)[None], 0.5, 0.02)
    losses = []
    for _ in range(STEPS.get(name, 300)):
        x = (rng.random((8, N_IN)) < rates).astype(np.float32)
        losses.append(learner.step(x * unit, label)["loss"])
    first, last = np.mean(losses[:30]), np.mean(losses[-30:])
    assert last < first * 0.9, (name, first, last)
    assert last < 0.9 * np.log(2.0), (name, last)


@pytest.mark.xfail(
    strict=True,
    # UnitMismatchError with brainunit 0.5; TypeError (Quantity += BinaryArray) with 0.6
    raises=(u.UnitMismatchError, TypeError),
    reason="brainpy.state 0.1: align_pre_projection hands its Expon a BinaryArray it cannot "
    "add (`mS += BinaryArray`); when this passes, upstream is fixed: add the network to the "
    "battery and update docs/brainstate.md",
)
def test_align_pre_projection_runs_in_brainstate_itself():
    module = AlignPreProjection()
    brainstate.nn.init_all_states(module, batch_size=2)
    out = brainstate.transform.for_loop(module.update, jnp.ones((3, 2, 8)))
    assert out.shape == (3, 2, 2)


def test_a_quantity_input_and_a_plain_one_give_the_same_step():
    learners = []
    for _ in range(2):  # the same weights and start in both
        brainstate.random.seed(0)
        learners.append(
            traxon.online_learner(Currents(), "es_d_rtrl", optax.sgd(0.1), input_unit=u.nA)
        )
    x = np.ones((4, N_IN), np.float32)
    y = np.array([0, 1, 0, 1])
    with_units = learners[0].step(x * u.nA, y)
    plain = learners[1].step(x, y)
    assert with_units["loss"] == pytest.approx(plain["loss"])
    with pytest.raises(u.UnitMismatchError, match="mV and nA"):
        learners[0].step(x * u.mV, y)


def test_an_align_pre_population_reports_its_spikes_not_its_trace():
    brainstate.random.seed(0)
    module = AlignPre()
    net = traxon.adapters.adapt(module)
    params, state = net.init(None, 4)
    xs = (jax.random.uniform(jax.random.PRNGKey(1), (30, 4, N_IN)) < 0.3).astype(jnp.float32)
    ours = []
    for x in xs:
        state, internals = net.forward(params, state, {"x": x})
        ours.append(internals["signals"]["pre"]["spike"])
    brainstate.nn.init_all_states(module, batch_size=4)

    def step(x):
        module.update(x)
        return module.pre.get_spike()

    theirs = brainstate.transform.for_loop(step, xs)
    assert float(jnp.mean(theirs)) > 0
    np.testing.assert_allclose(np.asarray(jnp.stack(ours)), np.asarray(theirs))


def test_rtrl_and_another_batch_size_with_dt_set_only_in_a_context():
    with brainstate.environ.context(dt=0.5 * u.ms):  # the examples' style
        learner = traxon.online_learner(Currents(), "rtrl", optax.sgd(0.1), input_unit=u.nA)
    assert learner.net.dt == 0.5  # captured, not the 1 ms of the surrounding environment
    # Attached at batch size 1 (states initialised by the adapter); stepped at 5.
    x, y = np.ones((5, N_IN), np.float32), np.zeros(5, np.int32)
    assert np.isfinite(learner.step(x * u.nA, y)["loss"])


def _start_V(learner):
    return np.asarray(learner.state.net_state["neu"]["V"])


def test_a_random_initial_V_is_drawn_anew_for_every_sequence_from_the_seed():
    # Currents draws V from Uniform(0, 0.5 mV), as brainstate's reset_state does each time.
    def learner(seed, **options):
        brainstate.random.seed(0)
        return traxon.online_learner(
            Currents(), "es_d_rtrl", optax.sgd(0.0), input_unit=u.nA, seed=seed, **options
        )

    drawn, again = learner(seed=3), learner(seed=3)
    assert drawn.net.draws_initial_state
    starts, repeats = [], []
    for lrn, out in ((drawn, starts), (again, repeats)):
        lrn.init_state(64)
        out.append(_start_V(lrn))
        for _ in range(2):
            lrn.step(np.zeros((64, N_IN), np.float32), np.zeros(64, np.int32))
            lrn.end()  # the next sequence starts from a new draw
            out.append(_start_V(lrn))
    for v in starts:
        assert v.shape == (64, 8) and v.min() >= 0.0 and v.max() < 0.5
        assert 0.2 < v.mean() < 0.3  # Uniform(0, 0.5): mean 0.25
        assert len(np.unique(v[:, 0])) == 64  # one draw per sample
    assert not np.allclose(starts[0], starts[1]) and not np.allclose(starts[1], starts[2])
    for v, w in zip(starts, repeats, strict=True):  # reproducible from the learner's seed
        np.testing.assert_array_equal(v, w)
    other = learner(seed=4)
    other.init_state(64)
    assert not np.allclose(_start_V(other), starts[0])

    fixed = learner(seed=3, draw_initial_state=False)  # the option: one draw, when attached
    assert not fixed.net.draws_initial_state
    fixed.init_state(4)
    first = _start_V(fixed)
    fixed.step(np.zeros((4, N_IN), np.float32), np.zeros(4, np.int32))
    fixed.end()
    np.testing.assert_array_equal(_start_V(fixed), first)
    assert np.all(first == first[:1])


def test_a_module_without_random_initial_states_draws_nothing():
    brainstate.random.seed(0)
    learner = traxon.online_learner(TwoLayer(), "es_d_rtrl", optax.sgd(0.0))
    assert not learner.net.draws_initial_state


def test_unsupported_constructs_raise_the_documented_errors():
    # docs/brainstate.md, "Not supported": each message as the page quotes it.
    with pytest.raises(ValueError, match="could not tell how many input channels"):
        traxon.adapters.adapt(EpropConcatenated())
    with pytest.raises(ValueError, match=r"an input with units\? pass input_unit="):
        traxon.adapters.adapt(Currents())
    net = traxon.adapters.adapt(Currents(), call=lambda m, x: m.update(x * u.nA))
    with pytest.raises(ValueError, match="the input is a Quantity in nA, but the module was"):
        net.as_inputs(np.ones((2, N_IN)) * u.nA)
    # brainstate.nn's recurrent cells that do not attach (docs/brainstate.md, "Not
    # supported"), with bptt too: it goes through the same contract. ValinaRNNCell and
    # LSTMCell, which the message advises, are battery networks.
    reset_before = (
        r"weight `cell.Wh.weight\['weight'\]\[6:16, 0:10\]` depends on the output of "
        r"\[\"cell.{}.weight\['bias'\]\", \"cell.{}.weight\['weight'\]\"\] within the same "
        r"step .* use LSTMCell or ValinaRNNCell"
    )
    cells = {
        "GRUCell": reset_before.format("Wrz", "Wrz"),
        "MGUCell": reset_before.format("Wf", "Wf"),
        "URLSTMCell": r"weight `cell.bias` is used by several operations \(add and sub\)",
    }
    for cell, message in cells.items():
        with pytest.raises(ValueError, match=message):
            traxon.online_learner(CellNetwork(cell), "bptt", optax.sgd(0.1))
    # dropout in front of a weight (its mask a draw of the step); without it the network
    # is the battery's lstm_linear_readout
    with (
        brainstate.environ.context(fit=True),
        pytest.raises(
            ValueError, match=r"`out.weight\['weight'\]` reads \['random'\], a state of no"
        ),
    ):
        traxon.online_learner(CellDropoutReadout(), "bptt", optax.sgd(0.1))
    # braintrace's GRUCell (its quickstart's), the same refusal: gates in separate Linears
    with pytest.raises(ValueError, match=r"`rnn.Wh.weight\['weight'\]\[6:14, 0:8\]` depends "):
        traxon.online_learner(BraintraceCell("GRUCell"), "bptt", optax.sgd(0.1))


def test_a_linear_readout_is_an_instantaneous_readout():
    """A module that returns a ``Linear`` of its last layer (no readout state) gets a
    readout population whose state is the output and keeps nothing of its last value
    (decay 0, traxon's ``Readout`` with ``kappa=0``). With one hidden population d_rtrl is
    exact: it equals brainstate's own gradient to 1e-8 in float64."""
    from tests.helpers import run_tracer

    with float64(), brainstate.environ.context(dt=1.0 * u.ms, precision=64):
        brainstate.random.seed(0)
        module = LinearReadoutLIF()
        learner = traxon.online_learner(module, "d_rtrl", optax.sgd(0.1), dtype=jnp.float64)
        net = learner.net
        assert net.populations["readout"].traced == ("output",)
        assert net.measured_decays("readout") == {"output": 0.0}
        xs, ts, ws = data(T)
        learner.init_state(B)
        state = net.init_state(B, jnp.float64)
        reference = brainstate_reference(module, xs, ts, ws, UNITLESS, _start_values(net, state))
        grads = run_tracer("d_rtrl", net, learner.params, state, {"x": xs}, ts, ws)
    assert set(grads) == {"l1.weight['weight']", "out.weight['weight']", "out.weight['bias']"}
    assert_equals_reference(grads, reference, 1e-8)


def test_snap_is_exact_on_an_lstm_whose_units_read_only_themselves():
    """brainstate's ``LSTMCell`` with the recurrent weights between different units zeroed:
    each unit's gates read only its own ``h``, so every weight drives one unit and SnAp-1's
    traces are exact. Its gradient equals BPTT's on every block in float64. SnAp reads the
    signal each recurrent block takes at the start of the step (``prev:`` signals); before
    they were among the population's signals it stopped with a KeyError."""
    from tests.helpers import run_tracer

    with float64(), brainstate.environ.context(dt=1.0 * u.ms, precision=64):
        brainstate.random.seed(0)
        module = CellLinearReadout("LSTMCell", n_rec=6)
        weight = dict(module.rnn.W.weight.value)
        w = np.array(weight["weight"])
        n_rec = 6
        own = np.eye(n_rec, dtype=bool)
        for g in range(4):  # i, g, f, o blocks: keep the diagonal of their h rows
            block = w[N_IN:, g * n_rec : (g + 1) * n_rec]
            w[N_IN:, g * n_rec : (g + 1) * n_rec] = np.where(own, 3.0 * block, 0.0)
        weight["weight"] = jnp.asarray(w)
        module.rnn.W.weight.value = weight
        learner = traxon.online_learner(module, "snap", optax.sgd(0.1), dtype=jnp.float64)
        net = learner.net
        xs, ts, ws = data(T)
        learner.init_state(B)
        state = net.init_state(B, jnp.float64)
        args = (net, learner.params, state, {"x": xs}, ts, ws)
        snap, exact = run_tracer("snap", *args), run_tracer("bptt", *args)
    for k, g in exact.items():
        assert np.abs(g).max() > 0, k
        assert rel_error(snap[k], g) < 1e-8, (k, rel_error(snap[k], g))


@pytest.mark.parametrize(
    "name", ["eprop_concatenated", "braintrace_rsnn", "lstm_linear_readout", "hybrid_encoder"]
)
def test_held_sgd_updates_of_a_module_equal_an_update_every_step(name):
    """With ``traxon.learn.sgd`` and an update every step, ``run`` holds the updates of the
    module's plain matmuls as factors (``es_d_rtrl(defer=3)``), added where the module's
    own matmul produces its output, and writes them every 3 steps: the weights written
    into the module equal ``optax.sgd``'s updated every step, in float64. The networks
    cover concatenated blocks, braintrace's primitives, a Linear readout (the factors and
    the learning signal's probe meet on one value) and an ANN encoder."""
    written = []
    with float64(), brainstate.environ.context(precision=64), jax.numpy_rank_promotion("allow"):
        xs, ts, _ = data(T)
        for optimizer, defer in ((optax.sgd(0.05), 1), (traxon.learn.sgd(0.05), 3)):
            module, learner, _ = attach(
                name, traxon.es_d_rtrl(defer=defer), optimizer, dtype=jnp.float64
            )
            held = learner._update_steps(B)
            assert bool(held) == (defer > 1), held
            learner.init_state(B)
            learner.state, _ = learner.jit("run")(learner.connectivity, learner.state, xs, ts)
            values = {n: st.value for n, st in module.states(brainstate.ParamState).items()}
            written.append(mantissas_by_leaf(values))
    assert written[0].keys() == written[1].keys()
    for k, w in written[0].items():
        np.testing.assert_allclose(written[1][k], w, rtol=1e-9, atol=1e-12, err_msg=k)


@pytest.mark.parametrize(
    "make", [TwoLayer, lambda: CellNetwork("LSTMCell")], ids=["two_layer", "lstm"]
)
def test_a_restored_run_is_what_the_module_and_the_next_step_start_from(make, tmp_path):
    """A checkpoint restored into a learner on a fresh module (other initial weights) is
    written into the module, and the next step continues the saved run: it was overwritten
    by the fresh module's weights, the learner taking them for weights the user assigned.
    Weights given to ``init_state`` are written into the module too."""
    x, y = np.ones((4, N_IN), np.float32), np.array([0, 1, 0, 1])
    brainstate.random.seed(0)
    saved = traxon.online_learner(make(), "es_d_rtrl", optax.adam(1e-2))
    for _ in range(3):
        saved.step(x, y)
    path = saved.save(tmp_path / "run")
    brainstate.random.seed(1)
    module = make()
    resumed = traxon.online_learner(module, "es_d_rtrl", optax.adam(1e-2))
    resumed.restore(path)
    whole = resumed.net.as_module_weights(resumed.params)
    values = {n: s.value for n, s in module.states(brainstate.ParamState).items()}
    for (path, key), value in mantissas_by_leaf(values).items():
        weight = ".".join(str(p) for p in path) + key
        np.testing.assert_array_equal(np.asarray(value), np.asarray(whole[weight]), weight)
    saved.step(x, y)
    resumed.step(x, y)
    for name, value in saved.params.items():
        np.testing.assert_allclose(resumed.params[name], value, rtol=1e-6, err_msg=name)
    given = {k: v + 1.0 for k, v in saved.params.items()}
    resumed.init_state(4, params=given)
    resumed.step(np.zeros_like(x), y)
    assert np.abs(np.asarray(resumed.params["out.weight"]) - given["out.weight"]).max() < 0.1


def test_a_signal_read_before_and_after_the_update_carries_the_previous_values():
    """brainpy.state's HH spikes on a rising edge, ``spike(V) * (1 - spike(V_last))``: the
    readout's signal reads the membrane before and after its update. The population then
    carries ``V@prev`` (its membrane at the step's start) as one more state, and d_rtrl,
    exact without recurrent weights, equals brainstate's own gradient in float64."""
    from tests.helpers import run_tracer

    with (
        float64(),
        brainstate.environ.context(dt=0.1 * u.ms, precision=64),
        jax.numpy_rank_promotion("allow"),
    ):
        brainstate.random.seed(0)
        module = HodgkinHuxley(recurrent=False)
        learner = traxon.online_learner(module, "d_rtrl", optax.sgd(0.1), dtype=jnp.float64)
        net = learner.net
        (pop,) = [p for p in net.populations if p != "readout"]
        assert "V@prev" in net.populations[pop].traced
        assert "V" in net.populations[pop].traced
        steps = STEPS_OF["hodgkin_huxley"]
        xs, ts, ws = data(steps)
        learner.init_state(B)
        params = learner.params
        state = net.init_state(B, jnp.float64)
        np.testing.assert_array_equal(state[pop]["V@prev"], state[pop]["V"])
        reference = brainstate_reference(module, xs, ts, ws, UNITLESS, _start_values(net, state))
        grads = run_tracer("d_rtrl", net, params, state, {"x": xs}, ts, ws)
    assert set(grads) == {"inp.comm.weight['weight']", "out.weight"}
    assert_equals_reference(grads, reference, 1e-8)


def test_a_weight_on_concatenated_signals_feeding_gates_is_split_into_blocks():
    """brainstate.nn's LSTMCell applies one Linear to ``concatenate([x, h])`` and splits it
    into four gates: the adapter traces it as eight matmul blocks (input and recurrent
    rows, by gate) and four bias blocks, the cell's h and c as one population. With the
    recurrent rows zero, nothing couples the cell's units and d_rtrl is exact: it equals
    brainstate's own gradient of the whole weight to 1e-8 in float64. An update writes the
    blocks back into the module's weight."""
    from tests.helpers import run_tracer

    with float64(), brainstate.environ.context(dt=1.0 * u.ms, precision=64):
        brainstate.random.seed(0)
        module = CellNetwork("LSTMCell")
        W = module.cell.W.weight
        W.value = {**W.value, "weight": W.value["weight"].at[N_IN:].set(0.0)}
        learner = traxon.online_learner(module, "d_rtrl", optax.sgd(0.1), dtype=jnp.float64)
        net = learner.net
        assert net.populations["cell"].traced == ("h", "c")
        rows, gates = ((0, N_IN), (N_IN, N_IN + 10)), [(10 * j, 10 * j + 10) for j in range(4)]
        name = "cell.W.weight"
        assert set(net.weight_shapes) == {
            f"{name}['weight'][{r0}:{r1}, {c0}:{c1}]" for r0, r1 in rows for c0, c1 in gates
        } | {f"{name}['bias'][{c0}:{c1}]" for c0, c1 in gates} | {"out.weight"}
        xs, ts, ws = data(T)
        learner.init_state(B)
        params = learner.params
        state = net.init_state(B, jnp.float64)
        reference = brainstate_reference(module, xs, ts, ws, UNITLESS, _start_values(net, state))
        grads = run_tracer("d_rtrl", net, params, state, {"x": xs}, ts, ws)
        whole = net.as_module_weights(grads)
        for _ in range(2):  # h starts at zero: the recurrent rows move from the second
            learner.step(np.ones((B, N_IN)), np.zeros(B, np.int32))
        written = np.asarray(module.cell.W.weight.value["weight"])
        trained = np.asarray(net.as_module_weights(learner.params)[f"{name}['weight']"])
    assert set(whole) == {f"{name}['weight']", f"{name}['bias']", "out.weight"}
    # the recurrent rows' gradient too: zero weights, not a zero gradient
    assert np.abs(whole[f"{name}['weight']"][N_IN:]).max() > 0
    assert_equals_reference(whole, reference, 1e-8)
    np.testing.assert_array_equal(written, trained)
    assert not np.allclose(written[N_IN:], 0.0)  # the recurrent rows were updated


# brainpy.state's point-neuron models beyond the battery's (integrate-and-fire, exponential,
# quadratic, adaptive, generalised) and the Hodgkin-Huxley family's other members.
POINT_MODELS = (
    "IF",
    "ExpIF",
    "AdExIF",
    "QuaIF",
    "AdQuaIF",
    "Gif",
    "Izhikevich",
    "IzhikevichRef",
    "AdExIFRef",
    "GifRef",
)
HH_FAMILY = ("MorrisLecar", "WangBuzsakiHH")
# Drives other than the default: MorrisLecar's membrane has 20x HH's capacitance; ExpIF's
# exponential runs away within one 0.1 ms step at the default drive (brainstate's own
# gradient is then NaN); Izhikevich's input is in mV/ms.
MODEL_OPTIONS = {
    "MorrisLecar": {"gain": 20.0},
    "ExpIF": {"scale": 10.0},
    "Izhikevich": {"current": u.mV / (u.ms * u.mS)},
    "IzhikevichRef": {"current": u.mV / (u.ms * u.mS)},
}


@pytest.mark.slow
@pytest.mark.parametrize("model", POINT_MODELS + HH_FAMILY)
def test_brainpy_state_neuron_models_attach_and_bptt_equals_brainstate(model):
    """Each model, with its default parameters, in a recurrent network at dt = 0.1 ms:
    traxon's bptt equals brainstate's own gradient on every weight (float64), and the
    online rules bind and run."""
    import brainpy.state as bps

    neuron = getattr(bps, model)
    steps = STEPS_OF["hodgkin_huxley"]
    with (
        float64(),
        brainstate.environ.context(dt=0.1 * u.ms, precision=64),
        jax.numpy_rank_promotion("allow"),
    ):
        brainstate.random.seed(0)
        options = MODEL_OPTIONS.get(model, {})
        if model in HH_FAMILY:
            module = HodgkinHuxley(neuron=neuron, **options)
        else:
            module = PointNeurons(neuron, **options)
        learner = traxon.online_learner(module, "bptt", **exact_bptt(steps))
        xs, ts, ws = data(steps)
        learner.init_state(B)
        ours, reference = bptt_and_reference(module, learner, xs, ts, ws, UNITLESS)
        table = compare(learner, xs, ts, algorithms=list(ONLINE))
    assert len(ours) == len(reference), (model, sorted(ours), sorted(reference))
    assert_equals_reference(ours, reference, 1e-6, model)
    assert {r["algorithm"] for r in table.rows} == set(ONLINE)
    assert all(np.isfinite(r["cosine"]) for r in table.rows), (model, table.rows)


def test_time_is_the_step_count_times_dt_without_drift():
    """The environment's ``t`` is ``i * dt`` at every step, as brainstate's loops set it
    (``environ.context(i=i, t=i * dt)``), not a running sum of dt that drifts (in float32,
    10,000 sums of 0.1 ms miss 1 s by about 1e-4 s): a refractory period ends at the step
    the module's own loop ends it."""
    from traxon.adapters.brainstate import ENV

    with brainstate.environ.context(dt=0.1 * u.ms):
        learner = traxon.online_learner(two_layer_sequential(), "es_d_rtrl", optax.sgd(0.1))
    net = learner.net
    params = net.init_params()
    state = net.init_state(2)
    xs = jnp.zeros((10_000, 2, N_IN))

    def body(st, x):
        st, _ = net.forward(params, st, {"x": x})
        return st, st[ENV]["t"][0]

    _, ts = jax.jit(lambda s: jax.lax.scan(body, s, xs))(state)
    steps = jnp.arange(1, 10_001, dtype=jnp.int32).astype(ts.dtype)
    np.testing.assert_array_equal(np.asarray(ts), np.asarray(steps * 0.1))
    drifting = np.cumsum(np.full(10_000, 0.1, np.float32), dtype=np.float32)
    assert np.abs(drifting[-1] - 1000.0) > 1e-3  # what a running sum gives instead


def test_noise_from_the_global_random_state_is_carried_and_drawn_from_the_key():
    """A step that draws from brainstate's global random state (a ``PoissonInput``) attaches:
    the random state is carried in the network state, and from the same start traxon's
    bptt equals brainstate's own gradient (float64). Each sequence's noise comes from the
    learner's key: the same key gives the same gradient, another key another one."""
    with (
        float64(),
        brainstate.environ.context(dt=1.0 * u.ms, precision=64),
        jax.numpy_rank_promotion("allow"),
    ):
        brainstate.random.seed(0)
        module = NoisyTwoLayer()
        learner = traxon.online_learner(
            module,
            "bptt",
            optax.adam(1e-3),
            update_every="sequence",
            sequence_length=T,
            dtype=jnp.float64,
        )
        net = learner.net
        assert net.draws_initial_state  # the step draws: every sequence gets a key
        xs, ts, ws = data()
        learner.init_state(B)
        params = learner.params
        ours, reference = bptt_and_reference(module, learner, xs, ts, ws, UNITLESS)

        def gradient(state):
            return bptt_gradient(net, cross_entropy.fn, params, state, {"x": xs}, ts, ws)[0]

        keyed = [net.init_state(B, jnp.float64, key=jax.random.PRNGKey(k)) for k in (1, 1, 2)]
        g1, g1_again, g2 = (gradient(s) for s in keyed)
    assert len(ours) == len(reference) == 5
    assert_equals_reference(ours, reference, 1e-6)
    for weight in ours:
        np.testing.assert_array_equal(g1[weight], g1_again[weight])
    assert any(rel_error(g1[w], g2[w]) > 1e-3 for w in ours)


def test_a_transformed_input_is_refused_with_its_remedy():
    """A weight on an input transformed inside the module (a ``PoissonEncoder``) is refused,
    and the advice holds: the same module without the encoder, given the encoder's spikes,
    attaches and learns."""
    import brainpy.state as bps

    brainstate.random.seed(0)
    with pytest.raises(ValueError, match=r"reads a transformed input.*PoissonEncoder outside"):
        traxon.online_learner(EncodedTwoLayer(), "es_d_rtrl", optax.sgd(0.1))
    encoder = bps.PoissonEncoder(N_IN)
    learner = traxon.online_learner(TwoLayer(), "es_d_rtrl", optax.sgd(0.1))
    rates = np.where(np.arange(N_IN) < N_IN // 2, 300.0, 20.0) * np.ones((B, N_IN))
    labels = np.zeros(B, np.int32)
    for _ in range(5):
        spikes = encoder(rates * u.Hz)  # outside the module: the data the learner gets
        metrics = learner.step(spikes, labels)
    assert np.isfinite(metrics["loss"]) and metrics["updated"]
