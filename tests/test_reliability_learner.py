"""The learner under misuse and faults: non-finite updates are never committed, padding does
not count, threads do not lose updates, bad input fails before any work, memory is checked
before it is allocated."""

from __future__ import annotations

import threading

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import traxon
from tests.helpers import tree_allclose
from traxon.core import LIF, Dense, Network, Population, Projection, Readout

N_IN, N_HID, B, T = 3, 6, 2, 4


@pytest.fixture(scope="module")
def net():
    return Network(
        N_IN,
        {"h": Population(LIF(), N_HID)},
        [Projection("x", "h", Dense(3.0)), Projection("h", "h", Dense(0.3), delay=1)],
        readout=Readout("h", 2, tau=10.0),
    )


@pytest.fixture(scope="module")
def learner(net):
    """One compiled learner shared by the input-check tests (they never commit a step)."""
    ln = traxon.online_learner(net, "es_d_rtrl", optax.sgd(1e-2))
    ln.init_state(B)
    return ln


def batch(rng, steps=T, batch_size=B):
    x = (rng.random((steps, batch_size, N_IN)) < 0.3).astype(np.float32)
    y = np.broadcast_to(rng.integers(0, 2, batch_size), (steps, batch_size)).astype(np.int32)
    return x, y, np.ones((steps, batch_size), np.float32)


def all_finite(tree):
    return all(bool(np.all(np.isfinite(np.asarray(v)))) for v in jax.tree_util.tree_leaves(tree))


# ----------------------------------------------------------------------------------------
# Non-finite updates.


def test_nan_update_raises_before_anything_changes(net):
    # adam without eps on a zero gradient: 0 / 0 in the update, loss and gradient finite.
    ln = traxon.online_learner(net, "es_d_rtrl", optax.adam(1e-3, eps=0))
    ln.init_state(B)
    before = ln.state
    with pytest.raises(FloatingPointError, match="updated weights"):
        ln.step(np.zeros((B, N_IN), np.float32), np.array([0, 1]))
    assert ln.state is before
    assert all_finite(ln.state)


def test_nan_update_is_skipped_and_reported(net):
    ln = traxon.online_learner(net, "es_d_rtrl", optax.adam(1e-3, eps=0), on_nonfinite="skip")
    ln.init_state(B)
    start = ln.state.params
    m = ln.step(np.zeros((B, N_IN), np.float32), np.array([0, 1]))
    assert m["nonfinite"] == 1.0
    assert int(ln.state.skipped) == 1 and int(ln.state.updates) == 0
    assert all_finite(ln.state.params) and all_finite(ln.state.opt_state)
    assert tree_allclose(ln.state.params, start)


def test_guard_keeps_a_nan_update_out_of_the_pure_run(net):
    # The pure run (guard=True, as learner.run) keeps the weights; guard=False commits the
    # NaN update and reports it, for callers that discard such a call whole (the stateful
    # shell with on_nonfinite="raise").
    ln = traxon.online_learner(net, "es_d_rtrl", optax.adam(1e-3, eps=0))
    ls = ln.init(batch_size=B)
    x = jnp.zeros((2, B, N_IN))
    y = jnp.zeros((2, B), jnp.int32)
    kept, m = ln.jit("run")(ln.connectivity, ls, x, y)
    assert np.asarray(m["nonfinite"]).all() and int(kept.skipped) == 2
    assert all_finite(kept.params) and tree_allclose(kept.params, ls.params)
    committed, m = ln.jit("run", guard=False)(ln.connectivity, ls, x, y)
    # Unguarded, a step checks its loss and gradient; the NaN weights of step 1 show in
    # step 2's loss, and the weights are checked again at the end of the call.
    assert np.asarray(m["nonfinite"]).tolist() == [False, True]
    assert int(committed.updates) == 1 and not all_finite(committed.params)


def _nan_at_step(k):
    """Zero updates, except a NaN update of every weight at (0-based) update ``k``; its own
    state stays finite."""

    def update(grads, state, params=None):
        bad = state["n"] == k
        return (
            jax.tree_util.tree_map(lambda g: jnp.where(bad, jnp.nan, 0.0) * g, grads),
            {"n": state["n"] + 1},
        )

    return optax.GradientTransformation(lambda params: {"n": jnp.zeros((), jnp.int32)}, update)


def test_unguarded_run_reports_weights_that_turn_nan_at_its_last_step(net):
    # No later step reads the NaN weights of the last update: the check at the end of the
    # call reports them, and fit raises with the learner state left as it was.
    x, y, _ = batch(np.random.default_rng(5), steps=3)
    ln = traxon.online_learner(net, "es_d_rtrl", _nan_at_step(2))
    ls = ln.init(batch_size=B)
    committed, m = ln.jit("run", guard=False)(ln.connectivity, ls, x, y)
    assert not all_finite(committed.params) and all_finite(committed.opt_state)
    assert np.asarray(m["nonfinite"]).tolist() == [False, False, True]
    ln.init_state(B)
    before = ln.state
    with pytest.raises(FloatingPointError, match=r"updated weights.*at step 3\)"):
        ln.fit([(x, y)])
    assert ln.state is before


def _nan_state_optimizer():
    """Zero updates (the weights stay finite) and an optimiser state that turns NaN."""
    return optax.GradientTransformation(
        lambda params: {"s": jnp.zeros(())},
        lambda grads, state, params=None: (
            jax.tree_util.tree_map(jnp.zeros_like, grads),
            {"s": state["s"] + jnp.nan},
        ),
    )


def test_unguarded_run_reports_a_nonfinite_optimiser_state(net):
    # Unguarded, the optimiser state is checked once, at the end of the call: a NaN state
    # with finite weights is reported at the last step, and fit (on_nonfinite="raise")
    # raises with the learner state left as it was.
    ln = traxon.online_learner(net, "es_d_rtrl", _nan_state_optimizer())
    ls = ln.init(batch_size=B)
    x, y, _ = batch(np.random.default_rng(3), steps=3)
    _, m = ln.jit("run", guard=False)(ln.connectivity, ls, x, y)
    assert np.asarray(m["nonfinite"]).tolist() == [False, False, True]
    _, m = ln.jit("step_fn", guard=False)(ln.connectivity, ls, x[0], y[0])
    assert bool(m["nonfinite"])
    ln.init_state(B)
    before = ln.state
    with pytest.raises(FloatingPointError, match="optimiser state"):
        ln.fit([(x, y)])
    assert ln.state is before
    with pytest.raises(ValueError, match=r"guard=False needs.*run, step_fn"):
        ln.jit("end_sequence", guard=False)


def test_nan_learning_rate_raises_at_the_first_step(net):
    ln = traxon.online_learner(net, "es_d_rtrl", optax.sgd(float("nan")))
    x, y, _ = batch(np.random.default_rng(0))
    ln.init_state(B)
    calls = 0
    with pytest.raises(FloatingPointError, match=r"at step 1\)"):
        for t in range(3):
            calls += 1
            ln.step(x[t], y[t])
    assert calls == 1
    assert all_finite(ln.state)


def test_nan_update_at_sequence_end_is_not_committed(net):
    x, y, mask = batch(np.random.default_rng(1))
    ln = traxon.online_learner(net, "es_d_rtrl", optax.sgd(float("nan")), update_every="sequence")
    ln.init_state(B)
    with pytest.raises(FloatingPointError):
        ln.fit([(x, y, mask)])
    assert all_finite(ln.state)
    ln.step(x[0], y[0])  # no update yet: it waits for the end of the sequence
    before = ln.state
    with pytest.raises(FloatingPointError):
        ln.end()
    assert ln.state is before
    skip = traxon.online_learner(
        net, "es_d_rtrl", optax.sgd(float("nan")), update_every="sequence", on_nonfinite="skip"
    )
    (summary,) = skip.fit([(x, y, mask)])
    assert summary["nonfinite"] == 1.0
    assert int(skip.state.skipped) == 1 and int(skip.state.updates) == 0
    assert all_finite(skip.state)


def test_save_refuses_a_nonfinite_state(learner, tmp_path):
    state = learner.state
    try:
        bad = {**state.params, "x->h": state.params["x->h"].at[0, 0].set(jnp.nan)}
        learner.state = state._replace(params=bad)
        with pytest.raises(ValueError, match=r"x->h.*allow_nonfinite"):
            learner.save(tmp_path / "bad.npz")
        assert not (tmp_path / "bad.npz").exists()
        learner.save(tmp_path / "kept.npz", allow_nonfinite=True)
    finally:
        learner.state = state


# ----------------------------------------------------------------------------------------
# Evaluation.


@pytest.mark.parametrize("pad_label", [0, 1])
def test_evaluate_ignores_fully_masked_sequences(learner, pad_label):
    rng = np.random.default_rng(2)
    x, y, mask = batch(rng, batch_size=4)
    real = learner.evaluate(learner.state, x, y, mask)
    xp = np.concatenate([x, np.zeros_like(x)], 1)
    yp = np.concatenate([y, np.full_like(y, pad_label)], 1)
    mp = np.concatenate([mask, np.zeros_like(mask)], 1)
    padded = learner.evaluate(learner.state, xp, yp, mp)
    assert padded["accuracy"] == pytest.approx(real["accuracy"])
    assert padded["loss"] == pytest.approx(real["loss"], rel=1e-5)


def test_nothing_masked_reports_nan(learner):
    x, y, mask = batch(np.random.default_rng(3))
    out = learner.evaluate(learner.state, x, y, 0 * mask)
    assert np.isnan(out["loss"]) and np.isnan(out["accuracy"])
    (summary,) = learner.fit([(x, y, 0 * mask)])
    assert np.isnan(summary["loss"]) and np.isnan(summary["accuracy"])


def test_evaluate_refuses_nonfinite_weights(learner):
    x, y, mask = batch(np.random.default_rng(4))
    params = {**learner.state.params, "readout.bias": jnp.full((2,), jnp.inf)}
    with pytest.raises(ValueError, match=r"readout.bias"):
        learner.evaluate(params, x, y, mask)


# ----------------------------------------------------------------------------------------
# Threads.


def test_two_threads_lose_no_steps(learner):
    ln = learner
    x, y, _ = batch(np.random.default_rng(5))
    ln.init_state(B)
    ln.step(x[0], y[0])  # compile first, so the threads overlap in the steps themselves
    errors = []

    def work():
        try:
            for _ in range(20):
                ln.step(x[0], y[0])
        except Exception as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert int(ln.state.step) == 41 and int(ln.state.updates) == 41


def test_two_threads_fitting_lose_no_updates(learner):
    ln = learner
    data = [batch(np.random.default_rng(i)) for i in range(5)]
    ln.init_state(B)
    ln.fit(data[:1])
    threads = [threading.Thread(target=ln.fit, args=(data,)) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert int(ln.state.updates) == T * 11


def test_fit_takes_no_batch_beyond_n_batches(learner):
    # A stream is not asked for a batch it will not train on (the CLI resumes a stream
    # where fit stopped; a batch drawn and dropped would shift every later one).
    drawn = []

    def stream():
        for i in range(5):
            drawn.append(i)
            yield batch(np.random.default_rng(i))

    it = stream()
    learner.init_state(B)
    assert len(learner.fit(it, n_batches=2)) == 2
    assert drawn == [0, 1]
    assert next(it) is not None and drawn == [0, 1, 2]


# ----------------------------------------------------------------------------------------
# Bad input: a clear error before any work, naming the argument.


def test_time_lengths_must_agree(learner):
    x, y, mask = batch(np.random.default_rng(6))
    with pytest.raises(ValueError, match="`y` has 3"):
        learner.fit([(x, y[:3], mask)])
    with pytest.raises(ValueError, match="`mask` has 3"):
        learner.evaluate(learner.state, x, y, mask[:3])
    with pytest.raises(ValueError, match="`mask` must have shape"):
        learner.evaluate(learner.state, x, y, mask[:, :1])


def test_empty_sequence_raises(learner):
    x, y, mask = batch(np.random.default_rng(7), steps=0)
    with pytest.raises(ValueError, match="T = 0"):
        learner.fit([(x, y, mask)])
    with pytest.raises(ValueError, match="T = 0"):
        learner.evaluate(learner.state, x, y, mask)


def test_negative_mask_raises(learner):
    x, y, mask = batch(np.random.default_rng(8))
    mask[1, 0] = -1.0
    with pytest.raises(ValueError, match=r"`mask`.*>= 0"):
        learner.fit([(x, y, mask)])
    with pytest.raises(ValueError, match=r"`mask`.*>= 0"):
        learner.step(x[1], y[1], mask[1])


def test_bad_batches_raise(learner):
    x, _, _ = batch(np.random.default_rng(9))
    with pytest.raises(TypeError, match="item 0 is length 1"):
        learner.fit([(x,)])
    with pytest.raises(TypeError, match="`batches` must be an iterable"):
        learner.fit(x)


def test_python_lists_are_accepted_by_step(learner):
    ln = learner
    ln.init_state(B)
    m = ln.step([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], [0, 1], [1.0, 1.0])
    assert np.isfinite(m["loss"]) and int(ln.state.step) == 1


def test_float_labels_raise_in_run(learner):
    x, y, _ = batch(np.random.default_rng(10))
    ls = learner.init(batch_size=B)
    with pytest.raises(TypeError, match="integer class indices"):
        learner.run(ls, x, y.astype(np.float32) + 0.7)


def test_nan_initial_weight_raises_naming_it(learner):
    params = {**learner.state.params}
    params["h->h"] = params["h->h"].at[1, 2].set(jnp.nan)
    with pytest.raises(ValueError, match=r"params\['h->h'\]"):
        learner.init(params=params, batch_size=B)


# ----------------------------------------------------------------------------------------
# bptt updating every k steps on longer sequences.


@pytest.mark.slow
def test_bptt_every_k_fits_sequences_longer_than_k(net):
    x, y, mask = batch(np.random.default_rng(11), steps=7)
    ln = traxon.online_learner(net, "bptt", optax.sgd(1e-1), update_every=3, sequence_length=7)
    ln.init_state(B)
    start = ln.state
    ln.fit([(x, y, mask)])
    ls, _ = ln.run(ln.reset_sequence(start), x, y, mask)
    ls = ln.end_sequence(ls)
    assert int(ln.state.updates) == int(ls.updates) == 3
    assert tree_allclose(ln.state.params, ls.params)


# ----------------------------------------------------------------------------------------
# Memory.


def test_memory_estimate_from_shapes(learner):
    small, big = learner.memory_estimate(1), learner.memory_estimate(8)
    assert 0 < small < big
    state = learner.init(batch_size=8)
    assert big == sum(np.asarray(v).nbytes for v in jax.tree_util.tree_leaves(state))


def test_too_large_raises_before_allocating(net, monkeypatch):
    # d_rtrl's state at batch 4 is about 2.7 kB (es_d_rtrl's 1.4 kB): a 3 kB limit.
    ln = traxon.online_learner(net, "d_rtrl", optax.sgd(1e-2), memory_limit=3000)
    with pytest.raises(MemoryError, match=r"d_rtrl at batch_size=4.*es_d_rtrl"):
        ln.init_state(4)
    with pytest.raises(MemoryError):
        ln.step(np.zeros((4, N_IN), np.float32), np.zeros(4, np.int32))
    assert ln._state is None
    monkeypatch.setenv("TRAXON_MEMORY_LIMIT", "3000")
    ln = traxon.online_learner(net, "d_rtrl", optax.sgd(1e-2))
    with pytest.raises(MemoryError, match="TRAXON_MEMORY_LIMIT"):
        ln.init_state(4)
    monkeypatch.setenv("TRAXON_MEMORY_LIMIT", "inf")
    ln.init_state(4)
