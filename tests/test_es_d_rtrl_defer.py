"""es_d_rtrl's deferred accumulation (``defer``): a dense weight buffers its outer-product
factors for a few steps and adds them to the gradient with one larger GEMM. The gradient is
the same sum, so every read of it (mid-buffer included) equals the undeferred one in
float64, the e-prop case stays exact against BPTT, a learner updating every few steps makes
the same updates, and its checkpoints restore (older ones without the buffers too)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import traxon
from tests.helpers import deferral_network, float64, rel_error
from traxon.core import LIF, Dense, Network, Population, Projection, Readout
from traxon.learn import cross_entropy
from traxon.trace import get_algorithm
from traxon.trace.es_d_rtrl import _defer_steps

N_IN, B, T = 5, 3, 11


@pytest.fixture(scope="module", autouse=True)
def x64_module():
    with float64():
        yield


def _data(seed: int = 1, steps: int = T):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    xs = (jax.random.uniform(k1, (steps, B, N_IN)) < 0.3).astype(jnp.float64)
    ys = jax.random.randint(k2, (steps, B), 0, 2)
    costs = 0.1 * jax.random.normal(k3, (steps, B, 12), jnp.float64)
    return xs, ys, costs


def _every_read(net, defer, with_costs: bool):
    """The gradient read after every step (one jitted scan) and the final tracer state."""
    tracer = get_algorithm("es_d_rtrl", defer=defer).bind(net, cross_entropy.fn)
    params, state = net.init(jax.random.PRNGKey(0), B, dtype=jnp.float64)
    xs, ys, costs = _data()
    ws = jnp.full((T, B), 1.0 / B)

    def body(carry, inp):
        st, ts = carry
        x, y, w, c = inp
        cost = {"h": c} if with_costs else None
        st, ts, _ = tracer.step(params, st, ts, {"x": x}, y, w, spike_cost=cost)
        return (st, ts), tracer.gradients(params, ts)

    ts0 = tracer.init(params, state)
    (_, ts), reads = jax.jit(lambda c, i: jax.lax.scan(body, c, i))(
        (state, ts0), (xs, ys, ws, costs)
    )
    return reads, ts


def test_auto_steps_follow_the_rule():
    # about 128 rows per GEMM, at most half the smaller side, fitted to the window
    assert _defer_steps("auto", None, 16, 1024, 1024) == 8
    assert _defer_steps("auto", None, 32, 1024, 1024) == 4
    assert _defer_steps("auto", None, 16, 4096, 100) == 3  # 3 * 16 rows <= 100 / 2
    assert _defer_steps("auto", 100, 16, 1024, 1024) == 5
    assert _defer_steps("auto", 97, 16, 1024, 1024) == 7  # 14 folds of 7 steps: 98 steps
    assert _defer_steps("auto", 1000, 16, 1024, 1024) == 8
    assert _defer_steps("auto", 6, 16, 1024, 1024) == 6  # one fold per update
    assert _defer_steps("auto", 1, 16, 1024, 1024) == 1  # a learner updating every step
    assert _defer_steps("auto", None, 16, 200, 200) == 1  # under 65,536 entries
    assert _defer_steps("auto", None, 256, 4096, 4096) == 1  # one step already fills a GEMM
    assert _defer_steps(6, 4, 16, 10, 10) == 4  # an explicit count, within the window
    with pytest.raises(ValueError, match="defer"):
        traxon.trace.es_d_rtrl(defer=0)
    with pytest.raises(ValueError, match="defer"):
        traxon.trace.es_d_rtrl(defer=True)


@pytest.mark.parametrize("with_costs", [False, True])
def test_deferred_gradient_equals_direct_at_every_read(with_costs):
    """Every read equals the undeferred gradient, with (two terms per decay group, more rows
    than the buffer was sized for) and without a spike cost."""
    net = deferral_network(N_IN)
    direct, ts1 = _every_read(net, 1, with_costs)
    deferred, ts3 = _every_read(net, 3, with_costs)
    assert ts1.buf == {} and ts1.fill == {}
    # The unsigned dense weights buffer 3 steps; the Dale-signed ones accumulate directly.
    assert sorted(ts3.buf) == ["h->h", "h->readout", "x->h"]
    pre, post = ts3.buf["h->h"]
    assert pre.shape[1] == 12 and post.shape[1] == 12 and pre.shape[0] % (3 * B) == 0
    for name in direct:
        assert float(jnp.max(jnp.abs(direct[name]))) > 0, name
        for t in range(T):  # mid-buffer reads (T = 11 is not a multiple of 3) included
            err = rel_error(deferred[name][t], direct[name][t])
            assert err < 1e-12, (name, t, err)
    rows = ts3.buf["x->h"][0].shape[0] // 3  # one step's rows without a spike cost
    if with_costs:
        # A spike cost adds a term per decay group: 2 x rows per step, which do not fill the
        # 3-step buffer exactly, so a step that does not fit folds what is held first.
        assert int(ts3.fill["x->h"]) == 2 * rows
    else:
        assert int(ts3.fill["x->h"]) == (T % 3) * rows


def test_deferred_es_d_rtrl_stays_exact_in_the_eprop_case():
    """The e-prop case (one LIF population, no reset gradient, decay = membrane leak) is
    exact against BPTT with the factors deferred too (7 steps: 60 is not a multiple)."""
    from tests.helpers import run_tracer
    from traxon.trace import bptt_gradient

    net = Network(
        N_IN,
        {"h": Population(LIF(tau=10.0, detach_reset=True), 8)},
        [Projection("x", "h", Dense(gain=4.0))],
        readout=Readout("h", 2),
    )
    params, state = net.init(jax.random.PRNGKey(0), B, dtype=jnp.float64)
    xs, ys, _ = _data(steps=60)
    ws = jnp.full((60, B), 1.0 / B)
    ref, _ = bptt_gradient(net, cross_entropy.fn, params, state, {"x": xs}, ys, ws)
    grads = run_tracer("es_d_rtrl", net, params, state, {"x": xs}, ys, ws, defer=7)
    for k in ref:
        assert float(jnp.max(jnp.abs(ref[k]))) > 0, k
        assert rel_error(grads[k], ref[k]) < 1e-10, (k, rel_error(grads[k], ref[k]))


def _learner(defer, update_every=5):
    return traxon.online_learner(
        deferral_network(N_IN),
        traxon.trace.es_d_rtrl(defer=defer),
        optax.adam(1e-2),
        update_every=update_every,
        dtype=jnp.float64,
    )


def test_a_learner_makes_the_same_updates_with_deferred_factors(tmp_path):
    xs, ys, _ = _data(steps=12)
    runs = {}
    for defer in (1, 3):
        learner = _learner(defer)
        ls = learner.init(key=0, batch_size=B)
        runs[defer] = learner.jit("run")(learner.connectivity, ls, xs, ys)
    (ls1, m1), (ls3, m3) = runs[1], runs[3]
    assert int(ls3.updates) == 2 == int(ls1.updates)
    for name in ls1.params:
        assert rel_error(ls3.params[name], ls1.params[name]) < 1e-12, name
    np.testing.assert_allclose(m3["grad_norm"], m1["grad_norm"], rtol=1e-12)
    # Updating every step, nothing is buffered whatever `defer` says.
    assert _learner(3, update_every=1).init(key=0, batch_size=B).trace_state.buf == {}


def test_checkpoints_keep_the_buffer_and_older_ones_restore(tmp_path):
    xs, ys, _ = _data(steps=12)
    learner = _learner(3)
    learner.init_state(B)
    run = learner.jit("run")
    learner.state, _ = run(learner.connectivity, learner.state, xs[:4], ys[:4])
    assert int(learner.state.trace_state.fill["x->h"]) > 0  # saved mid-buffer
    path = learner.save(tmp_path / "mid")
    whole, _ = run(learner.connectivity, learner.state, xs[4:], ys[4:])

    again = _learner(3)
    again.restore(path)
    resumed, _ = run(again.connectivity, again.state, xs[4:], ys[4:])
    for name in whole.params:
        np.testing.assert_array_equal(resumed.params[name], whole.params[name])

    # A checkpoint without the buffers (an older traxon, or defer=1) restores with them
    # empty: its gradient is all in `grads`.
    plain = _learner(1)
    plain.init_state(B)
    plain.state, _ = plain.jit("run")(plain.connectivity, plain.state, xs[:4], ys[:4])
    old = plain.save(tmp_path / "old")
    later = _learner(3)
    with pytest.warns(traxon.TraxonWarning, match="buf"):
        later.restore(old)
    assert int(later.state.trace_state.fill["x->h"]) == 0
    cont, _ = later.jit("run")(later.connectivity, later.state, xs[4:], ys[4:])
    ref, _ = plain.jit("run")(plain.connectivity, plain.state, xs[4:], ys[4:])
    for name in ref.params:
        assert rel_error(cont.params[name], ref.params[name]) < 1e-12, name


def test_only_optional_leaves_may_be_missing(tmp_path):
    from traxon.learn import load_checkpoint, save_checkpoint
    from traxon.learn.checkpoint import CheckpointError

    path = save_checkpoint(tmp_path / "c", {"a": jnp.ones(2)})
    like = {"a": jnp.zeros(2), "b": jnp.full(3, 7.0)}
    with pytest.warns(traxon.TraxonWarning, match="'b'"):
        out = load_checkpoint(path, like, optional=lambda k: k == "['b']")
    np.testing.assert_array_equal(out["a"], 1.0)
    np.testing.assert_array_equal(out["b"], 7.0)
    with pytest.raises(CheckpointError, match=r"missing \[\"\['b'\]\"\]"):
        load_checkpoint(path, like)
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(path, like, optional=lambda k: k == "['c']")


def test_fit_per_sequence_folds_what_the_buffer_holds_at_the_end():
    """``fit`` with one update per sequence applies what is accumulated at its end: 7 steps
    with 3 deferred leave one step in the buffer, which the update must include."""
    xs, ys, _ = _data(steps=14)
    batches = [(xs[:7], ys[:7]), (xs[7:], ys[7:])]
    params = {}
    for defer in (1, 3):
        learner = traxon.online_learner(
            deferral_network(N_IN),
            traxon.trace.es_d_rtrl(defer=defer),
            optax.adam(1e-2),
            update_every="sequence",
            sequence_length=7,
            dtype=jnp.float64,
        )
        learner.init_state(B)
        history = learner.fit(batches)
        assert len(history) == 2
        assert bool(learner.state.trace_state.buf) == (defer > 1)
        params[defer] = learner.params
    assert sorted(params[3]) == sorted(params[1])
    for name in params[1]:
        assert rel_error(params[3][name], params[1][name]) < 1e-12, name


@pytest.mark.slow
def test_deferred_tracer_composes_with_vmap():
    """Two initialisations at once under ``jax.vmap`` (the fold's conditional becomes a
    select): the same gradients as ``defer=1``."""
    net = deferral_network(N_IN)
    xs, ys, _ = _data()
    ws = jnp.full((T, B), 1.0 / B)
    keys = jax.random.split(jax.random.PRNGKey(5), 2)

    def grads(defer):
        tracer = get_algorithm("es_d_rtrl", defer=defer).bind(net, cross_entropy.fn)

        def one(key):
            params, state = net.init(key, B, dtype=jnp.float64)

            def body(carry, inp):
                st, ts = carry
                x, y, w = inp
                st, ts, _ = tracer.step(params, st, ts, {"x": x}, y, w)
                return (st, ts), None

            (_, ts), _ = jax.lax.scan(body, (state, tracer.init(params, state)), (xs, ys, ws))
            return tracer.gradients(params, ts)

        return jax.jit(jax.vmap(one))(keys)

    direct, deferred = grads(1), grads(3)
    for name in direct:
        assert float(jnp.max(jnp.abs(direct[name]))) > 0, name
        assert rel_error(deferred[name], direct[name]) < 1e-12, name
