"""brainstate / brainpy.state networks, unmodified, trained through the adapter."""

from __future__ import annotations

import ast

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

pytest.importorskip("brainpy.state")  # the optional extra; the rest are core

import traxon
from tests._bp_networks import AlignPre, bps, brainstate, braintools, mantissas_by_leaf, u
from tests.helpers import (
    assert_steps_compile_once,
    load_example,
    load_script,
    rate_task_losses,
    rel_error,
    run_tracer,
    spike_data,
)
from traxon.adapters import adapt
from traxon.learn import cross_entropy
from traxon.trace import bptt_gradient, get_algorithm

N_IN, B, T = 5, 3, 60


@pytest.fixture(autouse=True)
def environment():
    import brainevent

    brainevent.config.set_backend("cpu", "jax_raw")
    brainstate.random.seed(0)  # the modules draw their weights: same draws in every run
    with brainstate.environ.context(dt=1.0 * u.ms):
        yield


def surrogate():
    return braintools.surrogate.ReluGrad(alpha=0.3, width=1.0)


def syn(n, tau=5.0):
    return bps.Expon.desc(n, tau=tau * u.ms)


def linear(n_in, n_out, scale=1.0):
    w = braintools.init.KaimingNormal(scale=scale, unit=u.mS)
    return brainstate.nn.Linear(n_in, n_out, w_init=w, b_init=None)


class Single(brainstate.nn.Module):
    """One LIF population (or another neuron class, ``lif``, given its ``neuron`` options)
    with Expon AlignPost input and a leaky readout."""

    def __init__(self, n=8, scale=30.0, tau_out=20.0, lif=bps.LIF, tau=10, **neuron):
        super().__init__()
        self.neu = lif(
            n,
            tau=tau * u.ms,
            V_th=1 * u.mV,
            V_reset=0 * u.mV,
            V_rest=0 * u.mV,
            spk_fun=surrogate(),
            **neuron,
        )
        self.inp = bps.AlignPostProj(
            comm=linear(N_IN, n, scale), syn=syn(n), out=bps.CUBA.desc(scale=u.volt), post=self.neu
        )
        self.out = bps.LeakyRateReadout(n, 2, tau=tau_out * u.ms)

    def update(self, x):
        self.inp(x)
        self.neu()
        return self.out(self.neu.get_spike())


class Recurrent(load_example("brainpy_state_online").RecurrentSNN):
    """examples/brainpy_state_online.py's network (recurrent LIF with Expon AlignPost synapses
    and a LeakyRateReadout), with this file's inputs."""

    def __init__(self, n=12):
        super().__init__(n_in=N_IN, n_rec=n)


class Adaptive(Single):
    """ALIF neurons, Expon AlignPost input, a LeakyRateReadout."""

    def __init__(self, n=10):
        super().__init__(n, 40.0, lif=bps.ALIF, tau=20, tau_a=200 * u.ms, beta=0.5 * u.mV)


class ExcInh(Single):
    """:class:`Single` (20 LIF cells) with recurrent E and I projections through
    EventFixedProb connectivity (16 E, 4 I), one shared weight each."""

    def __init__(self, n_exc=16, n_inh=4):
        n = n_exc + n_inh
        super().__init__(n, 40.0, tau=20)
        self.n_exc = n_exc
        self.E = bps.AlignPostProj(
            comm=brainstate.nn.EventFixedProb(n_exc, n, conn_num=0.25, conn_weight=0.5 * u.mS),
            syn=syn(n),
            out=bps.CUBA.desc(scale=u.volt),
            post=self.neu,
        )
        self.I = bps.AlignPostProj(
            comm=brainstate.nn.EventFixedProb(n_inh, n, conn_num=0.25, conn_weight=-1.0 * u.mS),
            syn=syn(n, 10.0),
            out=bps.CUBA.desc(scale=u.volt),
            post=self.neu,
        )

    def update(self, x):
        spikes = self.neu.get_spike() != 0.0
        self.E(spikes[:, : self.n_exc])
        self.I(spikes[:, self.n_exc :])
        return super().update(x)


class PreAligned(AlignPre):
    """Two populations joined AlignPre-style (tests/_bp_networks.py), with this file's inputs."""

    def __init__(self):
        super().__init__(n_in=N_IN)


def build(cls, batch=B, **kw):
    module = cls(**kw)
    brainstate.nn.init_all_states(module, batch_size=batch)
    return module


def data(steps=T, batch=B, seed=1):
    return spike_data(steps, batch, N_IN, seed)


def brainstate_bptt(module, xs, ts, ws):
    """The reference: brainstate's own grad through its own for_loop, per weight path."""
    params = module.states(brainstate.ParamState)
    batch = xs.shape[1]

    def total():
        brainstate.nn.init_all_states(module, batch_size=batch)

        def step(x, t, w):
            return jnp.sum(w * cross_entropy.fn(u.get_mantissa(module.update(x)), t))

        return jnp.sum(brainstate.transform.for_loop(step, xs, ts, ws))

    grads = brainstate.transform.grad(total, params)()
    brainstate.nn.init_all_states(module, batch_size=batch)
    return mantissas_by_leaf(grads)


def adapted_float64(cls, reference=True):
    """``(reference, net, params, state, (xs, ts, ws))``: ``cls`` built, float64 data,
    brainstate's own gradient (``brainstate_bptt``; None without ``reference``), then the
    adapted network and its float64 start. Call it with x64 on, in ``precision=64``."""
    module = build(cls)
    xs, ts, ws = data()
    xs, ws = xs.astype(jnp.float64), ws.astype(jnp.float64)
    grads = brainstate_bptt(module, xs, ts, ws) if reference else None
    net = adapt(module, input_size=N_IN)
    params, state = net.init(None, B, dtype=jnp.float64)
    return grads, net, params, state, (xs, ts, ws)


def match(reference, name):
    """The reference gradient of the weight the adapter calls ``name`` (paths may differ
    when a module is reachable along several paths; the last two components do not)."""
    for (path, key), value in reference.items():
        if name == ".".join(str(p) for p in path) + key:
            return value
    hits = [
        v
        for (path, key), v in reference.items()
        if name.endswith("." + ".".join(str(p) for p in path[-2:]) + key)
    ]
    if len(hits) == 1:
        return hits[0]
    raise KeyError(name)


# -------------------------------------------------------------------------------------


def test_structure_of_a_recurrent_network():
    net = adapt(build(Recurrent), input_size=N_IN)
    assert sorted(net.populations) == ["neu", "readout"]
    hidden = "neu"
    assert net.populations[hidden].traced == ("V", "g")  # V and its Expon synapse
    kinds = {p.name.split(".")[0]: (p.source, p.delay) for p in net.projections}
    assert kinds["inp"] == ("x", 0)
    assert kinds["rec"] == (hidden, 1)  # last step's spikes
    assert kinds["out"] == (hidden, 0)  # this step's spikes


@pytest.mark.slow
def test_adapted_simulation_equals_the_module(x64):
    with brainstate.environ.context(precision=64):
        module = build(Recurrent)
        xs, _, _ = data()
        net = adapt(module, input_size=N_IN)
        params, state = net.init(None, B, dtype=jnp.float64)
        ours = net.simulate(params, state, xs.astype(jnp.float64)).outputs
        brainstate.nn.init_all_states(module, batch_size=B)
        theirs = brainstate.transform.for_loop(lambda x: u.get_mantissa(module.update(x)), xs)
    assert float(jnp.abs(ours).max()) > 0
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-10, atol=1e-12)


def test_sequences_start_from_the_modules_reset_state_not_its_last_run():
    """Attaching after a run: sequences start where ``reset_state`` puts the module, and
    attaching leaves the module's current values alone."""
    module = build(Recurrent)
    xs, _, _ = data(steps=10)
    brainstate.transform.for_loop(module.update, xs)  # the module has run: V is not at rest
    before = np.asarray(u.get_mantissa(module.neu.V.value))
    net = adapt(module, input_size=N_IN)
    np.testing.assert_array_equal(np.asarray(u.get_mantissa(module.neu.V.value)), before)
    state = net.init_state(B)
    brainstate.nn.reset_all_states(module, B)
    rest = np.asarray(u.get_mantissa(module.neu.V.value))
    assert not np.allclose(before, rest)
    np.testing.assert_allclose(np.asarray(state["neu"]["V"]), rest)


class ReplacingLIF(bps.LIF):
    """A neuron whose ``reset_state`` makes new State objects (it calls ``init_state``)."""

    def reset_state(self, batch_size=None, **kwargs):
        self.init_state(batch_size, **kwargs)


def test_a_reset_state_that_replaces_states_leaves_the_module_as_it_was():
    """Attaching reads where ``reset_state`` puts the module even when that reset makes new
    State objects; the module keeps its original objects and values, and the learner runs."""
    module = build(Single, lif=ReplacingLIF)
    xs, ts, _ = data(steps=10)
    brainstate.transform.for_loop(module.update, xs)
    V = module.neu.V
    before = np.asarray(u.get_mantissa(V.value))
    learner = traxon.online_learner(module, "es_d_rtrl", optax.adam(1e-2), input_size=N_IN)
    assert module.neu.V is V
    assert id(V) in {id(s) for s in module.states().values()}
    np.testing.assert_array_equal(np.asarray(u.get_mantissa(V.value)), before)
    start = learner.net.init_state(B)["neu"]["V"]
    brainstate.nn.reset_all_states(module, B)
    rest = np.asarray(u.get_mantissa(module.neu.V.value))
    assert not np.allclose(before, rest)
    np.testing.assert_allclose(np.asarray(start), rest)
    for t in range(2):
        metrics = learner.step(xs[t], ts[t])
    assert np.isfinite(metrics["loss"])


@pytest.mark.slow
@pytest.mark.parametrize("cls", [Single, Adaptive])
def test_adapted_d_rtrl_equals_brainstate_bptt_on_one_population(x64, cls):
    with brainstate.environ.context(precision=64):
        reference, net, params, state, (xs, ts, ws) = adapted_float64(cls)
        spikes = net.simulate(params, state, xs).record
        assert sum(float(v["spike"].sum()) for k, v in spikes.items() if k != "readout") > 30
        grads = run_tracer("d_rtrl", net, params, state, {"x": xs}, ts, ws)
        ours_bptt, _ = bptt_gradient(net, cross_entropy.fn, params, state, {"x": xs}, ts, ws)
    for name, g in grads.items():
        ref = match(reference, name)
        assert np.linalg.norm(ref) > 0, name
        assert rel_error(ours_bptt[name], ref) < 1e-10, name
        assert rel_error(g, ref) < 1e-6, (name, rel_error(g, ref))


@pytest.mark.slow
def test_adapted_gradient_equals_the_native_twin(x64):
    from traxon.core import LIF, Dense, Expon, Network, Population, Projection, Readout, Surrogate

    twin = Network(
        N_IN,
        {
            "h": Population(
                LIF(
                    tau=10.0,
                    V_th=1.0,
                    V_reset=0.0,
                    spike_fn=Surrogate("triangle", width=1.0, scale=0.3),
                ),
                8,
            )
        },
        [Projection("x", "h", Dense(), synapse=Expon(5.0))],
        readout=Readout("h", 2, tau=20.0, bias=False),
    )
    with brainstate.environ.context(precision=64):
        _, net, params, state, (xs, ts, ws) = adapted_float64(Single, reference=False)
        adapted = run_tracer("d_rtrl", net, params, state, {"x": xs}, ts, ws)
        w_in = next(v for k, v in params.items() if k.startswith("inp"))
        w_out = next(v for k, v in params.items() if k.startswith("out"))
        native = run_tracer(
            "d_rtrl",
            twin,
            {"x->h": w_in, "h->readout": w_out},
            twin.init_state(B, jnp.float64),
            {"x": xs},
            ts,
            ws,
        )
    a_in = next(v for k, v in adapted.items() if k.startswith("inp"))
    a_out = next(v for k, v in adapted.items() if k.startswith("out"))
    assert native["x->h"].dtype == jnp.float64
    assert rel_error(a_in, native["x->h"]) < 1e-8
    assert rel_error(a_out, native["h->readout"]) < 1e-8


@pytest.mark.slow
@pytest.mark.parametrize("cls", [Recurrent, Adaptive, ExcInh, PreAligned])
def test_networks_written_as_brainpy_state_learn(cls):
    module = build(cls, batch=8)
    learner = traxon.online_learner(
        module, "es_d_rtrl", optax.adam(1e-2), update_every=10, input_size=N_IN
    )
    first, last = rate_task_losses(learner, 300, N_IN)
    assert last < first * 0.8, (cls.__name__, first, last)
    # The user's module holds the trained weights (units restored).
    w = next(iter(module.states(brainstate.ParamState).values())).value
    assert w is not None


@pytest.mark.slow
def test_event_fixed_prob_weights_get_a_gradient(x64):
    with brainstate.environ.context(precision=64):
        reference, net, params, state, (xs, ts, ws) = adapted_float64(ExcInh)
        ours, _ = bptt_gradient(net, cross_entropy.fn, params, state, {"x": xs}, ts, ws)
        es = run_tracer("es_d_rtrl", net, params, state, {"x": xs}, ts, ws)
    for name in ours:
        assert rel_error(ours[name], match(reference, name)) < 1e-8, name
        assert np.all(np.isfinite(np.asarray(es[name])))
    with pytest.raises(ValueError, match="d_rtrl needs to know which neuron"):
        get_algorithm("d_rtrl").bind(net, cross_entropy.fn)


def test_learner_writes_back_and_follows_the_module():
    module = build(Single, batch=4)
    learner = traxon.online_learner(module, "d_rtrl", optax.sgd(1.0), input_size=N_IN)
    x = np.ones((4, N_IN), np.float32)
    y = np.array([0, 1, 0, 1])
    learner.step(x, y)
    state = module.inp.comm.weight
    name = next(k for k in learner.params if k.startswith("inp"))
    np.testing.assert_allclose(
        np.asarray(u.get_mantissa(state.value["weight"])), np.asarray(learner.params[name])
    )
    # The user overwrites a weight: the learner follows.
    state.value = {"weight": jnp.zeros((N_IN, 8)) * u.mS}
    learner.step(x, y)
    assert np.abs(np.asarray(learner.params[name])).max() < 1.0
    # The user replaces the module's states: the learner refuses to train a detached copy.
    brainstate.nn.init_all_states(module, batch_size=4)
    module.inp.comm.weight = brainstate.ParamState({"weight": jnp.ones((N_IN, 8)) * u.mS})
    with pytest.raises(ValueError, match="no longer part of the module"):
        learner.step(x, y)


def test_no_recompilation_on_the_second_call():
    module = build(Single, batch=2)
    assert_steps_compile_once(module, N_IN)


# -------------------------------------------------------------------------------------
# Unsupported constructs: clear errors naming the module or weight.


@pytest.fixture(scope="module")
def page():
    """The modules docs/errors.md shows for the adapter's errors (the setup of that section
    of docs/make_errors.py: its imports, functions and classes, not its global settings,
    which this file's fixture makes in a context), so its advice is tested on them."""
    page = load_script("docs/make_errors.py")
    setup = next(code for title, _, code, _ in page.SECTIONS if title.startswith("brainstate"))
    tree = ast.parse(setup)
    tree.body = [node for node in tree.body if not isinstance(node, ast.Expr)]
    namespace: dict = {}
    exec(page.PREAMBLE, namespace)
    exec(compile(tree, "docs/make_errors.py", "exec"), namespace)
    return namespace


def test_gap_junction_is_refused_by_online_rules_and_the_advice_holds(page):
    build_page, gap_junction = page["build"], page["GapJunction"]
    x, y = np.ones((2, 3), np.float32), np.array([0, 1])
    with pytest.raises(ValueError, match=r"`neu`.*couples different neurons.*'bptt' or 'rtrl'"):
        traxon.online_learner(build_page(gap_junction), "es_d_rtrl")
    # The advice is true for the page's network: both rules train it.
    for algorithm, options in (("bptt", {"update_every": 2, "sequence_length": 4}), ("rtrl", {})):
        learner = traxon.online_learner(
            build_page(gap_junction), algorithm, optax.sgd(0.1), **options
        )
        for _ in range(4):
            metrics = learner.step(x, y)
        assert np.isfinite(metrics["loss"]), algorithm


def test_weight_not_aligned_to_neurons_is_rejected(page):
    # The page's module broadcasts ranks (`x * self.w.value`), as users' code may.
    with jax.numpy_rank_promotion("allow"), pytest.raises(ValueError, match=r"weight `w") as err:
        adapt(page["build"](page["Pooled"]), input_size=3)
    # Refused whatever the algorithm: the message must not send the user to another one.
    assert "algorithm=" not in str(err.value)


def test_adapter_argument_errors():
    with pytest.raises(TypeError, match="brainstate"):
        adapt(object(), input_size=3)
    with pytest.raises(ValueError, match="input_size"):
        adapt(build(Single), input_size=0)


def test_input_size_and_states_are_found_without_being_given():
    # No input_size, no init_all_states: read from the module's first layer, states
    # initialised with a batch axis by the adapter.
    net = adapt(Single())
    assert net.inputs == {"x": N_IN}
    learner = traxon.online_learner(Single(), "es_d_rtrl")
    assert learner.net.inputs == {"x": N_IN}


def test_importing_traxon_does_not_need_brainpy():
    import subprocess
    import sys

    code = "import traxon, sys; traxon.adapters.adapt; assert 'brainpy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


class _MaskedTwoInputs(brainstate.nn.Module):
    """A LIF fed by a masked ``Linear`` (its weight times a fixed mask: an element-wise
    transform), a plain one, and a readout of the E cells only (a selection in front)."""

    def __init__(self, n=6):
        super().__init__()
        mask = (np.arange(N_IN * n).reshape(N_IN, n) % 3 != 0).astype(np.float32)
        self.masked = brainstate.nn.Linear(N_IN, n, w_mask=mask, b_init=None)
        self.plain = brainstate.nn.Linear(N_IN, n, b_init=None)
        self.neu = bps.LIF(n, tau=5 * u.ms, V_th=1 * u.mV, spk_fun=braintools.surrogate.ReluGrad())
        self.out = bps.LeakyRateReadout(n // 2, 2, tau=10 * u.ms)

    def update(self, x):
        self.neu((self.masked(x) + self.plain(x)) * u.mA)
        return self.out(self.neu.get_spike()[:, : self.out.in_size[-1]])


def test_an_adapted_matmuls_outer_product_is_its_vjp_for_any_number_of_rows():
    """An adapted matmul forms its outer product as ``slope(W) * preᵀ post`` (one GEMM,
    any number of stacked rows, the norm from the Gram matrices when the weight is read as
    it is), which es_d_rtrl stacks and defers like a native Dense; it equals the
    vector-Jacobian product of the module's own equation, and an op with a selection in
    front keeps that product."""
    from traxon.core.ops import WeightOp

    net = adapt(_MaskedTwoInputs())
    ops = {p.name: p.op for p in net.projections}
    masked, plain, out = (
        ops["masked.weight['weight']"],
        ops["plain.weight['weight']"],
        ops["out.weight"],
    )
    assert (masked.stacks_rows(), masked.plain_matmul(N_IN)) == (True, False)
    assert (plain.stacks_rows(), plain.plain_matmul(N_IN)) == (True, True)
    assert (out.stacks_rows(), out.plain_matmul(3)) == (False, False)
    params = net.init_params()
    rng = np.random.default_rng(0)
    for op, name in ((masked, "masked.weight['weight']"), (plain, "plain.weight['weight']")):
        W = params[name]
        terms = [
            (jnp.asarray(rng.normal(size=(1, N_IN))), jnp.asarray(rng.normal(size=(1, 6))))
            for _ in range(3)
        ]
        vjp = sum(WeightOp.outer(op, W, a, b) for a, b in terms)  # the equation's own VJP
        stacked = op.outer(
            W, jnp.concatenate([a for a, _ in terms]), jnp.concatenate([b for _, b in terms])
        )
        np.testing.assert_allclose(stacked, vjp, rtol=1e-5, atol=1e-6)
        assert np.abs(np.asarray(vjp)).max() > 0
    pre = jnp.concatenate([a for a, _ in terms])
    post = jnp.concatenate([b for _, b in terms])
    norm = plain.outer_sq_norm(params["plain.weight['weight']"], pre, post)
    np.testing.assert_allclose(norm, np.sum(np.asarray(vjp) ** 2), rtol=1e-5)
    assert masked.outer_sq_norm(params["masked.weight['weight']"], pre, post) is None
