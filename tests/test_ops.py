"""Weight ops: sparse formats equal their dense matrices; outer/pre_factor agree with autodiff."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from traxon.core import (
    CSR,
    LIF,
    Bias,
    Dense,
    ElementWise,
    FixedInDegree,
    FixedOutDegree,
    Network,
    Population,
    Projection,
    Sparse,
)

N_IN, N_OUT, B = 7, 5, 3


def draw(op, n_in=N_IN, n_out=N_OUT, seed=0, magnitudes=False):
    """Weights of the op's shape drawn with numpy (jax.random compiles once per shape)."""
    w = np.random.default_rng(seed).normal(size=op.weight_shape(n_in, n_out))
    return jnp.asarray(np.abs(w) if magnitudes else w, jnp.float32)


def spikes(seed, shape=(B, N_IN), p=0.4):
    return (np.random.default_rng(seed).random(shape) < p).astype(np.float32)


def dense_of(op, W, n_in, n_out):
    """The equivalent dense matrix D (n_in, n_out), built from the indices alone."""
    W = np.asarray(W, np.float64)
    D = np.zeros((n_in, n_out))
    if isinstance(op, FixedInDegree):
        if op.sign is not None:
            W = np.abs(W) * np.asarray(op._signs(n_in))[op.pre_index.array]
        w = W
        for i in range(n_out):
            for k in range(W.shape[1]):
                D[op.pre_index.array[i, k], i] += w[i, k]
    elif isinstance(op, FixedOutDegree):
        for j in range(n_in):
            for k in range(W.shape[1]):
                D[j, op.post_index.array[j, k]] += W[j, k]
    elif isinstance(op, Sparse):
        for k in range(W.size):
            D[op.pre.array[k], op.post.array[k]] += W[k]
    else:
        raise AssertionError(op)
    return D


# Index arrays with repeated targets, so that accumulation is exercised.
PRE_INDEX = np.array([[0, 3, 3], [6, 1, 2], [5, 5, 0], [4, 2, 1], [6, 0, 3]])  # (N_OUT, 3)
POST_INDEX = np.array([[0, 4], [1, 1], [3, 2], [0, 0], [2, 4], [3, 1], [4, 0]])  # (N_IN, 2)
EDGES_PRE = np.array([0, 1, 1, 3, 6, 6, 2, 0, 5])
EDGES_POST = np.array([1, 0, 4, 4, 2, 2, 3, 1, 0])  # (0 -> 1) and (6 -> 2) appear twice


def sparse_ops():
    return {
        "fixed_in": FixedInDegree(pre_index=PRE_INDEX),
        "fixed_in_sign": FixedInDegree(pre_index=PRE_INDEX, sign=[1, -1, 1, 1, -1, 1, -1]),
        "fixed_in_random": FixedInDegree.random(jax.random.PRNGKey(3), N_IN, N_OUT, degree=4),
        "fixed_out": FixedOutDegree(post_index=POST_INDEX, n_out=N_OUT),
        "fixed_out_active": FixedOutDegree(post_index=POST_INDEX, n_out=N_OUT, max_active=3),
        "fixed_out_random": FixedOutDegree.random(
            jax.random.PRNGKey(4), N_IN, N_OUT, degree=3, max_active=2
        ),
        "sparse": Sparse.from_edges(pre=EDGES_PRE, post=EDGES_POST, n_out=N_OUT),
    }


@pytest.mark.parametrize("name", list(sparse_ops()))
def test_sparse_ops_equal_their_dense_matrix(name):
    op = sparse_ops()[name]
    op.check_sizes(N_IN, N_OUT, "test")
    W = draw(op)
    D = dense_of(op, W, N_IN, N_OUT)
    # Random spikes at three densities, then graded (non-binary) presynaptic values.
    z = np.concatenate([spikes(seed, p=p) for seed, p in enumerate((0.1, 0.3, 0.7))])
    graded = np.random.default_rng(7).normal(size=(B, N_IN)).astype(np.float32)
    graded[:, ::2] = 0.0
    z = np.concatenate([z, graded])
    out = jax.jit(op.apply)(W, z)
    np.testing.assert_allclose(np.asarray(out), z.astype(np.float64) @ D, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("max_active", [None, 2])
def test_fixed_out_degree_event_driven_path_and_overflow_fallback(max_active):
    op = FixedOutDegree(post_index=POST_INDEX, n_out=N_OUT, max_active=max_active)
    W = draw(op, seed=1)
    D = dense_of(op, W, N_IN, N_OUT)
    z = np.zeros((4, N_IN), np.float32)
    z[0, [2]] = 1.0  # one active: below the cap
    z[1, [0, 6]] = 0.5  # two active (graded): at the cap
    z[2, [1, 3, 5]] = 1.0  # three active: above the cap, so the full scatter is used
    cap = N_IN if max_active is None else max_active
    within = z[(z != 0).sum(axis=1) <= cap]  # samples the event-driven path handles alone

    def dense_matrix(w):
        return jnp.zeros((N_IN, N_OUT)).at[np.arange(N_IN)[:, None], POST_INDEX].add(w)

    def loss(w, zz):
        return jnp.sum(op.apply(w, zz) ** 2)

    def dense_loss(w, zz):
        return jnp.sum((zz @ dense_matrix(w)) ** 2)

    @jax.jit
    def run(W, z, within):
        return {
            "batch": op.apply(W, z),  # overflow in one sample: fallback for all
            "within": op.apply(W, within),  # event-driven path
            "per_sample": jax.vmap(lambda zb: op.apply(W, zb[None])[0])(z),
            "stacked": jax.vmap(op.apply, in_axes=(0, None))(jnp.stack([W, 2.0 * W]), z),
            "active": op._scatter_active(W, within) if max_active else op.apply(W, within),
            "grads": [jax.grad(f)(W, zz) for zz in (z, within) for f in (loss, dense_loss)],
        }

    out = run(W, jnp.asarray(z), jnp.asarray(within))
    tol = {"rtol": 1e-5, "atol": 1e-6}
    np.testing.assert_allclose(np.asarray(out["batch"]), z @ D, **tol)
    np.testing.assert_allclose(np.asarray(out["within"]), within @ D, **tol)
    np.testing.assert_allclose(np.asarray(out["per_sample"]), z @ D, **tol)
    np.testing.assert_allclose(np.asarray(out["stacked"][1]), 2.0 * (z @ D), **tol)
    np.testing.assert_allclose(np.asarray(out["active"]), within @ D, **tol)
    g_z, g_z_dense, g_within, g_within_dense = (np.asarray(g) for g in out["grads"])
    np.testing.assert_allclose(g_z, g_z_dense, **tol)
    np.testing.assert_allclose(g_within, g_within_dense, **tol)
    assert np.abs(g_within).sum() > 0


def all_ops():
    ops = {
        "dense": (Dense(gain=1.0), N_IN, N_OUT),
        "dense_sign": (Dense(sign=[1, -1, 1, -1, 1, 1, -1]), N_IN, N_OUT),
        "dense_sign_scalar": (Dense(sign=-1), N_IN, N_OUT),
        "elementwise": (ElementWise(init_value=0.7), N_OUT, N_OUT),
        "bias": (Bias(), 1, N_OUT),
    }
    ops.update({k: (v, N_IN, N_OUT) for k, v in sparse_ops().items()})
    return ops


@pytest.mark.parametrize("name", list(all_ops()))
def test_outer_pre_factor_and_to_params_agree_with_autodiff(name):
    op, n_in, n_out = all_ops()[name]
    op.check_sizes(n_in, n_out, "test")
    W = draw(op, n_in, n_out, seed=2)  # random signs: Dale's |W| is exercised on both sides
    rng = np.random.default_rng(11)
    z = (rng.random((B, n_in)) < 0.6) * rng.normal(1.0, 0.3, (B, n_in))
    if isinstance(op, Bias):
        z = np.ones((B, 1))  # a bias reads the constant signal (see the Bias test below)
    z = jnp.asarray(z, jnp.float32)
    post = jnp.asarray(rng.normal(size=(B, n_out)), jnp.float32)
    x = jnp.asarray(rng.normal(size=(B, n_out)), jnp.float32)

    @jax.jit
    def quantities(W, z, post, x):
        return {
            "outer": op.outer(W, z, post),
            # outer(W, pre, post) = d/dW sum_b <post_b, op(W, pre_b)>.
            "grad": jax.grad(lambda w: jnp.sum(post * op.apply(w, z)))(W),
            "pre_factor": jnp.broadcast_to(op.pre_factor(W, z), (B, *W.shape)),
            "J": jax.jacobian(lambda w: op.apply(w, z))(W),  # (B, n_out, *W.shape)
            "J1": jax.jacobian(lambda w: op.apply(w, jnp.ones((1, n_in))))(W)[0],
            "to_params": jnp.broadcast_to(op.to_params(x), (B, *W.shape)),
        }

    q = {k: np.asarray(v, np.float64) for k, v in quantities(W, z, post, x).items()}
    tol = {"rtol": 1e-5, "atol": 1e-6}
    np.testing.assert_allclose(q["outer"], q["grad"], **tol)
    # pre_factor: d u_post(p) / d w_p per sample; each weight reaches exactly one neuron, so
    # it is the Jacobian summed over the postsynaptic axis.
    np.testing.assert_allclose(q["pre_factor"], q["J"].sum(axis=1), **tol)
    # to_params lays a per-postsynaptic array out per weight entry: x[b, post(p)].
    mask = (q["J1"] != 0).astype(np.float64)  # (n_out, *W.shape): the neuron each w_p reaches
    np.testing.assert_array_equal(mask.sum(axis=0), 1.0)
    np.testing.assert_allclose(q["to_params"], np.tensordot(np.asarray(x), mask, (1, 0)), **tol)


def test_elementwise_and_bias_by_hand():
    z = jnp.array([[1.0, 0.0, 2.0], [0.5, 1.0, 0.0]])
    w = jnp.array([2.0, -1.0, 0.5])
    np.testing.assert_allclose(np.asarray(ElementWise().apply(w, z)), [[2, 0, 1], [1, -1, 0]])
    np.testing.assert_allclose(np.asarray(Bias().apply(w, z[:, :1])), [[2, -1, 0.5]] * 2)
    # A bias's outer product weights the postsynaptic factor by its (filtered) constant input.
    pre = jnp.array([[0.5], [2.0]])
    post = jnp.array([[1.0, 2.0, 3.0], [-1.0, 0.0, 1.0]])
    np.testing.assert_allclose(np.asarray(Bias().outer(w, pre, post)), [-1.5, 1.0, 3.5])
    assert np.all(np.asarray(ElementWise(init_value=0.3).init(None, 3, 3, jnp.float32)) == 0.3)
    assert np.all(np.asarray(Bias().init(None, 1, 4, jnp.float32)) == 0.0)


@pytest.mark.parametrize(
    ("op", "table"),
    [
        (Dense(sign=[1, -1, 1, -1, 1, 1, -1]), None),
        (Dense(sign=1), None),
        (FixedInDegree(pre_index=PRE_INDEX, sign=[1, -1, 1, 1, -1, 1, -1]), "fixed_in"),
        (FixedInDegree(pre_index=PRE_INDEX, sign=-1.0), "fixed_in"),
    ],
)
def test_dale_sign_fixes_effective_signs_and_gradients_flow_through_abs(op, table):
    op.check_sizes(N_IN, N_OUT, "test")
    W0 = draw(op, magnitudes=True)
    signs = np.asarray(op._signs(N_IN))
    sign_of_entry = signs[:, None] * np.ones(W0.shape) if table is None else signs[PRE_INDEX]

    def effective(W):
        if table is None:
            return np.asarray(op.apply(W, jnp.eye(N_IN)))  # rows of the effective matrix
        return dense_of(op, W, N_IN, N_OUT)[PRE_INDEX, np.arange(N_OUT)[:, None]]

    z = jnp.asarray(spikes(3))
    target = jnp.asarray(np.random.default_rng(1).normal(size=(B, N_OUT)) * 5, jnp.float32)

    def loss(W):
        return jnp.sum((op.apply(W, z) - target) ** 2)

    W = W0 - 0.3 * draw(op, seed=4)  # some raw entries < 0
    assert np.any(np.asarray(W) < 0)
    grad = jax.jit(jax.grad(loss))
    g = grad(W)
    # Chain rule through sign * |W|: dL/dW = sign * sign(W) * dL/dE at the entry W reaches.
    E = dense_of(op, W, N_IN, N_OUT) if table else np.abs(W) * signs[:, None]
    g_eff = np.asarray(jax.grad(lambda E: jnp.sum((z @ E - target) ** 2))(jnp.asarray(E)))
    if table is not None:
        g_eff = g_eff[PRE_INDEX, np.arange(N_OUT)[:, None]]
    want = sign_of_entry * np.sign(np.asarray(W)) * g_eff
    np.testing.assert_allclose(np.asarray(g), want, rtol=1e-4, atol=1e-4)
    assert np.abs(np.asarray(g)).sum() > 0
    # Large gradient steps flip the sign of raw weights but never of effective ones.
    for _ in range(5):
        W = W - 0.5 * grad(W)
        eff = effective(W)
        assert np.all(np.sign(eff[eff != 0]) == sign_of_entry[eff != 0])
    assert np.any(np.sign(np.asarray(W)) < 0)


def test_init_shapes_scales_and_dale_magnitudes():
    key = jax.random.PRNGKey(0)
    W = Dense(gain=2.0).init(key, 400, 16, jnp.float32)
    assert W.shape == (400, 16) and abs(float(W.std()) - 2.0 / 20.0) < 0.01
    W = Dense(sign=[1, -1] * 200, gain=2.0).init(key, 400, 16, jnp.float32)
    assert np.all(np.asarray(W) >= 0)  # magnitudes; the sign comes from `sign`
    op = FixedInDegree(pre_index=np.tile(np.arange(100), (16, 1)), sign=-1)
    W = op.init(key, 100, 16, jnp.float32)
    assert W.shape == (16, 100) and np.all(np.asarray(W) >= 0)
    assert abs(float(W.std()) * np.sqrt(1 - 2 / np.pi) ** -1 - 0.1) < 0.01  # |N(0, 1/K)|


def test_random_constructors_draw_distinct_partners_reproducibly():
    key = jax.random.PRNGKey(9)
    a = FixedInDegree.random(key, 20, 6, degree=5)
    b = FixedInDegree.random(key, 20, 6, degree=5)
    np.testing.assert_array_equal(a.pre_index.array, b.pre_index.array)
    assert a.pre_index.array.shape == (6, 5)
    assert all(len(set(row)) == 5 for row in a.pre_index.array.tolist())
    assert a.pre_index.array.min() >= 0 and a.pre_index.array.max() < 20
    c = FixedOutDegree.random(key, 6, 20, degree=4)
    assert c.post_index.array.shape == (6, 4) and c.n_out == 20
    assert all(len(set(row)) == 4 for row in c.post_index.array.tolist())


def test_fixed_out_degree_with_inferred_n_out_is_sized_by_the_network_not_mutated():
    # n_out inferred from the largest index (2) is smaller than the target population (5):
    # the network uses a sized copy; the user's op is left as it was.
    op = FixedOutDegree(post_index=np.array([[0, 2], [1, 2]]))
    assert op.n_out == 3
    net = Network({"x": 2}, {"h": Population(LIF(), 5)}, [Projection("x", "h", op)])
    assert op.n_out == 3 and net.projections[0].op.n_out == 5
    params = {p.name: draw(p.op, p.n_in, p.n_out) for p in net.projections}
    res = net.simulate(params, net.init_state(1), jnp.ones((2, 1, 2)))
    assert res.record["h"]["spike"].shape == (2, 1, 5)


def test_ops_are_rank_promotion_clean_inside_a_network():
    # conftest sets jax_numpy_rank_promotion="raise": every op must broadcast explicitly.
    net = Network(
        {"x": 4},
        {"h": Population(LIF(), 4), "k": Population(LIF(), 3)},
        [
            Projection("x", "h", ElementWise(init_value=2.0)),
            Projection("x", "h", Bias(), name="bias"),
            Projection("x", "k", Sparse.from_edges([0, 3, 1], [2, 0, 2], n_out=3)),
            Projection(
                "h", "k", FixedOutDegree.random(jax.random.PRNGKey(0), 4, 3, 2, max_active=1)
            ),
            Projection("k", "h", FixedInDegree(np.array([[0], [1], [2], [0]]), sign=-1), delay=1),
        ],
    )
    params = {p.name: draw(p.op, p.n_in, p.n_out) for p in net.projections}
    res = net.simulate(params, net.init_state(2), jnp.ones((5, 2, 4)))
    assert res.record["h"]["spike"].shape == (5, 2, 4)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: Dense(sign=0.5), r"`sign` of Dense must be \+1, -1"),
        (lambda: Dense(sign=[1, 0, -1]), r"`sign` of Dense must be \+1, -1"),
        (lambda: Dense(sign="excitatory"), r"`sign` of Dense"),
        (lambda: Dense(gain=-1.0), r"`gain` must be non-negative"),
        (lambda: FixedInDegree(pre_index=PRE_INDEX, sign=2), r"`sign` of FixedInDegree"),
        (lambda: FixedInDegree(), r"needs `pre_index`"),
        (lambda: FixedInDegree(pre_index=[0, 1]), r"`pre_index` must be an integer array"),
        (lambda: FixedInDegree(pre_index=[[0.0, 1.0]]), r"`pre_index` must be an integer array"),
        (lambda: FixedInDegree(pre_index=[[0, -1]]), r"`pre_index` of FixedInDegree must hold"),
        (lambda: FixedInDegree.random(jax.random.PRNGKey(0), 4, 2, 5), r"`degree` must lie in"),
        (lambda: FixedOutDegree(), r"needs `post_index`"),
        (lambda: FixedOutDegree(post_index=[[0, 5]], n_out=5), r"`post_index` of .* \[0, 5\)"),
        (lambda: FixedOutDegree(post_index=[[-2, 1]]), r"`post_index` of FixedOutDegree"),
        (lambda: FixedOutDegree(post_index=[[0, 1]], max_active=0), r"`max_active` must be"),
        (lambda: FixedOutDegree.random(jax.random.PRNGKey(0), 4, 2, 3), r"`degree` must lie"),
        (lambda: Sparse.from_edges([0, 1], [0], n_out=2), r"`pre` and `post` must be 1-D"),
        (lambda: Sparse.from_edges([0, 1], [0, 2], n_out=2), r"`post` of Sparse .* \[0, 2\)"),
        (lambda: Sparse.from_edges([0, -1], [0, 1], n_out=2), r"`pre` of Sparse must hold"),
        (lambda: Sparse.from_edges([0.5, 1.0], [0, 1], n_out=2), r"`pre` must be an integer"),
        (lambda: Sparse.from_edges([0, 1], [0, 1], n_out=0), r"`n_out` must be a positive"),
    ],
)
def test_bad_op_arguments_raise_naming_the_argument(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize(
    ("op", "match"),
    [
        (Dense(sign=[1, -1]), r"`sign` of projection 0 \('x' -> 'h'\) must be .* 4 entries"),
        (FixedInDegree(pre_index=[[0], [1], [2]]), r"`pre_index` of projection 0 .* 3 rows"),
        (FixedInDegree(pre_index=[[0], [1], [2], [3], [4]]), r"`pre_index` .* in \[0, 4\)"),
        (
            FixedInDegree(pre_index=[[0], [1], [2], [3], [0]], sign=[1, -1]),
            r"`sign` of projection 0",
        ),
        (FixedOutDegree(post_index=[[0], [1], [2]]), r"`post_index` .* 3 rows; the source has 4"),
        (FixedOutDegree(post_index=[[0], [1], [2], [3]], n_out=7), r"`n_out` of .* is 7"),
        (Sparse.from_edges([0, 4], [0, 1], n_out=5), r"`pre` of projection 0 .* \[0, 4\)"),
        (Sparse.from_edges([0, 1], [0, 1], n_out=3), r"`n_out` of projection 0 .* is 3"),
        (ElementWise(), r"ElementWise in projection 0 .* n_in=4, n_out=5"),
    ],
)
def test_size_mismatches_raise_when_the_network_is_built(op, match):
    with pytest.raises(ValueError, match=match):
        Network({"x": 4}, {"h": Population(LIF(), 5)}, [Projection("x", "h", op)])


# ------------------------------------------------------------------------------------------
# Event-driven forward: the gather of active rows equals the all-rows op, in value and in
# every derivative, on both sides of its capacity (max_active=2 of N_IN=7 neurons).

SIGN = [1, -1, 1, 1, -1, 1, -1]


def event_ops():
    """Ops with the event path (capacity 2) and the method that runs it alone."""
    return {
        "dense": (Dense(max_active=2), "_rows"),
        "dense_sign": (Dense(sign=SIGN, max_active=2), "_rows"),
        "csr": (CSR.from_edges(EDGES_PRE, EDGES_POST, N_IN, N_OUT, max_active=2), None),
        "csr_sign": (
            CSR.from_edges(EDGES_PRE, EDGES_POST, N_IN, N_OUT, sign=SIGN, max_active=2),
            None,
        ),
        "fixed_out": (
            FixedOutDegree(post_index=POST_INDEX, n_out=N_OUT, max_active=2),
            "_scatter_active",
        ),
    }


def event_signals():
    """``within``: at most 2 neurons active in the whole batch (graded values, so that the
    gathered signal's value matters); ``over``: 3 in one sample, 4 in the batch."""
    within = np.zeros((B, N_IN))
    within[0, 2], within[1, 5], within[2, [2, 5]] = 1.0, -0.5, (1.5, 1.0)
    over = np.zeros((B, N_IN))
    over[0, [1, 3, 6]], over[1, 0], over[2, 3] = (1.0, 0.7, 1.0), 1.0, 2.0
    return within, over


@pytest.mark.parametrize("name", list(event_ops()))
def test_event_path_equals_all_rows_values_grads_and_jvps(x64, name):
    op, branch = event_ops()[name]
    ref = op.replace(max_active=None)  # the same op, every row every step
    rng = np.random.default_rng(5)
    W = jnp.asarray(rng.normal(size=op.weight_shape(N_IN, N_OUT)))  # both signs: Dale's |W|
    dW = jnp.asarray(rng.normal(size=W.shape))
    dz = jnp.asarray(rng.normal(size=(B, N_IN)))  # silent neurons' tangents too
    c = jnp.asarray(rng.normal(size=(B, N_OUT)))

    @jax.jit
    def quantities(W, z):
        out = {}
        for key, o in (("event", op), ("ref", ref)):
            out[key] = {
                "value": o.apply(W, z),
                "grad": jax.grad(
                    lambda w, zz, o=o: jnp.sum(c * jnp.sin(o.apply(w, zz))), argnums=(0, 1)
                )(W, z),
                # forward mode, as the tracers' linearised steps use it
                "jvp_w": jax.jvp(lambda w, o=o: o.apply(w, z), (W,), (dW,))[1],
                "jvp_z": jax.jvp(lambda zz, o=o: o.apply(W, zz), (z,), (dz,))[1],
            }
        return out

    for z in event_signals():
        q = quantities(W, jnp.asarray(z))
        flat_e, flat_r = jax.tree_util.tree_leaves(q["event"]), jax.tree_util.tree_leaves(q["ref"])
        for a, b in zip(flat_e, flat_r, strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-12)
        # A silent neuron's signal still has a derivative (its surrogate gradient).
        silent = np.asarray(z).sum(axis=0) == 0
        assert np.abs(np.asarray(q["event"]["grad"][1])[:, silent]).sum() > 0
    # The event path alone (no fallback) computes the within-capacity batch.
    within = jnp.asarray(event_signals()[0])
    if branch is None:  # CSR: Dale's sign is applied to the signal before its event path
        alone = op._scatter_active(W, op._signed(within))
    else:
        alone = getattr(op, branch)(W, within)
    np.testing.assert_allclose(
        np.asarray(alone), np.asarray(ref.apply(W, within)), rtol=1e-12, atol=1e-12
    )


def test_dense_event_gathers_use_the_smallest_tier_that_holds_the_active_rows(x64):
    """max_active=32 of 40 rows: a gather of 8 rows, one of 32, or the full product."""
    op = Dense(sign=np.where(np.arange(40) % 3, 1.0, -1.0), max_active=32)
    ref = op.replace(max_active=None)
    assert op._capacities() == (8, 32)
    rng = np.random.default_rng(2)
    W = jnp.asarray(rng.normal(size=(40, 3)))
    zs = np.zeros((3, 2, 40))  # three batches: 5, 20 and 35 rows active in either sample
    for i, k in enumerate((5, 20, 35)):
        rows = rng.choice(40, k, replace=False)
        zs[i, 0, rows[::2]], zs[i, 1, rows[1::2]] = 1.0, 0.5

    def both(o):
        def f(W, z):
            return jnp.sum(jnp.cos(o.apply(W, z))), o.apply(W, z)

        return jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))

    event, full = both(op), both(ref)
    for z in zs:  # one compiled program, three branches taken
        (_, out), grads = event(W, jnp.asarray(z))
        (_, out_ref), grads_ref = full(W, jnp.asarray(z))
        for a, b in zip((out, *grads), (out_ref, *grads_ref), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-12)
    for cap, z in ((8, zs[0]), (32, zs[1])):
        np.testing.assert_allclose(
            np.asarray(op._rows(W, jnp.asarray(z), cap)), np.asarray(ref.apply(W, z)), atol=1e-12
        )


def test_event_auto_turns_on_for_spike_signals_and_off_for_graded_ones():
    from traxon.core import Expon, Graded, Readout
    from traxon.core.ops import auto_max_active

    n = 64
    post = np.tile([0, 1], n)
    projections = [
        Projection("x", "h", Dense()),  # an input: its values may be graded
        Projection("h", "h", Dense(), delay=1),  # spikes
        Projection("h", "g", FixedOutDegree(post_index=post.reshape(n, 2), n_out=n), name="fo"),
        Projection("g", "h", Dense(), delay=1, name="graded"),  # a rate neuron's output
        Projection("h", "g", Dense(), signal="V", name="membrane"),  # a state variable
        Projection("h", "g", Dense(), synapse=Expon(5.0), align="pre", name="trace"),
        Projection("h", "g", Dense(), event="off", name="opted_out"),
        Projection("h", "g", Dense(max_active=3), name="own"),  # the caller's capacity
        # measured slower with its gather on the CPU: left as given
        Projection("h", "g", CSR.from_edges(np.repeat(np.arange(n), 2), post, n, n)),
        Projection("h", "g", FixedInDegree(pre_index=np.zeros((n, 1), int)), name="fixed_in"),
    ]
    pops = {"h": Population(LIF(), n), "g": Population(Graded(), n)}
    # ceil(fraction * 64); the readout (2 outputs) is too narrow for Dense to gather
    assert auto_max_active(Dense(), n, n) == 16 and auto_max_active(Dense(), n, 2) is None
    assert auto_max_active(projections[2].op, n, n) == 7
    on = {"h->h": 16, "fo": 7, "own": 3}
    for event, expected in (("auto", on), ("off", {"own": 3})):
        net = Network(n, pops, projections, readout=Readout("h", 2), event=event)
        got = {
            p.name: getattr(p.op, "max_active", None)
            for p in net.projections
            if getattr(p.op, "max_active", None) is not None
        }
        assert got == expected, event
    assert net.rebuild(event="auto").spec["event"] == "auto"
    with pytest.raises(ValueError, match=r"`event` must be 'auto' .* or 'off'; got 'on'"):
        Network(n, pops, projections, event="on")
    with pytest.raises(ValueError, match=r"`event` must be 'auto' .* got True"):
        Projection("h", "g", event=True)  # type: ignore[arg-type]
    assert auto_max_active(Dense(), 1, 100) is None  # a capacity of every neuron saves nothing
    assert auto_max_active(ElementWise(), 100, 100) is None  # no event path


@pytest.mark.slow  # four compiled gradient programs: ~10 s of CPU
def test_network_gradients_through_the_event_path_equal_the_all_rows_ones(x64):
    """BPTT through a scan and es_d_rtrl's online gradient are the same with event-driven
    recurrent Dense and CSR ops (both paths taken over the sequence) as without."""
    from tests.helpers import run_tracer
    from traxon.core import Expon, Readout
    from traxon.learn import cross_entropy
    from traxon.trace import bptt_gradient

    n, n_in, T = 16, 4, 12
    pre = np.repeat(np.arange(n), 3)
    post = np.random.default_rng(0).integers(0, n, pre.size)

    def build(max_active):
        return Network(
            n_in,
            {"h": Population(LIF(), n)},
            [
                Projection("x", "h", Dense(gain=3.0), synapse=Expon(5.0)),
                Projection("h", "h", Dense(max_active=max_active), synapse=Expon(5.0), delay=1),
                Projection(
                    "h", "h", CSR.from_edges(pre, post, n, n, max_active=max_active), delay=1
                ),
            ],
            readout=Readout("h", 2, tau=10.0),
        )

    event, full = build(4), build(None)
    params, state = event.init(jax.random.PRNGKey(0), batch_size=3, dtype=jnp.float64)
    rng = np.random.default_rng(1)
    xs = jnp.asarray(rng.random((T, 3, n_in)) < 0.5, jnp.float64)
    ts = jnp.asarray(rng.integers(0, 2, (T, 3)))
    ws = jnp.full((T, 3), 1.0 / 3)
    spikes = np.asarray(event.simulate(params, state, xs).record["h"]["spike"])
    union = (spikes.sum(axis=1) > 0).sum(axis=1)  # neurons active in the batch, per step
    assert union.min() <= 4 < union.max()  # both the event path and its fallback ran
    np.testing.assert_array_equal(spikes, full.simulate(params, state, xs).record["h"]["spike"])
    for net_grads in (
        lambda net: bptt_gradient(net, cross_entropy.fn, params, state, {"x": xs}, ts, ws)[0],
        lambda net: run_tracer("es_d_rtrl", net, params, state, {"x": xs}, ts, ws),
    ):
        g_event, g_full = net_grads(event), net_grads(full)
        for k in g_full:
            np.testing.assert_allclose(g_event[k], g_full[k], rtol=1e-10, atol=1e-12)


def run_event_benchmark(monkeypatch, capsys, *args):
    """``benchmarks/event_forward.py --smoke *args`` in this process (no new JAX start):
    its JSON lines, checked to be well formed -- a machine line, result lines with the
    common fields, a summary -- and every event-driven variant to compute what the
    all-rows op computes. No timing is asserted."""
    import importlib
    import json
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(bench))
    script = importlib.import_module("event_forward")
    script.main(["--smoke", *args])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert "machine" in lines[0] and lines[-1]["summary"]
    rows = [line for line in lines if "algorithm" in line]
    fields = ("algorithm", "N", "T", "B", "per_step_ms", "compiled_bytes", "ratio_vs_forward")
    assert all(all(f in row for f in fields) for row in rows)
    assert max(r["auto_max_abs_diff"] for r in rows) < 1e-4
    return script, rows


def test_event_forward_benchmark_smoke(monkeypatch, capsys):
    script, rows = run_event_benchmark(monkeypatch, capsys, "--fractions", "0.5")
    assert {(r["op"], r["firing"]) for r in rows} == {
        (op, f) for op in script.OPS for f in script.RATES
    }
    assert all("ratio_cap0.5" in r for r in rows)


@pytest.mark.slow  # compiles an es_d_rtrl tracer twice
def test_event_forward_benchmark_smoke_network_rows(monkeypatch, capsys):
    _, rows = run_event_benchmark(monkeypatch, capsys, "--ops", "dense", "--network")
    assert {r["algorithm"] for r in rows if r["op"] == "network"} == {"forward", "es_d_rtrl"}


def test_dense_outer_sq_norm_from_the_gram_matrices(x64):
    # ||preᵀ post||² from the two K x K Gram matrices, without the outer product; Dale-signed
    # weights mask the product entry by entry and have no shortcut.
    rng = np.random.default_rng(0)
    pre, post = rng.normal(size=(5, 7)), rng.normal(size=(5, 4))
    W = jnp.zeros((7, 4), jnp.float64)
    op = Dense()
    assert op.outer_sq_norm(W, pre, post) == pytest.approx(
        float(jnp.sum(op.outer(W, pre, post) ** 2)), rel=1e-12
    )
    assert Dense(sign=1).outer_sq_norm(W, pre, post) is None
    assert FixedOutDegree.random(jax.random.PRNGKey(0), 7, 4, 2).outer_sq_norm(W, pre, post) is None
