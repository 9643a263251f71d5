"""Whole-brain scale: CSR / edge-list sparse ops, the connectome loader, the region-rate task
and the data-parallel learner.

Sparse ops are checked against the dense matrix built from the edge list by hand; their
derivatives against autodiff of that dense matrix; the tracers over CSR weights against BPTT
(where exact) and against the same network written with dense weights (everywhere).
"""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import rel_error, run_tracer, small_brain
from traxon.core import (
    CSR,
    LIF,
    Dense,
    Expon,
    FixedInDegree,
    Network,
    Population,
    Projection,
    Readout,
)
from traxon.learn import cross_entropy
from traxon.trace import bptt_gradient, get_algorithm

N_IN, N_OUT, B, N_EDGES = 9, 6, 3, 40


def edge_list(seed=0, n_in=N_IN, n_out=N_OUT, n_edges=N_EDGES):
    """A random edge list with repeated pairs, unsorted, and one silent presynaptic neuron."""
    rng = np.random.default_rng(seed)
    pre = rng.integers(1, n_in, n_edges)  # neuron 0 has no outgoing entries
    post = rng.integers(0, n_out, n_edges)
    pre[:4], post[:4] = 3, 2  # a repeated (pre, post) pair
    return pre, post


def dense_from_edges(pre, post, w, n_in=N_IN, n_out=N_OUT):
    """``D[j, i] = sum of w_e over edges j -> i`` (edge order), in float64 with a loop."""
    D = np.zeros((n_in, n_out))
    for e in range(len(pre)):
        D[pre[e], post[e]] += w[e]
    return D


def effective(op, W, pre, post, sign=None, base=None, groups=None, n_groups=None):
    """Per-edge effective weights (edge order) of a CSR op, computed by hand."""
    order = CSR.edge_order(pre, post)
    W = np.asarray(W, np.float64)
    if groups is not None:
        w = W[np.asarray(groups)]
    else:
        w = np.empty(len(pre))
        w[order] = W  # op entry k is edge order[k]
    if sign is not None:
        w = np.abs(w) * np.asarray(sign, np.float64)[pre]
    if base is not None:
        w = w * np.asarray(base, np.float64)
    return w


def variants(seed=0):
    """CSR configurations: plain, Dale signs with synapse-count magnitudes, per-group scales."""
    rng = np.random.default_rng(seed + 100)
    sign = rng.choice([-1.0, 1.0], N_IN)
    base = rng.integers(1, 30, N_EDGES).astype(np.float64)
    groups = rng.integers(0, 4, N_EDGES)
    return {
        "plain": {},
        "dale_base": {"sign": sign, "base": base},
        "groups": {"sign": sign, "base": base, "groups": groups, "n_groups": 5},
    }


def draw(shape, seed):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float64)


def signal(seed, shape=(B, N_IN), p=0.4):
    rng = np.random.default_rng(seed)
    return jnp.asarray((rng.random(shape) < p) * rng.normal(1.0, 0.3, shape), jnp.float64)


# ---------------------------------------------------------------------------------------------
# CSR: forward equals the dense matrix of the edge list


@pytest.mark.parametrize("variant", ["plain", "dale_base", "groups"])
@pytest.mark.parametrize("max_active", [None, 2, 50])
def test_csr_apply_equals_dense_matrix_of_the_edge_list(x64, variant, max_active):
    pre, post = edge_list()
    kw = variants()[variant]
    op = CSR.from_edges(pre, post, N_IN, N_OUT, max_active=max_active, **kw)
    op.check_sizes(N_IN, N_OUT, "test")
    assert op.nnz == N_EDGES and op.n_in == N_IN
    W = draw(op.weight_shape(N_IN, N_OUT), seed=1)
    D = dense_from_edges(pre, post, effective(op, W, pre, post, **kw))
    z = signal(2)
    np.testing.assert_allclose(
        np.asarray(jax.jit(op.apply)(W, z)), np.asarray(z) @ D, rtol=1e-12, atol=1e-12
    )


def test_csr_layout_is_sorted_by_pre_then_post_and_edge_order_maps_values():
    op = CSR.from_edges([2, 0, 2, 1], [1, 3, 0, 0], n_in=4, n_out=4)
    assert op.indptr.array.tolist() == [0, 1, 2, 4, 4]
    assert op.post.array.tolist() == [3, 0, 0, 1]
    assert op.pre.tolist() == [0, 1, 2, 2]
    assert CSR.edge_order([2, 0, 2, 1], [1, 3, 0, 0]).tolist() == [1, 3, 2, 0]
    assert op.out_degree.tolist() == [1, 1, 2, 0]
    assert op.indptr.array.dtype == np.int32 and op.post.array.dtype == np.int32


def test_csr_event_driven_path_equals_all_entries_and_falls_back_on_overflow(x64):
    pre, post = edge_list()
    kw = variants()["dale_base"]
    full = CSR.from_edges(pre, post, N_IN, N_OUT, **kw)
    W = draw(full.weight_shape(N_IN, N_OUT), seed=3)
    sparse = np.zeros((B, N_IN))
    sparse[0, 3], sparse[1, [1, 7]], sparse[2, 5] = 1.0, (1.0, 0.5), 2.0  # <= 2 active each
    dense = np.ones((B, N_IN))  # every neuron active: overflows max_active=2
    ref = {k: full.apply(W, jnp.asarray(z)) for k, z in (("s", sparse), ("d", dense))}
    # Capacity from the largest out-degrees (never overflows on events), and a tight one.
    for max_events in (None, 3):
        op = CSR.from_edges(pre, post, N_IN, N_OUT, max_active=2, max_events=max_events, **kw)
        for k, z in (("s", sparse), ("d", dense)):
            got = jax.jit(op.apply)(W, jnp.asarray(z))
            np.testing.assert_allclose(np.asarray(got), np.asarray(ref[k]), rtol=1e-12)
    # Without overflow the event-driven gather itself is what runs: check it directly.
    op = CSR.from_edges(pre, post, N_IN, N_OUT, max_active=2, **kw)
    z = op._signed(jnp.asarray(sparse))
    np.testing.assert_allclose(
        np.asarray(op._scatter_active(W, z)), np.asarray(op._scatter_all(W, z)), rtol=1e-12
    )
    assert op.event_capacity == int(np.sort(op.out_degree)[-2:].sum())


@pytest.mark.parametrize(
    ("variant", "max_active"), [("plain", None), ("dale_base", 2), ("groups", 2)]
)
def test_csr_jvp_and_grad_equal_the_dense_equivalent(x64, variant, max_active):
    pre, post = edge_list()
    kw = variants()[variant]
    op = CSR.from_edges(pre, post, N_IN, N_OUT, max_active=max_active, **kw)
    W = draw(op.weight_shape(N_IN, N_OUT), seed=4)
    z = signal(5, p=0.3)  # silent neurons: the derivative wrt z must still use every entry

    def dense_apply(w, zz):
        # The same map written with a dense matrix built by jnp ops (differentiable in w).
        order = CSR.edge_order(pre, post)
        if "groups" in kw:
            we = w[jnp.asarray(kw["groups"])]
        else:
            we = jnp.zeros(N_EDGES, w.dtype).at[order].set(w)
        if "sign" in kw:
            we = jnp.abs(we) * jnp.asarray(kw["sign"])[pre]
        if "base" in kw:
            we = we * jnp.asarray(kw["base"])
        D = jnp.zeros((N_IN, N_OUT), w.dtype).at[pre, post].add(we)
        return zz @ D

    dW, dz = draw(W.shape, 6), draw(z.shape, 7)
    out, tan = jax.jit(lambda p, t: jax.jvp(op.apply, p, t))((W, z), (dW, dz))
    ref_out, ref_tan = jax.jvp(dense_apply, (W, z), (dW, dz))
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref_out), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(tan), np.asarray(ref_tan), rtol=1e-10, atol=1e-12)
    cot = draw((B, N_OUT), 8)

    def objective(fn):
        return lambda w, zz: jnp.sum(jnp.tanh(fn(w, zz)) * cot)

    g = jax.jit(jax.grad(objective(op.apply), argnums=(0, 1)))(W, z)
    g_ref = jax.grad(objective(dense_apply), argnums=(0, 1))(W, z)
    for a, b in zip(g, g_ref, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)
    assert np.count_nonzero(np.asarray(g[1])[np.asarray(z) == 0]) > 0  # silent neurons too


@pytest.mark.parametrize("variant", ["plain", "dale_base", "groups"])
def test_csr_outer_pre_factor_and_to_params_agree_with_autodiff(x64, variant):
    pre, post = edge_list()
    kw = variants()[variant]
    op = CSR.from_edges(pre, post, N_IN, N_OUT, **kw)
    W = draw(op.weight_shape(N_IN, N_OUT), seed=9)
    z = signal(10, p=0.6)
    postf = draw((B, N_OUT), 11)
    grad = jax.grad(lambda w: jnp.sum(postf * op.apply(w, z)))(W)
    np.testing.assert_allclose(np.asarray(op.outer(W, z, postf)), np.asarray(grad), rtol=1e-12)
    assert not np.any(np.asarray(op.outer(W, z, jnp.zeros_like(postf))))
    if variant == "groups":
        assert not op.param_traces
        with pytest.raises(NotImplementedError, match="groups"):
            op.pre_factor(W, z)
        return
    J = jax.jacobian(lambda w: op.apply(w, z))(W)  # (B, n_out, nnz)
    np.testing.assert_allclose(np.asarray(op.pre_factor(W, z)), np.asarray(J.sum(1)), rtol=1e-12)
    x = draw((B, N_OUT), 12)
    np.testing.assert_array_equal(np.asarray(op.to_params(x)), np.asarray(x)[:, op.post.array])


@pytest.mark.parametrize("variant", ["plain", "dale_base", "groups"])
def test_csr_padding_entries_are_inert(x64, variant):
    """``pad_to`` rounds the entries up to a multiple (to split them over devices); the
    padded op gives the same currents and gradients, and its padding gets none."""
    pre, post = edge_list()
    kw = variants()[variant]
    op = CSR.from_edges(pre, post, N_IN, N_OUT, **kw)
    padded = CSR.from_edges(pre, post, N_IN, N_OUT, pad_to=7, **kw)
    n_pad = -N_EDGES % 7
    assert padded.nnz == N_EDGES + n_pad and padded.nnz % 7 == 0 and n_pad > 0
    W = draw(op.weight_shape(N_IN, N_OUT), seed=3)
    if variant == "groups":
        Wp = W
    else:  # the real entries keep their weights; the padding (last row, last) gets any
        Wp = jnp.concatenate([W, draw((n_pad,), seed=4)])
    z, postf = signal(5, p=0.6), draw((B, N_OUT), 6)
    np.testing.assert_allclose(
        np.asarray(padded.apply(Wp, z)), np.asarray(op.apply(W, z)), rtol=1e-12, atol=1e-12
    )
    g, gp = op.outer(W, z, postf), padded.outer(Wp, z, postf)
    if variant != "groups":
        assert not np.any(np.asarray(gp[N_EDGES:]))
        gp = gp[:N_EDGES]
    np.testing.assert_allclose(np.asarray(gp), np.asarray(g), rtol=1e-12, atol=1e-12)
    assert CSR.from_edges(pre, post, N_IN, N_OUT, pad_to=N_EDGES).nnz == N_EDGES
    with pytest.raises(ValueError, match="pad_to"):
        CSR.from_edges(pre, post, N_IN, N_OUT, pad_to=0)


def test_csr_init_dale_magnitudes_and_group_scales():
    pre, post = edge_list()
    kw = variants()["dale_base"]
    op = CSR.from_edges(pre, post, N_IN, N_OUT, gain=0.5, **kw)
    W = op.init(jax.random.PRNGKey(0), N_IN, N_OUT, jnp.float32)
    # With fixed magnitudes (base) the weights start as a uniform trainable scale `gain`.
    np.testing.assert_array_equal(np.asarray(W), 0.5)
    plain = CSR.from_edges(pre, post, N_IN, N_OUT, sign=kw["sign"])
    W = plain.init(jax.random.PRNGKey(0), N_IN, N_OUT, jnp.float32)
    assert W.shape == (N_EDGES,) and np.all(np.asarray(W) >= 0)
    grouped = CSR.from_edges(pre, post, N_IN, N_OUT, groups=np.zeros(N_EDGES, int))
    assert grouped.weight_shape(N_IN, N_OUT) == (1,) and grouped.n_groups == 1


# ---------------------------------------------------------------------------------------------
# FixedInDegree from an edge list


def test_fixed_in_degree_from_edges_equals_dense_and_padding_gets_no_gradient(x64):
    pre, post = edge_list(seed=1)
    sign = variants()["dale_base"]["sign"]
    op = FixedInDegree.from_edges(pre, post, N_IN, N_OUT, sign=sign)
    op.check_sizes(N_IN, N_OUT, "test")
    row, col = FixedInDegree.edge_slots(post, N_OUT)
    K = int(np.bincount(post, minlength=N_OUT).max())
    assert op.weight_shape(N_IN, N_OUT) == (N_OUT, K)
    values = np.random.default_rng(2).normal(size=N_EDGES)
    W0 = np.zeros((N_OUT, K))
    W0[row, col] = values
    W = jnp.asarray(W0)
    D = dense_from_edges(pre, post, np.abs(values) * sign[pre])
    z = signal(3)
    np.testing.assert_allclose(np.asarray(op.apply(W, z)), np.asarray(z) @ D, rtol=1e-12)
    # Padding: zero at init, no effect if set, no gradient.
    pad = ~op.mask.array
    assert pad.any()
    init = op.init(jax.random.PRNGKey(0), N_IN, N_OUT, jnp.float64)
    assert not np.any(np.asarray(init)[pad])
    W_junk = W.at[jnp.asarray(pad)].set(5.0)
    np.testing.assert_allclose(np.asarray(op.apply(W_junk, z)), np.asarray(z) @ D, rtol=1e-12)
    g = jax.grad(lambda w: jnp.sum(jnp.sin(op.apply(w, z))))(W)
    assert not np.any(np.asarray(g)[pad])
    np.testing.assert_allclose(
        np.asarray(op.outer(W, z, jnp.cos(op.apply(W, z)))), np.asarray(g), rtol=1e-12
    )


# ---------------------------------------------------------------------------------------------
# Bad edge lists: errors name the offending array


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pre": [0, 1], "post": [0]}, "`pre` and `post`"),
        ({"pre": [0, -1], "post": [0, 1]}, "`pre`"),
        ({"pre": [0, 9], "post": [0, 1]}, r"`pre`.*\[0, 4\)"),
        ({"pre": [0, 1], "post": [0, 3]}, r"`post`.*\[0, 3\)"),
        ({"pre": [0.0, 1.0], "post": [0, 1]}, "`pre` must be an integer"),
        ({"pre": [0, 1], "post": [0, 1], "base": [1.0]}, "per-edge"),
        ({"pre": [0, 1], "post": [0, 1], "base": [1.0, np.nan]}, "`base`"),
        ({"pre": [0, 1], "post": [0, 1], "groups": [0, 2], "n_groups": 2}, "`groups`"),
        ({"pre": [0, 1], "post": [0, 1], "groups": [0.5, 1.0]}, "`groups`"),
        ({"pre": [0, 1], "post": [0, 1], "n_groups": 2}, "`n_groups` needs `groups`"),
        ({"pre": [0, 1], "post": [0, 1], "max_events": 4}, "`max_events` needs `max_active`"),
        ({"pre": [0, 1], "post": [0, 1], "max_active": 0}, "`max_active`"),
        ({"pre": [0, 1], "post": [0, 1], "sign": [1, -1]}, "`sign`"),
        ({"pre": [0, 1], "post": [0, 1], "sign": [1, 0, 1, 1]}, "`sign`"),
        ({"pre": [0, 1], "post": [0, 1], "n_in": 0}, "`n_in`"),
    ],
)
def test_bad_edge_lists_raise_naming_the_array(kwargs, match):
    args = {"n_in": 4, "n_out": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        CSR.from_edges(**args)


def test_bad_fixed_in_degree_edge_lists_raise():
    with pytest.raises(ValueError, match="`pre` and `post`"):
        FixedInDegree.from_edges([0, 1], [0], 2, 2)
    with pytest.raises(ValueError, match="`post`"):
        FixedInDegree.from_edges([0, 1], [0, 2], 2, 2)
    with pytest.raises(ValueError, match="`pre`"):
        FixedInDegree.from_edges([0, 5], [0, 1], 2, 2)


def test_csr_size_mismatch_raises_when_the_network_is_built():
    op = CSR.from_edges([0, 1], [0, 1], n_in=2, n_out=2)
    with pytest.raises(ValueError, match="indptr"):
        Network(3, {"h": Population(LIF(), 2)}, [Projection("x", "h", op)])
    with pytest.raises(ValueError, match="n_out"):
        Network(2, {"h": Population(LIF(), 3)}, [Projection("x", "h", op)])


# ---------------------------------------------------------------------------------------------
# Tracers over CSR weights

T, N_H, N_X = 30, 8, 5


def data(seed=1, n_in=N_X):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    xs = {"x": (jax.random.uniform(k1, (T, B, n_in)) < 0.3).astype(jnp.float64)}
    ts = jax.random.randint(k2, (T, B), 0, 2)
    ws = jnp.ones((T, B), jnp.float64) / B
    return xs, ts, ws


def input_csr(**kw):
    rng = np.random.default_rng(0)
    pre = np.concatenate([np.arange(N_X).repeat(3), [1, 1]])  # every input, one repeated pair
    post = np.concatenate([rng.integers(0, N_H, 3 * N_X), [4, 4]])
    return CSR.from_edges(pre, post, N_X, N_H, gain=4.0, **kw)


def test_d_rtrl_over_csr_input_weights_equals_bptt(x64):
    """Dale signs, synapse-count magnitudes and the event-driven forward, all exact."""
    n = 3 * N_X + 2
    kw = {"sign": [1, 1, -1, 1, 1], "base": np.linspace(1.0, 3.0, n), "max_active": 2}
    net = Network(
        N_X,
        {"h": Population(LIF(tau=10.0), N_H)},
        [Projection("x", "h", input_csr(**kw), synapse=Expon(5.0))],
        readout=Readout("h", 2),
    )
    params, state = net.init(jax.random.PRNGKey(0), B, dtype=jnp.float64)
    params["x->h"] = params["x->h"] * 2.0  # base scales 1..3: keep the neurons firing
    xs, ts, ws = data()
    spikes = net.simulate(params, state, xs["x"]).record["h"]["spike"]
    assert float(spikes.sum()) > 20
    ref, _ = bptt_gradient(net, cross_entropy.fn, params, state, xs, ts, ws)
    grads = run_tracer("d_rtrl", net, params, state, xs, ts, ws)
    for k in ref:
        assert np.linalg.norm(ref[k]) > 0, k
        assert rel_error(grads[k], ref[k]) < 1e-8, (k, rel_error(grads[k], ref[k]))


def test_es_d_rtrl_over_csr_equals_bptt_in_the_eprop_case(x64):
    net = Network(
        N_X,
        {"h": Population(LIF(tau=10.0, detach_reset=True), N_H)},
        [Projection("x", "h", input_csr())],
        readout=Readout("h", 2),
    )
    params, state = net.init(jax.random.PRNGKey(0), B, dtype=jnp.float64)
    xs, ts, ws = data()
    ref, _ = bptt_gradient(net, cross_entropy.fn, params, state, xs, ts, ws)
    grads = run_tracer("es_d_rtrl", net, params, state, xs, ts, ws, decay=float(np.exp(-0.1)))
    assert np.linalg.norm(ref["x->h"]) > 0
    for k in ref:
        assert rel_error(grads[k], ref[k]) < 1e-8, (k, rel_error(grads[k], ref[k]))


def recurrent_pair(groups=None):
    """One network with CSR recurrent weights and the same one with their dense matrix."""
    rng = np.random.default_rng(3)
    pre = rng.integers(0, N_H, 30)
    post = rng.integers(0, N_H, 30)
    pre[:3], post[:3] = 2, 5  # a repeated pair
    base = rng.integers(1, 5, 30).astype(np.float64) if groups is not None else None
    n_groups = None if groups is None else int(np.max(groups)) + 1
    op = CSR.from_edges(pre, post, N_H, N_H, base=base, groups=groups, n_groups=n_groups)

    def build(rec_op):
        return Network(
            N_X,
            {"h": Population(LIF(tau=20.0), N_H)},
            [
                Projection("x", "h", Dense(gain=6.0), synapse=Expon(5.0)),
                Projection("h", "h", rec_op, synapse=Expon(5.0), delay=1),
            ],
            readout=Readout("h", 2, tau=20.0),
        )

    sparse_net, dense_net = build(op), build(Dense())
    params, state = sparse_net.init(jax.random.PRNGKey(2), B, dtype=jnp.float64)
    params["h->h"] = params["h->h"] + 0.5 if groups is not None else params["h->h"]
    w = effective(op, params["h->h"], pre, post, base=base, groups=groups)
    dense_params = {**params, "h->h": jnp.asarray(dense_from_edges(pre, post, w, N_H, N_H))}
    return sparse_net, dense_net, params, dense_params, state, (pre, post, base, op)


@pytest.mark.parametrize("algorithm", ["es_d_rtrl", "d_rtrl"])
def test_tracers_over_csr_recurrent_weights_equal_the_dense_network(x64, algorithm):
    sparse_net, dense_net, params, dense_params, state, (pre, post, _, _op) = recurrent_pair()
    xs, ts, ws = data()
    spikes = sparse_net.simulate(params, state, xs["x"]).record["h"]["spike"]
    assert float(spikes.sum()) > 20
    g_sparse = run_tracer(algorithm, sparse_net, params, state, xs, ts, ws)
    g_dense = run_tracer(algorithm, dense_net, dense_params, state, xs, ts, ws)
    order = CSR.edge_order(pre, post)
    # d loss / d w_e = dense gradient at (pre_e, post_e), for each duplicate alike.
    want = np.asarray(g_dense["h->h"])[pre[order], post[order]]
    assert np.linalg.norm(want) > 0
    assert rel_error(g_sparse["h->h"], want) < 1e-10
    for k in ("x->h", "h->readout", "readout.bias"):
        assert rel_error(g_sparse[k], g_dense[k]) < 1e-10, k


def test_es_d_rtrl_over_grouped_csr_sums_the_dense_gradient_per_group(x64):
    groups = np.random.default_rng(4).integers(0, 3, 30)
    sparse_net, dense_net, params, dense_params, state, (pre, post, base, _op) = recurrent_pair(
        groups
    )
    xs, ts, ws = data()
    g_sparse = run_tracer("es_d_rtrl", sparse_net, params, state, xs, ts, ws)
    g_dense = np.asarray(
        run_tracer("es_d_rtrl", dense_net, dense_params, state, xs, ts, ws)["h->h"]
    )
    want = np.bincount(groups, weights=g_dense[pre, post] * base, minlength=3)
    assert rel_error(g_sparse["h->h"], want) < 1e-10
    with pytest.raises(ValueError, match="h->h"):
        get_algorithm("d_rtrl").bind(sparse_net, cross_entropy.fn)


# ---------------------------------------------------------------------------------------------
# Connectome: loader, synthetic generator, network

EDGE_CSV = """pre_root_id,post_root_id,neuropil,syn_count,nt_type
720575940000000001,720575940000000002,AL_L,12,ACH
720575940000000001,720575940000000002,MB_CA_L,3,ACH
720575940000000002,720575940000000001,AL_L,6,GABA
720575940000000002,720575940000000003,MB_CA_L,4,GABA
720575940000000003,720575940000000004,MB_CA_L,9,GLUT
720575940000000004,720575940000000001,AL_L,5,DA
720575940000000004,720575940000000003,MB_CA_L,2,
"""


def write_csv(tmp_path, text=EDGE_CSV, name="edges.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_edges_reads_a_flywire_table(tmp_path):
    from traxon.connectome import load_edges

    c = load_edges(write_csv(tmp_path))
    assert c.ids.tolist() == [720575940000000001 + k for k in range(4)]
    assert c.n_neurons == 4 and c.n_connections == 6  # the repeated pair 1->2 is merged
    assert c.n_synapses == 41
    pairs = dict(
        zip(zip(c.pre.tolist(), c.post.tolist(), strict=True), c.count.tolist(), strict=True)
    )
    assert pairs[(0, 1)] == 15.0 and pairs[(3, 2)] == 2.0
    assert c.sign.tolist() == [1.0, -1.0, -1.0, 1.0]  # ACH, GABA, GLUT (inhibitory), DA
    assert c.regions == ("AL_L", "MB_CA_L")
    # Each neuron's region: where it receives most synapses.
    assert [c.regions[r] for r in c.region] == ["AL_L", "AL_L", "MB_CA_L", "MB_CA_L"]
    assert np.all(np.diff(c.pre) >= 0)
    # Configurable transmitter signs and a synapse threshold.
    assert c.with_inhibitory(["gaba"]).sign.tolist() == [1.0, -1.0, 1.0, 1.0]
    assert load_edges(write_csv(tmp_path), min_count=5).n_connections == 4


@pytest.mark.parametrize("suffix", [".parquet", ".feather"])
def test_load_edges_reads_feather_and_parquet_like_csv(tmp_path, suffix):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    from traxon.connectome import load_edges

    csv = write_csv(tmp_path)
    table = pd.read_csv(csv, dtype={"nt_type": str})
    path = tmp_path / f"edges{suffix}"
    table.to_parquet(path) if suffix == ".parquet" else table.to_feather(path)
    want, got = load_edges(csv), load_edges(path)
    for field in ("ids", "pre", "post", "count", "sign", "region"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)
    assert got.regions == want.regions


def test_load_edges_with_other_column_names_and_errors(tmp_path, monkeypatch):
    from traxon.connectome import load_edges

    text = "src,dst,w,transmitter\n1,2,3,ach\n2,1,1,gaba\n"
    c = load_edges(write_csv(tmp_path, text), pre_col="src", post_col="dst", count_col="w")
    assert c.sign.tolist() == [1.0, -1.0] and c.region is None
    with pytest.raises(ValueError, match="no pre column"):
        load_edges(write_csv(tmp_path, "a,b\n1,2\n", "bad.csv"))
    with pytest.raises(ValueError, match="'nope'"):
        load_edges(write_csv(tmp_path), pre_col="nope")
    with pytest.raises(ValueError, match="integer neuron ids"):
        load_edges(write_csv(tmp_path, "pre,post\nx,2\n", "bad2.csv"))
    with pytest.raises(ValueError, match="line 3"):
        load_edges(write_csv(tmp_path, "pre,post\n1,2\n1\n", "bad3.csv"))
    with pytest.raises(ValueError, match="`count`"):
        load_edges(write_csv(tmp_path, "pre,post,syn_count\n1,2,0\n", "bad4.csv"))
    with pytest.raises(FileNotFoundError):
        load_edges(tmp_path / "missing.csv")
    (tmp_path / "edges.feather").write_bytes(b"")
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "pandas", None)  # as if not installed
        with pytest.raises(ImportError, match=r'pip install "traxon\[connectome\]"'):
            load_edges(tmp_path / "edges.feather")


def test_synthetic_connectome_sizes_degrees_and_reproducibility():
    from traxon.connectome import synthetic_connectome

    c = synthetic_connectome(n_neurons=3000, n_connections=60_000, n_regions=12, seed=3)
    assert c.n_neurons == 3000 and c.n_connections == 60_000 and c.n_regions == 12
    assert c.pre.dtype == np.int32 and c.post.dtype == np.int32
    assert not np.any(c.pre == c.post)
    key = c.pre.astype(np.int64) * 3000 + c.post
    assert np.all(np.diff(key) > 0)  # sorted by (pre, post), no repeats
    out_deg = np.bincount(c.pre, minlength=3000)
    assert out_deg.max() > 5 * out_deg.mean()  # heavy-tailed
    assert c.region_sizes().min() >= 1 and c.region_sizes().sum() == 3000
    same_region = c.region[c.pre] == c.region[c.post]
    assert same_region.mean() > 0.6
    assert 2.5 < c.count.mean() < 4.5 and c.count.min() >= 1
    assert 0.2 < np.mean(c.sign < 0) < 0.5
    again = synthetic_connectome(n_neurons=3000, n_connections=60_000, n_regions=12, seed=3)
    np.testing.assert_array_equal(c.post, again.post)
    with pytest.raises(ValueError, match="`n_regions`"):
        synthetic_connectome(n_neurons=10, n_connections=20, n_regions=11)


@pytest.mark.slow
def test_synthetic_connectome_full_size():
    from traxon.connectome import synthetic_connectome

    c = synthetic_connectome(seed=0)
    assert c.n_neurons == 139_255 and c.n_connections == 15_000_000 and c.n_regions == 80


def test_connectome_network_dale_magnitudes_readout_and_groups(x64):
    from traxon.connectome import connectome_network, synthetic_connectome

    c = synthetic_connectome(n_neurons=200, n_connections=2_000, n_regions=5, seed=0)
    net = connectome_network(c, n_inputs=4, weight_scale=0.01, rate_window=20)
    params, _ = net.init(jax.random.PRNGKey(0), 2, dtype=jnp.float64)
    assert params["brain->brain"].shape == (2_000,)
    rec = next(p for p in net.projections if p.name == "brain->brain").op
    # Effective weights: sign of the presynaptic neuron x count x scale x |W|.
    z = jnp.eye(200, dtype=jnp.float64)
    D = np.asarray(rec.apply(params["brain->brain"], z))
    want = np.zeros((200, 200))
    np.add.at(want, (c.pre, c.post), c.sign[c.pre] * c.count * 0.01)
    np.testing.assert_allclose(D, want, rtol=1e-6)
    assert not next(p for p in net.projections if p.name == "brain->readout").trainable
    # The readout: each region's exponentially averaged mean rate in Hz.
    readout = next(p for p in net.projections if p.name == "brain->readout").op
    s = jnp.ones((1, 200), jnp.float64)
    kappa = np.exp(-1 / 20)
    np.testing.assert_allclose(
        np.asarray(readout.apply(params["brain->readout"], s)), (1 - kappa) * 1000.0, rtol=1e-6
    )
    types = np.arange(200) % 3
    grouped = connectome_network(c, trainable="cell_type", cell_types=types)
    p2, _ = grouped.init(jax.random.PRNGKey(0), 1)
    assert p2["brain->brain"].shape == (3,)
    with pytest.raises(ValueError, match="cell_types"):
        connectome_network(c, trainable="cell_type")
    no_regions = load_small_without_regions()
    with pytest.raises(ValueError, match="regions"):
        connectome_network(no_regions)


def load_small_without_regions():
    from traxon.connectome import Connectome

    return Connectome.from_edges([1, 2], [2, 1], [3, 4], ["ACH", "GABA"])


# ---------------------------------------------------------------------------------------------
# The region-rate task and the online fit


def test_region_rates_task_batches_targets_and_loader(tmp_path):
    from traxon.tasks import RegionRates, get_task, load_targets

    task = RegionRates(n_regions=4, n_in=6, n_steps=120, window=40)
    b = task.sample(1, 3)
    assert b.x.shape == (120, 3, 6) and b.y.shape == (120, 3, 4) and b.x.dtype == np.float32
    assert b.mask[:, 0].nonzero()[0].tolist() == [39, 79, 119]
    assert np.all((b.y >= 5.0) & (b.y <= 25.0))
    np.testing.assert_array_equal(task.sample(1, 3).x, b.x)
    assert not np.array_equal(task.sample(2, 3).x, b.x)
    assert get_task("region_rates", n_regions=2, n_steps=50, window=10).n_out == 2
    rec = np.abs(np.random.default_rng(0).normal(10, 3, (500, 4))).astype(np.float32)
    stim = np.full((500, 6), 20.0, np.float32)
    np.savez(tmp_path / "rec.npz", targets=rec, inputs=stim)
    targets, inputs = load_targets(tmp_path / "rec.npz")
    real = RegionRates(n_in=6, n_steps=100, window=25, targets=targets, inputs=inputs)
    rb, info = real.sample_with_info(0, 2)
    assert real.n_out == 4
    np.testing.assert_array_equal(rb.y[:, 1], rec[info["offset"][1] : info["offset"][1] + 100])
    np.save(tmp_path / "bad.npy", np.zeros(5))
    with pytest.raises(ValueError, match=r"\(T, R\)"):
        load_targets(tmp_path / "bad.npy")
    with pytest.raises(ValueError, match="`window`"):
        RegionRates(n_steps=10, window=20)


@pytest.mark.slow
def test_online_fit_of_region_rates_lowers_the_loss():
    import optax

    import traxon
    from traxon.connectome import connectome_network, synthetic_connectome
    from traxon.tasks import RegionRates, region_rate_loss

    c = synthetic_connectome(n_neurons=300, n_connections=6_000, n_regions=4, seed=0)
    net = connectome_network(c, n_inputs=8, rate_window=25, max_active=64)
    task = RegionRates(n_regions=4, n_in=8, n_steps=100, window=25)
    learner = traxon.online_learner(
        net, "es_d_rtrl", optax.adam(3e-2), loss=region_rate_loss(), seed=0
    )
    batch = task.sample(0, 2)
    before = learner.evaluate(learner.init(batch_size=2), batch.x, batch.y, batch.mask)["loss"]
    learner.fit([batch] * 8)
    after = learner.evaluate(learner.state, batch.x, batch.y, batch.mask)["loss"]
    assert after < 0.8 * before, (before, after)


# ---------------------------------------------------------------------------------------------
# Across devices (4 fake CPU devices, tests/conftest.py)


@pytest.fixture(scope="module")
def brain_reference():
    """``tests.helpers.small_brain`` and its run on one device: ``(learner, batch, state,
    metrics)``."""
    learner, b = small_brain()
    ref, metrics = jax.jit(learner.run)(learner.init(batch_size=4), b.x, b.y, b.mask)
    return learner, b, ref, metrics


@pytest.mark.parametrize("neuron_shards", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_data_parallel_learner_equals_one_device(brain_reference, neuron_shards):
    from traxon.parallel import data_parallel

    if len(jax.devices()) < 4:
        pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=4")
    learner, b, ref, ref_metrics = brain_reference
    dp = data_parallel(learner, jax.devices()[:4], neuron_shards=neuron_shards)
    ls = dp.init(batch_size=4)
    assert ls.net_state["brain"]["V"].sharding.spec[0] == "data"
    if neuron_shards > 1:
        assert ls.net_state["brain"]["V"].sharding.spec[1] == "neurons"
        # The per-connection weights are split too (600 entries, 300 per device).
        w = ls.params["brain->brain"]
        assert w.sharding.spec[0] == "neurons"
        assert {s.data.shape for s in w.addressable_shards} == {(300,)}
    ls, metrics = dp.run(ls, b.x, b.y, b.mask)
    assert ls.net_state["brain"]["V"].sharding.spec[0] == "data"
    assert int(ls.updates) == 10
    for k in ref.params:
        np.testing.assert_allclose(
            np.asarray(ls.params[k]), np.asarray(ref.params[k]), rtol=1e-5, atol=1e-6
        )
    np.testing.assert_allclose(
        np.asarray(metrics["loss"]), np.asarray(ref_metrics["loss"]), rtol=1e-5, atol=1e-6
    )
    ls2, _ = dp.step(ls, b.x[0], b.y[0])
    assert int(ls2.updates) == 11
    if neuron_shards == 1:  # a whole sequence as fit runs it: reset, run, apply
        seq, _ = dp.train_sequence(ls2, b.x, b.y, b.mask)
        one = jax.jit(
            lambda s: learner.end_sequence(
                learner.run(learner.reset_sequence(s), b.x, b.y, b.mask)[0]
            )
        )
        want = one(jax.device_get(ls2))
        for k in want.params:
            np.testing.assert_allclose(
                np.asarray(seq.params[k]), np.asarray(want.params[k]), rtol=1e-5, atol=1e-6
            )
        assert seq.net_state["brain"]["V"].sharding.spec[0] == "data"
    with pytest.raises(ValueError, match="batch_size"):
        data_parallel(learner, jax.devices()[:4]).init(batch_size=3)
    with pytest.raises(ValueError, match="neuron_shards"):
        data_parallel(learner, jax.devices()[:4], neuron_shards=3)


def test_data_parallel_warns_when_sparse_weights_cannot_be_split():
    import traxon
    from traxon.connectome import connectome_network, synthetic_connectome
    from traxon.parallel import data_parallel
    from traxon.tasks import region_rate_loss

    if len(jax.devices()) < 4:
        pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=4")
    c = synthetic_connectome(n_neurons=64, n_connections=601, n_regions=4, seed=0)
    learner = traxon.online_learner(
        connectome_network(c, n_inputs=8), "es_d_rtrl", loss=region_rate_loss()
    )
    nnz = learner.net.projections[1].op.nnz
    assert nnz % 4
    with pytest.warns(traxon.TraxonWarning, match="pad_to=4"):
        data_parallel(learner, jax.devices()[:4], neuron_shards=4)
    padded = traxon.online_learner(
        connectome_network(c, n_inputs=8, pad_to=4), "es_d_rtrl", loss=region_rate_loss()
    )
    dp = data_parallel(padded, jax.devices()[:4], neuron_shards=4)  # no warning
    spec = dp.shardings(batch_size=4).params["brain->brain"].spec
    assert spec[0] == "neurons"


@pytest.mark.slow
@pytest.mark.parametrize("neuron_shards", [2])
def test_two_processes_with_jax_distributed_equal_one_device(
    tmp_path, brain_reference, neuron_shards
):
    """Multi-host on one machine: two processes joined by ``jax.distributed`` (2 CPU devices
    each, gloo collectives), each feeding its half of the batch, train like one device."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    out = tmp_path / "result.npz"
    worker = os.path.join(os.path.dirname(__file__), "multihost_worker.py")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = [
        subprocess.Popen(
            [sys.executable, worker, str(pid), "2", str(port), str(out), str(neuron_shards)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for pid in range(2)
    ]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
    got = np.load(out)
    _, _, ref, metrics = brain_reference
    for k, v in ref.params.items():
        np.testing.assert_allclose(got[k], np.asarray(v), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["loss"], np.asarray(metrics["loss"]), rtol=1e-5, atol=1e-6)
