"""Peak memory of traxon's es_d_rtrl, d_rtrl and bptt versus the run length T and the size N.

The network has memory linear in N by construction: ``n_in = 100`` Poisson inputs, ``N`` LIF
neurons (tau = 20 ms) with sparse input and recurrent weights (``FixedInDegree``, 32
presynaptic partners per neuron) into one Expon(5 ms) AlignPost synapse, recurrence with
delay 1, a leaky readout of 10 units; B = 16. The scan cycles through a fixed pool of 100
input steps and computes its labels from t, so no ``(T, B, n_in)`` array is an argument:
what grows with T is the algorithm's own memory. One function per configuration runs the
tracer over T steps and returns the gradient (``bptt``: window = T, the gradient computed at
the end).

``bptt_remat`` is ``bptt(remat=True)`` (each step rematerialised in the backward pass),
compiled only (full mode), to show how much of BPTT's memory is saved residuals.

Two measurements per configuration:

* (a) ``compiled_bytes`` from XLA (``jax.jit(f).lower(...).compile().memory_analysis()``:
  temp + argument + output bytes; ``temp_bytes`` kept separately). Compiling allocates
  nothing, so this is reported for every configuration, even those that would not fit.
* (b) ``rss_peak_bytes``: ``VmHWM`` of a separate child process (this script with
  ``--child``) that builds the network, compiles and runs the configuration once;
  ``rss_baseline_bytes`` is that child's ``VmRSS`` after imports and building, before
  compiling. Children run only when the compiled estimate is within the memory budget
  (``--budget-gb``, default 16 GB; ``exceeds_budget: true`` otherwise, never run) and the
  machine's available memory, and when their estimated run time fits ``--max-run-seconds``
  (``skipped`` says why otherwise).

Sweeps: T in {1e2, 1e3, 1e4, 1e5} at N = 256 and N in {1e2, 1e3, 1e4, 1e5} at T = 100
(``--quick``: {1e2, 1e4} on both axes, only es_d_rtrl on the N axis, no compile at the
crossing point, children only for es_d_rtrl and bptt at T = 100).
A final line per algorithm and axis (``"fit": true``) gives the least-squares line through
the compiled estimates (bytes = a + b * x) and, for BPTT, the T (or N) at which the compiled
estimate crosses the budget -- extrapolated from the line and, on the T axis, checked by
compiling there. Children reuse the parent's compiled executables through a temporary
persistent compilation cache (deleted at the end).

Run::

    python benchmarks/memory_scaling.py --quick   # about a minute on an idle 2-core CPU
    python benchmarks/memory_scaling.py --smoke   # N, T in {10, 20, 32, 64}: every code path

Every line carries ``per_step_ms`` (the child's run time per step, first call included:
an upper bound; ``None`` without a child run) and ``ratio_vs_forward = None`` (no forward
run here; see ``trace_cost.py``).
    python benchmarks/memory_scaling.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import _common as bench
import numpy as np

N_IN, N_OUT, B, K = 100, 10, 16, 32
TAU_M, TAU_S, TAU_O = 20.0, 5.0, 20.0
IN_PROB = 0.05
POOL = 100  # distinct input steps, cycled
ALGORITHMS = ("es_d_rtrl", "d_rtrl", "bptt", "bptt_remat")
OPTIONS = {"bptt_remat": ("bptt", {"remat": True})}  # compiled estimate only, full mode
N_AXIS_T = 256  # N of the T sweep
T_AXIS_N = 100  # T of the N sweep


def build(N: int) -> tuple[Any, dict, dict]:
    import jax

    from traxon.core import LIF, Expon, FixedInDegree, Network, Population, Projection, Readout

    k_in, k_rec, k_init = jax.random.split(jax.random.PRNGKey(0), 3)
    net = Network(
        N_IN,
        {"h": Population(LIF(tau=TAU_M), N)},
        [
            Projection(
                "x",
                "h",
                FixedInDegree.random(k_in, N_IN, N, min(K, N_IN), gain=6.0),
                synapse=Expon(TAU_S),
            ),
            Projection(
                "h",
                "h",
                FixedInDegree.random(k_rec, N, N, min(K, N), gain=1.0),
                synapse=Expon(TAU_S),
                delay=1,
            ),
        ],
        readout=Readout("h", N_OUT, tau=TAU_O, bias=False),
    )
    params, state = net.init(k_init, B)
    return net, params, state


def run_fn(net: Any, algorithm: str, T: int) -> Any:
    """``(params, state, pool) -> gradients`` of ``algorithm`` over T steps.

    Step ``t`` reads input ``pool[t % POOL]`` (a fixed ``(POOL, B, n_in)`` array of Poisson
    spikes, the same size for every T) and label ``(t + b) % n_out`` -- no per-step PRNG,
    which would double the compile time on CPU.
    """
    import jax
    import jax.numpy as jnp

    from traxon.learn import cross_entropy
    from traxon.trace import get_algorithm

    name, options = OPTIONS.get(algorithm, (algorithm, {}))
    tracer = get_algorithm(name, **options).bind(net, cross_entropy.fn, window=T)

    def run(params: dict, state: dict, pool: jax.Array) -> Any:
        ts = tracer.init(params, state, target_example=jnp.zeros((B,), jnp.int32))
        w = jnp.full((B,), 1.0 / B)

        def body(carry: Any, _: Any) -> Any:
            st, tst, t = carry
            x = jax.lax.dynamic_index_in_dim(pool, t % POOL, keepdims=False)
            y = (t + jnp.arange(B)) % N_OUT
            st, tst, _ = tracer.step(params, st, tst, {"x": x}, y, w)
            return (st, tst, t + 1), None

        # A step counter in the carry (no (T,) scanned array, whose size would grow with T).
        carry0 = (state, ts, jnp.zeros((), jnp.int32))
        (_, ts, _), _ = jax.lax.scan(body, carry0, None, length=T)
        return tracer.gradients(params, ts)

    return run


def input_pool() -> Any:
    import jax

    key = jax.random.PRNGKey(1)
    return (jax.random.uniform(key, (POOL, B, N_IN)) < IN_PROB).astype(np.float32)


def compiled_estimate(net: Any, params: dict, state: dict, algorithm: str, T: int) -> dict:
    import jax

    spec = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params)
    sspec = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state)
    pool = jax.ShapeDtypeStruct((POOL, B, N_IN), np.float32)
    t0 = time.perf_counter()
    compiled = jax.jit(run_fn(net, algorithm, T)).lower(spec, sspec, pool).compile()
    return {**bench.memory_stats(compiled), "compile_s": time.perf_counter() - t0}


def _status(field: str) -> int | None:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return None


def child(spec: dict) -> None:
    """Build, compile and run one configuration; print one JSON line with its RSS."""
    import jax

    net, params, state = build(spec["N"])
    pool = input_pool()
    jax.block_until_ready((params, state, pool))
    baseline = _status("VmRSS")
    fn = jax.jit(run_fn(net, spec["algorithm"], spec["T"]))
    t0 = time.perf_counter()
    compiled = fn.lower(params, state, pool).compile()
    t1 = time.perf_counter()
    jax.block_until_ready(compiled(params, state, pool))
    t2 = time.perf_counter()
    print(
        json.dumps(
            {
                "rss_peak_bytes": _status("VmHWM"),
                "rss_baseline_bytes": baseline,
                "child_compile_s": t1 - t0,
                "child_run_s": t2 - t1,
            }
        ),
        flush=True,
    )


def run_child(spec: dict, cache: str, timeout: float) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)]
    cmd += ["--cache", cache]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"rss_error": f"child timed out after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        return {"rss_error": tail[0][:300]}
    return json.loads(lines[-1])


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares ``y = a + b x``."""
    b, a = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return float(a), float(b)


def use_compilation_cache(path: str) -> None:
    """Share compiled executables between this process and its children (same HLO)."""
    import jax

    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def main(argv: list[str] | None = None) -> None:
    parser = bench.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--child", type=str, default=None, help=argparse_hidden())
    parser.add_argument("--cache", type=str, default=None, help=argparse_hidden())
    parser.add_argument("--budget-gb", type=float, default=16.0)
    parser.add_argument("--max-run-seconds", type=float, default=None)
    parser.add_argument("--no-rss", action="store_true", help="compiled estimates only")
    parser.add_argument("--algorithms", nargs="*", default=list(ALGORITHMS), choices=ALGORITHMS)
    args = parser.parse_args(argv)
    if args.child:
        if args.cache:
            use_compilation_cache(args.cache)
        child(json.loads(args.child))
        return
    quick = args.quick or args.smoke
    if args.smoke:  # d_rtrl runs the same code as es_d_rtrl here
        T_values, N_values = [10, 20], [32, 64]
        args.algorithms = [a for a in args.algorithms if a in ("es_d_rtrl", "bptt")]
    else:
        T_values = [100, 10_000] if quick else [100, 1000, 10_000, 100_000]
        N_values = [100, 10_000] if quick else [100, 1000, 10_000, 100_000]
    budget = args.budget_gb * bench.GB
    max_run = args.max_run_seconds or (15.0 if quick else 40.0)
    available = bench.available_memory()
    safe = min(budget, 0.5 * available)
    bench.emit_machine("memory_scaling.py", sys.argv[1:])
    t_start = time.perf_counter()
    cache = tempfile.mkdtemp(prefix="traxon-bench-cache-")
    use_compilation_cache(cache)
    try:
        sweep(args, quick, T_values, N_values, budget, safe, max_run, cache)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    bench.emit_summary("memory_scaling", t_start)


def sweep(
    args: Any,
    quick: bool,
    T_values: list[int],
    N_values: list[int],
    budget: float,
    safe: float,
    max_run: float,
    cache: str,
) -> None:
    configs: list[tuple[str, int, int]] = [("T", N_AXIS_T, T) for T in T_values]
    configs += [("N", N, T_AXIS_N) for N in N_values]
    built: dict[int, tuple[Any, dict, dict]] = {}
    per_step: dict[tuple[str, str], tuple[int, float]] = {}
    fits: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for axis, N, T in configs:
        if N not in built:
            bench.log(f"building N={N}")
            built[N] = build(N)
        net, params, state = built[N]
        for algorithm in args.algorithms:
            if quick and (algorithm == "bptt_remat" or (axis == "N" and algorithm != "es_d_rtrl")):
                continue  # --quick: no bptt_remat; only es_d_rtrl on the N axis
            line: dict[str, Any] = {
                "benchmark": "memory_scaling",
                "axis": axis,
                "algorithm": algorithm,
                "N": N,
                "T": T,
                "B": B,
                "K": K,
                "budget_bytes": budget,
            }
            try:
                line.update(compiled_estimate(net, params, state, algorithm, T))
            except Exception as exc:
                line["error"] = bench.error_text(exc)
                bench.emit(line)
                continue
            cb = line["compiled_bytes"]
            fits.setdefault((algorithm, axis), []).append((T if axis == "T" else N, cb))
            line["exceeds_budget"] = bool(cb is not None and cb > budget)
            want_rss = (
                not args.no_rss
                and algorithm in ALGORITHMS[:3]
                and (not quick or (axis == "T" and T_values[0] == T and algorithm != "d_rtrl"))
            )
            prev = per_step.get((algorithm, axis))
            guess = None if prev is None else prev[1] * T * max(1.0, N / prev[0])
            if line["exceeds_budget"]:
                line["skipped"] = f"compiled estimate exceeds the {budget / bench.GB:.0f} GB budget"
            elif not want_rss:
                line["skipped"] = (
                    "no child run in --quick mode" if quick else "compiled estimate only"
                )
            elif cb is not None and cb > safe:
                line["skipped"] = (
                    f"compiled estimate over half the available memory ({safe / bench.GB:.1f} GB)"
                )
            elif guess is not None and guess > max_run:
                line["skipped"] = (
                    f"time: ~{guess:.0f} s estimated run (from a smaller configuration), "
                    f"over the {max_run:.0f} s budget"
                )
            else:
                bench.log(f"child: {algorithm} N={N} T={T}")
                spec = {"algorithm": algorithm, "N": N, "T": T}
                res = run_child(spec, cache, timeout=max(4 * max_run, 120))
                line.update(res)
                if "child_run_s" in res:
                    per_step[(algorithm, axis)] = (N, res["child_run_s"] / T)
                    line["child_ms_per_step"] = res["child_run_s"] / T * 1e3
                    # one untimed-warm-up run including the first call's allocations: an
                    # upper bound of the per-step time, not comparable to trace_cost.py
                    line["per_step_ms"] = line["child_ms_per_step"]
            bench.emit(line)
    emit_fits(fits, built, budget, check=not quick)


def emit_fits(
    fits: dict[tuple[str, str], list[tuple[float, float]]],
    built: dict[int, tuple[Any, dict, dict]],
    budget: float,
    check: bool,
) -> None:
    """Linear fits of the compiled estimates and where BPTT crosses the budget."""
    for (algorithm, axis), pts in fits.items():
        pts = [p for p in pts if p[1] is not None]
        if len(pts) < 2:
            continue
        xs, ys = zip(*pts, strict=True)
        a, b = fit_line(list(xs), list(ys))
        out: dict[str, Any] = {
            "benchmark": "memory_scaling",
            "fit": True,
            "axis": axis,
            "algorithm": algorithm,
            "N": N_AXIS_T if axis == "T" else None,
            "T": T_AXIS_N if axis == "N" else None,
            "intercept_bytes": a,
            "slope_bytes_per_unit": b,
            "growth_over_range": ys[-1] / ys[0] if ys[0] else None,
            "range": [xs[0], xs[-1]],
        }
        if algorithm.startswith("bptt") and b > 0:
            out["budget_bytes"] = budget
            out["crosses_budget_at"] = (budget - a) / b
            if check and axis == "T" and out["crosses_budget_at"] > 0:
                T_check = int(np.ceil(out["crosses_budget_at"]))
                net, params, state = built[N_AXIS_T]
                try:
                    chk = compiled_estimate(net, params, state, algorithm, T_check)
                    out["check_T"] = T_check
                    out["check_compiled_bytes"] = chk["compiled_bytes"]
                except Exception as exc:
                    out["check_error"] = bench.error_text(exc)
        bench.emit(out)


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
