"""A learner that updates every step with ``traxon.learn.sgd`` holds the dense weights'
updates as low-rank factors inside ``run`` and writes them every few steps
(``traxon.core._deferred``). The weights are the same as ``optax.sgd``'s updated step by
step, to rounding: checked in float64 with a constant rate and a schedule, with a spike
cost (more factor rows per step), over runs that are not a multiple of the fold, with a
skipped non-finite step, and against the conditions that turn it off."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import traxon
from tests.helpers import deferral_network, float64
from traxon.core import LIF, Dense, Expon, Network, Population, Projection, Readout

N_IN, B, T = 5, 3, 11


@pytest.fixture(scope="module", autouse=True)
def x64_module():
    with float64():
        yield


def _data(seed: int = 1):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    xs = (jax.random.uniform(k1, (T, B, N_IN)) < 0.3).astype(jnp.float64)
    return xs, jax.random.randint(k2, (T, B), 0, 2)


def _learner(optimizer, defer, **kwargs):
    algorithm = traxon.es_d_rtrl(defer=defer)
    return traxon.online_learner(
        deferral_network(N_IN), algorithm, optimizer, dtype=jnp.float64, **kwargs
    )


def _runs(learner, xs, ys, calls: int = 2, guard: bool = True):
    """``calls`` jitted runs from the same initial state; the final state and the metrics."""
    run = learner.jit("run", guard=guard)
    ls = learner.init(batch_size=B, key=jax.random.PRNGKey(0))
    metrics = []
    for _ in range(calls):
        ls, m = run(learner.connectivity, ls, xs, ys)
        metrics.append(m)
    return ls, jax.tree_util.tree_map(lambda *a: np.concatenate(a), *metrics)


def _assert_same(a, b, tol: float = 1e-12):
    (ls_a, m_a), (ls_b, m_b) = a, b
    assert jax.tree_util.tree_structure(ls_a) == jax.tree_util.tree_structure(ls_b)
    for k in ls_a.params:
        scale = max(1.0, float(jnp.max(jnp.abs(ls_a.params[k]))))
        err = float(jnp.max(jnp.abs(ls_a.params[k] - ls_b.params[k])))
        assert err <= tol * scale, (k, err)
    for k in ("loss", "grad_norm"):
        np.testing.assert_allclose(m_a[k], m_b[k], rtol=1e-10, atol=1e-12, err_msg=k)
    np.testing.assert_array_equal(m_a["nonfinite"], m_b["nonfinite"])
    for k in ("step", "updates", "skipped"):
        assert int(getattr(ls_a, k)) == int(getattr(ls_b, k)), k
    for x, y in zip(jax.tree.leaves(ls_a.opt_state), jax.tree.leaves(ls_b.opt_state), strict=True):
        np.testing.assert_allclose(x, y)


@pytest.mark.parametrize("case", ["constant", "schedule", "spike_cost"])
def test_held_updates_give_the_weights_of_an_update_every_step(case):
    lr = optax.linear_schedule(0.1, 0.01, 2 * T) if case == "schedule" else 0.05
    kwargs = {"rate_target": 20.0, "rate_reg": 0.5} if case == "spike_cost" else {}
    reference = _learner(optax.sgd(lr), 1, **kwargs)
    held = _learner(traxon.learn.sgd(lr), 4, **kwargs)
    assert reference._update_steps(B) == {}
    # The Dale-signed pair is never held; T = 11 steps: folds after 4, 8 and 11.
    assert held._update_steps(B) == {"x->h": 4, "h->h": 4, "h->readout": 4}
    xs, ys = _data()
    _assert_same(_runs(reference, xs, ys), _runs(held, xs, ys))


def test_held_updates_under_the_event_driven_forward():
    """A recurrent weight of 80 x 80 takes the event-driven path (``event="auto"``: it
    gathers the rows of the neurons that spiked, or falls back to all rows); its held
    updates are added beside that product, and the run equals ``optax.sgd`` every step."""

    def make():
        return Network(
            N_IN,
            {"h": Population(LIF(tau=10.0), 80)},
            [
                Projection("x", "h", Dense(gain=8.0), synapse=Expon(5.0)),
                Projection("h", "h", Dense(gain=1.0), synapse=Expon(5.0), delay=1),
            ],
            readout=Readout("h", 2, tau=20.0),
        )

    learners = [
        traxon.online_learner(make(), traxon.es_d_rtrl(defer=defer), opt, dtype=jnp.float64)
        for opt, defer in ((optax.sgd(0.05), 1), (traxon.learn.sgd(0.05), 4))
    ]
    recurrent = next(p for p in learners[1].net.projections if p.name == "h->h")
    assert recurrent.op.max_active is not None  # the event-driven product
    assert "h->h" in learners[1]._update_steps(B)
    xs, ys = _data()
    a, b = (_runs(learner, xs, ys) for learner in learners)
    assert float(np.mean(a[1]["rates"]["h"])) > 0  # the recurrent spikes are there to gather
    _assert_same(a, b)


def test_a_skipped_nonfinite_step_is_skipped_alike():
    xs, ys = _data()
    xs = xs.at[5, 1, 0].set(jnp.nan)  # sample 1 is NaN from step 5 on: every update skipped
    reference = _learner(optax.sgd(0.05), 1, on_nonfinite="skip")
    held = _learner(traxon.learn.sgd(0.05), 4, on_nonfinite="skip")
    a, b = _runs(reference, xs, ys, calls=1), _runs(held, xs, ys, calls=1)
    assert int(a[0].skipped) == T - 5 and int(a[0].updates) == 5
    _assert_same(a, b)


def test_fit_holds_the_updates_and_writes_the_module_weights():
    xs, ys = _data()
    batches = [(np.asarray(xs), np.asarray(ys))] * 2
    reference = _learner(optax.sgd(0.05), 1)
    held = _learner(traxon.learn.sgd(0.05), 4)
    for learner in (reference, held):
        learner.fit(batches, progress=False)
    for k, w in reference.params.items():
        np.testing.assert_allclose(held.params[k], w, rtol=1e-10, atol=1e-12, err_msg=k)
    # Nothing of the factors is left in the state: it checkpoints as the reference's does.
    assert jax.tree_util.tree_structure(held.state) == jax.tree_util.tree_structure(reference.state)


@pytest.mark.parametrize(
    "optimizer, options",
    [
        (optax.sgd(0.05), {}),  # optax's own SGD says nothing about linearity
        (optax.adam(1e-2), {}),
        (traxon.learn.sgd(0.05), {"update_every": 2}),  # the rule's own deferral instead
        (traxon.learn.sgd(0.05), {"clip_norm": 1.0}),  # clipping: not the bare SGD
        (traxon.learn.sgd(0.05), {"defer": 1}),
        (traxon.learn.sgd(0.05), {"defer": "auto"}),  # weights far under 2**21 entries
    ],
)
def test_updates_are_written_every_step_unless_all_conditions_hold(optimizer, options):
    defer = options.pop("defer", 4)
    assert _learner(optimizer, defer, **options)._update_steps(B) == {}


def test_sgd_is_optax_sgd_and_checks_its_rate():
    params = {"w": jnp.arange(3.0)}
    grads = {"w": jnp.array([1.0, -2.0, 0.5])}
    ours, theirs = traxon.learn.sgd(0.1), optax.sgd(0.1)
    u, _ = ours.update(grads, ours.init(params))
    v, _ = theirs.update(grads, theirs.init(params))
    np.testing.assert_array_equal(u["w"], v["w"])
    with pytest.raises(ValueError, match="learning_rate"):
        traxon.learn.sgd(float("nan"))


def test_held_updates_compose_with_vmap_over_runs():
    """``jax.vmap`` of ``run`` over two initial states (an ensemble): each run's weights are
    those of the same run alone, updated every step."""
    xs, ys = _data()
    reference = _learner(optax.sgd(0.05), 1)
    held = _learner(traxon.learn.sgd(0.05), 4)
    states = [held.init(batch_size=B, key=jax.random.PRNGKey(seed)) for seed in (0, 1)]
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *states)
    ensemble, _ = jax.jit(jax.vmap(held.run, in_axes=(0, None, None)))(stacked, xs, ys)
    for i, start in enumerate(states):
        alone, _ = jax.jit(reference.run)(start, xs, ys)
        for k, w in alone.params.items():
            np.testing.assert_allclose(ensemble.params[k][i], w, rtol=1e-10, atol=1e-12)
