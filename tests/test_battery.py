"""One shared battery over every registered learning rule (``traxon.trace.ALGORITHMS``).

A rule registered with ``traxon.trace.base.register`` is tested here without new tests. It
must (1) learn a toy task through ``traxon.online_learner``, (2) keep its jitted step from
recompiling, (3) keep its state's shapes and dtypes across steps, as a ``lax.scan`` carry and
through its resets, (4) give the same gradient batched, under ``jax.vmap`` and in a Python
loop over samples, and keep (5) float32 in float32 and (6) float64 in float64.

Everything runs on one tiny network (8 ALIF neurons with synaptic currents, recurrent,
leaky readout) for 24 steps. Data come from NumPy, and the layout and dtype checks only
trace (``jax.eval_shape``), so each rule costs a handful of compilations.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import traxon
from tests.helpers import rel_error
from traxon.core import ALIF, Dense, Expon, Network, Population, Projection, Readout
from traxon.learn import cross_entropy
from traxon.trace import ALGORITHMS, get_algorithm

N_IN, N_HID, N_OUT, T, B = 6, 8, 2, 24, 3
NAMES = sorted(ALGORITHMS)


def test_the_registry_holds_the_known_rules():
    assert {"bptt", "d_rtrl", "es_d_rtrl", "rtrl"} <= set(NAMES)


@pytest.fixture(scope="module")
def net():
    return Network(
        N_IN,
        {"h": Population(ALIF(tau=10.0, tau_a=100.0, beta=0.5), N_HID)},
        [
            Projection("x", "h", Dense(gain=6.0), synapse=Expon(5.0)),
            Projection("h", "h", Dense(gain=1.0), synapse=Expon(5.0), delay=1),
        ],
        readout=Readout("h", N_OUT, tau=10.0),
    )


@pytest.fixture(scope="module")
def params32(net):
    """float32 weights, also cast to float64 where a test needs them (no new random draws)."""
    return {k: np.asarray(v) for k, v in net.init_params(jax.random.PRNGKey(0)).items()}


def as_dtype(tree, dtype):
    """Float leaves cast to ``dtype``; integer leaves keep theirs."""

    def cast(a):
        floating = np.issubdtype(np.asarray(a).dtype, np.floating)
        return jnp.asarray(a, dtype if floating else None)

    return jax.tree_util.tree_map(cast, tree)


def make_data(dtype, steps=T, batch=B, seed=1):
    """Random input spikes ``(T, B, n_in)``, integer targets ``(T, B)``, loss weights of 1
    and small spike costs ``(T, B, N)``, as arrays of ``dtype`` (targets int32)."""
    rng = np.random.default_rng(seed)
    xs = {"x": (rng.random((steps, batch, N_IN)) < 0.3).astype(np.float64)}
    ts = rng.integers(0, N_OUT, (steps, batch)).astype(np.int32)
    ws = np.ones((steps, batch))
    costs = {"h": 0.05 * rng.standard_normal((steps, batch, N_HID))}
    return as_dtype((xs, ts, ws, costs), dtype)


@pytest.mark.parametrize("name", NAMES)
def test_learner_state_leaves_own_their_buffers(net, name):
    """No array appears twice in a fresh learner state: donating it (``jax.jit(learner.run,
    donate_argnums=0)``) would otherwise fail."""
    leaves = jax.tree_util.tree_leaves(traxon.online_learner(net, name).init(batch_size=B))
    assert len({id(v) for v in leaves}) == len(leaves)


def bind(name, net):
    return get_algorithm(name).bind(net, cross_entropy.fn, window=T)


def scan_run(tracer, params, state, tstate, xs, ts, ws, costs):
    """Run ``tracer.step`` over the leading (time) axis; return the final carry and outputs."""

    def body(carry, inp):
        st, tst = carry
        x, t, w, c = inp
        st, tst, out = tracer.step(params, st, tst, x, t, w, spike_cost=c)
        return (st, tst), out

    return jax.lax.scan(body, (state, tstate), (xs, ts, ws, costs))


def run_gradients(tracer, net, params, xs, ts, ws, costs):
    """Gradient of one sequence from a fresh state (the batch size is read from ``xs``)."""
    dtype = next(iter(params.values())).dtype
    state = net.init_state(xs["x"].shape[1], dtype)
    tstate = tracer.init(params, state, target_example=ts[0])
    (_, tstate), _ = scan_run(tracer, params, state, tstate, xs, ts, ws, costs)
    return tracer.gradients(params, tstate)


def aval(a):
    """``(shape, dtype)`` of an array or a ``jax.ShapeDtypeStruct``."""
    if not hasattr(a, "dtype"):
        a = jnp.asarray(a)
    return tuple(a.shape), jnp.dtype(a.dtype)


def signature(tree):
    """Structure, shapes and dtypes of a pytree (what must not change across steps)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, [aval(a) for a in leaves]


def float_dtypes(tree):
    dtypes = {aval(a)[1] for a in jax.tree_util.tree_leaves(tree)}
    return {d for d in dtypes if jnp.issubdtype(d, jnp.floating)}


def toy_batches(seed, n, steps=T, batch=8):
    """Which half of the inputs fires more? The answer is asked in the second half."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        label = rng.integers(0, N_OUT, batch)
        half = np.repeat(np.arange(2), N_IN // 2)[None]
        rates = np.where(label[:, None] == half, 0.4, 0.02)
        x = (rng.random((steps, batch, N_IN)) < rates[None]).astype(np.float32)
        y = np.broadcast_to(label, (steps, batch)).astype(np.int32)
        mask = np.zeros((steps, batch), np.float32)
        mask[steps // 2 :] = 1.0
        yield x, y, mask


# -------------------------------------------------------------------------------------
# (1) It learns.


@pytest.mark.parametrize("name", NAMES)
def test_learns_a_toy_task(net, name):
    """30 sequences, one update at the end of each, through the learner's functional core."""
    learner = traxon.online_learner(
        net, name, optax.adam(3e-2), update_every="sequence", sequence_length=T, seed=0
    )

    traces = []

    @jax.jit  # one compilation: reset, learn through the sequence, apply the update
    def sequence(ls, x, y, mask):
        traces.append(None)
        ls, metrics = learner.run(learner.reset_sequence(ls), x, y, mask)
        # Mean loss over the masked steps (each step's loss is its mean over the batch).
        loss = jnp.sum(metrics["loss"] * metrics["weight"]) / jnp.sum(metrics["weight"])
        return learner.end_sequence(ls), loss

    ls = learner.init(batch_size=8)
    losses = []
    for x, y, mask in toy_batches(0, 30):
        ls, loss = sequence(ls, x, y, mask)
        losses.append(float(loss))
    losses = np.array(losses)
    assert np.all(np.isfinite(losses)), losses
    first, last = losses[:5].mean(), losses[-5:].mean()
    assert last < 0.7 * first, (name, first, last, losses.round(3))
    assert int(ls.updates) == 30
    assert len(traces) == 1, f"{name}: the learner's state changed type between sequences"


# -------------------------------------------------------------------------------------
# (2) The jitted step does not recompile; (3) the state keeps its shapes and dtypes.


def start32(name, net, params32):
    """The rule ``name`` bound to ``net``, float32 weights and state, the batch, the rule's
    initial state and the layout (shapes and dtypes) of ``(state, tstate)``."""
    tracer = bind(name, net)
    params, state = as_dtype(params32, jnp.float32), net.init_state(B)
    data = make_data(jnp.float32)
    tstate = tracer.init(params, state, target_example=data[1][0])
    return tracer, params, state, tstate, data, signature((state, tstate))


@pytest.mark.parametrize("name", NAMES)
def test_jitted_step_compiles_once_and_keeps_its_state_layout(net, params32, name):
    tracer, params, state, tstate, (xs, ts, ws, costs), layout = start32(name, net, params32)
    traces = []

    def step(params, state, tstate, x, target, weight, spike_cost):
        traces.append(None)  # runs once per trace, not per call
        return tracer.step(params, state, tstate, x, target, weight, spike_cost=spike_cost)

    step_jit = jax.jit(step)
    for t in range(3):  # feed each step's output back: its types must match the input's
        inp = jax.tree_util.tree_map(lambda a, t=t: a[t], (xs, ts, ws, costs))
        state, tstate, out = step_jit(params, state, tstate, *inp)
        assert signature((state, tstate)) == layout, (name, t)
        assert out.output.shape == (B, N_OUT) and out.loss.shape == (B,)
    assert len(traces) == 1, f"{name}: the jitted step was traced {len(traces)} times"


@pytest.mark.parametrize("name", NAMES)
def test_state_layout_is_stable_under_scan_and_resets(net, params32, name):
    """Traced only (``jax.eval_shape``): ``lax.scan`` itself rejects a carry that changes."""
    tracer, params, state, tstate, (xs, ts, ws, costs), layout = start32(name, net, params32)

    (state_t, tstate_t), outs = jax.eval_shape(
        lambda *a: scan_run(tracer, *a), params, state, tstate, xs, ts, ws, costs
    )
    assert signature((state_t, tstate_t)) == layout, name
    assert outs.output.shape == (T, B, N_OUT) and outs.loss.shape == (T, B)

    shape_of = lambda f, *a: signature(jax.eval_shape(f, *a))  # noqa: E731
    assert shape_of(tracer.reset_gradients, tstate) == signature(tstate)
    assert shape_of(tracer.reset_traces, params, state, tstate) == signature(tstate)
    grads = jax.eval_shape(tracer.gradients, params, tstate)
    assert sorted(grads) == sorted(p.name for p in net.projections if p.trainable)
    for k, g in grads.items():
        assert aval(g) == aval(params[k]), k


# -------------------------------------------------------------------------------------
# (4) Batched, vmapped and looped gradients agree.


@pytest.mark.parametrize("name", NAMES)
def test_batch_vmap_and_loop_give_the_same_gradient(net, params32, name, x64):
    """Per-sample gradients three ways, in float64, with two compilations.

    * ``jax.vmap`` of a batch-of-one run over the samples;
    * the batched run with loss weights and spike costs kept for one sample only (a Python
      loop over samples: any leak between samples would show here);
    * the batched run with weight 1 for every sample, which must be their sum.
    """
    tracer = bind(name, net)
    params = as_dtype(params32, jnp.float64)
    xs, ts, ws, costs = make_data(jnp.float64)

    batched_run = jax.jit(lambda *data: run_gradients(tracer, net, params, *data))
    batched = batched_run(xs, ts, ws, costs)

    def only(b):  # weights and costs of every other sample set to zero
        keep = (jnp.arange(B) == b).astype(jnp.float64)
        only_costs = {k: c * keep[None, :, None] for k, c in costs.items()}
        return batched_run(xs, ts, ws * keep[None, :], only_costs)

    looped = [only(b) for b in range(B)]
    # Samples as batches of one, stacked on a new leading axis for vmap.
    per_sample = jax.tree_util.tree_map(
        lambda a: jnp.moveaxis(a[:, :, None], 1, 0), (xs, ts, ws, costs)
    )
    vmapped = jax.jit(jax.vmap(lambda data: run_gradients(tracer, net, params, *data)))(per_sample)
    assert sorted(batched) == sorted(p.name for p in net.projections if p.trainable)
    for k, g in batched.items():
        g = np.asarray(g)
        assert np.all(np.isfinite(g)) and np.linalg.norm(g) > 0, (name, k)
        for b in range(B):
            err = rel_error(vmapped[k][b], looped[b][k])
            assert err < 1e-10, (name, k, b, err)
        total = np.sum(np.asarray(vmapped[k]), axis=0)
        assert rel_error(g, total) < 1e-10, (name, k, rel_error(g, total))


# -------------------------------------------------------------------------------------
# (5) float32 stays float32; (6) float64 stays float64 (dtypes are fixed when tracing).


def traced_dtypes(tracer, net, dtype):
    """Float dtypes of everything a short run produces, from ``net.init(..., dtype)`` on."""

    def run(key, xs, ts, ws, costs):
        params, state = net.init(key, B, dtype=dtype)
        tstate = tracer.init(params, state, target_example=ts[0])
        (state_t, tstate_t), outs = scan_run(tracer, params, state, tstate, xs, ts, ws, costs)
        grads = tracer.gradients(params, tstate_t)
        return {
            "params": params,
            "state": state_t,
            "trace_state (init)": tstate,
            "trace_state": tstate_t,
            "outputs": outs,
            "gradients": grads,
        }

    data = make_data(dtype, steps=2)
    out = jax.eval_shape(run, jax.random.PRNGKey(0), *data)
    return {k: float_dtypes(v) for k, v in out.items()}


@pytest.mark.parametrize("name", NAMES)
def test_float32_in_float32_out(net, name, x64):
    """Under x64 a stray default-dtype constant would promote to float64: none may."""
    got = traced_dtypes(bind(name, net), net, jnp.float32)
    assert got == {k: {jnp.dtype(jnp.float32)} for k in got}, (name, got)


@pytest.mark.parametrize("name", NAMES)
def test_float64_in_float64_out(net, name, x64):
    got = traced_dtypes(bind(name, net), net, jnp.float64)
    assert got == {k: {jnp.dtype(jnp.float64)} for k in got}, (name, got)
