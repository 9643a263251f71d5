"""Network composition: wiring against hand-computed traces, jit/vmap/grad, argument checks."""

from __future__ import annotations

import math

import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import rel_error, tree_allclose
from traxon.core import (
    LIF,
    Bias,
    Delta,
    Dense,
    Expon,
    FixedInDegree,
    Network,
    Population,
    Projection,
    Readout,
)

B, T, N_IN, N_H = 2, 30, 3, 6


def small_net(**readout):
    return Network(
        inputs=N_IN,
        populations={"h": Population(LIF(tau=10.0), N_H)},
        projections=[
            Projection("x", "h", Dense(gain=3.0), synapse=Expon(5.0)),
            Projection("h", "h", Dense(gain=1.0), synapse=Expon(5.0), delay=1),
        ],
        readout=Readout("h", 2, **(readout or {"tau": 10.0})),
    )


def poisson(seed, shape, p=0.3, dtype=np.float32):
    return (np.random.default_rng(seed).random(shape) < p).astype(dtype)


def weights(net, seed=0, dtype=np.float32):
    """Random weights drawn with numpy, scaled like the ops' own init.

    (``jax.random`` compiles once per shape, which would dominate the suite's run time; the
    ops' ``init`` is exercised in ``test_init_params_and_state_structure``.)
    """
    rng = np.random.default_rng(seed)
    out = {}
    for p in net.projections:
        shape = p.op.weight_shape(p.n_in, p.n_out)
        assert isinstance(p.op, (Dense, Bias)), p.op
        if isinstance(p.op, Bias):
            w = np.zeros(shape)
        else:  # Dense: N(0, gain^2 / n_in)
            w = rng.normal(size=shape) * p.op.gain / np.sqrt(p.n_in)
        out[p.name] = jnp.asarray(w, dtype)
    return out


def test_init_params_and_state_structure():
    net = small_net()
    params, state = net.init(jax.random.PRNGKey(0), batch_size=B)
    assert {k: v.shape for k, v in params.items()} == {
        "x->h": (N_IN, N_H),
        "h->h": (N_H, N_H),
        "h->readout": (N_H, 2),
        "readout.bias": (2,),
    }
    assert set(state) == {"h", "readout"}
    assert {k: v.shape for k, v in state["h"].items()} == {"V": (B, N_H), "in0.g": (B, N_H)}
    assert state["readout"]["r"].shape == (B, 2)
    assert all(v.dtype == jnp.float32 for v in jax.tree_util.tree_leaves((params, state)))
    assert net.order == ("h", "readout")
    net.check_params(params)
    net.check_state(state)


def test_simulate_equals_a_loop_of_steps():
    net = small_net()
    params, state = weights(net), net.init_state(B)
    xs = poisson(1, (T, B, N_IN))
    res = net.simulate(params, state, xs, record=("spike", "V", "not_a_variable"))
    assert res.outputs.shape == (T, B, 2)
    assert set(res.record["h"]) == {"spike", "V"} and set(res.record["readout"]) == {"spike"}
    assert res.record["h"]["V"].shape == (T, B, N_H)
    step = jax.jit(net.step)
    s, outs = state, []
    for t in range(T):
        s, y = step(params, s, xs[t])
        outs.append(y)
    np.testing.assert_allclose(np.asarray(res.outputs), np.stack(outs), rtol=1e-5, atol=1e-5)
    assert tree_allclose(res.state, s, rtol=1e-5, atol=1e-5)
    assert float(res.record["h"]["spike"].sum()) > 0


def test_simulate_records_what_a_record_function_returns():
    """``record=f``: only ``f(state, signals)`` per step is kept, nothing of the default."""
    net = small_net()
    params, state = weights(net), net.init_state(B)
    xs = poisson(1, (T, B, N_IN))
    full = net.simulate(params, state, xs, record=("spike", "V"))

    def rate_and_v0(st, signals):
        return {"rate": signals["h"]["spike"].mean(axis=1), "v0": st["h"]["V"][:, 0]}

    res = net.simulate(params, state, xs, record=rate_and_v0)
    assert set(res.record) == {"rate", "v0"} and res.record["rate"].shape == (T, B)
    np.testing.assert_array_equal(res.record["rate"], full.record["h"]["spike"].mean(axis=2))
    np.testing.assert_array_equal(res.record["v0"], full.record["h"]["V"][:, :, 0])
    np.testing.assert_array_equal(res.outputs, full.outputs)


def test_wiring_matches_a_hand_computed_trace(x64):
    # Current input through Dense (no synapse), a delta jump, and a leaky readout with bias.
    tau, dt, kappa = 10.0, 0.5, 0.6
    net = Network(
        {"a": 1, "b": 1},
        {"h": Population(LIF(tau=tau, V_th=1.0, V_reset=0.0), 1)},
        [
            Projection("a", "h", Dense()),
            Projection("b", "h", Dense(), synapse=Delta()),
        ],
        readout=Readout("h", 1, kappa=kappa),
        dt=dt,
    )
    params = {
        "a->h": jnp.array([[2.5]]),
        "b->h": jnp.array([[0.4]]),
        "h->readout": jnp.array([[1.5]]),
        "readout.bias": jnp.array([0.1]),
    }
    state = net.init_state(1)
    a = poisson(3, (40, 1, 1), p=0.7, dtype=np.float64)
    b = poisson(4, (40, 1, 1), p=0.3, dtype=np.float64)
    res = net.simulate(params, state, {"a": a, "b": b}, record=("V", "spike"))

    alpha = math.exp(-dt / tau)
    v, s, y = 0.0, 0.0, 0.0
    vs, ys, ss = [], [], []
    for t in range(40):
        v = (v - s) * alpha + 2.5 * a[t, 0, 0] * (1 - alpha) + 0.4 * b[t, 0, 0]
        s = float(v >= 1.0)
        y = kappa * y + 1.5 * s + 0.1
        vs.append(v)
        ss.append(s)
        ys.append(y)
    assert 0 < sum(ss) < 40
    np.testing.assert_allclose(res.record["h"]["V"][:, 0, 0], vs, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(res.record["h"]["spike"][:, 0, 0], ss)
    np.testing.assert_allclose(res.outputs[:, 0, 0], ys, rtol=1e-12)


def test_conductance_based_input_uses_previous_voltage(x64):
    tau, tau_s, rev = 10.0, 5.0, 4.0
    net = Network(
        1,
        {"h": Population(LIF(tau=tau, V_th=100.0), 1)},
        [Projection("x", "h", Dense(), synapse=Expon(tau_s), reversal=rev)],
    )
    params = {"x->h": jnp.array([[0.3]])}
    x = poisson(5, (25, 1, 1), p=0.5, dtype=np.float64)
    res = net.simulate(params, net.init_state(1), x, record=("V",))
    alpha, a_s = math.exp(-1 / tau), math.exp(-1 / tau_s)
    g = v = 0.0
    want = []
    for t in range(25):
        g = a_s * g + 0.3 * x[t, 0, 0]
        v = v * alpha + g * (rev - v) * (1 - alpha)
        want.append(v)
    np.testing.assert_allclose(res.record["h"]["V"][:, 0, 0], want, rtol=1e-12)
    assert 0 < want[-1] < rev


def test_feedforward_delay_zero_chain_is_ordered():
    # "o" is listed first but reads "h" at this step: the topological order runs h first.
    net = Network(
        2,
        {"o": Population(LIF(), 2), "h": Population(LIF(), 3)},
        [Projection("h", "o", Dense()), Projection("x", "h", Dense())],
    )
    assert net.order == ("h", "o")
    params = {"x->h": 2.0 * jnp.ones((2, 3)), "h->o": 10.0 * jnp.ones((3, 2))}
    state, out = net.step(params, net.init_state(1), jnp.ones((1, 2)))
    # No readout: the output is every population's spikes. h integrates 4 (1 - e^-0.05).
    assert set(out) == {"o", "h"}
    v_h = 4 * (1 - math.exp(-1 / 20))
    np.testing.assert_allclose(np.asarray(state["h"]["V"]), v_h, rtol=1e-5)
    assert float(out["h"].sum()) == 0.0  # below threshold, so o receives nothing this step
    np.testing.assert_allclose(np.asarray(state["o"]["V"]), 0.0)


def test_jit_vmap_and_grad_through_simulate(x64):
    net = small_net()
    params, state = weights(net, dtype=np.float64), net.init_state(B, jnp.float64)
    xs = poisson(1, (T, B, N_IN), dtype=np.float64)
    target = jnp.asarray(np.random.default_rng(0).normal(size=(T, B, 2)))

    def loss(p):
        res = net.simulate(p, state, xs)
        return jnp.mean((res.outputs - target) ** 2), res.record["h"]["spike"].sum()

    value = jax.jit(lambda p: loss(p)[0])

    eager = net.simulate(params, state, xs)
    sim = jax.jit(lambda p: net.simulate(p, state, xs).outputs)
    np.testing.assert_allclose(np.asarray(sim(params)), np.asarray(eager.outputs), rtol=1e-12)

    grads, n_spikes = jax.jit(jax.grad(loss, has_aux=True))(params)
    assert float(n_spikes) > 0
    for name, g in grads.items():
        assert np.all(np.isfinite(np.asarray(g))), name
        assert float(jnp.abs(g).sum()) > 0, name
    # The readout is smooth in its own weights: central differences agree to rounding.
    W = params["h->readout"]
    fd, ad = [], []
    eps = 1e-6
    for i, j in [(0, 0), (2, 1), (5, 0)]:
        up = dict(params, **{"h->readout": W.at[i, j].add(eps)})
        dn = dict(params, **{"h->readout": W.at[i, j].add(-eps)})
        fd.append((value(up) - value(dn)) / (2 * eps))
        ad.append(grads["h->readout"][i, j])
    assert rel_error(ad, fd) < 1e-6

    # vmap over a batch of parameter sets equals a Python loop.
    sets = [weights(net, seed, np.float64) for seed in (7, 8, 9)]
    stacked = jax.tree_util.tree_map(lambda *ws: jnp.stack(ws), *sets)
    batched = jax.jit(jax.vmap(lambda p: net.simulate(p, state, xs).outputs))(stacked)
    for i, p in enumerate(sets):
        np.testing.assert_allclose(np.asarray(batched[i]), np.asarray(sim(p)), rtol=1e-12)


def test_multiple_inputs_as_a_dict():
    net = Network(
        {"a": 2, "b": 3},
        {"h": Population(LIF(), 4)},
        [Projection("a", "h", Dense()), Projection("b", "h", Dense())],
    )
    params, state = weights(net), net.init_state(2)
    state, out = net.step(params, state, {"a": jnp.ones((2, 2)), "b": jnp.zeros((2, 3))})
    assert out["h"].shape == (2, 4)
    with pytest.raises(TypeError, match=r"inputs \['a', 'b'\]: pass a dict"):
        net.step(params, state, jnp.ones((2, 2)))
    with pytest.raises(ValueError, match=r"missing \['b'\], unexpected \['c'\]"):
        net.step(params, state, {"a": jnp.ones((2, 2)), "c": jnp.ones((2, 3))})


# --------------------------------------------------------------------------------------
# Argument checks


def test_bad_step_and_simulate_inputs_raise():
    net = small_net()
    params, state = weights(net), net.init_state(B)
    with pytest.raises(ValueError, match=r"input `x` must have shape \(2, 3\); got \(2, 4\)"):
        net.step(params, state, jnp.ones((B, 4)))
    with pytest.raises(ValueError, match=r"input `x` must have shape \(2, 3\); got \(5, 3\)"):
        net.step(params, state, jnp.ones((5, N_IN)))  # wrong batch size
    with pytest.raises(ValueError, match=r"input `x` must have shape \(T, 2, 3\); got \(10, 3\)"):
        net.simulate(params, state, jnp.ones((10, N_IN)))
    with pytest.raises(ValueError, match=r"input `x` must have shape \(T, 2, 3\); got \(4, 3, 3"):
        net.simulate(params, state, jnp.ones((4, 3, N_IN)))  # wrong batch size
    xs = np.ones((4, B, N_IN), np.float32)
    xs[2, 1, 0] = np.nan
    with pytest.raises(ValueError, match=r"input `x`.* 1 NaN/Inf value\(s\).* \[2, 1, 0\]"):
        net.simulate(params, state, xs)
    with pytest.raises(ValueError, match=r"input `x`.* NaN/Inf"):
        net.step(params, state, jnp.full((B, N_IN), jnp.inf))
    with pytest.raises(TypeError, match=r"input `x` must be numeric"):
        net.step(params, state, np.array([["a"] * N_IN] * B))
    bad = dict(params, **{"x->h": jnp.zeros((4, N_H))})
    with pytest.raises(ValueError, match=r"weight `x->h` must have shape \(3, 6\); got \(4, 6\)"):
        net.simulate(params=bad, state=state, xs=jnp.ones((4, B, N_IN)))
    missing = {k: v for k, v in params.items() if k != "h->h"}
    with pytest.raises(ValueError, match=r"`params` must hold exactly .* missing \['h->h'\]"):
        net.step(missing, state, jnp.ones((B, N_IN)))
    with pytest.raises(ValueError, match=r"`state` does not match this network"):
        net.check_state(small_net(kappa=0.5).init_state(1) | {"extra": {}})
    with pytest.raises(ValueError, match=r"`batch_size` must be a positive integer; got 0"):
        net.init_state(0)
    with pytest.raises(TypeError, match=r"`dtype` must be a floating dtype; got int32"):
        net.init_params(jax.random.PRNGKey(0), jnp.int32)


def _proj(*args, **kw):
    return lambda: Projection(*args, **kw)


@pytest.mark.parametrize(
    ("build", "exc", "match"),
    [
        (
            lambda: Network(2, {"h": Population(LIF(), 3)}, [Projection("y", "h")]),
            ValueError,
            r"projection 0 \('y' -> 'h'\): unknown source 'y'; inputs are \['x'\], populations",
        ),
        (
            lambda: Network(2, {"h": Population(LIF(), 3)}, [Projection("x", "hid")]),
            ValueError,
            r"projection 0 \('x' -> 'hid'\): unknown target 'hid'; populations are \['h'\]",
        ),
        (
            lambda: Network(2, {"h": Population(LIF(), 3)}, [Projection("x", "x")]),
            ValueError,
            r"unknown target 'x'",
        ),
        (
            lambda: Network(
                2,
                {"a": Population(LIF(), 3), "b": Population(LIF(), 3)},
                [Projection("x", "a"), Projection("a", "b"), Projection("b", "a")],
            ),
            ValueError,
            r"delay=0 form a loop among populations \['a', 'b'\]; give one .* delay=1",
        ),
        (
            lambda: Network(2, {"h": Population(LIF(), 3)}, [Projection("h", "h")]),
            ValueError,
            r"projection 0 \('h' -> 'h'\): a population reading itself needs delay=1",
        ),
        (
            lambda: Network(2, {"h": Population(LIF(), 3)}, [Projection("x", "h", delay=1)]),
            ValueError,
            r"inputs are read at the current step; use delay=0",
        ),
        (
            lambda: Network(
                2,
                {"h": Population(LIF(), 3)},
                [Projection("x", "h", name="w"), Projection("x", "h", name="w")],
            ),
            ValueError,
            r"projection 1 .* duplicate projection name 'w'",
        ),
        (
            lambda: Network(
                2, {"readout": Population(LIF(), 3)}, [], readout=Readout("readout", 1)
            ),
            ValueError,
            r"`readout` is reserved",
        ),
        (
            lambda: Network({"h": 2}, {"h": Population(LIF(), 3)}, []),
            ValueError,
            r"names used for both an input and a population: \['h'\]",
        ),
        (
            lambda: Network({"x": 0}, {"h": Population(LIF(), 3)}, []),
            ValueError,
            r"input `x` must have a positive integer size; got 0",
        ),
        (
            lambda: Network(2, {"h": LIF()}, []),
            TypeError,
            r"population `h` must be a traxon Population; got LIF",
        ),
        (
            lambda: Network(2, {"h": Population(LIF(), 3)}, [], readout=Readout("h", 1, tau=0)),
            ValueError,
            r"`tau` must be positive",
        ),
        (
            lambda: Network(2, {"h": Population(LIF(), 3)}, [], readout=Readout("h", 1, tau=-2)),
            ValueError,
            r"`tau` must be positive",
        ),
        (
            lambda: Network(2, {"h": Population(LIF(), 3)}, [], readout=Readout("z", 1)),
            ValueError,
            r"unknown source 'z'",
        ),
        (lambda: Network(2, {"h": Population(LIF(), 3)}, [], dt=0.0), ValueError, r"`dt` must"),
        (lambda: Network(2, {"h": Population(LIF(), 3)}, [], dt=-1.0), ValueError, r"`dt` must"),
        (
            lambda: Network(2, {"h": Population(LIF(), 3)}, [], dt=0.1 * u.mV),
            TypeError,
            r"`dt` must be in units of ms",
        ),
        (lambda: Population(LIF(), 0), ValueError, r"`size` must be a positive integer; got 0"),
        (lambda: Population(LIF(), 2.5), ValueError, r"`size` must be a positive integer"),
        (lambda: Population(Expon(5.0), 3), TypeError, r"`neuron` must be a traxon Neuron"),
        (_proj("x", "h", align="both"), ValueError, r"`align` must be 'post' or 'pre'"),
        (_proj("x", "h", delay=2), ValueError, r"`delay` must be 0 or 1; got 2"),
        (_proj("x", "h", op=np.eye(3)), TypeError, r"`op` must be a traxon WeightOp"),
        (_proj("x", "h", synapse=5.0), TypeError, r"`synapse` must be a traxon Synapse"),
        (_proj("x", "h", align="pre"), ValueError, r"`align='pre'` needs a synapse with state"),
        (_proj("x", "h", Dense(), Delta(), "pre"), ValueError, r"`align='pre'` needs a synapse"),
        (_proj("x", "h", reversal=1.0 * u.ms), TypeError, r"`reversal` must be a unitless"),
        (lambda: Readout((), 2), ValueError, r"`sources` must name at least one population"),
        (lambda: Readout("h", 0), ValueError, r"`size` must be a positive integer; got 0"),
        (lambda: Readout("h", 2, tau=5.0, kappa=0.5), ValueError, r"Give `tau` or `kappa`"),
    ],
)
def test_bad_construction_raises_naming_the_argument(build, exc, match):
    with pytest.raises(exc, match=match):
        build()


# --------------------------------------------------------------------------------------
# The scale target


@pytest.mark.slow
def test_excitatory_inhibitory_network_of_1000_neurons_runs_1000_steps_under_jit():
    n_e, n_i, steps = 800, 200, 1000
    key = jax.random.PRNGKey(0)
    keys = iter(jax.random.split(key, 8))
    # Connection probability 0.1: 80 inputs from E and 20 from I for every neuron.
    projections = [
        Projection(
            src,
            tgt,
            FixedInDegree.random(next(keys), n_src, n_tgt, degree, gain=gain, sign=sign),
            synapse=Expon(tau_s),
            delay=1,
        )
        for src, n_src, degree, gain, sign, tau_s in [
            ("E", n_e, 80, 1.0, 1.0, 5.0),
            ("I", n_i, 20, 2.0, -1.0, 10.0),
        ]
        for tgt, n_tgt in [("E", n_e), ("I", n_i)]
    ]
    projections += [
        Projection("x", "E", Dense(gain=1.5), synapse=Expon(5.0)),
        Projection("x", "I", Dense(gain=1.5), synapse=Expon(5.0)),
    ]
    net = Network(
        20,
        {"E": Population(LIF(tau=20.0), n_e), "I": Population(LIF(tau=10.0), n_i)},
        projections,
        readout=Readout("E", 2, tau=20.0),
    )
    params, state = net.init(next(keys), batch_size=1)
    # Dale's law: every effective weight from E is >= 0, from I <= 0.
    for name, sign in [("E->E", 1), ("E->I", 1), ("I->E", -1), ("I->I", -1)]:
        op = next(p.op for p in net.projections if p.name == name)
        assert np.all(sign * np.asarray(op._effective(params[name])) >= 0)
    xs = poisson(9, (steps, 1, 20), p=0.2)
    run = jax.jit(lambda p, s, x: net.simulate(p, s, x, record=("spike",)))
    res = run(params, state, xs)
    rate_e = float(res.record["E"]["spike"].mean())  # spikes per neuron per ms
    rate_i = float(res.record["I"]["spike"].mean())
    assert 0.002 < rate_e < 0.2 and 0.002 < rate_i < 0.2, (rate_e, rate_i)
    # Not one neuron carries it all: most neurons fire at least once.
    assert float((res.record["E"]["spike"].sum(axis=0) > 0).mean()) > 0.25
    assert np.all(np.isfinite(np.asarray(res.outputs)))
