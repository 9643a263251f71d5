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

* ``"kind": "step"`` (only with ``--sizes``, ``--batch`` or ``--gpu``) -- in one process,
  the learner's ``T``-step run (``learner.jit("run", guard=False)``, what ``fit`` runs with
  the default ``on_nonfinite="raise"``) and the forward simulation of the same
  network, both compiled with the connectivity passed as data, timed round-robin:
  ``per_step_ms`` (learner), ``forward_ms``, ``ratio_vs_forward``, ``per_sample_step_us``,
  compile times, the bytes of constants each program captured (``*_const_bytes``), the
  bytes a connection must move per step at least (``bytes_per_connection``: 36 for the
  learner with Adam, 16 for the forward step) and the bandwidth that makes at the measured
  time (``learner_GBps``); the bytes the compiled steps do move per connection, read from
  their optimised HLO (``learner_hlo_bytes_per_connection``,
  ``forward_hlo_bytes_per_connection``: ``benchmarks/_hlo_bytes.py``; and
  ``learner_guarded_hlo_bytes_per_connection`` for ``learner.jit("run")``, which keeps a
  non-finite update out of its state, compiled but not timed) and the bandwidth those make
  (``*_hlo_GBps``); with ``--bandwidth-gbs`` also ``roofline_ms`` and
  ``x_roofline``.

Run::

    python benchmarks/whole_brain.py --sizes 20000 --batch 1   # learner vs forward, CPU
    python benchmarks/whole_brain.py --gpu --bandwidth-gbs 4300  # the accelerator script
    python benchmarks/whole_brain.py --quick   # a few minutes on an idle 2-core CPU
    python benchmarks/whole_brain.py           # full size: N = 139,255, 1.5e7 connections
    python benchmarks/whole_brain.py --learn-only   # only the "learn" rows (N = 2,000 with
                                                    # BPTT, then N = 139,255 for ~30 min)
    python benchmarks/whole_brain.py --learn-only --full-only   # only the full-size run:
                                # --full-rounds 48 --full-batch 2 --full-lr 5e-3 --full-test 8
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import GB, emit, emit_machine, log, memory_stats
from _hlo_bytes import step_bytes

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

    from traxon.recipes import REGION_LR, region_rates, region_rates_learner
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
    lr = cfg.get("lr") or REGION_LR
    learner = region_rates_learner(net, rounds, steps, lr=lr)
    test = task.sample(12345, cfg["n_test"], split="test")
    init = jax.tree_util.tree_map(np.asarray, learner.init_state(batch).params)
    untrained = learner.evaluate(init, test.x, test.y, test.mask)["loss"]
    log(f"learn N={n}: built in {build_s:.0f} s, untrained held-out loss {untrained:.3f}")
    seen = []
    budget = cfg.get("budget_s") or float("inf")
    t0 = time.perf_counter()
    for i, train in enumerate(task.stream(seed=0, batch_size=batch)):
        if i >= rounds or time.perf_counter() - t0 > budget:
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
        "rounds": len(seen),
        "rounds_planned": rounds,
        "lr": lr,
        "test_sequences": cfg["n_test"],
        "per_step_ms": 1e3 * train_s / (len(seen) * steps),
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
        out["per_step_ms"] = 1e3 * train_s / (len(seen) * steps)
        out["explained_variance"] = RegionRates.explained_variance(loss, base["region_mean"])
        out["rss_peak_bytes"] = vm_hwm()
        print(json.dumps(out), flush=True)


# ------------------------------------------------------------------------------------------
# Step rows: the learner's step beside the forward step, the connectivity passed as data.

# Bytes each connection must move per step at least (float32): the forward step reads its
# two indices, its fixed magnitude and its weight (16); the learner with Adam every step reads
# the indices and the magnitude once and reads and writes the weight and both moments (36).
FORWARD_BYTES_PER_CONNECTION = 16
LEARNER_BYTES_PER_CONNECTION = 36


def const_bytes(traced: Any) -> int:
    """Bytes of the constants captured in a traced program (what JAX warns about)."""
    return int(sum(getattr(c, "nbytes", 0) for c in traced.jaxpr.consts))


_BUILT: dict[int, Any] = {}


def step_row(n: int, batch: int, steps: int, reps: int, bandwidth: float | None) -> dict:
    """Time ``T`` learner steps and ``T`` forward steps of the same network (one process,
    round-robin), each compiled ahead with the connectivity passed as data."""
    import jax
    import jax.numpy as jnp

    from traxon.core.ops import bind_indices
    from traxon.tasks import RegionRates

    t0 = time.perf_counter()
    if n not in _BUILT:  # one network per size, shared by its batch sizes
        _BUILT.clear()
        _BUILT[n] = build(n)
    c, net = _BUILT[n]
    build_s = time.perf_counter() - t0
    learner = learner_for(net)
    ls = learner.init(batch_size=batch)
    task = RegionRates(n_regions=c.n_regions, n_in=N_IN, n_steps=steps, window=min(50, steps))
    b = task.sample(0, batch)
    x, y, m = jnp.asarray(b.x), jnp.asarray(b.y), jnp.asarray(b.mask)
    keys, indices = net.index_arrays(), learner.connectivity

    def forward(indices: Any, params: Any, state: Any, xs: Any) -> Any:
        with bind_indices(keys, indices):
            res = net.simulate(params, state, xs, record=())
        return res.state, res.outputs

    t0 = time.perf_counter()
    traced = jax.jit(forward, donate_argnums=2).trace(indices, ls.params, ls.net_state, x)
    fwd = traced.lower().compile()
    fwd_compile_s, fwd_consts = time.perf_counter() - t0, const_bytes(traced)
    t0 = time.perf_counter()
    # As fit() runs it with the default on_nonfinite="raise": no per-step guard (a call
    # with a non-finite update is discarded whole by the caller).
    traced = learner.jit("run", guard=False, donate_argnums=1).trace(indices, ls, x, y, m)
    run = traced.lower().compile()
    learn_compile_s, learn_consts = time.perf_counter() - t0, const_bytes(traced)
    learn_bytes, fwd_bytes = step_bytes(run.as_text()), step_bytes(fwd.as_text())
    # The pure run as learner.run is (guard=True): compiled for its bytes only, never run.
    guarded = learner.jit("run").trace(indices, ls, x, y, m).lower().compile()
    guarded_bytes = step_bytes(guarded.as_text())
    del guarded
    params = jax.tree_util.tree_map(jnp.copy, ls.params)
    state = jax.tree_util.tree_map(jnp.copy, ls.net_state)
    t_fwd, t_learn = [], []
    for i in range(reps + 1):  # round-robin; the first round warms up
        t0 = time.perf_counter()
        state, _ = jax.block_until_ready(fwd(indices, params, state, x))
        if i:
            t_fwd.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ls, metrics = jax.block_until_ready(run(indices, ls, x, y, m))
        if i:
            t_learn.append(time.perf_counter() - t0)
    fwd_ms = 1e3 * sorted(t_fwd)[len(t_fwd) // 2] / steps
    learn_ms = 1e3 * sorted(t_learn)[len(t_learn) // 2] / steps
    conn = c.n_connections
    row: dict[str, Any] = {
        "kind": "step",
        "algorithm": "es_d_rtrl",
        "device": jax.devices()[0].platform,
        "N": n,
        "connections": conn,
        "B": batch,
        "T": steps,
        "per_step_ms": learn_ms,
        "per_sample_step_us": 1e3 * learn_ms / batch,
        "forward_ms": fwd_ms,
        "ratio_vs_forward": learn_ms / fwd_ms,
        "learner_compile_s": learn_compile_s,
        "forward_compile_s": fwd_compile_s,
        "learner_const_bytes": learn_consts,
        "forward_const_bytes": fwd_consts,
        "bytes_per_connection": LEARNER_BYTES_PER_CONNECTION,
        "forward_bytes_per_connection": FORWARD_BYTES_PER_CONNECTION,
        # Effective bandwidth of the floor's bytes at the measured time.
        # What the compiled steps move (benchmarks/_hlo_bytes.py), per connection per step,
        # and the bandwidth those bytes make at the measured time.
        "learner_hlo_bytes_per_connection": learn_bytes / conn,
        "forward_hlo_bytes_per_connection": fwd_bytes / conn,
        "learner_guarded_hlo_bytes_per_connection": guarded_bytes / conn,
        "learner_hlo_GBps": learn_bytes / (learn_ms * 1e-3) / 1e9,
        "forward_hlo_GBps": fwd_bytes / (fwd_ms * 1e-3) / 1e9,
        "learner_GBps": LEARNER_BYTES_PER_CONNECTION * conn / (learn_ms * 1e-3) / 1e9,
        "forward_GBps": FORWARD_BYTES_PER_CONNECTION * conn / (fwd_ms * 1e-3) / 1e9,
        "loss_last": float(jax.device_get(metrics["loss"]).mean()),
        "build_s": build_s,
        **memory_stats(run),
    }
    if bandwidth:
        row["roofline_ms"] = LEARNER_BYTES_PER_CONNECTION * conn / (bandwidth * 1e9) * 1e3
        row["x_roofline"] = learn_ms / row["roofline_ms"]
    return row


def run_child(cfg: dict[str, Any], timeout: float) -> dict[str, Any]:
    rows = run_child_rows(cfg, timeout)
    return rows[-1]


def run_child_rows(cfg: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
    """Run one configuration in a fresh process (its own peak memory and compile cache): its
    JSON rows from stdout; its progress lines (stderr) are passed on as they come, so a
    long run shows where it is while it runs."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(cfg)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tail: collections.deque[str] = collections.deque(maxlen=3)

    def relay() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            sys.stderr.write(line)
            sys.stderr.flush()
            if line.strip():
                tail.append(line.strip())

    relaying = threading.Thread(target=relay, daemon=True)
    relaying.start()
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        kind = cfg.get("kind", "fit")
        return [{"kind": kind, "N": cfg["N"], "skipped": f"timed out after {timeout:.0f} s"}]
    finally:
        relaying.join(timeout=5)
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
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
        default=48,
        help="training batches of the full-size learning run (about 30 min on one core)",
    )
    parser.add_argument(
        "--full-only",
        action="store_true",
        help="with --learn-only: only the full-size learning run (no 2,000-neuron rows)",
    )
    parser.add_argument(
        "--full-budget-s",
        type=float,
        default=None,
        help="stop the full-size learning run's training after the batch that passes this "
        "many seconds (the learning-rate schedule stays that of --full-rounds)",
    )
    parser.add_argument(
        "--full-batch", type=int, default=2, help="sequences per batch, full-size learning run"
    )
    parser.add_argument(
        "--full-test", type=int, default=8, help="held-out sequences, full-size learning run"
    )
    parser.add_argument(
        "--full-lr",
        type=float,
        default=5e-3,
        help="peak learning rate of the full-size learning run (chosen at N = 20,000 with "
        "80 regions: docs/scaling.md)",
    )
    parser.add_argument(
        "--gpu",
        action="store_true",
        help="the prepared accelerator run: only step rows (fly size at B = 1 and 64, "
        "1,000,000 neurons at B = 1), in a few minutes",
    )
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=None, help="N of the step rows (only those)"
    )
    parser.add_argument(
        "--batch", type=int, nargs="+", default=None, help="B of the step rows (only those)"
    )
    parser.add_argument("--reps", type=int, default=5, help="timed runs per step row")
    parser.add_argument(
        "--bandwidth-gbs",
        type=float,
        default=None,
        help="the device's memory bandwidth (GB/s): step rows then print the roofline",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        cfg = json.loads(args.child)
        (learn if cfg.get("kind") == "learn" else child)(cfg)
        return
    emit_machine("whole_brain.py", sys.argv[1:])
    if args.gpu or args.sizes or args.batch:
        if args.gpu and not (args.sizes or args.batch):
            big = 1_000_000
            plan = [(FULL_N, 1, 100), (FULL_N, 64, 100), (big, 1, 50)]
            if args.smoke:
                plan = [(300, 1, 10), (300, 4, 10), (1_000, 1, 10)]
        else:
            steps = args.steps or (10 if args.smoke else 100)
            plan = [(n, b, steps) for n in args.sizes or [FULL_N] for b in args.batch or [1]]
        reps = 1 if args.smoke else args.reps
        for n, b, steps in plan:
            log(f"step N={n} B={b} T={steps}")
            try:
                emit(step_row(n, b, steps, reps, args.bandwidth_gbs))
            except Exception as exc:  # e.g. out of device memory: report it, go on
                emit({"kind": "step", "N": n, "B": b, "error": f"{type(exc).__name__}: {exc}"})
        return
    budget = args.budget_gb * GB
    # Learning runs: (N, connections, regions, batches, B, test sequences, BPTT too, peak
    # learning rate or None for the recipe's).
    small = (2_000, 200_000, 16)  # the size of examples/whole_brain.py
    full = (FULL_N, 15_000_000, 80)
    full_run = (full, args.full_rounds, args.full_batch, args.full_test, False, args.full_lr)
    if args.smoke:
        learns = [((300, 6_000, 4), 2, 2, 2, True, None)]
    elif args.quick:
        learns = [(small, 120, 4, 16, False, None)]
    elif args.full_only:
        learns = [full_run]
    else:
        learns = [(small, 120, 4, 16, True, None), full_run]
    for (n, conn, regions), rounds, b, n_test, with_bptt, lr in learns:
        cfg = {
            "kind": "learn",
            "N": n,
            "connections": conn,
            "regions": regions,
            "rounds": rounds,
            "B": b,
            "n_test": n_test,
            "bptt": with_bptt,
            "lr": lr,
            "budget_s": args.full_budget_s if n == FULL_N else None,
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
