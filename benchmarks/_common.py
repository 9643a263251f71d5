"""Shared helpers of the benchmark scripts: machine info, JSON output, timing, XLA memory.

Every script prints one JSON object per line on stdout (nothing else); progress goes to
stderr. The first line is ``{"machine": {...}}``.

Timing: every function is compiled ahead of time (``jax.jit(f).lower(...).compile()``), run
once to warm up, then timed for several repetitions with ``jax.block_until_ready``; the
median is reported. Functions that are compared with each other are timed round-robin
(A, B, C, A, B, C, ...) so that a change of load on the machine hits them alike.

Memory: ``compiled.memory_analysis()`` of the same executable; ``compiled_bytes`` is
``temp + argument + output`` bytes, and ``temp_bytes`` is kept separately.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

GB = 1024**3


def log(*parts: Any) -> None:
    """Progress message on stderr (stdout is reserved for JSON lines)."""
    print("[bench]", *parts, file=sys.stderr, flush=True)


# Fields every result line (a line with an ``algorithm``) carries; ``None`` when not measured.
ROW_FIELDS = ("algorithm", "N", "T", "B", "per_step_ms", "compiled_bytes", "ratio_vs_forward")


def emit(obj: Mapping[str, Any]) -> None:
    """Print one JSON object on its own line (result lines completed with ``ROW_FIELDS``).

    A result line of traxon (``library`` absent or ``"traxon"``) also carries
    ``ratio_vs_peer`` (traxon's time over the peer's same algorithm, ``None`` when there is
    no such peer row).
    """
    obj = dict(obj)
    if "algorithm" in obj:
        for field in ROW_FIELDS:
            obj.setdefault(field, None)
        if obj.get("library", "traxon") == "traxon":
            obj.setdefault("ratio_vs_peer", None)
    print(json.dumps(_clean(obj)), flush=True)


def _clean(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        v = float(x)
        if not np.isfinite(v):
            return None
        return float(f"{v:.6g}")
    return x


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mem_info(field: str) -> int | None:
    """A field of /proc/meminfo in bytes (``MemTotal``, ``MemAvailable``)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def source_info() -> dict[str, Any]:
    """Which traxon was measured: git commit, uncommitted changes under src/, a content hash."""
    import hashlib
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out: dict[str, Any] = {}
    try:
        out["git_commit"] = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
            ).stdout.strip()
            or None
        )
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout
        out["src_uncommitted_changes"] = bool(status.strip())
    except OSError:
        pass
    digest = hashlib.sha1()
    src = os.path.join(root, "src", "traxon")
    for dirpath, _, files in sorted(os.walk(src)):
        for name in sorted(files):
            if name.endswith(".py"):
                with open(os.path.join(dirpath, name), "rb") as fh:
                    digest.update(name.encode() + fh.read())
    out["src_sha1"] = digest.hexdigest()[:12]
    return out


def machine_info(extra_packages: tuple[str, ...] = ()) -> dict[str, Any]:
    import jax

    info = {
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "mem_total_bytes": mem_info("MemTotal"),
        "loadavg_1min_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "traxon": _version("traxon"),
        **source_info(),
    }
    for pkg in extra_packages:
        info[pkg] = _version(pkg)
    return info


def emit_machine(script: str, argv: list[str], extra_packages: tuple[str, ...] = ()) -> None:
    emit({"machine": machine_info(extra_packages), "script": script, "argv": argv})


def loadavg() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def available_memory() -> int:
    """The bytes /proc/meminfo calls available (8 GB where it cannot be read)."""
    return mem_info("MemAvailable") or 8 * GB


def emit_summary(benchmark: str, t_start: float, **extra: Any) -> None:
    """The last line of a script: its wall time since ``t_start`` (``time.perf_counter()``),
    the load at the end and ``extra`` fields."""
    emit(
        {
            "benchmark": benchmark,
            "summary": True,
            "wall_s": time.perf_counter() - t_start,
            "loadavg_1min_at_end": loadavg(),
            **extra,
        }
    )


# --------------------------------------------------------------------------------------
# XLA memory analysis.


def memory_stats(compiled: Any) -> dict[str, Any]:
    """``compiled_bytes`` (temp + argument + output) and its parts, from XLA."""
    try:
        ma = compiled.memory_analysis()
    except Exception as exc:  # some backends do not implement it
        return {"compiled_bytes": None, "memory_error": str(exc)}
    if ma is None:
        return {"compiled_bytes": None}
    temp = int(ma.temp_size_in_bytes)
    arg = int(ma.argument_size_in_bytes)
    out = int(ma.output_size_in_bytes)
    return {
        "compiled_bytes": temp + arg + out,
        "temp_bytes": temp,
        "argument_bytes": arg,
        "output_bytes": out,
        "alias_bytes": int(ma.alias_size_in_bytes),
    }


def compile_jax(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """``jax.jit(fn).lower(*args).compile()`` and the seconds it took."""
    import jax

    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - t0


def tracer_run(tracer: Any, losses: bool = False) -> Callable[..., Any]:
    """``run(params, state, xs, ys, ws)``: a bound traxon tracer stepped over the sequence
    (one ``lax.scan``) and its gradients; with ``losses``, also the loss of every step."""
    import jax

    def run(params: Any, state: Any, xs: Any, ys: Any, ws: Any) -> Any:
        ts = tracer.init(params, state, target_example=ys[0])

        def body(carry: Any, inp: Any) -> Any:
            st, tst = carry
            x, y, w = inp
            st, tst, out = tracer.step(params, st, tst, {"x": x}, y, w)
            return (st, tst), (out.loss if losses else None)

        (_, ts), per_step = jax.lax.scan(body, (state, ts), (xs, ys, ws))
        grads = tracer.gradients(params, ts)
        return (grads, per_step) if losses else grads

    return run


# --------------------------------------------------------------------------------------
# Timing.


def time_round_robin(
    calls: Mapping[str, Callable[[], Any]], reps: int, max_seconds: float
) -> dict[str, dict[str, Any]]:
    """Median wall time of each call after one warm-up run, timed round-robin.

    Each call is warmed up once (the warm-up is timed too). A call whose warm-up alone
    exceeds half of ``max_seconds`` keeps the warm-up as its only sample (``warmup_only``:
    for such long runs the one-off costs of a first call are negligible); others
    are repeated up to ``reps`` times while their own timed total stays under
    ``max_seconds`` (at least one timed repetition). ``result`` is the warm-up's output.
    """
    import jax

    samples: dict[str, list[float]] = {k: [] for k in calls}
    warm: dict[str, float] = {}
    results: dict[str, Any] = {}
    for k, f in calls.items():
        t0 = time.perf_counter()
        results[k] = jax.block_until_ready(f())
        warm[k] = time.perf_counter() - t0
    active = [k for k in calls if warm[k] <= 0.5 * max_seconds]
    for r in range(reps):
        for k in list(active):
            if r >= 1 and sum(samples[k]) + warm[k] > max_seconds:
                active.remove(k)
                continue
            t0 = time.perf_counter()
            jax.block_until_ready(calls[k]())
            samples[k].append(time.perf_counter() - t0)
    out = {}
    for k in calls:
        s = samples[k] or [warm[k]]
        out[k] = {
            "median_s": float(np.median(s)),
            "min_s": float(np.min(s)),
            "max_s": float(np.max(s)),
            "n_reps": len(samples[k]),
            "warmup_s": warm[k],
            "warmup_only": not samples[k],
            "result": results[k],
        }
    return out


def brainpy_lif(n: int, tau_ms: float) -> Any:
    """The brainpy.state LIF both peer networks use (the traxon networks' LIF: R = 1,
    V_th = 1, V_reset = V_rest = 0, starting at 0)."""
    import brainpy.state as bps
    import braintools
    import brainunit as u

    return bps.LIF(
        n,
        R=1.0,
        tau=tau_ms * u.ms,
        V_th=1.0,
        V_reset=0.0,
        V_rest=0.0,
        V_initializer=braintools.init.ZeroInit(),
    )


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small configuration (< 60 s)")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny configuration that runs every code path in seconds (numbers meaningless)",
    )
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per function")
    return parser


def error_text(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: A compiled function ready to time: ``(call, memory_stats, compile seconds)``.
Built = tuple[Callable[[], Any], dict, float]


def jax_compiled(fn: Callable[..., Any], *args: Any) -> Built:
    """``fn`` compiled for ``args`` (``compile_jax``): a call of it on those arguments, its
    ``memory_stats`` and the compile seconds."""
    compiled, sec = compile_jax(fn, *args)
    return (lambda: compiled(*args)), memory_stats(compiled), sec


def brainstate_compiled(fn: Callable[..., Any], *args: Any) -> Built:
    """``brainstate.transform.jit(fn)`` compiled once for ``args``; the call runs it on the
    states' values as they were and does not write states back (so repetitions time the
    same work)."""
    import brainstate

    jitted = brainstate.transform.jit(fn)
    t0 = time.perf_counter()
    compiled = jitted.compile(*args)
    sec = time.perf_counter() - t0
    values = jitted.stateful_fun.get_state_trace(*args, compile_if_miss=True).get_state_values()
    return (lambda: compiled(values, *args)[1]), memory_stats(compiled), sec
