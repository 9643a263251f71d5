"""Graded (rate) neurons and projections that read a neuron's state (``signal="V"``).

Exactness claims are checked in float64 against ``jax.grad`` of the loss summed over an
unrolled ``Network.simulate`` (one ``lax.scan``); approximate rules report their cosine.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import rel_error, run_tracer
from traxon.core import (
    Dense,
    Expon,
    Graded,
    LeakyIntegrator,
    Network,
    Population,
    Projection,
    Readout,
)
from traxon.diagnostics import compare
from traxon.learn import cross_entropy
from traxon.trace import ALGORITHMS, get_algorithm

T, B, N_IN, N = 16, 2, 4, 6

ACTIVATIONS = {
    "tanh": (np.tanh, lambda v: 1.0 - np.tanh(v) ** 2),
    "sigmoid": (
        lambda v: 1.0 / (1.0 + np.exp(-v)),
        lambda v: np.exp(-v) / (1.0 + np.exp(-v)) ** 2,
    ),
    "softplus": (lambda v: np.log1p(np.exp(v)), lambda v: 1.0 / (1.0 + np.exp(-v))),
    "relu": (lambda v: np.maximum(v, 0.0), lambda v: (v > 0).astype(float)),
    "identity": (lambda v: v, np.ones_like),
}


def reference(net, params, state, xs, ts, ws):
    """``jax.grad`` of the weighted loss through ``Network.simulate`` (one ``lax.scan``)."""

    def total(p):
        outputs = net.simulate(p, state, xs).outputs  # (T, B, n_out)
        return jnp.sum(ws * jax.vmap(cross_entropy.fn)(outputs, ts))

    return jax.grad(total)(params)


def problem(net, seed=0):
    params, state = net.init(jax.random.PRNGKey(seed), B, dtype=jnp.float64)
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed + 1))
    xs = {"x": jax.random.normal(k1, (T, B, N_IN), jnp.float64)}
    ts = jax.random.randint(k2, (T, B), 0, 2)
    ws = jnp.ones((T, B), jnp.float64) / B
    ref = reference(net, params, state, xs["x"], ts, ws)
    trained = {p.name for p in net.projections if p.trainable}
    return params, state, xs, ts, ws, {k: v for k, v in ref.items() if k in trained}


def assert_exact(grads, ref, tol=1e-8):
    assert set(grads) == set(ref)
    for k in ref:
        assert np.linalg.norm(ref[k]) > 0, k
        assert rel_error(grads[k], ref[k]) < tol, (k, rel_error(grads[k], ref[k]))


# --------------------------------------------------------------------------------------
# The neuron.


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_activation_output_and_derivative(x64, activation):
    f, df = ACTIVATIONS[activation]
    neuron = Graded(tau=5.0, activation=activation)
    v = jnp.array([-2.0, -0.5, 0.3, 1.7], jnp.float64)
    out = neuron.output({"V": v})
    np.testing.assert_allclose(out, f(np.asarray(v)), rtol=1e-12)
    slope = jax.vmap(jax.grad(lambda x: neuron.output({"V": x})))(v)
    np.testing.assert_allclose(slope, df(np.asarray(v)), rtol=1e-12)
    # And the derivative against a central difference, away from relu's kink.
    eps = 1e-6
    fd = (neuron.output({"V": v + eps}) - neuron.output({"V": v - eps})) / (2 * eps)
    np.testing.assert_allclose(slope, fd, rtol=1e-6, atol=1e-9)


def test_update_is_the_exact_exponential_step(x64):
    neuron = Graded(tau=4.0, R=2.0, activation="identity")
    assert not neuron.spiking and neuron.state_names == ("V",)
    alpha = np.exp(-0.5 / 4.0)
    assert neuron.decays(0.5) == pytest.approx({"V": alpha}, rel=1e-15)
    state = {"V": jnp.full((1, 1), 0.5, jnp.float64)}
    for _ in range(7):
        state = neuron.update(state, current=1.5, jump=0.0, dt=0.5)
    # tau dV/dt = -V + R I from V(0) = 0.5: V = R I + (0.5 - R I) exp(-t / tau), t = 3.5.
    expected = 3.0 + (0.5 - 3.0) * alpha**7
    np.testing.assert_allclose(state["V"], expected, rtol=1e-12)
    state = neuron.update({"V": jnp.zeros((1, 1))}, current=0.0, jump=0.25, dt=0.5)
    np.testing.assert_allclose(state["V"], 0.25)
    state = {"V": jnp.full((1, 1), 1.0, jnp.float64)}
    state = neuron.update(state, current=0.0, jump=0.0, dt=0.5)
    np.testing.assert_allclose(state["V"], alpha, rtol=1e-12)  # pure leak


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"`activation` must be one of .*'tanh'.*got 'gelu'"):
        Graded(activation="gelu")
    with pytest.raises(ValueError, match="tau"):
        Graded(tau=-1.0)
    with pytest.raises(TypeError, match="`R`"):
        Graded(R="big")


def test_graded_population_simulates_and_records():
    net = Network(
        N_IN,
        {"h": Population(Graded(tau=5.0, activation="sigmoid"), N)},
        [Projection("x", "h", Dense(gain=2.0), synapse=Expon(3.0))],
        readout=Readout("h", 2),
    )
    params, state = net.init(jax.random.PRNGKey(0), B)
    xs = jax.random.normal(jax.random.PRNGKey(1), (T, B, N_IN))
    res = net.simulate(params, state, xs, record=("spike", "V"))
    rate, v = res.record["h"]["spike"], res.record["h"]["V"]
    assert rate.shape == v.shape == (T, B, N)
    np.testing.assert_allclose(rate, jax.nn.sigmoid(v), rtol=1e-6)
    assert res.outputs.shape == (T, B, 2)
    assert float(jnp.std(v)) > 0


# --------------------------------------------------------------------------------------
# Projections reading a state variable.


def test_unknown_signal_names_the_projection_and_the_choices():
    pops = {"h": Population(Graded(), N)}
    with pytest.raises(ValueError, match=r"projection 1 \('h' -> 'h'\).*'g'.*\['spike', 'V'\]"):
        Network(N_IN, pops, [Projection("x", "h"), Projection("h", "h", delay=1, signal="g")])
    with pytest.raises(ValueError, match=r"'x' is an input"):
        Network(N_IN, pops, [Projection("x", "h", signal="V")])
    with pytest.raises(ValueError, match="align='pre'"):
        Network(
            N_IN,
            pops,
            [
                Projection("x", "h"),
                Projection("h", "h", synapse=Expon(5.0), align="pre", delay=1, signal="V"),
            ],
        )
    with pytest.raises(TypeError, match="`signal`"):
        Projection("h", "h", signal=3)  # type: ignore[arg-type]


def test_signal_v_reads_the_membrane(x64):
    """With identity weights and no leak on the target, ``signal="V"`` delivers ``V``."""
    net = Network(
        N_IN,
        {
            "h": Population(Graded(tau=5.0, activation="tanh"), N_IN),
            "o": Population(LeakyIntegrator(kappa=0.0), N_IN),
        },
        [
            Projection("x", "h", Dense()),
            Projection("h", "o", Dense(), signal="V"),
        ],
    )
    params, state = net.init(jax.random.PRNGKey(0), B, dtype=jnp.float64)
    params = {k: jnp.eye(N_IN, dtype=jnp.float64) for k in params}
    xs = jax.random.normal(jax.random.PRNGKey(1), (T, B, N_IN), jnp.float64)
    rec = net.simulate(params, state, xs, record=("spike", "V", "r")).record
    np.testing.assert_allclose(rec["o"]["r"], rec["h"]["V"], rtol=1e-12)
    assert rel_error(rec["o"]["r"], rec["h"]["spike"]) > 1e-3  # not the rate tanh(V)
    assert net.describe()["projections"]["h->o"]["signal"] == "V"


# --------------------------------------------------------------------------------------
# Gradients.


def single(synapse=None, readout_tau=None, activation="tanh"):
    return Network(
        N_IN,
        {"h": Population(Graded(tau=5.0, R=2.0, activation=activation), N)},
        [Projection("x", "h", Dense(gain=2.0), synapse=synapse)],
        readout=Readout("h", 2, tau=readout_tau),
    )


def test_d_rtrl_is_exact_on_one_graded_population(x64):
    """With a synapse (S = 2, V reads g within the step) and a leaky readout."""
    net = single(Expon(3.0), readout_tau=8.0, activation="softplus")
    params, state, xs, ts, ws, ref = problem(net)
    assert_exact(run_tracer("d_rtrl", net, params, state, xs, ts, ws), ref)


@pytest.mark.parametrize("activation", ["tanh"])
def test_es_d_rtrl_is_exact_on_one_graded_population(x64, activation):
    """The membrane decays at one fixed rate: the factorised trace loses nothing."""
    net = single(activation=activation)
    params, state, xs, ts, ws, ref = problem(net)
    assert_exact(run_tracer("es_d_rtrl", net, params, state, xs, ts, ws), ref)
    wrong = run_tracer("es_d_rtrl", net, params, state, xs, ts, ws, decay=0.5)
    assert rel_error(wrong["x->h"], ref["x->h"]) > 1e-2  # the decay is what makes it exact


def test_online_rules_are_exact_through_a_within_step_membrane_read(x64):
    """The learning signal reaches ``h`` through ``V`` read at ``delay=0`` (``g = dV/dh``)."""
    net = Network(
        N_IN,
        {
            "h": Population(Graded(tau=5.0, activation="sigmoid"), N),
            "o": Population(LeakyIntegrator(kappa=0.0), N),
        },
        [
            Projection("x", "h", Dense(gain=2.0)),
            Projection("h", "o", Dense(), signal="V", trainable=False),
        ],
        readout=Readout("o", 2),
    )
    params, state, xs, ts, ws, ref = problem(net)
    for name in ("d_rtrl", "es_d_rtrl"):
        assert_exact(run_tracer(name, net, params, state, xs, ts, ws), ref)


def recurrent_reading_v():
    return Network(
        N_IN,
        {"h": Population(Graded(tau=4.0, activation="tanh"), N)},
        [
            Projection("x", "h", Dense(gain=2.0), synapse=Expon(3.0)),
            Projection("h", "h", Dense(gain=1.0), delay=1, signal="V"),
        ],
        readout=Readout("h", 2, tau=6.0),
    )


def test_exact_rules_on_a_recurrent_graded_network_reading_v(x64):
    net = recurrent_reading_v()
    params, state, xs, ts, ws, ref = problem(net)
    for name in ("rtrl", "bptt"):
        assert_exact(run_tracer(name, net, params, state, xs, ts, ws), ref)


def test_online_rules_on_a_recurrent_graded_network_reading_v(x64):
    """Approximate (the recurrent path is not traced): cosine to BPTT, measured."""
    net = recurrent_reading_v()
    params = net.init_params(jax.random.PRNGKey(0), jnp.float64)
    xs = jax.random.normal(jax.random.PRNGKey(1), (T, B, N_IN), jnp.float64)
    ys = jax.random.randint(jax.random.PRNGKey(2), (T, B), 0, 2)
    table = compare(net, xs, ys, algorithms=["d_rtrl", "es_d_rtrl"], params=params)
    cos = table.metric("cosine")
    print("cosine to BPTT:", cos)
    for name in ("d_rtrl", "es_d_rtrl"):
        for k in ("x->h", "h->h"):
            assert cos[name][k] > MIN_COSINE[name][k], (name, k, cos[name][k])
        assert cos[name]["h->readout"] > 1 - 1e-9  # the readout weights are exact


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_rule_trains_a_recurrent_graded_network(x64, name):
    """Every registered rule binds and gives a finite, non-zero gradient for each weight."""
    net = recurrent_reading_v()
    params, state, xs, ts, ws, ref = problem(net)
    grads = run_tracer(name, net, params, state, xs, ts, ws)
    assert set(grads) == set(ref)
    for k, g in grads.items():
        assert np.all(np.isfinite(g)) and np.linalg.norm(g) > 0, (name, k)


# Measured on seeds 0-3 of this setting: d_rtrl 0.68-0.93 (x->h), 0.93-0.96 (h->h);
# es_d_rtrl 0.60-0.92, 0.89-0.96. Seed 0 (used here) is the lowest of the four.
MIN_COSINE = {
    "d_rtrl": {"x->h": 0.6, "h->h": 0.85},
    "es_d_rtrl": {"x->h": 0.5, "h->h": 0.8},
}


# --------------------------------------------------------------------------------------
# A transition that couples neurons: online rules refuse it, BPTT and RTRL train it.


class _Diffusive(Graded):
    """Graded neurons coupled inside the transition (a ring and a global mean)."""

    def update(self, state, current, jump, dt):
        new = super().update(state, current, jump, dt)
        v = state["V"]
        ring = jnp.roll(v, 1, axis=-1) - v
        return {"V": new["V"] + 0.2 * ring - 0.1 * jnp.mean(v, axis=-1, keepdims=True)}


def coupled(neuron=_Diffusive):
    return Network(
        N_IN,
        {"h": Population(neuron(tau=5.0, activation="tanh"), N)},
        [Projection("x", "h", Dense(gain=2.0))],
        readout=Readout("h", 2),
    )


def test_coupled_transition_is_refused_by_online_rules_with_true_advice(x64):
    net = coupled()
    for name in ("d_rtrl", "es_d_rtrl"):
        with pytest.raises(ValueError, match=r"couples different neurons.*'bptt' or 'rtrl'"):
            get_algorithm(name).bind(net, cross_entropy.fn)
    # The advice can be followed: both bind and give the exact gradient.
    params, state, xs, ts, ws, ref = problem(net)
    for name in ("bptt", "rtrl"):
        grads = run_tracer(name, net, params, state, xs, ts, ws)
        assert_exact(grads, ref)
    # The coupling matters: without it the gradient differs.
    plain = reference(coupled(Graded), params, state, xs["x"], ts, ws)
    assert rel_error(plain["x->h"], ref["x->h"]) > 1e-2
