"""Connectivity as data: the index arrays of the sparse ops reach the compiled step as
arguments, so the program holds no copy of them and runs another connectome of the same
shapes without compiling again (issue 22, part 1)."""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import traxon
from traxon.connectome import connectome_network, synthetic_connectome
from traxon.core import CSR, FixedInDegree, FixedOutDegree, Sparse
from traxon.core.ops import bind_indices, index_arrays, index_values
from traxon.tasks import RegionRates, region_rate_loss

N, N_IN, REGIONS, T = 120, 4, 4, 6


def brain(connections: int, seed: int, max_active: int | None = None) -> traxon.core.Network:
    c = synthetic_connectome(N, connections, REGIONS, seed=seed)
    return connectome_network(c, n_inputs=N_IN, rate_window=10, max_active=max_active)


def learner_for(net: traxon.core.Network, algorithm: str = "es_d_rtrl") -> traxon.OnlineLearner:
    algo = (
        traxon.trace.es_d_rtrl(decay=math.exp(-1 / 20)) if algorithm == "es_d_rtrl" else algorithm
    )
    return traxon.online_learner(
        net, algo, optax.adam(1e-2), loss=region_rate_loss(), update_every=3
    )


def batch(seed: int = 0) -> tuple[jax.Array, jax.Array, jax.Array]:
    b = RegionRates(n_regions=REGIONS, n_in=N_IN, n_steps=T, window=3).sample(seed, 2)
    # Strong input: the brain spikes within these few steps.
    return 30 * jnp.asarray(b.x), jnp.asarray(b.y), jnp.asarray(b.mask)


def const_bytes(fn: object, *args: object) -> int:
    """Bytes of the constants the jitted ``fn`` captures when traced with ``args``."""
    traced = fn.trace(*args)  # type: ignore[attr-defined]
    return sum(int(getattr(c, "nbytes", 0)) for c in traced.jaxpr.consts)


def same(a: object, b: object) -> bool:
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    return ta == tb and all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb, strict=True)
    )


@pytest.fixture(scope="module")
def pair() -> dict[str, object]:
    """Two connectomes of the same shapes (other indices), their learners and a batch."""
    nets = [brain(1_500, seed) for seed in (0, 1)]
    learners = [learner_for(net) for net in nets]
    return {"nets": nets, "learners": learners, "batch": batch()}


def test_captured_constants_do_not_grow_with_connections() -> None:
    sizes, counts = [], []
    x, y, m = batch()
    for connections in (1_000, 4_000):
        net = brain(connections, seed=0)
        learner = learner_for(net)
        ls = learner.init(batch_size=2)
        step = const_bytes(learner.jit("step_fn"), learner.connectivity, ls, x[0], y[0], m[0])
        params, state = net.init(jax.random.PRNGKey(0), 2)
        keys = net.index_arrays()

        def simulate(indices, p, s, xs, keys=keys, net=net):
            with bind_indices(keys, indices):
                return net.simulate(p, s, xs)

        fwd = const_bytes(jax.jit(simulate), net.connectivity(), params, state, x)
        sizes.append((step, fwd))
        # The control: without the binding, the indices are captured as constants.
        counts.append(const_bytes(jax.jit(net.simulate), params, state, x))
    assert sizes[0] == sizes[1], sizes  # independent of the number of connections
    assert max(max(s) for s in sizes) < 1_000, sizes
    assert counts[1] > counts[0] + 4 * 3_000, counts


def test_no_captured_constants_warning_when_compiling() -> None:
    """JAX's own check (``jax_captured_constants_warn_bytes``) sees nothing to report in the
    learner's and the simulation's compiled programs; it does for the baked-in program."""
    net = brain(2_000, seed=3)
    learner = learner_for(net)
    ls = learner.init(batch_size=2)
    x, y, m = batch()
    params, state = net.init(jax.random.PRNGKey(0), 2)
    previous = jax.config.jax_captured_constants_warn_bytes
    jax.config.update("jax_captured_constants_warn_bytes", 4_000)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            learner.jit("step_fn").lower(learner.connectivity, ls, x[0], y[0], m[0])
            net.simulate(params, state, x)  # jitted inside, the indices passed as data
        assert not [w for w in caught if "constants" in str(w.message)]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            jax.jit(learner.step_fn).lower(ls, x[0], y[0], m[0])
        assert [w for w in caught if "constants" in str(w.message)]
    finally:
        jax.config.update("jax_captured_constants_warn_bytes", previous)


def test_second_connectome_runs_through_the_compiled_step(pair: dict) -> None:
    net_a, net_b = pair["nets"]
    la, lb = pair["learners"]
    x, y, m = pair["batch"]
    assert [a.shape for a in net_a.connectivity()] == [b.shape for b in net_b.connectivity()]
    assert not np.array_equal(net_a.connectivity()[1], net_b.connectivity()[1])
    run = la.jit("run")
    ls_b = lb.init(batch_size=2)
    out_a = run(net_a.connectivity(), ls_b, x, y, m)
    out_b = run(net_b.connectivity(), ls_b, x, y, m)
    assert run._cache_size() == 1  # traced and compiled once for both connectomes
    fresh = lb.jit("run")(lb.connectivity, ls_b, x, y, m)  # b's own compiled step
    assert same(out_b, fresh)
    assert not same(out_a[0].params, fresh[0].params)  # the indices do matter


@pytest.mark.slow
def test_rewired_learner_shares_the_compiled_steps(pair: dict) -> None:
    net_a, net_b = pair["nets"]
    la = learner_for(net_a)
    lb = learner_for(net_b)
    data = pair["batch"]
    la.init_state(2)
    la.fit([data])
    sizes = la._run_jit._cache_size(), la._finish_jit._cache_size()
    rb = la.rewired(net_b)
    assert rb.net is net_b and rb._state is None
    rb.init_state(2)
    lb.init_state(2)
    assert same(rb.state, lb.state)
    rb.fit([data])
    lb.fit([data])
    assert (la._run_jit._cache_size(), la._finish_jit._cache_size()) == sizes
    assert same(rb.state.params, lb.state.params)
    # evaluate and the step-by-step shell go through the shared programs too.
    x, y, m = data
    assert rb.evaluate(rb.state.params, x, y, m) == lb.evaluate(lb.state.params, x, y, m)
    assert rb.step(x[0], y[0], m[0]) == lb.step(x[0], y[0], m[0])
    # rb's step compiled la's program (la never stepped): one program for both networks.
    assert rb._step_jit is la._step_jit and la._step_jit._cache_size() == 1


def test_rewired_refuses_another_structure(pair: dict) -> None:
    la = pair["learners"][0]
    other = brain(1_600, seed=0)  # more connections: another weight shape
    with pytest.raises(ValueError, match=r"brain->brain.*online_learner\(net"):
        la.rewired(other)
    learner_for(other).init(batch_size=1)  # the advice works
    with pytest.raises(TypeError, match="Network"):
        la.rewired("net")  # type: ignore[arg-type]


def test_bind_indices_checks_its_arguments() -> None:
    op = CSR.from_edges([0, 1], [1, 0], n_in=2, n_out=2)
    keys = index_arrays([op])
    with pytest.raises(ValueError, match="one value per index array"), bind_indices(keys, ()):
        pass
    with (
        pytest.raises(ValueError, match="same shapes"),
        bind_indices(keys[:1], [np.zeros(5, np.int32)]),
    ):
        pass


def _sparse_ops() -> list[tuple[object, int, int]]:
    rng = np.random.default_rng(0)
    n_in, n_out, e = 12, 9, 40
    pre, post = rng.integers(0, n_in, e), rng.integers(0, n_out, e)
    sign = np.where(rng.random(n_in) < 0.3, -1.0, 1.0)
    return [
        (FixedInDegree.from_edges(pre, post, n_in, n_out, sign=sign), n_in, n_out),
        (FixedOutDegree.random(jax.random.PRNGKey(1), n_in, n_out, 3, max_active=4), n_in, n_out),
        (Sparse.from_edges(pre, post, n_out=n_out), n_in, n_out),
        (
            CSR.from_edges(
                pre, post, n_in, n_out, sign=sign, base=rng.random(e) + 0.5, max_active=3
            ),
            n_in,
            n_out,
        ),
        (CSR.from_edges(pre, post, n_in, n_out, groups=rng.integers(0, 3, e)), n_in, n_out),
    ]


@pytest.mark.parametrize("case", range(5))
def test_every_sparse_op_reads_bound_indices_bit_identically(case: int) -> None:
    op, n_in, n_out = _sparse_ops()[case]
    W = op.init(jax.random.PRNGKey(2), n_in, n_out, jnp.float32)
    z = jax.random.bernoulli(jax.random.PRNGKey(3), 0.2, (3, n_in)).astype(jnp.float32)
    post = jax.random.normal(jax.random.PRNGKey(4), (3, n_out))

    def everything(W, z, post):
        u, du = jax.jvp(lambda w, s: op.apply(w, s), (W, z), (jnp.ones_like(W), z))
        out = {"u": u, "du": du, "outer": op.outer(W, z, post), "to": op.to_params(post)}
        if getattr(op, "param_traces", True):
            out["pre"] = op.pre_factor(W, z)
        return out

    keys = index_arrays([op])

    def bound(indices, W, z, post):
        with bind_indices(keys, indices):
            return everything(W, z, post)

    values = index_values(keys)
    assert const_bytes(jax.jit(bound), values, W, z, post) == 0
    assert same(jax.jit(bound)(values, W, z, post), jax.jit(everything)(W, z, post))


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", sorted(traxon.trace.base.ALGORITHMS))
def test_every_rule_runs_on_connectivity_data(algorithm: str) -> None:
    """Each learning rule's compiled steps read the connectivity as data and give the same
    numbers as with the indices baked in."""
    net = brain(600, seed=0, max_active=40)
    learner = learner_for(net, algorithm)
    ls = learner.init(batch_size=2)
    x, y, m = batch()
    assert const_bytes(learner.jit("run"), learner.connectivity, ls, x, y, m) < 1_000
    data = learner.jit("run")(learner.connectivity, ls, x, y, m)
    assert same(data, jax.jit(learner.run)(ls, x, y, m))


def test_data_parallel_steps_capture_no_connectome() -> None:
    """``traxon.parallel.data_parallel`` passes the index arrays to its jitted steps as data
    too: its step's captured constants do not grow with the number of connections."""
    from traxon.parallel import data_parallel

    b = RegionRates(n_regions=REGIONS, n_in=N_IN, n_steps=T, window=3).sample(0, 4)
    x, y, m = (jnp.asarray(a) for a in (b.x, b.y, b.mask))
    sizes = []
    for connections in (1_000, 4_000):
        dp = data_parallel(learner_for(brain(connections, seed=0)))
        ls = dp.init(batch_size=4)  # a multiple of the devices (4 on the test machine)
        sizes.append(const_bytes(dp._step, dp._indices, ls, x[0], y[0], m[0]))
    assert sizes[0] == sizes[1] and sizes[0] < 1_000, sizes
