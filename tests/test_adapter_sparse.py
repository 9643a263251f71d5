"""brainevent / brainstate sparse connectivity in brainpy.state networks, through the adapter.

The networks are written as brainpy.state's examples write them (an E/I network whose
excitatory and inhibitory cells project through ``EventFixedProb``, as in brainevent's
``examples/COBA_2005.py``; ``FixedNumConn``; ``SparseLinear``), unchanged for traxon. Each
sparse weight is mapped onto traxon's CSR op; traxon's BPTT equals brainstate's own gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from packaging.version import Version

pytest.importorskip("brainpy.state")  # the optional extra; the rest are core

import brainevent

import traxon
from tests._bp_networks import bps, brainstate, braintools, u
from tests.helpers import assert_steps_compile_once, rate_task_losses, rel_error, spike_data
from tests.test_adapter import N_IN, Single, brainstate_bptt, match
from traxon.adapters import adapt
from traxon.adapters._sparse import SparseConn
from traxon.core import CSR
from traxon.diagnostics import compare
from traxon.learn import cross_entropy
from traxon.trace import bptt_gradient, get_algorithm

B, T = 3, 30
N_EXC, N_INH = 16, 4
N = N_EXC + N_INH
# brainevent's event array: `BinaryArray` (older releases call it `EventArray`, now deprecated).
BinaryArray = getattr(brainevent, "BinaryArray", None) or brainevent.EventArray


@pytest.fixture(autouse=True)
def environment():
    brainevent.config.set_backend("cpu", "jax_raw")  # the reference runs brainevent's kernels
    brainstate.random.seed(0)
    with brainstate.environ.context(dt=1.0 * u.ms):
        yield


def cuba(n, comm, post, tau=5.0):
    return bps.AlignPostProj(
        comm=comm, syn=bps.Expon.desc(n, tau=tau * u.ms), out=bps.CUBA.desc(scale=u.volt), post=post
    )


def sparse_matrix(n_pre, n_post, mean, seed, prob=0.3):
    rng = np.random.default_rng(seed)
    mask = rng.random((n_pre, n_post)) < prob
    return jnp.asarray(mask * rng.normal(mean, 0.1 * abs(mean), (n_pre, n_post))) * u.mS


def connections(kind):
    """The E and I projections' ``comm`` of each network, as brainpy.state users write them."""
    if kind == "event_fixed_prob":  # one weight per connection
        return (
            brainstate.nn.EventFixedProb(
                N_EXC, N, conn_num=0.25, conn_weight=braintools.init.Normal(0.5 * u.mS, 0.05 * u.mS)
            ),
            brainstate.nn.EventFixedProb(
                N_INH, N, conn_num=0.25, conn_weight=braintools.init.Constant(-1.0 * u.mS)
            ),
        )
    if kind == "event_fixed_prob_homogeneous":  # COBA_2005.py's form: one shared conductance
        return (
            brainstate.nn.EventFixedProb(N_EXC, N, conn_num=0.25, conn_weight=0.2 * u.siemens),
            brainstate.nn.EventFixedProb(N_INH, N, conn_num=0.25, conn_weight=0.4 * u.siemens),
        )
    if kind == "fixed_num_conn":  # float spikes: brainevent's float kernel
        return (
            brainstate.nn.FixedNumConn(
                N_EXC, N, conn_num=0.25, conn_weight=braintools.init.Normal(0.5 * u.mS, 0.05 * u.mS)
            ),
            brainstate.nn.FixedNumConn(N_INH, N, conn_num=0.25, conn_weight=-1.0 * u.mS),
        )
    if kind == "fixed_num_conn_csr":  # afferent_ratio < 1: brainevent.CSR
        return (
            brainstate.nn.FixedNumConn(
                N_EXC,
                N,
                conn_num=0.25,
                conn_weight=braintools.init.Normal(0.5 * u.mS, 0.05 * u.mS),
                afferent_ratio=0.7,
                seed=3,
            ),
            brainstate.nn.EventFixedProb(
                N_INH,
                N,
                conn_num=0.25,
                conn_weight=braintools.init.Constant(-1.0 * u.mS),
                afferent_ratio=0.7,
                seed=4,
            ),
        )
    if kind.startswith("sparse_linear"):  # E: a CSR matrix, I: a CSC (brainunit: a COO) one
        exc, inh = {
            "sparse_linear": (brainevent.CSR, brainevent.CSC),
            "sparse_linear_brainunit": (u.sparse.CSR, u.sparse.COO),
            "sparse_linear_reference": (brainevent.CSR, brainevent.CSR),
        }[kind]
        return (
            brainstate.nn.SparseLinear(exc.fromdense(sparse_matrix(N_EXC, N, 0.5, 1))),
            brainstate.nn.SparseLinear(inh.fromdense(sparse_matrix(N_INH, N, -1.0, 2))),
        )
    raise KeyError(kind)


def coba(n, comm, post, E, tau=5.0):
    return bps.AlignPostProj(
        comm=comm, syn=bps.Expon.desc(n, tau=tau * u.ms), out=bps.COBA.desc(E=E), post=post
    )


class ExcInh(Single):
    """An E/I network: test_adapter's :class:`Single` (``n`` LIF cells, a dense input, a leaky
    readout) whose first ``n_exc`` cells (E) and the others (I) project onto all cells through
    ``exc`` and ``inh`` (last step's spikes; conductance-based with the ``reversal`` potentials
    of E and I, as in brainevent's COBA example, current-based without)."""

    def __init__(self, exc, inh, n=N, n_exc=N_EXC, reversal=None):
        super().__init__(n, 40.0, tau=20)
        self.n_exc = n_exc
        if reversal is None:
            self.E = cuba(n, exc, self.neu)
            self.I = cuba(n, inh, self.neu, tau=10.0)
        else:
            self.E = coba(n, exc, self.neu, E=reversal[0])
            self.I = coba(n, inh, self.neu, E=reversal[1], tau=10.0)

    def update(self, x):
        spk = self.neu.get_spike()
        self.E(spk[:, : self.n_exc])
        self.I(spk[:, self.n_exc :])
        return super().update(x)


KINDS = [
    "event_fixed_prob",
    "event_fixed_prob_homogeneous",
    "fixed_num_conn",
    "fixed_num_conn_csr",
    "sparse_linear",
    "sparse_linear_brainunit",
]
# brainunit's CSR and COO gradients are wrong before brainunit 0.6 (test below): there that
# network's reference is the same network with brainevent's CSR (same matrices, entries in
# the same row-major order); from 0.6 on, brainstate's own gradient of it.
BRAINUNIT_SPARSE_GRAD_RIGHT = Version(u.__version__) >= Version("0.6")
REFERENCE = (
    {} if BRAINUNIT_SPARSE_GRAD_RIGHT else {"sparse_linear_brainunit": "sparse_linear_reference"}
)
HOMOGENEOUS = {"event_fixed_prob_homogeneous": ["E", "I"], "fixed_num_conn": ["I"]}


def build(kind, batch=B):
    """The network of ``kind``; the same weights and connectivity at every build (brainstate's
    generator draws the weights, NumPy's global one a FixedNumConn's indices)."""
    brainstate.random.seed(0)
    np.random.seed(0)  # noqa: NPY002  (FixedNumConn draws its indices from the global one)
    exc, inh = connections(kind)
    coba_form = kind == "event_fixed_prob_homogeneous"  # conductance-based, as COBA_2005.py
    module = ExcInh(exc, inh, reversal=(5.0 * u.mV, -5.0 * u.mV) if coba_form else None)
    brainstate.nn.init_all_states(module, batch_size=batch)
    return module


def data(steps=T, batch=B, seed=1):
    return spike_data(steps, batch, N_IN, seed)


def sparse_weights(net):
    return {p.name.split(".")[0]: p for p in net.projections if p.op.kind == "fixed"}


# -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_sparse_layers_attach_as_traxon_csr(kind):
    """Attached as written; each sparse weight is one traxon CSR op, event-driven in the
    forward pass, with one trainable scalar for a homogeneous weight."""
    net = adapt(build(kind), input_size=N_IN)
    sparse = sparse_weights(net)
    assert sorted(sparse) == ["E", "I"]
    a = net.analysis(B)
    for prefix, proj in sparse.items():
        assert (proj.source, proj.delay, proj.target) == ("neu", 1, "neu")
        conn = a.ops[proj.name].fixed
        assert isinstance(conn, SparseConn) and isinstance(conn.op, CSR)
        assert conn.op.max_active is not None and conn.op.max_active < conn.op.n_in
        homogeneous = prefix in HOMOGENEOUS.get(kind, [])
        assert conn.homogeneous == homogeneous
        assert (net.weight_shapes[proj.name] == ()) == homogeneous
        assert proj.op.param_traces == (not homogeneous)


def reference(kind, xs, ts, ws):
    """brainstate's gradient over its own for_loop (see ``REFERENCE``)."""
    return brainstate_bptt(build(REFERENCE.get(kind, kind)), xs, ts, ws)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_bptt_equals_brainstate_and_online_rules_report_their_cosine(x64, kind, capsys):
    """traxon's BPTT equals brainstate's gradient over its own for_loop on every weight;
    es_d_rtrl and d_rtrl (not for a shared weight, which d_rtrl refuses with true advice)
    run, and ``traxon.diagnostics.compare`` reports their per-weight cosine."""
    with brainstate.environ.context(precision=64):
        xs, ts, ws = data()
        xs, ws = xs.astype(jnp.float64), ws.astype(jnp.float64)
        ref = reference(kind, xs, ts, ws)
        net = adapt(build(kind), input_size=N_IN)
        params, state = net.init(None, B, dtype=jnp.float64)
        spikes = net.simulate(params, state, xs).record["neu"]["spike"]
        assert float(spikes.sum()) > 20, kind
        ours, _ = bptt_gradient(net, cross_entropy.fn, params, state, {"x": xs}, ts, ws)
        rules = ["es_d_rtrl"] if kind in HOMOGENEOUS else ["es_d_rtrl", "d_rtrl"]
        table = compare(net, xs, ts, algorithms=rules)
        if kind in HOMOGENEOUS:
            with pytest.raises(ValueError, match=r"d_rtrl needs to know.*es_d_rtrl"):
                get_algorithm("d_rtrl").bind(net, cross_entropy.fn)
    assert set(ours) == set(params)
    for name, g in ours.items():
        r = match(ref, name)
        assert g.shape == r.shape, name
        assert np.linalg.norm(r) > 0, name
        assert rel_error(g, r) < 1e-6, (name, rel_error(g, r))
    rows = table.rows
    assert {r["algorithm"] for r in rows} == set(rules)
    assert len(rows) == len(rules) * len(params)
    for r in rows:
        assert np.isfinite(r["cosine"]), r
    with capsys.disabled():
        print(
            f"\n{kind}: "
            + ", ".join(f"{r['algorithm']} {r['weight']} {r['cosine']:.3f}" for r in rows)
        )


def test_no_recompilation_on_the_second_step():
    """A shared weight (a weak-typed scalar in the module) recompiled at the second step."""
    module = build("event_fixed_prob_homogeneous", batch=2)
    assert_steps_compile_once(module, N_IN)


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind,algorithm",
    [("event_fixed_prob", "d_rtrl"), ("event_fixed_prob_homogeneous", "es_d_rtrl")],
)
def test_short_training_lowers_the_loss(kind, algorithm):
    module = build(kind, batch=8)
    unit = u.get_unit(module.E.comm.weight.value)
    before = np.asarray(u.get_mantissa(module.E.comm.weight.value))
    learner = traxon.online_learner(
        module, algorithm, optax.adam(1e-2), update_every=10, input_size=N_IN
    )
    first, last = rate_task_losses(learner, 200, N_IN)
    assert last < first * 0.8, (kind, first, last)
    # The module holds the trained sparse weights, units restored.
    w = module.E.comm.weight.value
    assert u.get_unit(w) == unit
    assert not np.allclose(np.asarray(u.get_mantissa(w)), before)
    name = next(p.name for p in learner.net.projections if p.name.startswith("E."))
    np.testing.assert_allclose(u.get_mantissa(w), np.asarray(learner.params[name]), rtol=1e-6)


# -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["CSR", "COO"])
def test_brainunit_sparse_gradient_is_wrong_before_0_6(fmt):
    """The gradient of ``x @ m`` in the entries of a ``brainunit.sparse`` CSR or COO matrix
    ``m`` (``csr_matmat``/``coo_matmat``, transposed) is wrong in brainunit 0.5 (the
    battery's reference for that network is then the same matrices in brainevent's CSR) and
    right in 0.6; traxon's is the true one in both."""
    rng = np.random.default_rng(0)
    dense = (rng.random((4, 6)) < 0.4) * rng.normal(size=(4, 6))
    m = getattr(u.sparse, fmt).fromdense(jnp.asarray(dense))
    x = jnp.asarray(rng.random((2, 4)))
    c = jnp.asarray(rng.normal(size=(2, 6)))
    theirs = jax.grad(lambda d: jnp.sum(c * (x @ m.with_data(d))))(m.data)
    rows, cols = np.nonzero(dense)  # the entries in the matrix's (row-major) order
    true = np.sum(np.asarray(x)[:, rows] * np.asarray(c)[:, cols], axis=0)
    assert np.allclose(np.asarray(theirs), true) == BRAINUNIT_SPARSE_GRAD_RIGHT, u.__version__
    op = CSR.from_edges(rows, cols, n_in=4, n_out=6)
    ours = jax.grad(lambda d: jnp.sum(c * op.apply(d, x)))(jnp.asarray(dense[rows, cols]))
    np.testing.assert_allclose(np.asarray(ours), true, rtol=1e-5)


class JitConn(brainstate.nn.Module):
    """A just-in-time connectivity layer (brainevent's JITC kernels), which traxon does not map."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.shape = (n_in, n_out)
        self.weight = brainstate.ParamState(jnp.asarray(0.5) * u.mS)

    def update(self, x):
        conn = brainevent.JITCScalarR((self.weight.value, 0.3, 7), shape=self.shape)
        return x @ conn


class JitNet(Single):
    """test_adapter's :class:`Single` (20 LIF cells) with a recurrent :class:`JitConn`."""

    def __init__(self):
        super().__init__(N, 40.0, tau=20)
        self.rec = cuba(N, JitConn(N, N), self.neu)

    def update(self, x):
        self.rec(self.neu.get_spike())
        return super().update(x)


def test_an_unknown_sparse_kernel_is_named_with_its_module():
    module = JitNet()
    brainstate.nn.init_all_states(module, batch_size=B)
    with pytest.raises(
        ValueError, match=r"weight `rec\.comm\.weight` \(module `rec\.comm`\).*jits"
    ):
        adapt(module, input_size=N_IN)


def test_brainevent_cpu_backend_is_chosen_only_when_numba_is_absent(monkeypatch):
    import importlib.util

    from traxon.adapters import _sparse

    numba = importlib.util.find_spec("numba") is not None
    chosen = []
    monkeypatch.setattr(brainevent.config, "get_backend", lambda platform: None)
    monkeypatch.setattr(
        brainevent.config, "set_backend", lambda platform, b: chosen.append((platform, b))
    )
    _sparse.ensure_cpu_backend()
    assert chosen == ([] if numba else [("cpu", "jax_raw")])
    # A backend the user chose is kept.
    chosen.clear()
    monkeypatch.setattr(brainevent.config, "get_backend", lambda platform: "numba")
    _sparse.ensure_cpu_backend()
    assert chosen == []


@pytest.mark.parametrize("layer", ["event_fixed_prob", "sparse_linear_event"])
def test_event_kernels_keep_brainevents_semantics(layer):
    """Evaluated through traxon's CSR op, an event kernel gives brainevent's value for any
    signal (negative and fractional values too) and brainevent's derivative in the signal."""
    from traxon.adapters import _sparse
    from traxon.adapters._graph import make_graph

    if layer == "event_fixed_prob":
        comm = brainstate.nn.EventFixedProb(
            8, 6, conn_num=0.5, conn_weight=braintools.init.Normal(0.5 * u.mS, 0.1 * u.mS)
        )
        W = u.get_mantissa(comm.weight.value)
        fixed = comm.conn

        def product(w, z):
            return u.get_mantissa(BinaryArray(z) @ fixed.with_data(w * u.mS))
    else:
        csr = brainevent.CSR.fromdense(sparse_matrix(8, 6, 0.5, 3, prob=0.5))
        W = u.get_mantissa(csr.data)

        def product(w, z):
            return u.get_mantissa(BinaryArray(z) @ csr.with_data(w * u.mS))

    z = jnp.asarray(np.random.default_rng(0).normal(size=(3, 8)) * (np.arange(8) % 3 != 0))
    g, _ = make_graph(product, W, z)
    node = next(n for n in g.nodes if _sparse.is_sparse(n))
    w_in, z_in = g.inputs[0], g.inputs[1]
    data_in = next(i for i in node.input_ids() if i in g.descendants([z_in]))
    _sparse.install(node, _sparse.read(g, node, w_in, data_in, "w", "comm"))
    ours = g.evaluate({w_in: W, z_in: z}, g.outputs)[0][0]
    np.testing.assert_allclose(np.asarray(ours), np.asarray(product(W, z)), rtol=1e-5)
    dz = jnp.ones_like(z)
    theirs_t = jax.jvp(lambda z: product(W, z), (z,), (dz,))[1]
    ours_t = jax.jvp(lambda z: g.evaluate({w_in: W, z_in: z}, g.outputs)[0][0], (z,), (dz,))[1]
    np.testing.assert_allclose(np.asarray(ours_t), np.asarray(theirs_t), rtol=1e-5)


# -------------------------------------------------------------------------------------
# Connectivity as data (issue 22): the index arrays of the mapped kernels reach the learner's
# compiled step as arguments, as traxon's own sparse ops' do.


def wired(conn_num, seed=0, n=100, n_exc=80):
    """An :class:`ExcInh` network of ``n`` cells: the E cells project through
    ``EventFixedProb`` (each onto ``conn_num`` of the cells, drawn with ``seed``), the I cells
    through a ``SparseLinear`` brainevent CSR matrix of density ``conn_num``."""
    exc = brainstate.nn.EventFixedProb(
        n_exc,
        n,
        conn_num=conn_num,
        conn_weight=braintools.init.Normal(0.5 * u.mS, 0.05 * u.mS),
        seed=seed,
    )
    inh = brainevent.CSR.fromdense(sparse_matrix(n - n_exc, n, -1.0, 2, prob=conn_num))
    return ExcInh(exc, brainstate.nn.SparseLinear(inh), n, n_exc)


def wired_learner(conn_num, seed=0):
    """An es_d_rtrl learner on a :func:`wired` module attached at batch size 1 (the learner
    runs at ``B``: the step traced at another batch size reads the same index arrays)."""
    brainstate.random.seed(0)
    module = wired(conn_num, seed)
    brainstate.nn.init_all_states(module, batch_size=1)
    return traxon.online_learner(
        module, "es_d_rtrl", optax.adam(1e-2), update_every=5, input_size=N_IN
    )


def captured_bytes(fn, *args):
    """Bytes of the constants the jitted ``fn`` captures when traced with ``args``."""
    return sum(int(getattr(c, "nbytes", 0)) for c in fn.trace(*args).jaxpr.consts)


def test_captured_constants_do_not_grow_with_connections():
    """The learner's step captures the same constants (the neurons' decay factors, no index)
    at 4x the connections; the step with the indices baked in captures them all."""
    x, ts, ws = data(steps=1)
    ours, baked, connections = [], [], []
    for conn_num in (0.1, 0.4):
        learner = wired_learner(conn_num)
        net = learner.net
        keys = net.index_arrays()
        # Every mapped kernel's indices are listed (the CSR op's, its entry order, pre, post).
        fixed = net.sparse_connectivity()
        assert [k.split(".")[0] for k in sorted(fixed)] == ["E", "I"]
        assert {id(k) for c in fixed.values() for k in c.index_arrays()} <= {id(k) for k in keys}
        connections.append(sum(c.op.post.array.size for c in fixed.values()))
        ls = learner.init(batch_size=B)
        args = (ls, x[0], ts[0], ws[0])
        ours.append(captured_bytes(learner.jit("step_fn"), learner.connectivity, *args))
        baked.append(captured_bytes(jax.jit(learner.step_fn), *args))
        # The step at B reads the index arrays read at the attached batch size.
        for name, conn in fixed.items():
            assert net.analysis(B).ops[name].fixed.pre is conn.pre
    assert connections[1] > 3 * connections[0], connections
    # What is left: brainstate's decay factors, one (B, n) float32 array per time constant.
    assert ours[0] == ours[1] and ours[0] <= 4 * B * 100 * 4, ours
    assert baked[1] - baked[0] > 4 * 3 * (connections[1] - connections[0]), baked


@pytest.mark.slow
def test_a_second_module_runs_through_the_compiled_step():
    """Another module of the same shapes (other EventFixedProb connections) runs through the
    first learner's compiled step with its own connectivity: the same numbers as its own
    learner's, other numbers than the first's."""
    la, lb = wired_learner(0.2, seed=0), wired_learner(0.2, seed=1)
    ca, cb = la.connectivity, lb.connectivity
    assert [a.shape for a in ca] == [b.shape for b in cb]
    assert any(not np.array_equal(a, b) for a, b in zip(ca, cb, strict=True))
    xs, ts, ws = data(steps=8)
    step, own = la.jit("step_fn"), lb.jit("step_fn")

    def run(fn, indices):
        ls = lb.init(batch_size=B)
        for t in range(xs.shape[0]):
            ls, _ = fn(indices, ls, xs[t], ts[t], ws[t])
        return jax.tree.leaves(ls)

    theirs, ours = run(step, cb), run(own, cb)
    first = run(step, ca)
    assert step._cache_size() == 1  # one program for both connectomes
    for got, want in zip(theirs, ours, strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert not all(
        np.array_equal(np.asarray(p), np.asarray(q)) for p, q in zip(first, theirs, strict=True)
    )
