"""Whole-brain online fit: es_d_rtrl on a synthetic fly-sized connectome, against BPTT memory.

The network is :func:`traxon.connectome.connectome_network` of
:func:`traxon.connectome.synthetic_connectome` (LIF + Expon AlignPost, CSR recurrent weights
with Dale signs and synapse-count magnitudes, one trainable scale per connection, a Dense
input encoder of 16 channels, a fixed region-rate readout), trained online on
:class:`traxon.tasks.RegionRates` with ``es_d_rtrl`` (``decay`` = the membrane leak) and
Adam, batch B = 1, update every step. Connections per neuron are those of FlyWire v783
(1.5e7 / 139,255 = 108).

Lines (one JSON object each, the first is ``{"machine": ...}``):

* ``"kind": "fit"`` -- a child process per N builds the connectome and the learner, compiles
  the T-step ``learner.run`` scan and runs it: ``per_step_ms`` (median of repeated runs over
  ``T`` steps, divided by T), ``rss_peak_bytes`` (the child's ``VmHWM``), ``trace_bytes``
  (presynaptic + postsynaptic traces: O(N)), ``grad_bytes`` (the gradient accumulator, one
  per weight), ``param_bytes``, ``compiled_bytes`` (XLA's estimate of the scan) and the loss
  of the first and last runs.
* ``"kind": "learn"`` -- a child process per N trains the recipe of
  ``examples/whole_brain.py`` (16 stimulus channels of 0-800 Hz drifting over 300 ms, a
  100-step readout, the first 100 steps unscored, Adam with a cosine-decayed learning rate,
  B = 4, sequences of 300 steps) for ``rounds`` sequences, and reports on a held-out batch
  the trained network's ``loss`` beside the baselines: ``baseline_constant`` (the training
  targets' mean rate), ``baseline_region_mean`` (each region's training mean),
  ``untrained``, and ``explained_variance`` beyond each region's mean; where it fits
  (small N), a second row ``"algorithm": "bptt"`` trains BPTT through each whole sequence
  from the same initial weights on the same batches (the reference).
* ``"kind": "trace_vs_N"`` -- trace bytes from ``jax.eval_shape`` of the tracer's ``init``
  for N from 1e3 to 1.4e5 (no arrays allocated); ``"kind": "trace_vs_T"`` -- XLA's compiled
  temp bytes of the learner's scan over T steps at fixed N (constant in T).
* ``"kind": "bptt"`` -- XLA's compiled memory of ``jax.grad`` through the T-step scan of the
  same network (compiled only, never run), T doubling until it exceeds ``--budget-gb``; the
  last line (``"crossing": true``) reports the first T over the budget.

Run::

    python benchmarks/whole_brain.py --quick   # a few minutes on an idle 2-core CPU
    python benchmarks/whole_brain.py           # full size: N = 139,255, 1.5e7 connections
    python benchmarks/whole_brain.py --learn-only   # only the "learn" rows (N = 2,000 with
                                                    # BPTT, then N = 139,255 for ~30 min)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import GB, emit, emit_machine, log, memory_stats

CONNECTIONS_PER_NEURON = 15_000_000 / 139_255
FULL_N = 139_255
N_IN = 16


def build(n: int, seed: int = 0, per_neuron: float = CONNECTIONS_PER_NEURON) -> Any:
    """The synthetic connectome of ``n`` neurons and its traxon network."""
    from traxon.connectome import connectome_network, synthetic_connectome

    n_regions = max(1, min(80, n // 100))
    c = synthetic_connectome(n, round(per_neuron * n), n_regions, seed=seed)
    net = connectome_network(c, n_inputs=N_IN, rate_window=50)
    return c, net


def learner_for(net: Any) -> Any:
    import math

    import optax

    import traxon
    from traxon.tasks import region_rate_loss

    algo = traxon.trace.es_d_rtrl(decay=math.exp(-1.0 / 20.0))
    return traxon.online_learner(net, algo, optax.adam(1e-2), loss=region_rate_loss())


def nbytes(tree: Any) -> int:
    import jax

    return int(sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree)))


def trace_split(trace_state: Any) -> tuple[int, int]:
    """(trace bytes, gradient-accumulator bytes) of an es_d_rtrl state."""
    traces = (trace_state.pre, trace_state.post, trace_state.pre_k, trace_state.post_k)
    grads = (trace_state.grads, trace_state.acc)
    return nbytes(traces), nbytes(grads)


def vm_hwm() -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# ------------------------------------------------------------------------------------------
# Child: one online-fit configuration in a fresh process (for its peak RSS).


def child(cfg: dict[str, Any]) -> None:
    import jax
    import jax.numpy as jnp

    from traxon.tasks import RegionRates

    n, steps, reps = cfg["N"], cfg["T"], cfg["reps"]
    t0 = time.perf_counter()
    c, net = build(n)
    build_s = time.perf_counter() - t0
    learner = learner_for(net)
    ls = learner.init(batch_size=1)
    task = RegionRates(n_regions=c.n_regions, n_in=N_IN, n_steps=steps, window=min(50, steps))
    batches = [task.sample(i, 1) for i in range(reps + 1)]
    args = [(jnp.asarray(b.x), jnp.asarray(b.y), jnp.asarray(b.mask)) for b in batches]
    t0 = time.perf_counter()
    compiled = jax.jit(learner.run).lower(ls, *args[0]).compile()
    compile_s = time.perf_counter() - t0
    times, losses = [], []
    for i, a in enumerate(args):
        t0 = time.perf_counter()
        ls, metrics = jax.block_until_ready(compiled(ls, *a))
        if i:  # the first run warms up
            times.append(time.perf_counter() - t0)
        m = jax.device_get(metrics)
        losses.append(float((m["loss"] * a[2][:, 0]).sum() / max(float(a[2].sum()), 1.0)))
    trace_b, grad_b = trace_split(ls.trace_state)
    times.sort()
    out = {
        "kind": "fit",
        "algorithm": "es_d_rtrl",
        "N": n,
        "connections": c.n_connections,
        "synapses": c.n_synapses,
        "T": steps,
        "B": 1,
        "per_step_ms": 1e3 * times[len(times) // 2] / steps,
        "rate_hz": float(1e3 * jax.device_get(metrics["rates"]["brain"]).mean()),
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "trace_bytes": trace_b,
        "grad_bytes": grad_b,
        "param_bytes": nbytes(ls.params),
        "build_s": build_s,
        "compile_s": compile_s,
        "rss_peak_bytes": vm_hwm(),
        **memory_stats(compiled),
    }
    print(json.dumps(out), flush=True)


def learn(cfg: dict[str, Any]) -> None:
    """Train the recipe at size ``N`` and print its held-out loss beside the baselines."""
    import jax
    import numpy as np

    from traxon.recipes import region_rates, region_rates_learner
    from traxon.tasks import RegionRates

    n, rounds, steps, batch = cfg["N"], cfg["rounds"], cfg["T"], cfg["B"]
    window, rate_window, burn_in = cfg["window"], cfg["rate_window"], cfg["burn_in"]
    from traxon.connectome import connectome_network, synthetic_connectome

    t0 = time.perf_counter()
    c = synthetic_connectome(n, cfg["connections"], cfg["regions"], seed=0)
    net = connectome_network(c, n_inputs=N_IN, rate_window=rate_window)
    build_s = time.perf_counter() - t0
    # The recipe of examples/whole_brain.py (docs/scaling.md).
    task = region_rates(c.n_regions, N_IN, steps, window, burn_in)
    learner = region_rates_learner(net, rounds, steps)
    test = task.sample(12345, cfg["n_test"], split="test")
    init = jax.tree_util.tree_map(np.asarray, learner.init_state(batch).params)
    untrained = learner.evaluate(init, test.x, test.y, test.mask)["loss"]
    seen = []
    t0 = time.perf_counter()
    for i, train in enumerate(task.stream(seed=0, batch_size=batch)):
        if i >= rounds:
            break
        seen.append(train)
        learner.fit([train])
        log(f"learn N={n}: round {i + 1}/{rounds}, {time.perf_counter() - t0:.0f} s")
    train_s = time.perf_counter() - t0
    base = task.baselines(test, seen)
    row = {
        "kind": "learn",
        "algorithm": "es_d_rtrl",
        "N": n,
        "connections": c.n_connections,
        "regions": c.n_regions,
        "T": steps,
        "B": batch,
        "rounds": rounds,
        "test_sequences": cfg["n_test"],
        "per_step_ms": 1e3 * train_s / (rounds * steps),
        "train_s": train_s,
        "build_s": build_s,
        "loss": learner.evaluate(learner.state.params, test.x, test.y, test.mask)["loss"],
        "baseline_constant": base["constant"],
        "baseline_region_mean": base["region_mean"],
        "untrained": untrained,
        "rss_peak_bytes": vm_hwm(),
    }
    row["explained_variance"] = RegionRates.explained_variance(row["loss"], base["region_mean"])
    print(json.dumps(row), flush=True)
    if cfg.get("bptt"):
        bptt = region_rates_learner(net, rounds, steps, bptt=True)
        bptt.init_state(batch, params=init)
        t0 = time.perf_counter()
        for train in seen:
            bptt.fit([train])
        train_s = time.perf_counter() - t0
        loss = bptt.evaluate(bptt.state.params, test.x, test.y, test.mask)["loss"]
        out = {**row, "algorithm": "bptt", "loss": loss, "train_s": train_s}
        out["per_step_ms"] = 1e3 * train_s / (rounds * steps)
        out["explained_variance"] = RegionRates.explained_variance(loss, base["region_mean"])
        out["rss_peak_bytes"] = vm_hwm()
        print(json.dumps(out), flush=True)


def run_child(cfg: dict[str, Any], timeout: float) -> dict[str, Any]:
    rows = run_child_rows(cfg, timeout)
    return rows[-1]


def run_child_rows(cfg: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(cfg)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        kind = cfg.get("kind", "fit")
        return [{"kind": kind, "N": cfg["N"], "skipped": f"timed out after {timeout:.0f} s"}]
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        tail = res.stderr.strip().splitlines()[-3:]
        return [{"kind": cfg.get("kind", "fit"), "N": cfg["N"], "error": " | ".join(tail)}]
    return [json.loads(line) for line in lines]


# ------------------------------------------------------------------------------------------
# Parent sweeps.


def trace_vs_n(sizes: list[int]) -> None:
    import jax

    for n in sizes:
        # Trace shapes depend on N (and the inputs/regions), not on the connections.
        _, net = build(n, per_neuron=4.0)
        learner = learner_for(net)
        ls = jax.eval_shape(lambda: learner.init(batch_size=1))
        trace_b, _ = trace_split(ls.trace_state)
        emit(
            {
                "kind": "trace_vs_N",
                "algorithm": "es_d_rtrl",
                "N": n,
                "B": 1,
                "trace_bytes": trace_b,
                "trace_bytes_per_neuron": trace_b / n,
            }
        )


def trace_vs_t(n: int, lengths: list[int]) -> None:
    import jax
    import jax.numpy as jnp

    c, net = build(n)
    learner = learner_for(net)
    ls = jax.eval_shape(lambda: learner.init(batch_size=1))
    for steps in lengths:
        xs = jax.ShapeDtypeStruct((steps, 1, N_IN), jnp.float32)
        ys = jax.ShapeDtypeStruct((steps, 1, c.n_regions), jnp.float32)
        ms = jax.ShapeDtypeStruct((steps, 1), jnp.float32)
        t0 = time.perf_counter()
        compiled = jax.jit(learner.run).lower(ls, xs, ys, ms).compile()
        emit(
            {
                "kind": "trace_vs_T",
                "algorithm": "es_d_rtrl",
                "N": n,
                "T": steps,
                "B": 1,
                "compile_s": time.perf_counter() - t0,
                **memory_stats(compiled),
            }
        )


def bptt_crossing(n: int, start: int, factor: int, budget: float, max_t: int) -> None:
    import jax
    import jax.numpy as jnp

    import traxon
    from traxon.tasks import region_rate_loss

    c, net = build(n)
    params = jax.eval_shape(lambda: net.init_params(jax.random.PRNGKey(0)))
    state = jax.eval_shape(lambda: net.init_state(1))
    loss = region_rate_loss().fn
    steps, last = start, None
    prev: dict[str, Any] | None = None
    while steps <= max_t:
        xs = {"x": jax.ShapeDtypeStruct((steps, 1, N_IN), jnp.float32)}
        ys = jax.ShapeDtypeStruct((steps, 1, c.n_regions), jnp.float32)
        ws = jax.ShapeDtypeStruct((steps, 1), jnp.float32)

        def grad(p: Any, s: Any, x: Any, y: Any, w: Any) -> Any:
            return traxon.bptt_gradient(net, loss, p, s, x, y, w)[0]

        t0 = time.perf_counter()
        compiled = jax.jit(grad).lower(params, state, xs, ys, ws).compile()
        stats = memory_stats(compiled)
        row = {
            "kind": "bptt",
            "algorithm": "bptt",
            "N": n,
            "connections": c.n_connections,
            "T": steps,
            "B": 1,
            "compile_s": time.perf_counter() - t0,
            **stats,
        }
        emit(row)
        last = steps
        if stats["compiled_bytes"] is not None and stats["compiled_bytes"] > budget:
            extra: dict[str, Any] = {}
            if prev is not None and prev["compiled_bytes"] is not None:
                # Memory is linear in T: the line through the last two points.
                slope = (stats["compiled_bytes"] - prev["compiled_bytes"]) / (steps - prev["T"])
                extra["bytes_per_step"] = slope
                extra["T_at_budget_linear"] = prev["T"] + (budget - prev["compiled_bytes"]) / slope
            emit({**row, **extra, "crossing": True, "budget_bytes": budget})
            return
        prev = row
        steps *= factor
    emit({"kind": "bptt", "N": n, "crossing": None, "note": f"under budget up to T={last}"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, < 60 s")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes: every code path in seconds (tests)"
    )
    parser.add_argument("--budget-gb", type=float, default=16.0)
    parser.add_argument("--steps", type=int, default=None, help="T of the timed online runs")
    parser.add_argument(
        "--learn-only", action="store_true", help="only the learning runs (kind 'learn')"
    )
    parser.add_argument(
        "--full-rounds",
        type=int,
        default=24,
        help="training sequences of the full-size learning run (about 30 min here)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        cfg = json.loads(args.child)
        (learn if cfg.get("kind") == "learn" else child)(cfg)
        return
    emit_machine("whole_brain.py", sys.argv[1:])
    budget = args.budget_gb * GB
    # Learning runs: (N, connections, regions, sequences, B, test sequences, BPTT too).
    small = (2_000, 200_000, 16)  # the size of examples/whole_brain.py
    if args.smoke:
        learns = [((300, 6_000, 4), 2, 2, 2, True)]
    elif args.quick:
        learns = [(small, 120, 4, 16, False)]
    else:
        learns = [
            (small, 120, 4, 16, True),
            ((FULL_N, 15_000_000, 80), args.full_rounds, 2, 4, False),
        ]
    for (n, conn, regions), rounds, b, n_test, with_bptt in learns:
        cfg = {
            "kind": "learn",
            "N": n,
            "connections": conn,
            "regions": regions,
            "rounds": rounds,
            "B": b,
            "n_test": n_test,
            "bptt": with_bptt,
        }
        if args.smoke:
            cfg.update(T=150, window=25, rate_window=25, burn_in=50)
        else:
            cfg.update(T=300, window=50, rate_window=100, burn_in=100)
        log(f"learn N={n} ({rounds} sequences{', and bptt' if with_bptt else ''})")
        for row in run_child_rows(cfg, timeout=4 * 3600):
            emit(row)
    if args.learn_only:
        return
    if args.smoke:
        fit_sizes, steps, reps = [300], args.steps or 20, 1
        n_sizes = [300, 1_000]
        t_n, t_lengths = 300, [20, 40]
        b_n, b_start, b_factor = 1_000, 64, 4
        budget = min(budget, 0.05 * GB)
    elif args.quick:
        fit_sizes, steps, reps = [1_000, 10_000], args.steps or 100, 1
        n_sizes = [1_000, 10_000, FULL_N]
        t_n, t_lengths = 1_000, [100, 1_000]
        b_n, b_start, b_factor = 10_000, 512, 4
    else:
        fit_sizes, steps, reps = [1_000, 10_000, FULL_N], args.steps or 100, 2
        n_sizes = [1_000, 3_000, 10_000, 30_000, 100_000, FULL_N]
        t_n, t_lengths = 10_000, [100, 1_000, 10_000]
        b_n, b_start, b_factor = FULL_N, 16, 2
    for n in fit_sizes:
        log(f"fit N={n}")
        emit(run_child({"N": n, "T": steps, "reps": reps}, timeout=1800))
    log("trace vs N")
    trace_vs_n(n_sizes)
    log("trace vs T")
    trace_vs_t(t_n, t_lengths)
    log("bptt compiled memory")
    bptt_crossing(b_n, b_start, b_factor, budget, max_t=1 << 20)


if __name__ == "__main__":
    main()
