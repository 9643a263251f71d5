"""online_learner: schedules, learning, checkpoints, bad input."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import traxon
from tests.helpers import rel_error, rewrite_checkpoint_header, tree_allclose
from traxon.core import LIF, Dense, Expon, Network, Population, Projection, Readout
from traxon.learn import LearnerState, cross_entropy
from traxon.trace import bptt_gradient

N_IN, N_HID, T, B = 10, 16, 30, 8


def toy_network(readout_tau=10.0):
    return Network(
        N_IN,
        {"h": Population(LIF(tau=10.0, R=10.0), N_HID)},
        [
            Projection("x", "h", Dense(gain=1.0), synapse=Expon(5.0)),
            Projection("h", "h", Dense(gain=0.3), synapse=Expon(5.0), delay=1),
        ],
        readout=Readout("h", 2, tau=readout_tau),
    )


def toy_batch(rng, batch=B, steps=T):
    """Which half of the inputs is more active? Answer in the last third of the sequence."""
    label = rng.integers(0, 2, batch)
    rates = np.where(label[:, None] == np.repeat(np.arange(2), N_IN // 2)[None], 0.25, 0.05)
    x = (rng.random((steps, batch, N_IN)) < rates[None]).astype(np.float32)
    y = np.broadcast_to(label, (steps, batch)).astype(np.int32)
    mask = np.zeros((steps, batch), np.float32)
    mask[-steps // 3 :] = 1.0
    return x, y, mask


@pytest.fixture(scope="module")
def net():
    return toy_network()


def capture():
    """An optax transformation that sums the gradients it sees (and passes them on)."""

    def init(params):
        return jax.tree_util.tree_map(jnp.zeros_like, params)

    def update(updates, state, params=None):
        return updates, jax.tree_util.tree_map(jnp.add, state, updates)

    return optax.GradientTransformation(init, update)


@pytest.mark.parametrize("algorithm", ["es_d_rtrl", "d_rtrl"])
def test_learns_a_toy_task(net, algorithm):
    rng = np.random.default_rng(0)
    learner = traxon.online_learner(net, algorithm, optax.adam(2e-2), update_every="sequence")
    before = learner.evaluate(learner.init(batch_size=64), *toy_batch(np.random.default_rng(9), 64))
    learner.fit((toy_batch(rng) for _ in range(40)), n_batches=40)
    after = learner.evaluate(learner.state, *toy_batch(np.random.default_rng(9), 64))
    assert after["accuracy"] >= 0.8, (before, after)
    assert after["loss"] < before["loss"]


def test_every_step_and_sequence_end_accumulate_the_same_gradient(net):
    x, y, mask = toy_batch(np.random.default_rng(1))
    sums = {}
    for schedule in (1, 7, "sequence"):
        learner = traxon.online_learner(
            net, "d_rtrl", optax.chain(capture(), optax.sgd(0.0)), update_every=schedule
        )
        ls = learner.init(key=3, batch_size=B)
        ls, _ = learner.run(ls, x, y, mask)
        ls = learner.end_sequence(ls)
        sums[schedule] = ls.opt_state[0]
    for k in sums[1]:
        assert np.abs(sums[1][k]).max() > 0
        assert rel_error(sums[7][k], sums[1][k]) < 1e-5
        assert rel_error(sums["sequence"][k], sums[1][k]) < 1e-5


def test_masked_gradient_equals_bptt_of_the_masked_loss(x64):
    net = Network(
        N_IN,
        {"h": Population(LIF(tau=10.0, R=10.0), N_HID)},
        [Projection("x", "h", Dense(gain=1.0), synapse=Expon(5.0))],
        readout=Readout("h", 2, tau=10.0),
    )
    x, y, mask = toy_batch(np.random.default_rng(2))
    learner = traxon.online_learner(
        net,
        "d_rtrl",
        optax.chain(capture(), optax.sgd(0.0)),
        update_every="sequence",
        dtype=jnp.float64,
    )
    ls = learner.init(key=0, batch_size=B)
    ls, _ = learner.run(ls, jnp.asarray(x, jnp.float64), y, mask)
    ls = learner.end_sequence(ls)
    state = net.init_state(B, jnp.float64)
    ref, _ = bptt_gradient(
        net,
        cross_entropy.fn,
        ls.params,
        state,
        {"x": jnp.asarray(x, jnp.float64)},
        jnp.asarray(y),
        jnp.asarray(mask, jnp.float64) / B,
    )
    for k in ref:
        assert rel_error(ls.opt_state[0][k], ref[k]) < 1e-6, k


def test_reductions_scale_the_gradient(net):
    x, y, mask = toy_batch(np.random.default_rng(3))
    grads = {}
    for batch_reduction, time_reduction in (("mean", "sum"), ("sum", "sum"), ("mean", "mean")):
        learner = traxon.online_learner(
            net,
            "es_d_rtrl",
            optax.chain(capture(), optax.sgd(0.0)),
            update_every="sequence",
            batch_reduction=batch_reduction,
            time_reduction=time_reduction,
        )
        ls, _ = learner.run(learner.init(key=0, batch_size=B), x, y, mask)
        grads[(batch_reduction, time_reduction)] = learner.end_sequence(ls).opt_state[0]
    base = grads[("mean", "sum")]
    for k in base:
        assert rel_error(grads[("sum", "sum")][k], B * base[k]) < 1e-5
        assert rel_error(grads[("mean", "mean")][k], base[k] / T) < 1e-5


def test_jitted_step_does_not_recompile(net):
    learner = traxon.online_learner(net, "es_d_rtrl", optax.adam(1e-2))
    x, y, _ = toy_batch(np.random.default_rng(4))
    learner.step(x[0], y[0])
    size = learner._step_jit._cache_size()
    for t in range(1, 4):
        learner.step(x[t], y[t])
    assert learner._step_jit._cache_size() == size


def test_metrics(net):
    learner = traxon.online_learner(net, "es_d_rtrl", optax.adam(1e-2), update_every=2)
    x, y, _ = toy_batch(np.random.default_rng(5))
    m1 = learner.step(x[0], y[0])
    m2 = learner.step(x[1], y[1])
    assert set(m1) >= {"loss", "accuracy", "rates", "grad_norm", "updated"}
    assert m1["updated"] == 0.0 and m2["updated"] == 1.0
    assert m2["grad_norm"] > 0
    assert 0.0 <= m2["rates"]["h"] <= 1.0
    assert int(learner.state.updates) == 1


def test_rate_regulariser_pulls_rates_towards_the_target(net):
    rng = np.random.default_rng(6)
    batches = [toy_batch(rng) for _ in range(30)]
    rates = {}
    for target in (2.0, 100.0):
        learner = traxon.online_learner(
            net,
            "es_d_rtrl",
            optax.adam(2e-2),
            update_every="sequence",
            rate_target=target,
            rate_reg=50.0,
            rate_tau=20.0,
            seed=1,
        )
        learner.fit(iter(batches))
        rates[target] = float(jnp.mean(learner.state.rates["h"]))
    assert rates[100.0] > rates[2.0] * 1.5, rates


# -------------------------------------------------------------------------------------
# Checkpoints.


def test_checkpoint_restore_continues_bit_identically(net, tmp_path):
    rng = np.random.default_rng(7)
    batches = [toy_batch(rng) for _ in range(4)]
    a = traxon.online_learner(net, "es_d_rtrl", optax.adam(1e-2), update_every=5)
    a.fit(iter(batches[:2]))
    path = a.save(tmp_path / "ckpt")
    a.fit(iter(batches[2:]))

    b = traxon.online_learner(net, "es_d_rtrl", optax.adam(1e-2), update_every=5)
    b.restore(path)
    b.fit(iter(batches[2:]))
    same = jax.tree_util.tree_map(
        lambda u, v: bool(np.array_equal(np.asarray(u), np.asarray(v))), a.state, b.state
    )
    assert all(jax.tree_util.tree_leaves(same))


def test_checkpoint_of_another_network_is_rejected(net, tmp_path):
    a = traxon.online_learner(net, "es_d_rtrl")
    a.init_state(B)
    path = a.save(tmp_path / "ckpt.npz")
    other = traxon.online_learner(
        toy_network(readout_tau=None).__class__(
            N_IN,
            {"h": Population(LIF(), N_HID + 1)},
            [Projection("x", "h", Dense())],
            readout=Readout("h", 2),
        ),
        "es_d_rtrl",
    )
    with pytest.raises(ValueError, match="different network"):
        other.restore(path, batch_size=B)
    d = traxon.online_learner(net, "d_rtrl")
    with pytest.raises(ValueError, match="different network"):
        d.restore(path, batch_size=B)


def test_checkpoint_from_before_a_network_field_was_recorded_restores(net, tmp_path):
    # An older traxon did not describe Dense's `max_active`: its checkpoints restore, with a
    # warning naming what could not be checked; what it did record is still compared.
    a = traxon.online_learner(net, "es_d_rtrl")
    a.init_state(B)
    path = a.save(tmp_path / "new.npz")

    def forget_max_active(meta):
        for proj in meta["fingerprint"]["network"]["projections"].values():
            proj["op"].pop("max_active", None)

    old = rewrite_checkpoint_header(path, forget_max_active, tmp_path / "old.npz")
    b = traxon.online_learner(net, "es_d_rtrl")
    with pytest.warns(traxon.TraxonWarning, match=r"did not record.*h->h\.op\.max_active"):
        b.restore(old)
    assert tree_allclose(b.state.params, a.state.params)
    wider = toy_network(readout_tau=20.0)  # a recorded field differs: still refused
    with (
        pytest.warns(traxon.TraxonWarning),
        pytest.raises(ValueError, match=r"(?s)different network.*readout.neuron.tau"),
    ):
        traxon.online_learner(wider, "es_d_rtrl").restore(old)
    extra = rewrite_checkpoint_header(
        path,
        lambda meta: meta["fingerprint"]["network"].update(future={"field": 1}),
        tmp_path / "future.npz",
    )
    with pytest.raises(ValueError, match=r"network\.future: only in the checkpoint"):
        traxon.online_learner(net, "es_d_rtrl").restore(extra)


def test_corrupted_checkpoint_is_rejected(net, tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"not a checkpoint")
    learner = traxon.online_learner(net, "es_d_rtrl")
    with pytest.raises(ValueError, match="corrupted"):
        learner.restore(path, batch_size=B)
    with pytest.raises(FileNotFoundError):
        learner.restore(tmp_path / "missing.npz", batch_size=B)


def path_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def test_checkpoint_write_is_atomic(net, tmp_path, monkeypatch):
    learner = traxon.online_learner(net, "es_d_rtrl")
    learner.init_state(B)
    path = learner.save(tmp_path / "ckpt.npz")
    before = path_bytes(path)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        learner.save(path)
    assert path_bytes(path) == before
    assert os.listdir(tmp_path) == ["ckpt.npz"]  # no temporary left behind


def test_checkpoint_has_no_pickle(net, tmp_path):
    learner = traxon.online_learner(net, "es_d_rtrl")
    learner.init_state(B)
    path = learner.save(tmp_path / "ckpt.npz")
    with np.load(path, allow_pickle=False) as data:  # would raise on object arrays
        assert all(data[k].dtype != object for k in data.files)


# -------------------------------------------------------------------------------------
# Bad input: clear errors, nothing lost.


def test_bad_inputs_raise_before_any_work(net):
    learner = traxon.online_learner(net, "es_d_rtrl", optax.adam(1e-2))
    x, y, _ = toy_batch(np.random.default_rng(8))
    learner.step(x[0], y[0])
    state = learner.state
    with pytest.raises(ValueError, match=r"input `x` must have shape"):
        learner.step(x[0][:, :3], y[0])
    with pytest.raises(ValueError, match="batch size"):
        learner.step(x[0][:3], y[0][:3])
    with pytest.raises(ValueError, match="NaN"):
        learner.step(np.where(x[0] > 0, np.nan, 0.0), y[0])
    with pytest.raises(TypeError, match="integer"):
        learner.step(x[0], y[0].astype(np.float32))
    with pytest.raises(ValueError, match=r"classes in \[0, 2\)"):
        learner.step(x[0], y[0] + 5)
    with pytest.raises(ValueError, match="one class index per sample"):
        learner.step(x[0], y[:2])
    with pytest.raises(ValueError, match="mask"):
        learner.step(x[0], y[0], mask=np.ones(3))
    with pytest.raises(TypeError, match="numeric"):
        learner.step(np.full(x[0].shape, "a"), y[0])
    assert learner.state is state  # nothing was lost or changed


def test_nonfinite_loss_raise_or_skip(net):
    def exploding(output, target):
        return jnp.full(output.shape[:1], jnp.nan)

    x, y, _ = toy_batch(np.random.default_rng(9))
    learner = traxon.online_learner(net, "es_d_rtrl", optax.adam(1e-2), loss=exploding)
    learner.init_state(B)
    state = learner.state
    with pytest.raises(FloatingPointError, match="NaN"):
        learner.step(x[0], y[0])
    assert learner.state is state

    skipper = traxon.online_learner(
        net, "es_d_rtrl", optax.adam(1e-2), loss=exploding, on_nonfinite="skip"
    )
    skipper.init_state(B)
    params = skipper.state.params
    skipper.step(x[0], y[0])
    skipper.step(x[1], y[1])
    assert int(skipper.state.skipped) == 2 and int(skipper.state.updates) == 0
    assert tree_allclose(skipper.state.params, params)


def test_bad_options():
    net = toy_network()
    with pytest.raises(ValueError, match="update_every"):
        traxon.online_learner(net, update_every=0)
    with pytest.raises(ValueError, match="on_nonfinite"):
        traxon.online_learner(net, on_nonfinite="ignore")
    with pytest.raises(ValueError, match="loss"):
        traxon.online_learner(net, loss="hinge")
    with pytest.raises(ValueError, match="sequence_length"):
        traxon.online_learner(net, "bptt", update_every="sequence")
    with pytest.raises(TypeError, match="Network"):
        traxon.online_learner(object())


def test_state_is_a_pytree_of_arrays(net):
    learner = traxon.online_learner(net, "d_rtrl")
    ls = learner.init(batch_size=2)
    assert isinstance(ls, LearnerState)
    leaves = jax.tree_util.tree_leaves(ls)
    assert all(isinstance(v, jax.Array) for v in leaves)
    ls2, _ = jax.jit(learner.step_fn)(ls, jnp.ones((2, N_IN)), jnp.array([0, 1]))
    assert jax.tree_util.tree_structure(ls2) == jax.tree_util.tree_structure(ls)
    for a, b in zip(leaves, jax.tree_util.tree_leaves(ls2), strict=False):
        assert a.shape == b.shape and a.dtype == b.dtype


def test_state_can_be_donated(net):
    """Every leaf of a fresh state owns its buffer (no array twice, none of the caller's), so
    the functional core runs with the state donated and the caller's weights survive."""
    params = net.init_params(jax.random.PRNGKey(3))
    learner = traxon.online_learner(net, "es_d_rtrl", optax.adam(1e-2))
    ls = learner.init(params=params, batch_size=2)
    leaves = jax.tree_util.tree_leaves(ls)
    assert len({id(v) for v in leaves}) == len(leaves)
    run = jax.jit(learner.run, donate_argnums=0)
    xs, ys = jnp.ones((3, 2, N_IN)), jnp.zeros((3, 2), jnp.int32)
    ls, _ = run(ls, xs, ys)
    ls, metrics = run(ls, xs, ys)
    assert int(ls.step) == 6 and np.isfinite(np.asarray(metrics["loss"])).all()
    assert all(not v.is_deleted() for v in params.values())


def _mixed_network():
    """ALIF (two decay groups), Dale-signed dense, sparse fixed-degree and a readout bias:
    every way es_d_rtrl forms a step's gradient."""
    from traxon.core import ALIF, FixedOutDegree

    n = 12
    sparse = FixedOutDegree.random(jax.random.PRNGKey(4), n_in=n, n_out=n, degree=3)
    return Network(
        N_IN,
        {"h": Population(ALIF(tau=10.0, R=10.0), n), "e": Population(LIF(tau=10.0, R=10.0), n)},
        [
            Projection("x", "h", Dense(gain=2.0), synapse=Expon(5.0)),
            Projection("h", "e", Dense(gain=1.0, sign=1), synapse=Expon(5.0)),
            Projection("e", "h", sparse, synapse=Expon(5.0), delay=1),
        ],
        readout=Readout("e", 2, tau=10.0, bias=True),
    )


@pytest.mark.parametrize("exact", [(), ("h->e",)])
def test_grad_norm_from_the_factors_equals_the_gradients_norm(x64, exact):
    # Updating every step, the learner reads the gradient norm from es_d_rtrl's outer-product
    # factors (StepOutput.grad_sq) instead of a pass over every weight: it must equal the
    # norm of the gradient the optimiser receives, step by step.
    net = _mixed_network()
    x, y, _ = toy_batch(np.random.default_rng(2), batch=3, steps=6)
    mask = np.ones((6, 3))
    learner = traxon.online_learner(
        net,
        traxon.trace.es_d_rtrl(exact=exact),
        optax.chain(capture(), optax.sgd(0.0)),
        dtype=jnp.float64,
    )
    ls = learner.init(key=1, batch_size=3)
    step = learner.jit("step_fn", guard=False)
    for t in range(x.shape[0]):
        before = ls.opt_state[0]
        ls, m = step(learner.connectivity, ls, jnp.asarray(x[t], jnp.float64), y[t], mask[t])
        seen = jax.tree_util.tree_map(jnp.subtract, ls.opt_state[0], before)
        want = float(optax.tree.norm(seen))
        assert want > 0
        assert abs(float(m["grad_norm"]) - want) <= 1e-12 * want, t
