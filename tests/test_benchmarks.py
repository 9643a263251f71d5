"""The benchmark scripts run and print well-formed result lines (no timing assertions).

Each script runs with ``--smoke`` (a tiny configuration that goes through every code path of
its ``--quick`` and full modes in seconds) in a subprocess, with XLA settings that only
make compiling faster. The test checks the JSON lines: a machine line first, no errors, and
every result line (a line with an ``algorithm``) carrying the common fields. Speed and
memory targets are measured by the scripts themselves (``docs/benchmarks.md``), never
asserted here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers import run_checked

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
FIELDS = ("algorithm", "N", "T", "B", "per_step_ms", "compiled_bytes", "ratio_vs_forward")
# Algorithms each script must report.
EXPECTED = {
    "simulate": {"forward"},
    "trace_cost": {
        "forward",
        "es_d_rtrl",
        "d_rtrl",
        "bptt",
        "peer_forward",
        "peer_pp_prop",
        "peer_d_rtrl",
    },
    "memory_scaling": {"es_d_rtrl", "bptt"},
    "step_profile": {"forward", "es_d_rtrl", "d_rtrl"},
    "whole_brain": {"es_d_rtrl", "bptt"},
}
PEERS = {"simulate": ("brainpy.state",), "trace_cost": ("braintrace", "brainpy.state")}


def run_smoke(script: str) -> list[dict]:
    env = dict(os.environ)  # XLA_FLAGS as tests/conftest.py set them
    env.setdefault("JAX_PLATFORMS", "cpu")
    proc = run_checked([BENCH / f"{script}.py", "--smoke"], timeout=600, cwd=ROOT, env=env)
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_benchmark_smoke(script: str) -> None:
    for module in PEERS.get(script, ()):
        pytest.importorskip(module)
    lines = run_smoke(script)
    assert "machine" in lines[0], lines[0]
    assert lines[-1].get("summary") or script in ("simulate", "whole_brain"), lines[-1]
    rows = [line for line in lines if "algorithm" in line]
    errors = [line for line in lines if "error" in line or any(k.endswith("_error") for k in line)]
    assert not errors, errors
    assert EXPECTED[script] <= {row["algorithm"] for row in rows}
    for row in rows:
        missing = [f for f in FIELDS if f not in row]
        assert not missing, (missing, row)
        if row.get("library", "traxon") == "traxon":
            assert "ratio_vs_peer" in row, row
    timed = [row for row in rows if not row.get("fit") and row["per_step_ms"] is not None]
    assert timed, rows
    if script == "trace_cost":
        by = {(r["algorithm"], r["variant"]): r for r in rows}
        # every traxon row with a peer counterpart got its ratio
        for key in [("es_d_rtrl", "tracer"), ("d_rtrl", "tracer"), ("es_d_rtrl", "learner_sgd")]:
            assert by[key]["ratio_vs_peer"] is not None, by[key]


@pytest.mark.slow
def test_whole_brain_gpu_script_smoke() -> None:
    """The prepared accelerator run (``whole_brain.py --gpu``) goes end to end on the CPU at
    tiny sizes: step rows for each (N, B), the connectivity passed as data (no constants)."""
    env = dict(os.environ)
    env.setdefault("JAX_PLATFORMS", "cpu")
    cmd = [BENCH / "whole_brain.py", "--gpu", "--smoke", "--bandwidth-gbs", "100"]
    proc = run_checked(cmd, timeout=600, cwd=ROOT, env=env)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    rows = [line for line in lines if line.get("kind") == "step"]
    assert "machine" in lines[0] and not [r for r in rows if "error" in r], lines
    assert {(r["N"], r["B"]) for r in rows} == {(300, 1), (300, 4), (1_000, 1)}
    for row in rows:
        missing = [
            f for f in (*FIELDS, "forward_ms", "bytes_per_connection", "x_roofline") if f not in row
        ]
        assert not missing, (missing, row)
        assert row["learner_const_bytes"] == row["forward_const_bytes"] == 0, row
        # The compiled learner moves more than the forward step, which moves more than
        # its weights (4 bytes a connection).
        fwd, learn = (
            row["forward_hlo_bytes_per_connection"],
            row["learner_hlo_bytes_per_connection"],
        )
        assert 4 < fwd < learn <= row["learner_guarded_hlo_bytes_per_connection"], row


def test_hlo_step_bytes_model() -> None:
    """``benchmarks/_hlo_bytes.py`` charges one step of a scan: the carry, the weights and the
    step's slice of the inputs (not all T), each conditional by its costliest branch."""
    import importlib.util

    import jax
    import jax.numpy as jnp

    spec = importlib.util.spec_from_file_location("_hlo_bytes", BENCH / "_hlo_bytes.py")
    assert spec is not None and spec.loader is not None
    hlo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hlo)

    def scan(w, xs, heavy):
        def body(c, x):
            c = c + w * x
            # A branch that reads w twice more: the conditional is charged that branch.
            c = jax.lax.cond(heavy, lambda: c * w + w, lambda: c) if heavy is not None else c
            return c, None

        return jax.lax.scan(body, w, xs)[0]

    n = 1000

    def measured(t, heavy):
        f = jax.jit(lambda w, xs, h: scan(w, xs, h if heavy else None))
        text = f.lower(jnp.ones(n), jnp.ones((t, n)), True).compile().as_text()
        return hlo.step_bytes(text)

    plain = measured(5, False)
    assert 4 * 4 * n <= plain < 4 * 4 * n + 100  # w, c, x[t] read; c written
    assert measured(50, False) == plain  # one step, whatever T
    assert measured(5, True) >= plain + 3 * 4 * n  # the costly branch: w, c read, c written
