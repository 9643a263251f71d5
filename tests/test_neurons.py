"""Neuron models against closed-form and hand-computed responses."""

from __future__ import annotations

import math

import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from traxon.core import (
    ALIF,
    LIF,
    Dense,
    Graded,
    Izhikevich,
    LeakyIntegrator,
    Network,
    Population,
    Projection,
    Surrogate,
)


def run(neuron, steps, current, dt, state, jump=0.0):
    """Step a neuron eagerly; every state variable and the output, stacked to (T, ...)."""
    out = {k: [] for k in state}
    out["spike"] = []
    for _ in range(steps):
        state = neuron.update(state, current, jump, dt)
        for k, v in state.items():
            out[k].append(np.asarray(v))
        out["spike"].append(np.asarray(neuron.output(state)))
    return {k: np.stack(v) for k, v in out.items()}


def spike_steps(spikes):
    """1-based step numbers at which a (T, 1, 1) spike train is 1."""
    return (np.nonzero(np.asarray(spikes)[:, 0, 0])[0] + 1).tolist()


# --------------------------------------------------------------------------------------
# LIF


@pytest.mark.parametrize("with_units", [False, True])
def test_lif_subthreshold_constant_current_is_exact(x64, with_units):
    if with_units:
        mv = u.mV
        lif = LIF(tau=0.01 * u.second, V_th=1.0 * mv, V_reset=-0.5 * mv, V_rest=-0.5 * mv, R=2.0)
    else:
        lif = LIF(tau=10.0, V_th=1.0, V_reset=-0.5, V_rest=-0.5, R=2.0)
    assert (lif.tau, lif.V_th, lif.V_reset, lif.V_rest) == (10.0, 1.0, -0.5, -0.5)
    dt, steps = 0.5, 80
    current = jnp.array([[0.0, 0.3, 0.6]])  # asymptotes -0.5, 0.1, 0.7: all below V_th
    rec = run(lif, steps, current, dt, lif.init((1, 3), jnp.float64))
    t = np.arange(1, steps + 1)[:, None, None]
    want = -0.5 + 2.0 * np.asarray(current)[None] * (1.0 - np.exp(-t * dt / 10.0))
    np.testing.assert_allclose(rec["V"], want, rtol=1e-12, atol=1e-13)
    assert rec["spike"].sum() == 0


def test_lif_single_step_float32_matches_docstring():
    lif = LIF(tau=10.0)
    s = lif.update(lif.init((1, 3), jnp.float32), jnp.array([[0.0, 1.0, 2.0]]), 0.0, 1.0)
    assert s["V"].dtype == jnp.float32
    np.testing.assert_allclose(
        np.asarray(s["V"]), [[0.0, 1 - math.exp(-0.1), 2 - 2 * math.exp(-0.1)]], rtol=1e-6
    )


@pytest.mark.parametrize("reset", ["soft", "hard"])
def test_lif_reset_values(x64, reset):
    lif = LIF(tau=5.0, V_th=1.0, V_reset=-0.2, V_rest=0.1, reset=reset)
    alpha = math.exp(-1.0 / 5.0)
    state = {"V": jnp.array([[1.3, 0.9]], jnp.float64)}
    np.testing.assert_array_equal(np.asarray(lif.output(state)), [[1.0, 0.0]])
    new = lif.update(state, 0.0, 0.0, 1.0)
    # Soft subtracts V_th - V_reset = 1.2; hard sets V_reset; the silent neuron only leaks.
    v_after_reset = 1.3 - 1.2 if reset == "soft" else -0.2
    want = [[0.1 + (v_after_reset - 0.1) * alpha, 0.1 + 0.8 * alpha]]
    np.testing.assert_allclose(np.asarray(new["V"]), want, rtol=1e-14)


@pytest.mark.parametrize("detach", [False, True])
def test_lif_soft_reset_gradient_and_detach_reset(detach):
    # Triangle surrogate (width 1, scale 1): at V = 1.3, x = (1.3 - 1) / 1.2 = 0.25, psi = 0.75.
    lif = LIF(tau=5.0, V_th=1.0, V_reset=-0.2, detach_reset=detach)
    alpha = math.exp(-0.2)

    def v_next(v):
        return lif.update({"V": jnp.reshape(v, (1, 1))}, 0.0, 0.0, 1.0)["V"][0, 0]

    g = float(jax.grad(v_next)(jnp.float32(1.3)))
    # d/dV [V - 1.2 * s(V)] = 1 - 1.2 * psi / 1.2, or 1 when the reset is detached.
    want = alpha * (1.0 if detach else 1.0 - 0.75)
    assert math.isclose(g, want, rel_tol=1e-5)


@pytest.mark.parametrize(("tau_ref", "dt"), [(2.5, 1.0), (2.0, 1.0), (0.3, 0.1), (2.0, 0.1)])
def test_lif_refractory_holds_at_reset_for_ceil_steps(tau_ref, dt):
    # float32 on purpose: 0.3 - 3 * 0.1 is not exactly 0 there; no extra step may appear.
    n_ref = math.ceil(tau_ref / dt - 1e-9)
    lif = LIF(tau=10.0, V_th=1.0, V_reset=-0.5, reset="hard", tau_ref=tau_ref)
    assert lif.aux_names == ("ref",)
    state = lif.init((1, 1), jnp.float32)
    state = {"V": jnp.full((1, 1), 1.5, jnp.float32), "ref": state["ref"]}
    # A strong current and a large delta jump during the refractory period.
    rec = run(lif, n_ref + 3, 3.0, dt, state, jump=5.0)
    v = rec["V"][:, 0, 0]
    np.testing.assert_array_equal(v[:n_ref], -0.5)
    assert rec["spike"][:n_ref].sum() == 0
    alpha = math.exp(-dt / 10.0)
    first_free = -0.5 * alpha + 3.0 * (1.0 - alpha) + 5.0
    assert math.isclose(float(v[n_ref]), first_free, rel_tol=1e-5)
    assert rec["spike"][n_ref, 0, 0] == 1.0


def test_alif_refractory_holds_membrane_while_adaptation_decays():
    alif = ALIF(tau=10.0, tau_a=100.0, beta=0.5, V_th=1.0, tau_ref=3.0)
    assert alif.aux_names == ("ref",)
    state = {
        "V": jnp.full((1, 1), 1.5, jnp.float32),
        "a": jnp.zeros((1, 1), jnp.float32),
        "ref": jnp.zeros((1, 1), jnp.float32),
    }
    vs, a_s = [], []
    for _ in range(5):
        state = alif.update(state, current=3.0, jump=0.0, dt=1.0)
        vs.append(float(state["V"][0, 0]))
        a_s.append(float(state["a"][0, 0]))
    np.testing.assert_allclose(vs[:3], 0.5)  # soft reset value, held for 3 steps
    assert vs[3] > 0.5
    rho = math.exp(-1.0 / 100.0)
    np.testing.assert_allclose(a_s[:3], [rho, rho**2, rho**3], rtol=1e-6)


def _first_crossing(v0, v_inf, alpha, v_th):
    """Smallest n >= 1 with v_inf + (v0 - v_inf) alpha^n >= v_th (closed form)."""
    n = math.ceil(math.log((v_inf - v_th) / (v_inf - v0)) / math.log(alpha))
    return max(n, 1)


@pytest.mark.parametrize("tau_ref", [0.0, 3.0])
def test_lif_hard_reset_spike_times_constant_current(x64, tau_ref):
    tau, dt, v_inf, v_reset, steps = 10.0, 1.0, 1.7, -0.2, 100
    alpha = math.exp(-dt / tau)
    lif = LIF(tau=tau, V_th=1.0, V_reset=v_reset, reset="hard", tau_ref=tau_ref)
    rec = run(lif, steps, v_inf, dt, lif.init((1, 1), jnp.float64))
    first = _first_crossing(0.0, v_inf, alpha, 1.0)  # from rest
    period = math.ceil(tau_ref / dt) + _first_crossing(v_reset, v_inf, alpha, 1.0)
    want = list(range(first, steps + 1, period))
    assert (first, period) == ((9, 10) if tau_ref == 0 else (9, 13))
    assert spike_steps(rec["spike"]) == want
    assert len(want) == (steps - first) // period + 1


def test_lif_soft_reset_spike_times_constant_current(x64):
    # Soft reset is linear between spikes: V_n = V_inf (1 - a^n) - theta * sum_{t_k < n} a^(n-t_k)
    # (from rest at 0). Spike times follow from that closed form one by one.
    tau, dt, v_inf, theta, steps = 10.0, 1.0, 3.0, 1.0, 100
    alpha = math.exp(-dt / tau)
    lif = LIF(tau=tau, V_th=theta, V_reset=0.0, reset="soft")
    rec = run(lif, steps, v_inf, dt, lif.init((1, 1), jnp.float64))

    n = np.arange(1, steps + 1)
    times: list[int] = []
    closed = np.empty(steps)
    for k in n:
        closed[k - 1] = v_inf * (1 - alpha**k) - theta * sum(alpha ** (k - t) for t in times)
        if closed[k - 1] >= theta:
            times.append(int(k))
    np.testing.assert_allclose(rec["V"][:, 0, 0], closed, rtol=1e-11, atol=1e-12)
    assert spike_steps(rec["spike"]) == times
    # The first spike is the hard-reset one; the residual then shortens the intervals.
    assert times[0] == _first_crossing(0.0, v_inf, alpha, theta) == 5
    hard = LIF(tau=tau, V_th=theta, V_reset=0.0, reset="hard")
    hard_rec = run(hard, steps, v_inf, dt, hard.init((1, 1), jnp.float64))
    assert len(times) == 23 > hard_rec["spike"].sum() == 20


# --------------------------------------------------------------------------------------
# ALIF


def test_alif_adaptation_jumps_after_spike_and_decays_with_tau_a(x64):
    tau, tau_a = 20.0, 50.0
    alif = ALIF(tau=tau, tau_a=tau_a, beta=0.5, V_th=1.0, V_reset=0.0)
    state = {"V": jnp.full((1, 1), 1.2, jnp.float64), "a": jnp.zeros((1, 1), jnp.float64)}
    rec = run(alif, 30, 0.0, 1.0, state)
    n = np.arange(1, 31)
    rho, alpha = math.exp(-1.0 / tau_a), math.exp(-1.0 / tau)
    np.testing.assert_allclose(rec["a"][:, 0, 0], rho**n, rtol=1e-12)  # a_1 = rho (0 + 1)
    # Soft reset by V_th - V_reset (not by the adapted threshold), then free decay.
    np.testing.assert_allclose(rec["V"][:, 0, 0], 0.2 * alpha**n, rtol=1e-12)
    assert rec["spike"].sum() == 0
    assert alif.decays(1.0) == pytest.approx({"V": alpha, "a": rho}, rel=1e-14)


def test_alif_threshold_includes_beta_times_a():
    alif = ALIF(beta=0.5, V_th=1.0, V_reset=0.0)
    v = jnp.full((1, 2), 1.2)
    a = jnp.array([[0.5, 0.3]])  # thresholds 1.25 and 1.15
    np.testing.assert_array_equal(np.asarray(alif.output({"V": v, "a": a})), [[0.0, 1.0]])
    # Triangle surrogate at x = (1.2 - 1.15) / 1 = 0.05.
    g = jax.grad(lambda vv: alif.output({"V": vv, "a": a})[0, 1])(v)
    assert math.isclose(float(g[0, 1]), 0.95, rel_tol=1e-5)


def test_alif_with_beta_zero_is_soft_reset_lif(x64):
    alif = ALIF(tau=20.0, tau_a=200.0, beta=0.0)
    lif = LIF(tau=20.0, reset="soft")
    r_alif = run(alif, 60, 3.0, 1.0, alif.init((1, 1), jnp.float64))
    r_lif = run(lif, 60, 3.0, 1.0, lif.init((1, 1), jnp.float64))
    np.testing.assert_allclose(r_alif["V"], r_lif["V"], rtol=1e-14)
    assert r_alif["spike"].sum() == r_lif["spike"].sum() > 5


def test_alif_fires_less_over_time_under_constant_drive(x64):
    alif = ALIF(tau=20.0, tau_a=200.0, beta=0.2)
    plain = ALIF(tau=20.0, tau_a=200.0, beta=0.0)
    r = run(alif, 100, 3.0, 1.0, alif.init((1, 1), jnp.float64))
    r0 = run(plain, 100, 3.0, 1.0, plain.init((1, 1), jnp.float64))
    isi = np.diff(spike_steps(r["spike"]))
    isi0 = np.diff(spike_steps(r0["spike"]))
    assert len(isi) >= 5
    assert np.all(np.diff(isi) >= 0) and isi[-1] > isi[0]  # intervals lengthen
    assert isi0.max() - isi0.min() <= 1  # without adaptation they do not drift
    assert r["spike"].sum() < r0["spike"].sum()
    assert float(r["a"][-1, 0, 0]) > 1.0


# --------------------------------------------------------------------------------------
# Izhikevich


def test_izhikevich_euler_step_by_hand():
    izh = Izhikevich()
    s = izh.init((1, 1), jnp.float32)
    assert float(s["v"][0, 0]) == -65.0 and float(s["u"][0, 0]) == -13.0
    # 0.04 * 65^2 - 5 * 65 + 140 + 13 + 10 = 7; u' = a (b v - u) = 0.
    new = izh.update(s, 10.0, 0.0, 0.5)
    assert math.isclose(float(new["v"][0, 0]), -65.0 + 0.5 * 7.0, rel_tol=1e-6)
    assert math.isclose(float(new["u"][0, 0]), -13.0, rel_tol=1e-6)
    # A spiking state resets: v' = c, u' = u + d, then one Euler step.
    spiking = {"v": jnp.full((1, 1), 35.0), "u": jnp.full((1, 1), -10.0)}
    assert float(izh.output(spiking)[0, 0]) == 1.0
    new = izh.update(spiking, 0.0, 0.0, 1.0)
    assert math.isclose(float(new["v"][0, 0]), -65.0 + (169.0 - 325.0 + 140.0 + 2.0), rel_tol=1e-6)
    assert math.isclose(float(new["u"][0, 0]), -2.0 + 0.02 * (-13.0 + 2.0), rel_tol=1e-6)


def test_izhikevich_regular_spiking_under_constant_current():
    izh = Izhikevich()
    rec = run(izh, 100, 10.0, 1.0, izh.init((1, 1), jnp.float32))
    times = spike_steps(rec["spike"])
    # Regular spiking: a first spike within ~5 ms, then adapting, roughly 10-40 Hz.
    assert 2 <= len(times) <= 6, times
    assert times[0] <= 6
    isi = np.diff(times)
    assert np.all(np.diff(isi) > 0)  # spike-frequency adaptation
    assert np.all(np.isfinite(rec["v"])) and np.all(np.isfinite(rec["u"]))
    assert rec["v"].max() < 500.0 and rec["v"].min() > -90.0
    # Without input it stays silent.
    quiet = run(izh, 100, 0.0, 1.0, izh.init((1, 1), jnp.float32))
    assert quiet["spike"].sum() == 0
    assert izh.decays(1.0)["v"] == pytest.approx(math.exp(0.08 * -65 + 5.0))


# --------------------------------------------------------------------------------------
# LeakyIntegrator


@pytest.mark.parametrize("tau", [20.0, 20.0 * u.ms])
def test_leaky_integrator_decays_with_tau(x64, tau):
    li = LeakyIntegrator(tau=tau)
    assert not li.spiking and li.state_names == ("r",)
    state = {"r": jnp.full((1, 2), 1.5, jnp.float64)}
    rec = run(li, 40, 0.0, 0.5, state)
    n = np.arange(1, 41)
    np.testing.assert_allclose(rec["r"][:, 0, 0], 1.5 * np.exp(-n * 0.5 / 20.0), rtol=1e-13)
    np.testing.assert_array_equal(rec["spike"], rec["r"])  # its output is its value
    assert li.decays(0.5) == pytest.approx({"r": math.exp(-0.025)}, rel=1e-14)


def test_leaky_integrator_with_kappa(x64):
    li = LeakyIntegrator(kappa=0.8)
    rec = run(li, 30, 0.5, 1.0, li.init((1, 1), jnp.float64))
    n = np.arange(1, 31)
    np.testing.assert_allclose(rec["r"][:, 0, 0], 0.5 * (1 - 0.8**n) / (1 - 0.8), rtol=1e-13)
    # kappa = 0 is memoryless.
    memoryless = LeakyIntegrator(kappa=0.0)
    s = memoryless.update({"r": jnp.full((1, 2), 7.0)}, jnp.array([[1.0, -2.0]]), 0.5, 1.0)
    np.testing.assert_array_equal(np.asarray(s["r"]), [[1.5, -1.5]])
    assert memoryless.decays(1.0) == {"r": 0.0}


# --------------------------------------------------------------------------------------
# Pytree behaviour and defaults


def test_decay_factors_and_state_names():
    assert LIF(tau=10.0).decays(2.0) == pytest.approx({"V": math.exp(-0.2)})
    assert LIF().state_names == ("V",) and LIF().aux_names == ()
    assert ALIF().state_names == ("V", "a")
    assert Izhikevich().state_names == ("v", "u")
    assert LIF().spike_fn.kind == "triangle"
    assert Izhikevich().spike_fn.kind == "fast_sigmoid"
    assert LIF(spike_fn="gaussian").spike_fn.kind == "gaussian"
    assert isinstance(LIF(spike_fn=Surrogate("sigmoid", width=0.5)).spike_fn, Surrogate)


def test_neurons_are_pytrees_usable_under_jit_vmap_grad():
    lif = LIF(tau=10.0)
    # tree_map to non-numbers must not re-run the constructor's validation.
    shapes = jax.tree_util.tree_map(lambda x: None, lif)
    assert isinstance(shapes, LIF) and shapes.tau is None and shapes.reset == "soft"

    state = {"V": jnp.zeros((1, 1))}
    out = jax.jit(lambda n, s: n.update(s, 1.0, 0.0, 1.0)["V"])(lif, state)
    assert math.isclose(float(out[0, 0]), 1 - math.exp(-0.1), rel_tol=1e-6)

    # vmap over a stack of neurons with different time constants.
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), LIF(tau=5.0), LIF(tau=20.0))
    v = jax.vmap(lambda n: n.update(state, 1.0, 0.0, 1.0)["V"][0, 0])(stacked)
    np.testing.assert_allclose(np.asarray(v), [1 - math.exp(-0.2), 1 - math.exp(-0.05)], 1e-6)

    # Gradient with respect to tau: d/dtau [1 - exp(-dt/tau)] = -exp(-dt/tau) dt / tau^2.
    g = jax.grad(lambda n: n.update(state, 1.0, 0.0, 1.0)["V"][0, 0])(lif)
    assert math.isclose(float(g.tau), -math.exp(-0.1) / 100.0, rel_tol=1e-5)


# --------------------------------------------------------------------------------------
# Argument checks


@pytest.mark.parametrize(
    ("build", "exc", "match"),
    [
        (lambda: LIF(tau=0.0), ValueError, r"`tau` must be positive.*got 0"),
        (lambda: LIF(tau=-2.0), ValueError, r"`tau` must be positive.*got -2"),
        (lambda: LIF(tau=float("inf")), ValueError, r"`tau` must be positive and finite"),
        (lambda: LIF(tau=10 * u.mV), TypeError, r"`tau` must be in units of ms"),
        (lambda: LIF(V_th=1.0 * u.ms), TypeError, r"`V_th` must be in units of mV"),
        (lambda: LIF(R=2.0 * u.ms), TypeError, r"`R` must be a unitless number"),
        (lambda: LIF(tau=None), TypeError, r"`tau` must be a number"),
        (lambda: LIF(V_th=0.0, V_reset=0.5), ValueError, r"`V_th - V_reset` must be positive"),
        (lambda: LIF(reset="medium"), ValueError, r"`reset` must be 'soft' or 'hard'.*medium"),
        (lambda: LIF(tau_ref=-1.0), ValueError, r"`tau_ref` must be non-negative"),
        (lambda: LIF(tau_ref=2 * u.mV), TypeError, r"`tau_ref` must be in units of ms"),
        (lambda: LIF(spike_fn="relu"), ValueError, r"`kind` must be one of .*relu"),
        (lambda: LIF().replace(tau=-2.0), ValueError, r"`tau` must be positive"),
        (lambda: ALIF(tau=0.0), ValueError, r"`tau` must be positive"),
        (lambda: ALIF(tau_a=-2.0), ValueError, r"`tau_a` must be positive"),
        (lambda: ALIF(tau_a=2.0 * u.mV), TypeError, r"`tau_a` must be in units of ms"),
        (lambda: ALIF(beta=-0.1), ValueError, r"`beta` must be non-negative"),
        (lambda: ALIF(reset="none"), ValueError, r"`reset` must be 'soft' or 'hard'"),
        (lambda: ALIF(spike_fn="step"), ValueError, r"`kind` must be one of"),
        (lambda: Izhikevich(a=0.0), ValueError, r"`a` must be positive"),
        (lambda: Izhikevich(c=40.0), ValueError, r"`V_th - c` must be positive"),
        (lambda: Izhikevich(c=-65.0 * u.ms), TypeError, r"`c` must be in units of mV"),
        (lambda: LeakyIntegrator(), ValueError, r"exactly one of `tau`.*or `kappa`"),
        (lambda: LeakyIntegrator(tau=5.0, kappa=0.5), ValueError, r"exactly one of `tau`"),
        (lambda: LeakyIntegrator(tau=0.0), ValueError, r"`tau` must be positive"),
        (lambda: LeakyIntegrator(tau=-2.0), ValueError, r"`tau` must be positive"),
        (lambda: LeakyIntegrator(tau=5 * u.mV), TypeError, r"`tau` must be in units of ms"),
        (lambda: LeakyIntegrator(kappa=1.5), ValueError, r"`kappa` must lie in \[0.0, 1.0\]"),
        (lambda: LeakyIntegrator(kappa=-0.1), ValueError, r"`kappa` must lie in"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(build, exc, match):
    with pytest.raises(exc, match=match):
        build()


@pytest.mark.parametrize(
    "neuron",
    [
        LIF(tau=np.array([5.0, 10.0, 20.0]), V_th=np.array([0.5, 1.0, 1.5])),
        ALIF(tau=np.array([5.0, 10.0, 20.0]), beta=np.array([0.0, 0.5, 1.0])),
        Graded(tau=np.array([5.0, 10.0, 20.0]), R=np.array([1.0, 2.0, 3.0])),
    ],
    ids=["LIF", "ALIF", "Graded"],
)
def test_per_neuron_parameters_in_a_network_match_one_population_per_value(neuron):
    # The suite runs with jax_numpy_rank_promotion="raise" (conftest): per-neuron (N,)
    # parameters meet the (B, N) state without implicit rank promotion.
    xs = 2.0 * jax.random.uniform(jax.random.PRNGKey(1), (12, 2, 3))

    def run(n, size, i=None):
        net = Network(3, {"h": Population(n, size)}, [Projection("x", "h", Dense(2.0))])
        params = net.init_params(jax.random.PRNGKey(0))
        if i is not None:
            params = {"x->h": jnp.asarray(W)[:, i : i + 1]}
        res = net.simulate(params, net.init_state(2), xs, record=("V",))
        return params["x->h"], res.record["h"]["V"]

    W, together = run(neuron, 3)
    for i in range(3):
        one = jax.tree_util.tree_map(
            lambda leaf, i=i: np.asarray(leaf)[i] if np.ndim(leaf) else leaf, neuron
        )
        _, alone = run(one, 1, i)
        np.testing.assert_allclose(together[..., i : i + 1], alone, rtol=1e-6, atol=1e-6)
