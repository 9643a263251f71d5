"""Synapse kinetics against closed forms, and AlignPre == AlignPost where theory says so."""

from __future__ import annotations

import math

import brainunit as u
import jax.numpy as jnp
import numpy as np
import pytest

from traxon.core import (
    LIF,
    Alpha,
    Delta,
    Dense,
    DualExpon,
    Expon,
    Network,
    Population,
    Projection,
    Readout,
)


def impulse_response(syn, steps, dt, x=1.0, shape=(1, 1)):
    """Output after an input ``x`` at step 0 and nothing after: (steps,) array."""
    state = syn.init(shape, jnp.float64)
    out = []
    for t in range(steps):
        state = syn.update(state, x if t == 0 else 0.0, dt)
        out.append(float(syn.output(state)[0, 0]))
    return np.array(out)


def test_expon_impulse_response_is_exponential(x64):
    tau, dt = 5.0, 0.5
    g = impulse_response(Expon(tau), 60, dt, x=2.0)
    n = np.arange(60)
    np.testing.assert_allclose(g, 2.0 * np.exp(-n * dt / tau), rtol=1e-13)
    assert Expon(tau).decays(dt) == {"g": pytest.approx(math.exp(-0.1), rel=1e-15)}


def test_expon_step_response_and_units(x64):
    syn = Expon(tau=0.004 * u.second)
    assert syn.tau == 4.0
    state = syn.init((2, 3), jnp.float64)
    for _ in range(25):
        state = syn.update(state, 0.5, 1.0)
    a = math.exp(-0.25)
    np.testing.assert_allclose(np.asarray(state["g"]), 0.5 * (1 - a**25) / (1 - a), rtol=1e-13)


@pytest.mark.parametrize(("tau", "dt"), [(4.0, 0.5), (3.0, 1.0)])
def test_alpha_peaks_at_tau_with_the_input_value(x64, tau, dt):
    x = 2.5
    g = impulse_response(Alpha(tau), 80, dt, x=x)
    t = np.arange(80) * dt
    # The exact discretisation samples x (t / tau) e^(1 - t / tau).
    np.testing.assert_allclose(g, x * (t / tau) * np.exp(1 - t / tau), rtol=1e-12, atol=1e-14)
    peak = int(np.argmax(g))
    assert peak * dt == pytest.approx(tau)
    assert g[peak] == pytest.approx(x, rel=1e-12)


def test_alpha_peak_between_grid_points(x64):
    tau, dt = 2.7, 1.0
    g = impulse_response(Alpha(tau), 30, dt)
    peak = int(np.argmax(g))
    assert abs(peak * dt - tau) <= dt / 2 + 1e-12
    # Within the discretisation: the sampled peak is below 1 by at most the curvature over dt/2.
    assert 1.0 - 0.05 < g[peak] <= 1.0


@pytest.mark.parametrize(("tau_rise", "tau_decay", "dt"), [(1.0, 10.0, 0.1), (2.0, 6.0, 0.25)])
def test_dual_expon_rise_peak_and_decay(x64, tau_rise, tau_decay, dt):
    syn = DualExpon(tau_rise=tau_rise, tau_decay=tau_decay)
    t_peak = tau_rise * tau_decay / (tau_decay - tau_rise) * math.log(tau_decay / tau_rise)
    assert syn.peak_time() == pytest.approx(t_peak, rel=1e-14)
    steps = int(8 * tau_decay / dt)
    g = impulse_response(syn, steps, dt, x=1.5)
    t = np.arange(steps) * dt
    norm = 1.0 / (math.exp(-t_peak / tau_decay) - math.exp(-t_peak / tau_rise))
    want = 1.5 * norm * (np.exp(-t / tau_decay) - np.exp(-t / tau_rise))
    np.testing.assert_allclose(g, want, rtol=1e-12, atol=1e-14)
    peak = int(np.argmax(g))
    assert abs(peak * dt - t_peak) <= dt
    assert 1.5 * 0.999 < g[peak] <= 1.5 * (1 + 1e-12)
    # Rising before the peak, then decaying with tau_decay once the rise term has died out.
    assert np.all(np.diff(g[: peak + 1]) > 0) and np.all(np.diff(g[peak:]) < 0)
    tail = g[-20:]
    np.testing.assert_allclose(tail[1:] / tail[:-1], math.exp(-dt / tau_decay), rtol=1e-6)
    assert syn.decays(dt) == pytest.approx(
        {"rise": math.exp(-dt / tau_rise), "decay": math.exp(-dt / tau_decay)}, rel=1e-15
    )


def test_delta_has_no_state():
    syn = Delta()
    assert syn.state_names == () and syn.init((2, 3), jnp.float32) == {}
    assert syn.update({}, 1.0, 1.0) == {} and syn.decays(1.0) == {}
    with pytest.raises(TypeError, match="Delta has no state"):
        syn.output({})


def test_keys_identify_kinetics():
    assert Expon(5.0).key() == Expon(5.0 * u.ms).key()
    assert Expon(5.0).key() != Expon(4.0).key()
    assert Expon(5.0).key() != Alpha(5.0).key()
    assert DualExpon(1.0, 10.0).key() == DualExpon(1.0, 10.0).key()


@pytest.mark.parametrize(
    ("build", "exc", "match"),
    [
        (lambda: Expon(tau=0.0), ValueError, r"`tau` must be positive.*got 0"),
        (lambda: Expon(tau=-2.0), ValueError, r"`tau` must be positive.*got -2"),
        (lambda: Expon(tau=5.0 * u.mV), TypeError, r"`tau` must be in units of ms"),
        (lambda: Expon(tau=np.array([1.0, 2.0])), TypeError, r"`tau` must be a scalar"),
        (lambda: Alpha(tau=0.0), ValueError, r"`tau` must be positive"),
        (lambda: Alpha(tau=-2.0), ValueError, r"`tau` must be positive"),
        (lambda: DualExpon(tau_rise=0.0), ValueError, r"`tau_rise` must be positive"),
        (lambda: DualExpon(tau_decay=-2.0), ValueError, r"`tau_decay` must be positive"),
        (lambda: DualExpon(5.0, 2.0), ValueError, r"`tau_decay` must be larger than `tau_rise`"),
        (lambda: DualExpon(tau_rise=1.0 * u.mV), TypeError, r"`tau_rise` must be in units"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(build, exc, match):
    with pytest.raises(exc, match=match):
        build()


# --------------------------------------------------------------------------------------
# AlignPre vs AlignPost


def _network(align, syn, reversal=None):
    return Network(
        {"x": 3},
        {"h": Population(LIF(tau=10.0), 5), "o": Population(LIF(tau=15.0), 4)},
        [
            # delay-0 input projection, delay-1 recurrent one, delay-0 feed-forward one.
            Projection("x", "h", Dense(gain=3.0), synapse=syn, align=align, reversal=reversal),
            Projection("h", "h", Dense(gain=1.0), synapse=syn, align=align, delay=1),
            Projection("h", "o", Dense(gain=2.5), synapse=syn, align=align),
        ],
        readout=Readout("o", 2, tau=10.0),
    )


@pytest.mark.parametrize(
    ("syn", "reversal"),
    [(Expon(5.0), None), (Alpha(4.0), None), (DualExpon(1.0, 8.0), None), (Expon(5.0), 6.0)],
    ids=["expon", "alpha", "dual_expon", "expon_conductance"],
)
def test_align_pre_equals_align_post_for_linear_synapses(x64, syn, reversal):
    post, pre = _network("post", syn, reversal), _network("pre", syn, reversal)
    # Same weights (numpy-drawn: jax.random compiles once per shape); the synapse states
    # live on opposite sides.
    rng = np.random.default_rng(0)
    params = {
        p.name: jnp.asarray(rng.normal(size=p.op.weight_shape(p.n_in, p.n_out)) * gain)
        for p, gain in zip(post.projections, (2.0, 0.5, 1.5, 1.0, 0.0), strict=True)
    }
    pre.check_params(params)
    state_post, state_pre = post.init_state(2), pre.init_state(2)
    names = syn.state_names
    assert {f"in0.{n}" for n in names} <= set(state_post["h"])
    assert {f"pre0.{n}" for n in names} <= set(state_pre["x"]) | set(state_pre["h"])
    assert not any(k.startswith("in") for k in state_pre["o"])

    xs = (np.random.default_rng(1).random((60, 2, 3)) < 0.3).astype(np.float64)
    r_post = post.simulate(params, state_post, xs, record=("V", "spike"))
    r_pre = pre.simulate(params, state_pre, xs, record=("V", "spike"))
    for pop in ("h", "o"):
        assert r_post.record[pop]["spike"].sum() > 3  # the recurrent path carries spikes
        np.testing.assert_allclose(
            r_pre.record[pop]["V"], r_post.record[pop]["V"], rtol=1e-12, atol=1e-12
        )
        np.testing.assert_array_equal(r_pre.record[pop]["spike"], r_post.record[pop]["spike"])
    np.testing.assert_allclose(r_pre.outputs, r_post.outputs, rtol=1e-12, atol=1e-12)


def test_align_post_projections_with_equal_kinetics_share_one_state():
    net = Network(
        {"a": 2, "b": 3},
        {"h": Population(LIF(), 4)},
        [
            Projection("a", "h", Dense(), synapse=Expon(5.0)),
            Projection("b", "h", Dense(), synapse=Expon(5.0)),
            Projection("b", "h", Dense(), synapse=Expon(2.0)),
            Projection("h", "h", Dense(), synapse=Delta(), delay=1),
        ],
    )
    state = net.init_state(1)
    assert sorted(state["h"]) == ["V", "in0.g", "in1.g"]
    assert [p.name for p in net.projections] == ["a->h", "b->h", "b->h#1", "h->h"]
    assert [p.channel for p in net.projections] == ["in0", "in0", "in1", "in2"]
