"""The tracer's algorithms against BPTT (``jax.grad`` through ``lax.scan``), in float64."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import cosine, rel_error, run_tracer
from traxon.core import (
    ALIF,
    LIF,
    Dense,
    Expon,
    Network,
    Neuron,
    Population,
    Projection,
    Readout,
)
from traxon.learn import cross_entropy
from traxon.trace import bptt_gradient, get_algorithm

T, B, N_IN = 60, 3, 5


def problem(net, seed=0, steps=T, batch=B, min_spikes=30):
    params, state = net.init(jax.random.PRNGKey(seed), batch, dtype=jnp.float64)
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed + 1))
    xs = {"x": (jax.random.uniform(k1, (steps, batch, N_IN)) < 0.3).astype(jnp.float64)}
    ts = jax.random.randint(k2, (steps, batch), 0, 2)
    ws = jnp.ones((steps, batch), jnp.float64) / batch
    spikes = net.simulate(params, state, xs["x"]).record
    counts = {k: float(v["spike"].sum()) for k, v in spikes.items() if k != "readout"}
    assert all(c >= min_spikes for c in counts.values()), f"too few spikes: {counts}"
    ref, _ = bptt_gradient(net, cross_entropy.fn, params, state, xs, ts, ws)
    return params, state, xs, ts, ws, ref


def single_population(neuron, synapse=None, align="post", readout_tau=None, gain=6.0):
    return Network(
        N_IN,
        {"h": Population(neuron, 8)},
        [Projection("x", "h", Dense(gain=gain), synapse=synapse, align=align)],
        readout=Readout("h", 2, tau=readout_tau),
    )


EXACT_CASES = {
    "lif": single_population(LIF(tau=10.0), gain=4.0),
    "lif_expon": single_population(LIF(tau=10.0), Expon(5.0), gain=8.0),
    "alif": single_population(ALIF(tau=10.0, tau_a=200.0, beta=0.5), Expon(5.0), gain=8.0),
    "align_pre": single_population(LIF(tau=10.0), Expon(5.0), align="pre", gain=4.0),
    "hard_reset_refractory": single_population(
        LIF(tau=10.0, reset="hard", tau_ref=2.0), Expon(5.0), gain=8.0
    ),
}


@pytest.mark.parametrize("case", sorted(EXACT_CASES))
def test_d_rtrl_equals_bptt_on_one_population(x64, case):
    net = EXACT_CASES[case]
    params, state, xs, ts, ws, ref = problem(net)
    grads = run_tracer("d_rtrl", net, params, state, xs, ts, ws)
    assert set(grads) == set(ref)
    for k in grads:
        assert np.linalg.norm(ref[k]) > 0, k
        assert rel_error(grads[k], ref[k]) < 1e-6, (k, rel_error(grads[k], ref[k]))


def test_d_rtrl_equals_bptt_with_leaky_readout(x64):
    net = single_population(LIF(tau=10.0), Expon(5.0), readout_tau=20.0, gain=8.0)
    params, state, xs, ts, ws, ref = problem(net)
    grads = run_tracer("d_rtrl", net, params, state, xs, ts, ws)
    for k in grads:
        assert rel_error(grads[k], ref[k]) < 1e-6, (k, rel_error(grads[k], ref[k]))


@pytest.mark.parametrize("readout_tau", [None, 20.0])
def test_spike_costs_are_exact_for_d_rtrl(x64, readout_tau):
    """Linear costs on the spikes (a rate regulariser) add their exact gradient."""
    net = single_population(LIF(tau=10.0), Expon(5.0), readout_tau=readout_tau, gain=8.0)
    params, state, xs, ts, ws, _ = problem(net)
    costs = {"h": jax.random.normal(jax.random.PRNGKey(7), (T, B, 8), jnp.float64) * 0.1}
    ref, _ = bptt_gradient(net, cross_entropy.fn, params, state, xs, ts, ws, spike_costs=costs)
    plain, _ = bptt_gradient(net, cross_entropy.fn, params, state, xs, ts, ws)
    assert rel_error(plain["x->h"], ref["x->h"]) > 1e-3  # the costs matter
    for name in ("d_rtrl", "rtrl", "bptt"):
        grads = run_tracer(name, net, params, state, xs, ts, ws, costs=costs)
        for k in grads:
            assert rel_error(grads[k], ref[k]) < 1e-6, (name, k, rel_error(grads[k], ref[k]))


def test_es_d_rtrl_equals_bptt_in_the_eprop_case(x64):
    """One LIF population, S = 1, no reset gradient, presynaptic decay = membrane leak."""
    net = single_population(LIF(tau=10.0, detach_reset=True), gain=4.0)
    params, state, xs, ts, ws, ref = problem(net)
    leak = float(np.exp(-1.0 / 10.0))
    for options in ({}, {"decay": leak}):
        grads = run_tracer("es_d_rtrl", net, params, state, xs, ts, ws, **options)
        for k in grads:
            assert rel_error(grads[k], ref[k]) < 1e-6, (options, k, rel_error(grads[k], ref[k]))


def test_es_d_rtrl_with_exact_weights_is_d_rtrl_for_those(x64):
    net = recurrent(n=12, rec_gain=1.0)
    params, state, xs, ts, ws, _ref = problem(net)
    d = run_tracer("d_rtrl", net, params, state, xs, ts, ws)
    hybrid = run_tracer("es_d_rtrl", net, params, state, xs, ts, ws, exact=("x->h",))
    plain = run_tracer("es_d_rtrl", net, params, state, xs, ts, ws)
    assert rel_error(hybrid["x->h"], d["x->h"]) < 1e-10
    assert rel_error(hybrid["h->h"], plain["h->h"]) < 1e-10
    with pytest.raises(ValueError, match="exact"):
        get_algorithm("es_d_rtrl", exact=("nope",)).bind(net, cross_entropy.fn)


def test_es_d_rtrl_wrong_decay_is_not_exact(x64):
    """The equality above is a property of the decay, not of a loose comparison."""
    net = single_population(LIF(tau=10.0, detach_reset=True), gain=4.0)
    params, state, xs, ts, ws, ref = problem(net)
    grads = run_tracer("es_d_rtrl", net, params, state, xs, ts, ws, decay=0.5)
    assert rel_error(grads["x->h"], ref["x->h"]) > 1e-2


def test_es_d_rtrl_keeps_only_decay_groups_a_signal_reads(x64):
    """decay="auto": a state variable that no learning signal reads (the Expon synapse of
    LIF, whose spikes read V alone) has delta = 0, so its decay group gets no presynaptic
    trace and no outer product; ALIF's spikes read the adaptation variable, whose slow
    trace is kept. Dropping the zero group leaves the gradient as it was: equal to the one
    decay run with the membrane leak."""

    def x_decays(net):
        tracer = get_algorithm("es_d_rtrl").bind(net, cross_entropy.fn)
        params, state = net.init(jax.random.PRNGKey(0), 2, dtype=jnp.float64)
        keys = tracer.init(params, state).pre
        return sorted(float(k.split("/")[-1]) for k in keys if k.startswith("x/"))

    m, s, a = np.exp(-1.0 / 10.0), np.exp(-1.0 / 5.0), np.exp(-1.0 / 200.0)
    np.testing.assert_allclose(x_decays(EXACT_CASES["lif_expon"]), [m])
    np.testing.assert_allclose(x_decays(EXACT_CASES["alif"]), [m, a])
    assert not np.isclose(s, m)
    net = EXACT_CASES["lif_expon"]
    params, state = net.init(jax.random.PRNGKey(0), B, dtype=jnp.float64)
    k1, k2 = jax.random.split(jax.random.PRNGKey(1))
    xs = {"x": (jax.random.uniform(k1, (20, B, N_IN)) < 0.3).astype(jnp.float64)}
    ts, ws = jax.random.randint(k2, (20, B), 0, 2), jnp.ones((20, B), jnp.float64) / B
    auto = run_tracer("es_d_rtrl", net, params, state, xs, ts, ws)
    one = run_tracer("es_d_rtrl", net, params, state, xs, ts, ws, decay=float(m))
    assert float(jnp.abs(auto["x->h"]).max()) > 0
    assert rel_error(auto["x->h"], one["x->h"]) < 1e-12


def recurrent(n=12, rec_gain=1.0, readout_tau=20.0, in_gain=6.0):
    return Network(
        N_IN,
        {"h": Population(LIF(tau=20.0), n)},
        [
            Projection("x", "h", Dense(gain=in_gain), synapse=Expon(5.0)),
            Projection("h", "h", Dense(gain=rec_gain), synapse=Expon(5.0), delay=1),
        ],
        readout=Readout("h", 2, tau=readout_tau),
    )


def test_rtrl_equals_bptt_on_a_recurrent_network(x64):
    net = recurrent(n=6, rec_gain=1.5)
    params, state, xs, ts, ws, ref = problem(net, steps=50, batch=2)
    grads = run_tracer("rtrl", net, params, state, xs, ts, ws)
    for k in grads:
        assert rel_error(grads[k], ref[k]) < 1e-8, (k, rel_error(grads[k], ref[k]))


def test_bptt_tracer_equals_reference(x64):
    net = recurrent(n=6)
    params, state, xs, ts, ws, ref = problem(net, steps=50, batch=2)
    grads = run_tracer("bptt", net, params, state, xs, ts, ws)
    for k in grads:
        assert rel_error(grads[k], ref[k]) < 1e-12


def test_bptt_truncation_and_remat(x64):
    net = recurrent(n=6)
    params, state, xs, ts, ws, ref = problem(net, steps=50, batch=2)
    remat, _ = bptt_gradient(net, cross_entropy.fn, params, state, xs, ts, ws, remat=True)
    for k in ref:
        assert rel_error(remat[k], ref[k]) < 1e-12
    cut, _ = bptt_gradient(net, cross_entropy.fn, params, state, xs, ts, ws, truncation=5)
    assert rel_error(cut["h->h"], ref["h->h"]) > 1e-3  # truncation changes recurrent credit
    assert cosine(cut["h->h"], ref["h->h"]) > 0.5


def test_recurrent_network_gradient_fidelity(x64, record_property):
    """64 recurrent LIF + Expon neurons with a leaky readout: approximate, measured."""
    net = recurrent(n=64, rec_gain=1.0, in_gain=4.0)
    params, state, xs, ts, ws, ref = problem(net, steps=80, batch=4, min_spikes=500)
    report = {}
    limits = {"d_rtrl": (0.95, 0.7, 1.4), "es_d_rtrl": (0.8, 0.25, 4.0)}
    for name, (min_cos, lo, hi) in limits.items():
        grads = run_tracer(name, net, params, state, xs, ts, ws)
        for k in ("x->h", "h->h"):
            c = cosine(grads[k], ref[k])
            r = float(np.linalg.norm(grads[k]) / np.linalg.norm(ref[k]))
            report[f"{name}/{k}"] = (round(c, 4), round(r, 3))
            assert c > min_cos, (name, k, c)
            assert lo <= r <= hi, (name, k, r)
        for k in ("h->readout", "readout.bias"):
            assert rel_error(grads[k], ref[k]) < 1e-8  # the readout itself is exact
    record_property("fidelity", report)
    print("cosine, norm ratio vs BPTT:", report)


def test_float32_gradients_track_float64():
    net = single_population(LIF(tau=10.0), Expon(5.0), gain=8.0)
    params, state = net.init(jax.random.PRNGKey(0), B)
    xs = {"x": (jax.random.uniform(jax.random.PRNGKey(1), (T, B, N_IN)) < 0.3).astype(jnp.float32)}
    ts = jax.random.randint(jax.random.PRNGKey(2), (T, B), 0, 2)
    ws = jnp.ones((T, B), jnp.float32) / B
    ref, _ = bptt_gradient(net, cross_entropy.fn, params, state, xs, ts, ws)
    for name in ("d_rtrl", "es_d_rtrl"):
        grads = run_tracer(name, net, params, state, xs, ts, ws)
        for _k, g in grads.items():
            assert g.dtype == jnp.float32
        if name == "d_rtrl":
            assert rel_error(grads["x->h"], ref["x->h"]) < 1e-4


# -------------------------------------------------------------------------------------
# Errors: never a silent zero gradient.


def test_weight_behind_a_delay_is_rejected_by_online_rules():
    net = Network(
        N_IN,
        {"a": Population(LIF(), 4), "b": Population(LIF(), 4)},
        [
            Projection("x", "a", Dense()),
            Projection("a", "b", Dense(), delay=1),
        ],
        readout=Readout("b", 2),
    )
    for name in ("d_rtrl", "es_d_rtrl"):
        with pytest.raises(ValueError, match=r"weight `x->a` is not reached"):
            get_algorithm(name).bind(net, cross_entropy.fn)
    get_algorithm("rtrl").bind(net, cross_entropy.fn)  # exact rules follow the delay


def test_weight_without_path_to_readout_is_rejected():
    net = Network(
        N_IN,
        {"a": Population(LIF(), 4), "b": Population(LIF(), 4)},
        [Projection("x", "a", Dense()), Projection("x", "b", Dense())],
        readout=Readout("a", 2),
    )
    for name in ("d_rtrl", "bptt", "rtrl"):
        with pytest.raises(ValueError, match=r"weight `x->b` cannot affect the loss"):
            get_algorithm(name).bind(net, cross_entropy.fn, window=10)


def test_network_without_readout_is_rejected():
    net = Network(N_IN, {"a": Population(LIF(), 4)}, [Projection("x", "a", Dense())])
    with pytest.raises(ValueError, match="readout"):
        get_algorithm("d_rtrl").bind(net, cross_entropy.fn)


class _Coupled(LIF):
    """A LIF whose neurons share a global inhibition inside the transition."""

    def update(self, state, current, jump, dt):
        new = super().update(state, current, jump, dt)
        return {"V": new["V"] - 0.1 * jnp.mean(state["V"], axis=-1, keepdims=True)}


def test_transition_coupling_neurons_is_rejected():
    assert issubclass(_Coupled, Neuron)
    net = single_population(_Coupled())
    with pytest.raises(ValueError, match=r"couples different neurons.*bptt"):
        get_algorithm("es_d_rtrl").bind(net, cross_entropy.fn)


def test_unknown_algorithm_and_bad_options():
    with pytest.raises(ValueError, match="algorithm"):
        get_algorithm("sgd")
    with pytest.raises(ValueError, match="decay"):
        get_algorithm("es_d_rtrl", decay=1.5)
    with pytest.raises(TypeError, match="decay"):
        get_algorithm("es_d_rtrl", decay="fast")
    with pytest.raises(ValueError, match="truncation"):
        get_algorithm("bptt", truncation=0)


# -------------------------------------------------------------------------------------
# Memory: constant in T for the online rules, growing for BPTT, linear in N for ES-D-RTRL.


def _temp_bytes(name, net, steps, batch=2):
    params, state = net.init(jax.random.PRNGKey(0), batch)
    xs = {"x": jnp.zeros((steps, batch, N_IN))}
    ts = jnp.zeros((steps, batch), jnp.int32)
    ws = jnp.ones((steps, batch)) / batch
    if name == "bptt":
        fn = lambda p: bptt_gradient(net, cross_entropy.fn, p, state, xs, ts, ws)[0]  # noqa: E731
        compiled = jax.jit(fn).lower(params).compile()
    else:
        tracer = get_algorithm(name).bind(net, cross_entropy.fn)
        tstate = tracer.init(params, state)

        def run(p, st, tst):
            def body(carry, inp):
                s, t = carry
                s, t, _ = tracer.step(p, s, t, *inp)
                return (s, t), None

            return jax.lax.scan(body, (st, tst), (xs, ts, ws))[0]

        compiled = jax.jit(run).lower(params, state, tstate).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_compiled_memory_is_constant_in_T_for_online_rules():
    net = recurrent(n=16)
    for name in ("d_rtrl", "es_d_rtrl"):
        short, long = _temp_bytes(name, net, 20), _temp_bytes(name, net, 400)
        assert long <= short * 1.05 + 1024, (name, short, long)
    short, long = _temp_bytes("bptt", net, 20), _temp_bytes("bptt", net, 400)
    assert long > 5 * short, (short, long)


def test_es_d_rtrl_trace_memory_is_linear_in_N():
    def trace_bytes(name, n):
        net = Network(
            N_IN,
            {"h": Population(LIF(), n)},
            [Projection("x", "h", Dense(), synapse=Expon(5.0))],
            readout=Readout("h", 2, tau=20.0),
        )
        params, state = net.init(jax.random.PRNGKey(0), 2)
        tstate = jax.eval_shape(get_algorithm(name).bind(net, cross_entropy.fn).init, params, state)
        grads = sum(np.prod(v.shape) for v in tstate.grads.values())
        total = sum(np.prod(v.shape) for v in jax.tree_util.tree_leaves(tstate))
        return int(total - grads)  # traces only (the gradient is the size of the weights)

    small, large = trace_bytes("es_d_rtrl", 100), trace_bytes("es_d_rtrl", 1000)
    assert 8 <= large / small <= 11  # linear: ten times the neurons, ten times the traces
    # D-RTRL traces scale with the weights instead (here I x N, I fixed -> also linear);
    # with recurrent weights they are quadratic, which is what ES-D-RTRL avoids.
