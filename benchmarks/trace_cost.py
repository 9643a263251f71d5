"""Per-step time and compiled memory of traxon's learning rules, side by side with braintrace.

The network (identical weights and dynamics in both libraries):

* ``n_in = 100`` Poisson inputs (probability 0.05 per 1 ms step, i.e. 50 Hz);
* ``N`` LIF neurons (tau = 20 ms, V_th = 1, V_reset = V_rest = 0, soft reset);
* input and recurrent dense weights (``N(0, 6^2 / n_in)`` and ``N(0, 1 / N)``) into one
  exponential AlignPost synapse (tau = 5 ms) per neuron, recurrence with one step of delay;
* a leaky readout of ``n_out = 10`` units (tau = 20 ms, no bias); per-step cross-entropy
  against random labels, averaged over the batch.

traxon builds it as ``Network(inputs=100, populations={"h": Population(LIF, N)},
projections=[Projection("x", "h", Dense, synapse=Expon(5)), Projection("h", "h", Dense,
synapse=Expon(5), delay=1)], readout=Readout("h", 10, tau=20))``. The braintrace peer is
built the way braintrace's examples write an LIF RSNN: ``brainpy.state.LIF`` fed by
``brainpy.state.AlignPostProj(comm=braintrace.nn.Linear(n_in + N, N), syn=Expon,
out=CUBA)`` on ``concat(x, previous spikes)`` and a ``braintrace.nn.LeakyRateReadout``,
compiled in braintrace's batched mode (``braintrace.compile(..., batch_size=B)``). The peer
receives traxon's initial weights, so both forward passes produce the same spikes (the
``forward``/``peer_forward`` rows report both firing rates, the largest output difference
and the first step whose outputs differ by more than 1e-4: the libraries add the input and
recurrent currents in a different order, and one rounding-flipped spike makes the chaotic
recurrent network diverge after a while).

Rows (``algorithm`` / ``variant``):

* ``forward`` / ``simulate``: ``Network.simulate`` (one ``lax.scan``), no learning,
  recording what the peer's loop returns (the readout and the mean spike of each step:
  ``record=`` a function, not the ``T x B x N`` spikes);
* ``es_d_rtrl`` / ``tracer``: ``get_algorithm("es_d_rtrl")`` (decay="auto": one presynaptic
  trace per distinct state decay), ``tracer.step`` in a ``lax.scan``, gradient accumulated
  every step (``tracer.gradients`` is a view of the accumulator);
* ``es_d_rtrl`` / ``tracer_decay0.95``: the same with one decay ``exp(-dt / tau_m)``, the
  decay the peer ``pp_prop`` is given;
* ``es_d_rtrl`` / ``learner_sgd``: ``traxon.online_learner(net, "es_d_rtrl",
  traxon.learn.sgd(LR), update_every=1)``'s run as ``fit`` runs it
  (``learner.jit("run", guard=False)``: with the default ``on_nonfinite="raise"`` a call
  with a non-finite update is discarded whole, so no step keeps one out) -- an SGD update
  after every step, the peer's ``sgd_every_step``. With ``traxon.learn.sgd`` the learner
  holds a dense weight's updates as factors for a few steps where the weight has at least
  2**21 entries (``es_d_rtrl(defer="auto")``; here ``h->h`` from N = 2048);
* ``es_d_rtrl`` / ``learner_optax_sgd``: the same learner with ``optax.sgd(LR)``, which
  the learner cannot tell is linear: every weight written every step;
* ``es_d_rtrl`` / ``learner_sgd_decay0.95``: the same learner with one decay
  ``exp(-dt / tau_m)``, like the peer's ``pp_prop`` below;
* ``es_d_rtrl`` / ``learner_sgd_peer_model``: ``learner_sgd`` on the braintrace peer's own
  model object (its ``braintrace.nn`` layers, one ``Linear`` on ``concatenate([x,
  spikes])``), attached unmodified with ``online_learner(model, ..., input_size=)``: what
  a braintrace user's network costs under traxon;
* ``sgd_floor`` / ``forward_outer_update``: the least any rule that writes a dense weight
  update into every weight every step can cost -- the forward step plus, per weight, one
  batch-summed outer product (of the signal the weight read and its output) applied as an
  SGD update; no traces, no loss, no learning signal. ``learner_optax_sgd`` divided by
  this row is the overhead of es_d_rtrl's traces and learning signals over the bare
  update;
* ``d_rtrl`` / ``tracer``, ``bptt`` / ``tracer`` (window = T, gradient read at the end),
  ``bptt`` / ``direct`` (``bptt_gradient``: ``jax.grad`` through the scan; not in --quick);
* ``peer_forward`` / ``for_loop``: the braintrace model run by ``brainstate.transform.for_loop``;
* ``peer_pp_prop`` / ``etrace_grad``: ``braintrace.pp_prop(decay_or_rank=exp(-dt/tau_m))``
  driven by ``etrace_grad`` (per-step gradients summed);
* ``peer_pp_prop`` / ``sgd_every_step``: the same learner with an SGD update of the
  ``ParamState`` after every step (the counterpart of ``learner_sgd``);
* ``peer_d_rtrl`` / ``etrace_grad``: ``braintrace.D_RTRL``.

``ratio_vs_forward`` divides by traxon's ``forward`` timed in the same round-robin;
``ratio_vs_peer`` (traxon rows) divides by the peer's same algorithm: ``es_d_rtrl`` by
``peer_pp_prop``, ``d_rtrl`` by ``peer_d_rtrl``, ``forward`` by ``peer_forward``.

Budgets: run times are estimated from earlier measurements (a short probe run for the d_rtrl
pair when nothing is known yet; cost ~ N^2 across sizes). A group of rows whose run would
exceed ``--max-run-seconds`` is measured with fewer steps (online rules only: their per-step
cost does not depend on T; the line then carries ``T`` = steps actually run and
``T_requested``; fixed per-call costs such as allocating the traces are then spread over
fewer steps) or skipped with a ``skipped`` reason when the same N was already measured at a
smaller T (or for BPTT, whose cost depends on T); skipped traxon rows are still compiled and
report ``compiled_bytes``. ``--quick`` runs the d_rtrl pair for 3 steps only. Rows whose
compiled memory exceeds ``--memory-budget-gb`` are compiled but not run. A peer that cannot be
built or crashes gives a line with ``error`` instead of stopping the run.

Run::

    python benchmarks/trace_cost.py --quick   # N = 1024, T = 100, B = 16 (< 60 s)
    python benchmarks/trace_cost.py --smoke   # N = 64, T = 5, B = 2: every code path, seconds
    python benchmarks/trace_cost.py           # N in {256, 1024, 4096}, T in {100, 1000}
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import _common as bench
import jax
import jax.numpy as jnp
import numpy as np

N_IN, N_OUT = 100, 10
TAU_M, TAU_S, TAU_O = 20.0, 5.0, 20.0
DT = 1.0
IN_PROB = 0.05
GAIN_IN, GAIN_REC = 6.0, 1.0
LR = 1e-3
PEER_DECAY = math.exp(-DT / TAU_M)

PEER_OF = {
    ("forward", "simulate"): ("peer_forward", "for_loop"),
    ("es_d_rtrl", "tracer"): ("peer_pp_prop", "etrace_grad"),
    ("es_d_rtrl", "tracer_decay0.95"): ("peer_pp_prop", "etrace_grad"),
    ("es_d_rtrl", "learner_sgd"): ("peer_pp_prop", "sgd_every_step"),
    ("es_d_rtrl", "learner_sgd_decay0.95"): ("peer_pp_prop", "sgd_every_step"),
    ("es_d_rtrl", "learner_sgd_peer_model"): ("peer_pp_prop", "sgd_every_step"),
    ("es_d_rtrl", "learner_optax_sgd"): ("peer_pp_prop", "sgd_every_step"),
    ("d_rtrl", "tracer"): ("peer_d_rtrl", "etrace_grad"),
}


@dataclasses.dataclass
class Problem:
    """One network size: traxon network, weights, state and data of the longest run."""

    N: int
    B: int
    net: Any
    params: dict
    state: dict
    xs: jax.Array  # (T_max, B, n_in)
    ys: jax.Array  # (T_max, B)

    def data(self, T: int) -> tuple[jax.Array, jax.Array, jax.Array]:
        ws = jnp.full((T, self.B), 1.0 / self.B, jnp.float32)
        return self.xs[:T], self.ys[:T], ws


def make_problem(N: int, B: int, T_max: int) -> Problem:
    from traxon.core import LIF, Dense, Expon, Network, Population, Projection, Readout

    net = Network(
        N_IN,
        {"h": Population(LIF(tau=TAU_M, V_th=1.0, V_reset=0.0, V_rest=0.0), N)},
        [
            Projection("x", "h", Dense(gain=GAIN_IN), synapse=Expon(TAU_S)),
            Projection("h", "h", Dense(gain=GAIN_REC), synapse=Expon(TAU_S), delay=1),
        ],
        readout=Readout("h", N_OUT, tau=TAU_O, bias=False),
        dt=DT,
    )
    params, state = net.init(jax.random.PRNGKey(0), B)
    kx, ky = jax.random.split(jax.random.PRNGKey(1))
    xs = (jax.random.uniform(kx, (T_max, B, N_IN)) < IN_PROB).astype(jnp.float32)
    ys = jax.random.randint(ky, (T_max, B), 0, N_OUT)
    return Problem(N, B, net, params, state, xs, ys)


# --------------------------------------------------------------------------------------
# traxon rows: each builder returns (call, memory stats, compile seconds).


def _rate(state: dict, signals: dict) -> jax.Array:
    """What the forward rows record per step: the mean spike of the hidden population."""
    return jnp.mean(signals["h"]["spike"])


def build_forward(pb: Problem, T: int) -> bench.Built:
    xs, _, _ = pb.data(T)

    def run(params: dict, state: dict, xs: jax.Array) -> Any:
        # Like the peer's loop: outputs and a firing rate per step, not T x B x N spikes.
        res = pb.net.simulate(params, state, xs, record=_rate)
        return res.outputs, jnp.mean(res.record)

    return bench.jax_compiled(run, pb.params, pb.state, xs)


def build_tracer(pb: Problem, T: int, name: str, **options: Any) -> bench.Built:
    from traxon.learn import cross_entropy
    from traxon.trace import get_algorithm

    tracer = get_algorithm(name, **options).bind(pb.net, cross_entropy.fn, window=T)
    xs, ys, ws = pb.data(T)
    return bench.jax_compiled(
        bench.tracer_run(tracer, losses=True), pb.params, pb.state, xs, ys, ws
    )


def build_bptt_direct(pb: Problem, T: int) -> bench.Built:
    from traxon.learn import cross_entropy
    from traxon.trace import bptt_gradient

    xs, ys, ws = pb.data(T)

    def run(params: dict, state: dict, xs: jax.Array, ys: jax.Array, ws: jax.Array) -> Any:
        return bptt_gradient(pb.net, cross_entropy.fn, params, state, {"x": xs}, ys, ws)

    args = (pb.params, pb.state, xs, ys, ws)
    return bench.jax_compiled(run, *args)


def build_learner(
    pb: Problem, T: int, decay: float | None = None, optimizer: str = "traxon"
) -> bench.Built:
    import optax

    import traxon

    algorithm = traxon.trace.es_d_rtrl() if decay is None else traxon.trace.es_d_rtrl(decay=decay)
    opt = traxon.learn.sgd(LR) if optimizer == "traxon" else optax.sgd(LR)
    learner = traxon.online_learner(pb.net, algorithm, opt, loss="cross_entropy", update_every=1)
    ls = learner.init(params=pb.params, batch_size=pb.B)
    xs, ys, _ = pb.data(T)
    # What fit() runs with the default on_nonfinite="raise" (the peer has no guard either).
    run = learner.jit("run", guard=False)
    return bench.jax_compiled(run, learner.connectivity, ls, xs, ys)


def build_learner_on_peer_model(pb: Problem, T: int) -> bench.Built:
    """``build_learner`` on the braintrace peer's own model object (``_peer_model``: its
    ``braintrace.nn`` layers, one ``Linear`` on ``concatenate([x, spikes])``), attached
    with ``online_learner(model, ...)`` unmodified: what a braintrace user's network costs
    under traxon."""

    import traxon

    model = _peer_model(pb)
    learner = traxon.online_learner(
        model,
        "es_d_rtrl",
        traxon.learn.sgd(LR),
        loss="cross_entropy",
        update_every=1,
        input_size=N_IN,
    )
    ls = learner.init(batch_size=pb.B)
    xs, ys, _ = pb.data(T)
    run = learner.jit("run", guard=False)
    return bench.jax_compiled(run, learner.connectivity, ls, xs, ys)


def build_floor(pb: Problem, T: int) -> bench.Built:
    """The least any rule that writes a dense weight update every step can cost (one that
    holds the updates as factors, ``learner_sgd``, may cost less): the forward step plus,
    per trainable weight, one batch-summed outer product of the signal it read and
    its output ``u`` (the shape of every rank-B gradient) written as an SGD update. No
    traces, no loss, no learning signal."""
    from traxon.trace.base import trainable

    projs = trainable(pb.net)
    xs, _, _ = pb.data(T)

    def run(params: dict, state: dict, xs: jax.Array) -> Any:
        def body(carry: Any, x: jax.Array) -> Any:
            params, st = carry
            st, inner = pb.net.forward(params, st, {"x": x})
            params = dict(params)
            for p in projs:
                W = params[p.name]
                g = p.op.outer(W, inner["z"][p.name], inner["u"][p.target][p.channel])
                params[p.name] = W - LR * g
            return (params, st), None

        (params, _), _ = jax.lax.scan(body, (params, state), xs)
        return params

    return bench.jax_compiled(run, pb.params, pb.state, xs)


# --------------------------------------------------------------------------------------
# braintrace peer.


def _peer_model(pb: Problem) -> Any:
    import brainpy.state as bps
    import brainstate
    import braintools
    import braintrace
    import brainunit as u

    N = pb.N
    w_comm = jnp.concatenate([pb.params["x->h"], pb.params["h->h"]], axis=0)
    w_out = pb.params["h->readout"]

    class PeerRSNN(brainstate.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.neu = bench.brainpy_lif(N, TAU_M)
            self.syn = bps.AlignPostProj(
                comm=braintrace.nn.Linear(N_IN + N, N, w_init=w_comm, b_init=None),
                syn=bps.Expon(N, tau=TAU_S * u.ms, g_initializer=braintools.init.ZeroInit()),
                out=bps.CUBA(scale=1.0),
                post=self.neu,
            )
            self.out = braintrace.nn.LeakyRateReadout(N, N_OUT, tau=TAU_O * u.ms, w_init=w_out)

        def update(self, x: jax.Array) -> jax.Array:
            self.syn(jnp.concatenate([x, self.neu.get_spike()], axis=-1))
            self.neu(0.0)
            return self.out(self.neu.get_spike())

    return PeerRSNN()


def _ce(out: jax.Array, y: jax.Array) -> jax.Array:
    import braintools

    return braintools.metric.softmax_cross_entropy_with_integer_labels(out, y).mean()


def build_peer_forward(pb: Problem, T: int) -> bench.Built:
    import brainstate

    model = _peer_model(pb)
    brainstate.nn.init_all_states(model, batch_size=pb.B)
    xs, _, _ = pb.data(T)

    def run(xs: jax.Array) -> Any:
        def body(x: jax.Array) -> Any:
            return model(x), jnp.mean(model.neu.get_spike())

        outputs, rates = brainstate.transform.for_loop(body, xs)
        return outputs, jnp.mean(rates)

    return bench.brainstate_compiled(run, xs)


def _peer_learner(pb: Problem, algorithm: str, T: int) -> Any:
    import braintrace

    model = _peer_model(pb)
    xs, _, _ = pb.data(T)
    if algorithm == "pp_prop":
        return braintrace.compile(
            model, braintrace.pp_prop, xs[0], batch_size=pb.B, decay_or_rank=PEER_DECAY
        )
    return braintrace.compile(model, braintrace.D_RTRL, xs[0], batch_size=pb.B)


def build_peer_etrace(pb: Problem, T: int, algorithm: str) -> bench.Built:
    learner = _peer_learner(pb, algorithm, T)
    xs, ys, _ = pb.data(T)

    def step_loss(x: jax.Array, y: jax.Array) -> jax.Array:
        return _ce(learner(x), y)

    def run(xs: jax.Array, ys: jax.Array) -> Any:
        return learner.etrace_grad(xs, ys, step_fn=step_loss, reduction="sum")

    return bench.brainstate_compiled(run, xs, ys)


def build_peer_sgd(pb: Problem, T: int) -> bench.Built:
    import brainstate

    learner = _peer_learner(pb, "pp_prop", T)
    weights = learner.param_states
    xs, ys, _ = pb.data(T)

    def step_loss(x: jax.Array, y: jax.Array) -> jax.Array:
        return _ce(learner(x), y)

    grad_fn = brainstate.transform.grad(step_loss, weights)

    def run(xs: jax.Array, ys: jax.Array) -> Any:
        def body(x: jax.Array, y: jax.Array) -> jax.Array:
            grads = grad_fn(x, y)
            for key, w in weights.items():
                w.value = jax.tree.map(lambda a, g: a - LR * g, w.value, grads[key])
            return jnp.zeros(())

        brainstate.transform.for_loop(body, xs, ys)
        return {key: w.value for key, w in weights.items()}

    return bench.brainstate_compiled(run, xs, ys)


# --------------------------------------------------------------------------------------
# Rows and groups.


@dataclasses.dataclass
class Row:
    algorithm: str
    variant: str
    library: str
    build: Callable[[Problem, int], bench.Built]
    online: bool = True  # per-step cost independent of T (T may be reduced)
    dense_trace: bool = False  # memory B * (n_in + N) * N * S (parameter-dimension traces)
    optional: bool = False  # skipped alone (not sizing its group) when too slow


def tracer_build(name: str, **options: Any) -> Callable[[Problem, int], bench.Built]:
    """A row's build: traxon's tracer of the rule ``name`` (``build_tracer``)."""
    return lambda pb, T: build_tracer(pb, T, name, **options)


def peer_build(algorithm: str) -> Callable[[Problem, int], bench.Built]:
    """A row's build: braintrace's ``etrace_grad`` of ``algorithm`` (``build_peer_etrace``)."""
    return lambda pb, T: build_peer_etrace(pb, T, algorithm)


def groups(quick: bool, smoke: bool = False) -> dict[str, list[Row]]:
    es = [
        Row("es_d_rtrl", "tracer", "traxon", tracer_build("es_d_rtrl")),
        Row("es_d_rtrl", "tracer_decay0.95", "traxon", tracer_build("es_d_rtrl", decay=PEER_DECAY)),
        Row("es_d_rtrl", "learner_sgd", "traxon", build_learner),
        Row(
            "es_d_rtrl",
            "learner_optax_sgd",
            "traxon",
            lambda pb, T: build_learner(pb, T, optimizer="optax"),
            optional=True,
        ),
        Row("sgd_floor", "forward_outer_update", "traxon", build_floor),
        Row(
            "es_d_rtrl",
            "learner_sgd_decay0.95",
            "traxon",
            lambda pb, T: build_learner(pb, T, PEER_DECAY),
        ),
        Row("peer_pp_prop", "etrace_grad", "braintrace", peer_build("pp_prop")),
    ]
    es.append(Row("peer_pp_prop", "sgd_every_step", "braintrace", build_peer_sgd, optional=True))
    es.append(
        Row(
            "es_d_rtrl",
            "learner_sgd_peer_model",
            "traxon",
            build_learner_on_peer_model,
            optional=True,
        )
    )
    if smoke:  # the decay variants run the same code as the rows above
        es = [r for r in es if not r.variant.endswith("decay0.95")]
    return {
        "forward": [
            Row("forward", "simulate", "traxon", build_forward),
            Row("peer_forward", "for_loop", "braintrace", build_peer_forward),
        ],
        "es": es,
        "d": [
            Row("d_rtrl", "tracer", "traxon", tracer_build("d_rtrl"), dense_trace=True),
            Row("peer_d_rtrl", "etrace_grad", "braintrace", peer_build("d_rtrl"), dense_trace=True),
        ],
        "bptt": [Row("bptt", "tracer", "traxon", tracer_build("bptt"), online=False)]
        + (
            [Row("bptt", "direct", "traxon", build_bptt_direct, online=False)]
            if smoke or not quick
            else []
        ),
    }


class Estimates:
    """Per-step seconds measured so far, to size later runs (dense cost ~ N^2)."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], tuple[int, int, float]] = {}

    def add(self, row: Row, N: int, T: int, per_step: float) -> None:
        self.data[(row.algorithm, row.variant)] = (N, T, per_step)

    def get(self, row: Row, N: int) -> float | None:
        got = self.data.get((row.algorithm, row.variant))
        if got is None:
            return None
        n0, _, per_step = got
        return per_step * max(1.0, (N / n0) ** 2)

    def measured_at(self, row: Row, N: int) -> int | None:
        got = self.data.get((row.algorithm, row.variant))
        return got[1] if got is not None and got[0] == N else None


@dataclasses.dataclass
class Settings:
    reps: int
    max_run_seconds: float
    max_seconds: float
    memory_budget: float
    probe_steps: int
    quick: bool


def run_group(
    name: str,
    rows: list[Row],
    pb: Problem,
    T: int,
    T_done: list[int],
    est: Estimates,
    cfg: Settings,
) -> None:
    """Compile, budget, time (round-robin with traxon's forward) and bench.emit one group."""
    N, B = pb.N, pb.B
    base = {"benchmark": "trace_cost", "N": N, "B": B, "n_in": N_IN, "n_out": N_OUT}
    lines: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        lines[(row.algorithm, row.variant)] = {
            **base,
            "algorithm": row.algorithm,
            "variant": row.variant,
            "library": row.library,
            "T": T,
        }

    T_run = T

    def finish() -> None:
        for line in lines.values():
            for field in ("per_step_ms", "compiled_bytes", "ratio_vs_forward"):
                line.setdefault(field, None)
            if line["library"] == "traxon":
                line.setdefault("ratio_vs_peer", None)
            bench.emit(line)

    def compile_only(reason: str) -> None:
        """Skip running; still compile traxon's rows for their compiled memory."""
        for row in rows:
            line = lines[(row.algorithm, row.variant)]
            line["skipped"] = reason
            if row.library == "traxon" and "error" not in line:
                try:
                    _, mem, sec = row.build(pb, T)
                    line.update(mem, compile_s=sec)
                except Exception as exc:
                    line["error"] = bench.error_text(exc)
        finish()

    # Memory of parameter-dimension traces (d_rtrl), before building anything big.
    if any(r.dense_trace for r in rows):
        need = 4 * B * (N_IN + N) * N * 2  # float32, S = 2 traced variables (V, g)
        for line in lines.values():
            line["trace_bytes_estimate"] = need
        if 3 * need > cfg.memory_budget:
            compile_only(
                f"memory: parameter-dimension traces need ~{need / bench.GB:.1f} GB "
                "(B*(n_in+N)*N*S*4 bytes) plus temporaries (~3x), over the "
                f"{cfg.memory_budget / bench.GB:.1f} GB budget"
            )
            return

    # Steps to run: T; fewer for online rules too slow for the run budget; or skip.
    probe: dict[tuple[str, str], bench.Built] = {}
    if name == "d" and cfg.quick:
        T_run = cfg.probe_steps  # --quick: a few steps only, no probe
    elif name == "d" and any(est.get(r, N) is None for r in rows):
        bench.log(f"probing {name} at N={N} with T={cfg.probe_steps}")
        for row in rows:
            try:
                built = row.build(pb, cfg.probe_steps)
                t0 = time.perf_counter()
                jax.block_until_ready(built[0]())
                est.add(row, N, cfg.probe_steps, (time.perf_counter() - t0) / cfg.probe_steps)
                probe[(row.algorithm, row.variant)] = built
            except Exception as exc:
                lines[(row.algorithm, row.variant)]["error"] = bench.error_text(exc)
    known = [p for p in (est.get(r, N) for r in rows if not r.optional) if p is not None]
    if not (name == "d" and cfg.quick):
        T_run = T
    if T_run == T and known and max(known) * T > cfg.max_run_seconds:
        prior = [t for t in T_done if t < T]
        if prior or not all(r.online for r in rows):
            reason = (
                f"time: ~{max(known) * T:.0f} s per run (from a measured per-step cost) "
                f"exceeds the {cfg.max_run_seconds:.0f} s run budget"
            )
            if prior:
                reason += f"; the per-step cost is measured at T={max(prior)} for this N"
            for row in rows:
                guess = est.get(row, N)
                if guess is not None:
                    lines[(row.algorithm, row.variant)]["estimated_per_step_ms"] = guess * 1e3
            compile_only(reason)
            return
        T_run = min(T, max(cfg.probe_steps, int(cfg.max_run_seconds / max(known))))
        if T_run < 2 * cfg.probe_steps:
            T_run = cfg.probe_steps
    if T_run != T:
        bench.log(f"{name}: N={N} runs T={T_run} instead of {T} (run budget)")
    for row in rows:  # an optional row too slow for the run budget is skipped alone
        guess = est.get(row, N)
        if row.optional and guess is not None and guess * T_run > cfg.max_run_seconds:
            line = lines[(row.algorithm, row.variant)]
            line["estimated_per_step_ms"] = guess * 1e3
            line["skipped"] = (
                f"time: ~{guess * T_run:.0f} s per run (estimated from a smaller N) exceeds "
                f"the {cfg.max_run_seconds:.0f} s run budget"
            )
    calls: dict[str, Callable[[], Any]] = {}
    keys: dict[str, tuple[str, str]] = {}
    for row in rows:
        key = (row.algorithm, row.variant)
        line = lines[key]
        if "skipped" in line or "error" in line:
            continue
        line["T"] = T_run
        if T_run != T:
            line["T_requested"] = T
            line["note"] = "fewer steps than requested (run budget); per-step cost is T-independent"
        try:
            if key in probe and T_run == cfg.probe_steps:
                built = probe[key]
            else:
                built = row.build(pb, T_run)
        except Exception as exc:
            line["error"] = bench.error_text(exc)
            bench.log(f"{row.algorithm}/{row.variant} N={N}: {line['error']}")
            continue
        call, mem, sec = built
        line.update(mem, compile_s=sec)
        if mem.get("compiled_bytes") and mem["compiled_bytes"] > cfg.memory_budget:
            line["skipped"] = (
                f"memory: compiled estimate {mem['compiled_bytes'] / bench.GB:.1f} GB exceeds the "
                f"{cfg.memory_budget / bench.GB:.1f} GB budget"
            )
            continue
        calls[f"{key[0]}/{key[1]}"] = call
        keys[f"{key[0]}/{key[1]}"] = key
    probe.clear()
    fwd_key = "forward/simulate"
    if calls and fwd_key not in calls:
        calls[fwd_key] = build_forward(pb, T_run)[0]
    if not calls:
        finish()
        return
    bench.log(f"timing {name} N={N} T={T_run}: {sorted(calls)}")
    try:
        stats = bench.time_round_robin(calls, cfg.reps, cfg.max_seconds)
    except Exception as exc:
        for k in keys.values():
            lines[k]["error"] = bench.error_text(exc)
        finish()
        return
    fwd = stats[fwd_key]["median_s"]
    for k, st in stats.items():
        if k not in keys:
            continue
        key = keys[k]
        line = lines[key]
        per = st["median_s"] / T_run
        line.update(
            per_step_ms=per * 1e3,
            per_step_ms_min=st["min_s"] / T_run * 1e3,
            per_step_ms_max=st["max_s"] / T_run * 1e3,
            n_reps=st["n_reps"],
            warmup_only=st["warmup_only"],
            ratio_vs_forward=st["median_s"] / fwd,
        )
        row = next(r for r in rows if (r.algorithm, r.variant) == key)
        est.add(row, N, T_run, per)
    for k in keys.values():
        line = lines[k]
        if line["library"] == "traxon":
            peer = PEER_OF.get(k)
            peer_line = lines.get(peer) if peer else None
            if peer_line is not None and "per_step_ms" in peer_line and "per_step_ms" in line:
                line["ratio_vs_peer"] = line["per_step_ms"] / peer_line["per_step_ms"]
            else:
                line["ratio_vs_peer"] = None
            line["peer"] = "/".join(peer) if peer else None
    if ("peer_forward", "for_loop") in lines:
        pf = lines[("peer_forward", "for_loop")]
        for line in lines.values():
            if line["library"] == "braintrace" and "per_step_ms" in line and "per_step_ms" in pf:
                line["ratio_vs_peer_forward"] = line["per_step_ms"] / pf["per_step_ms"]
    if name == "forward":
        res = {k: np.asarray(st["result"][0]) for k, st in stats.items()}
        rate = {k: float(st["result"][1]) / (DT * 1e-3) for k, st in stats.items()}
        for k in stats:
            if k in keys:
                lines[keys[k]]["rate_hz"] = rate[k]
        peer_key = "peer_forward/for_loop"
        if peer_key in res and fwd_key in res:
            per_step = np.abs(res[peer_key] - res[fwd_key]).reshape(T_run, -1).max(axis=1)
            pf_line = lines[("peer_forward", "for_loop")]
            pf_line["outputs_max_abs_diff_vs_traxon"] = float(per_step.max())
            # The two libraries sum the input and recurrent currents in a different order; a
            # rounding difference can flip one spike near threshold, after which the chaotic
            # recurrent network diverges. The first step that differs shows how long the
            # two runs stay identical.
            differs = per_step > 1e-4
            pf_line["outputs_first_differing_step"] = (
                int(np.argmax(differs)) if differs.any() else None
            )
    finish()


def main(argv: list[str] | None = None) -> None:
    parser = bench.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=None, help="N values")
    parser.add_argument("--steps", type=int, nargs="*", default=None, help="T values")
    parser.add_argument("--batch", type=int, default=16, help="B")
    parser.add_argument("--max-run-seconds", type=float, default=None, help="budget per run")
    parser.add_argument("--max-seconds", type=float, default=None, help="timing budget per fn")
    parser.add_argument("--memory-budget-gb", type=float, default=None)
    parser.add_argument(
        "--groups", nargs="*", default=["forward", "es", "bptt", "d"], help="row groups"
    )
    args = parser.parse_args(argv)
    smoke = args.smoke
    quick = args.quick or smoke
    if smoke:
        args.batch = 2
    sizes = args.sizes or ([64] if smoke else [1024] if quick else [256, 1024, 4096])
    steps = args.steps or ([5] if smoke else [100] if quick else [100, 1000])
    available = bench.available_memory()
    budget = (args.memory_budget_gb or min(6.0, 0.4 * available / bench.GB)) * bench.GB
    cfg = Settings(
        reps=args.reps or (1 if smoke else 2 if quick else 3),
        max_run_seconds=args.max_run_seconds or (2.5 if quick else 20.0),
        max_seconds=args.max_seconds or (1.0 if smoke else 8.0 if quick else 30.0),
        memory_budget=budget,
        probe_steps=2 if smoke else 3 if quick else 4,
        quick=quick,
    )
    bench.emit_machine(
        "trace_cost.py", sys.argv[1:], ("brainstate", "braintrace", "brainpy", "brainevent")
    )
    import brainstate
    import brainunit as u

    brainstate.environ.set(dt=DT * u.ms)
    t_start = time.perf_counter()
    est = Estimates()
    all_groups = groups(quick, smoke)
    for N in sorted(sizes):
        pb = make_problem(N, args.batch, max(steps))
        T_done: list[int] = []
        for T in sorted(steps):
            bench.log(f"N={N} T={T} B={args.batch}")
            for name in args.groups:
                run_group(name, all_groups[name], pb, T, T_done, est, cfg)
            T_done.append(T)
    bench.emit_summary(
        "trace_cost",
        t_start,
        memory_budget_bytes=budget,
        max_run_seconds=cfg.max_run_seconds,
        reps=cfg.reps,
    )


if __name__ == "__main__":
    main()
