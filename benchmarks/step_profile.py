"""Where the per-step time of traxon's online rules goes: a component breakdown.

Uses the network of ``trace_cost.py`` (n_in = 100 Poisson inputs, N LIF neurons, dense
input and recurrent weights into one Expon(5 ms) AlignPost synapse, leaky readout of 10,
B = 16) and times, each as a ``lax.scan`` over T steps, round-robin in one process:

* ``forward`` -- ``Network.forward`` (one step of the network, no learning);
* ``quantities_no_blocks`` -- ``traxon.trace.step_quantities`` without the Jacobian blocks:
  the forward under ``jax.vjp`` plus the VJP that gives the learning signals and the
  signal Jacobians ``g``;
* ``quantities`` -- ``step_quantities`` as the tracers call it (adds the per-neuron blocks
  ``D`` and ``F`` by ``jax.linearize`` and one JVP per one-hot column);
* ``es_d_rtrl`` -- the full ``es_d_rtrl`` tracer step (decay="auto": membrane and synapse
  decays, but no learning signal reads the synaptic current, so its group is dropped and one
  group remains), gradient accumulated every step;
* ``es_d_rtrl_decay`` -- the same with one decay (one group);
* ``accumulate_as_written`` -- only the gradient accumulation of ``es_d_rtrl`` on random
  factors, written as the tracer writes it: per weight, ``contrib = zeros; contrib +=
  c_a * outer(pre_a, post_a)`` for each decay group, then ``grads += contrib``;
* ``accumulate_fused`` -- the same sum as one GEMM over the concatenated groups
  (``concat([c_a pre_a]).T @ concat([post_a])``), a what-if for the maintainers;
* ``d_rtrl`` -- the full ``d_rtrl`` tracer step (few steps: it is slow), against
  ``forward_short``, the forward over the same few steps.

Every line carries ``algorithm`` (``forward``, ``d_rtrl``, or ``es_d_rtrl`` for the parts of
its step), ``component``, ``per_step_ms``, ``ratio_vs_forward`` and ``share_of_es_d_rtrl``; a
final line per N has the derived differences (``derived_ms``,
computed from the fastest repetition of each component, the least disturbed by other load
on the machine).

Run::

    python benchmarks/step_profile.py --quick   # N = 1024 (< 60 s)
    python benchmarks/step_profile.py --smoke   # N = 64, T = 5: every code path, seconds
    python benchmarks/step_profile.py           # N in {256, 1024, 4096} (d_rtrl up to 1024)
    python benchmarks/step_profile.py --ops     # per-op times, N = 1024 (about a minute)

``--ops`` measures where the time of one step goes op by op, which stays readable on a loaded
machine where wall-clock differences drown in noise: ``forward``, ``es_d_rtrl``,
``es_d_rtrl_decay`` and braintrace's ``pp_prop`` (``etrace_grad``, the peer of
``trace_cost.py``) are each run ``--reps`` times round-robin under ``jax.profiler.trace``;
per XLA op the fastest repetition is kept, and each line (``"mode": "ops"``) gives their
sum per step (``op_us_per_step``: the compute, without the gaps between ops), the median
total, the largest ops, and XLA's own count of floating-point operations and bytes of the
compiled program (``xla_flops``, ``xla_bytes``: the scan body is counted once, so these
are per step).
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from collections.abc import Callable
from typing import Any

import _common as bench
import jax
import jax.numpy as jnp
import numpy as np
from trace_cost import TAU_M, make_problem

StepFn = Callable[..., tuple[Any, jax.Array]]
# ``algorithm`` of each component's line (the others are parts of an es_d_rtrl step).
ALGORITHM_OF = {"forward": "forward", "forward_short": "forward", "d_rtrl": "d_rtrl"}


def _scan(step: StepFn, carry0: Callable[[dict, dict], Any]) -> Callable[..., Any]:
    """``step(params, carry, x, y, w) -> (carry, scalar)`` as a scan over T steps."""

    def run(params: dict, state: dict, xs: jax.Array, ys: jax.Array, ws: jax.Array) -> Any:
        def body(c: Any, inp: Any) -> Any:
            carry, acc = c
            carry, v = step(params, carry, *inp)
            return (carry, acc + v), None

        (carry, acc), _ = jax.lax.scan(body, (carry0(params, state), 0.0), (xs, ys, ws))
        return acc, carry

    return run


def components(pb: Any) -> dict[str, Callable[..., Any]]:
    from traxon.learn import cross_entropy
    from traxon.trace import get_algorithm, step_quantities
    from traxon.trace.base import learning_signals, post_populations

    net = pb.net
    posts, sigs = post_populations(net), learning_signals(net)
    loss_fn = cross_entropy.fn

    def forward(params: dict, st: dict, x: jax.Array, y: jax.Array, w: jax.Array) -> Any:
        new, internals = net.forward(params, st, {"x": x})
        return new, jnp.sum(net.output(internals["signals"]))

    def quantities(blocks: bool) -> StepFn:
        def step(params: dict, st: dict, x: jax.Array, y: jax.Array, w: jax.Array) -> Any:
            q = step_quantities(
                net, params, st, {"x": x}, y, w, loss_fn, posts if blocks else {}, sigs
            )
            leaves = jax.tree_util.tree_leaves((q.lam, q.g, q.D, q.F, q.loss))
            return q.new_state, sum(jnp.sum(v) for v in leaves)

        return step

    def tracer(name: str, **options: Any) -> tuple[StepFn, Callable[[dict, dict], Any]]:
        tr = get_algorithm(name, **options).bind(net, loss_fn, window=1)

        def step(params: dict, c: Any, x: jax.Array, y: jax.Array, w: jax.Array) -> Any:
            st, ts = c
            st, ts, out = tr.step(params, st, ts, {"x": x}, y, w)
            return (st, ts), jnp.sum(out.loss)

        return step, lambda p, s: (s, tr.init(p, s, target_example=pb.ys[0]))

    out = {
        "forward": _scan(forward, lambda p, s: s),
        "quantities_no_blocks": _scan(quantities(False), lambda p, s: s),
        "quantities": _scan(quantities(True), lambda p, s: s),
    }
    out["es_d_rtrl"] = _scan(*tracer("es_d_rtrl"))
    out["es_d_rtrl_decay"] = _scan(*tracer("es_d_rtrl", decay=math.exp(-1.0 / TAU_M)))
    out["d_rtrl"] = _scan(*tracer("d_rtrl"))
    return out


def accumulation(pb: Any, fused: bool) -> Callable[..., Any]:
    """The per-step N x N gradient accumulation of es_d_rtrl, alone (two decay groups)."""
    B, N = pb.B, pb.N
    shapes = {"x->h": pb.params["x->h"].shape, "h->h": pb.params["h->h"].shape}

    def run(params: dict, state: dict, xs: jax.Array, ys: jax.Array, ws: jax.Array) -> Any:
        key = jax.random.PRNGKey(0)

        def body(grads: dict, inp: Any) -> Any:
            x, _, w = inp
            new = {}
            for name, (n_pre, _) in shapes.items():
                pre = x if n_pre == x.shape[1] else jnp.tile(x, (1, N // x.shape[1] + 1))[:, :N]
                post = w[:, None] * jax.random.normal(jax.random.fold_in(key, n_pre), (B, N))
                pres = [0.9 * pre, 0.8 * pre + 1.0]
                posts = [post, 2.0 * post]
                c = [0.05, 0.2]
                if fused:
                    a = jnp.concatenate([ci * p for ci, p in zip(c, pres, strict=True)], axis=0)
                    contrib = a.T @ jnp.concatenate(posts, axis=0)
                else:
                    contrib = jnp.zeros(shapes[name])
                    for ci, p, q in zip(c, pres, posts, strict=True):
                        contrib = contrib + ci * (p.T @ q)
                new[name] = grads[name] + contrib
            return new, None

        grads0 = {k: jnp.zeros(s) for k, s in shapes.items()}
        grads, _ = jax.lax.scan(body, grads0, (xs, ys, ws))
        return grads

    return run


def profile(N: int, T: int, T_d: int | None, reps: int, max_seconds: float) -> None:
    pb = make_problem(N, 16, T)
    comps = components(pb)
    funcs: dict[str, tuple[Callable[..., Any], int]] = {
        name: (fn, T) for name, fn in comps.items() if name != "d_rtrl"
    }
    funcs["accumulate_as_written"] = (accumulation(pb, fused=False), T)
    funcs["accumulate_fused"] = (accumulation(pb, fused=True), T)
    if T_d:
        funcs["d_rtrl"] = (comps["d_rtrl"], T_d)
        funcs["forward_short"] = (comps["forward"], T_d)
    calls, mems, steps, lines = {}, {}, {}, {}
    for name, (fn, t) in funcs.items():
        line: dict[str, Any] = {
            "benchmark": "step_profile",
            "algorithm": ALGORITHM_OF.get(name, "es_d_rtrl"),
            "component": name,
            "N": N,
            "B": pb.B,
            "T": t,
        }
        lines[name] = line
        xs, ys, ws = pb.data(t)
        args = (pb.params, pb.state, xs, ys, ws)
        try:
            compiled, sec = bench.compile_jax(fn, *args)
        except Exception as exc:
            line["error"] = bench.error_text(exc)
            continue
        mems[name] = bench.memory_stats(compiled)
        line["compile_s"] = sec
        calls[name] = (lambda c, a: lambda: c(*a))(compiled, args)
        steps[name] = t
    bench.log(f"timing N={N}: {sorted(calls)}")
    stats = bench.time_round_robin(calls, reps, max_seconds)
    per = {k: st["median_s"] / steps[k] * 1e3 for k, st in stats.items()}
    best = {k: st["min_s"] / steps[k] * 1e3 for k, st in stats.items()}
    for name, line in lines.items():
        if name in per:
            fwd = per["forward_short"] if name.startswith("d_rtrl") else per["forward"]
            line.update(per_step_ms=per[name], per_step_ms_min=best[name])
            line["ratio_vs_forward"] = per[name] / fwd
            line["n_reps"] = stats[name]["n_reps"]
            line.update(mems[name])
            if "es_d_rtrl" in per and not name.startswith("d_rtrl") and name != "forward_short":
                line["share_of_es_d_rtrl"] = per[name] / per["es_d_rtrl"]

        bench.emit(line)
    # Differences of the fastest repetitions: the least disturbed by other load.
    per = best
    derived = {}
    if {"forward", "quantities_no_blocks", "quantities", "es_d_rtrl"} <= set(per):
        derived = {
            "forward": per["forward"],
            "learning_signal_vjp_and_g": per["quantities_no_blocks"] - per["forward"],
            "jacobian_blocks_D_F": per["quantities"] - per["quantities_no_blocks"],
            "traces_and_gradient_accumulation": per["es_d_rtrl"] - per["quantities"],
            "es_d_rtrl_step": per["es_d_rtrl"],
        }
        if "es_d_rtrl_decay" in per:
            derived["second_decay_group"] = per["es_d_rtrl"] - per["es_d_rtrl_decay"]
        if {"accumulate_as_written", "accumulate_fused"} <= set(per):
            derived["accumulation_saved_by_fusing"] = (
                per["accumulate_as_written"] - per["accumulate_fused"]
            )
    bench.emit(
        {"benchmark": "step_profile", "summary": True, "N": N, "B": pb.B, "derived_ms": derived}
    )


_NOT_OPS = (
    "$",
    "Thunk",
    "Pjit",
    "Common",
    "Slinky",
    "end:",
    "ParseArguments",
    "Handle ",
    "Allocate",
    "DevicePut",
)


#: Control-flow ops whose time is that of the ops they run (each timed on its own): the
#: ``while`` of the scan, the ``cond`` of an event-driven product or of a deferred fold.
_CONTAINER = re.compile(r"^(while|cond|conditional|call)(\.\S*)?$")


def _op_durations(trace_dir: str, steps: int) -> dict[str, float]:
    """Microseconds per step of every XLA op in a ``jax.profiler`` trace (perfetto JSON);
    control-flow ops (``while``, ``cond``, ``call``) are left out and the ops they run are
    counted, so that no time is counted twice."""
    import glob
    import gzip
    import json

    path = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)[0]
    with gzip.open(path) as fh:
        data = json.load(fh)
    events = data["traceEvents"] if isinstance(data, dict) else data
    out: dict[str, float] = {}
    for e in events:
        name = e.get("name", "")
        if e.get("ph") != "X" or name.startswith(_NOT_OPS) or _CONTAINER.match(name):
            continue
        out[name] = out.get(name, 0.0) + e.get("dur", 0.0) / steps
    return out


def op_times(N: int, T: int, reps: int) -> None:
    """``--ops``: per-op times of the forward, the es_d_rtrl steps and the peer's pp_prop."""
    import tempfile

    pb = make_problem(N, 16, T)
    comps = components(pb)
    xs, ys, ws = pb.data(T)
    args = (pb.params, pb.state, xs, ys, ws)
    calls: dict[str, Callable[[], Any]] = {}
    lines: dict[str, dict[str, Any]] = {}
    for name in ("forward", "es_d_rtrl", "es_d_rtrl_decay"):
        compiled, _ = bench.compile_jax(comps[name], *args)
        calls[name] = (lambda c: lambda: c(*args))(compiled)
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        lines[name] = {"xla_flops": cost.get("flops"), "xla_bytes": cost.get("bytes accessed")}
    try:
        import brainstate
        import brainunit as u
        from trace_cost import DT, build_peer_etrace

        brainstate.environ.set(dt=DT * u.ms)
        calls["peer_pp_prop"] = build_peer_etrace(pb, T, "pp_prop")[0]
        lines["peer_pp_prop"] = {}
    except Exception as exc:  # the peer is optional here
        bench.emit(
            {"benchmark": "step_profile", "mode": "ops", "N": N, "error": bench.error_text(exc)}
        )
    for call in calls.values():
        jax.block_until_ready(call())
    per_op: dict[str, dict[str, list[float]]] = {k: {} for k in calls}
    totals: dict[str, list[float]] = {k: [] for k in calls}
    bench.log(f"op times N={N}: {sorted(calls)} x {reps}")
    for _ in range(reps):
        for name, call in calls.items():
            with tempfile.TemporaryDirectory() as d:
                with jax.profiler.trace(d, create_perfetto_trace=True):
                    jax.block_until_ready(call())
                ops = _op_durations(d, T)
            totals[name].append(sum(ops.values()))
            for op, us in ops.items():
                per_op[name].setdefault(op, []).append(us)
    fastest = {k: {op: min(v) for op, v in ops.items()} for k, ops in per_op.items()}
    fwd = sum(fastest["forward"].values())
    for name, line in lines.items():
        ops = fastest[name]
        total = sum(ops.values())
        top = sorted(ops.items(), key=lambda kv: -kv[1])[:8]
        line.update(
            benchmark="step_profile",
            mode="ops",
            component=name,
            N=N,
            B=pb.B,
            T=T,
            reps=reps,
            op_us_per_step=total,
            op_us_per_step_median_total=float(np.median(totals[name])),
            ops_ratio_vs_forward=total / fwd,
            n_ops=len(ops),
            top_ops=[[op, us] for op, us in top],
        )
        bench.emit(line)


def main(argv: list[str] | None = None) -> None:
    parser = bench.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=None)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--max-seconds", type=float, default=None)
    parser.add_argument("--ops", action="store_true", help="per-op times (jax.profiler)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps = min(args.steps, 5)
    if args.ops:
        bench.emit_machine("step_profile.py", sys.argv[1:])
        for N in args.sizes or ([64] if args.smoke else [1024]):
            op_times(N, min(args.steps, 50), args.reps or (1 if args.smoke else 5))
        return
    sizes = args.sizes or ([64] if args.smoke else [1024] if args.quick else [256, 1024, 4096])
    reps = args.reps or (1 if args.smoke else 3 if args.quick else 7)
    max_seconds = args.max_seconds or (1.0 if args.smoke else 3.0 if args.quick else 20.0)
    bench.emit_machine("step_profile.py", sys.argv[1:])
    t0 = time.perf_counter()
    for N in sizes:
        T_d = None if N > 1024 else (2 if args.smoke else 4 if args.quick else 10)
        try:
            profile(N, args.steps, T_d, reps, max_seconds)
        except Exception as exc:
            bench.emit({"benchmark": "step_profile", "N": N, "error": bench.error_text(exc)})
    bench.emit_summary("step_profile", t0)


if __name__ == "__main__":
    main()
