"""Run the benchmarks, keep their JSON lines, and write ``docs/benchmarks.md`` with plots.

For each script (``simulate``, ``trace_cost``, ``memory_scaling``, ``step_profile``) this
runs ``python benchmarks/<script>.py [--quick]`` in a subprocess, saves its stdout (JSON
lines) to ``benchmarks/results/<script>.jsonl`` preceded by one ``{"run": ...}`` line (the
exact command, date, wall time, exit code), then renders every saved result into
``docs/benchmarks.md`` and the PNG plots ``docs/_static/benchmarks_*.png`` (matplotlib, Agg).

``--reuse`` renders a script's previously saved results instead of running it again (the
document then shows the command that produced them), so a long full run of one script can be
combined with quick runs of others; every number in the document comes from a saved run.

Run::

    python benchmarks/report.py --quick                    # every script in --quick mode
    python benchmarks/report.py                            # the full benchmarks
    python benchmarks/report.py --quick-scripts trace_cost # full, but trace_cost quick
    python benchmarks/report.py --reuse simulate trace_cost memory_scaling step_profile
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SCRIPTS = ("simulate", "trace_cost", "memory_scaling", "step_profile")
MB = 1024**2
GB = 1024**3


# --------------------------------------------------------------------------------------
# Running.


def run_script(name: str, quick: bool, results_dir: str, report_cmd: str = "") -> list[dict]:
    cmd = [sys.executable, os.path.join(HERE, f"{name}.py")] + (["--quick"] if quick else [])
    shown = " ".join(["python", f"benchmarks/{name}.py"] + (["--quick"] if quick else []))
    print(f"[report] running: {shown}", file=sys.stderr, flush=True)
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    lines = []
    assert proc.stdout is not None
    for raw in proc.stdout:
        raw = raw.strip()
        if raw.startswith("{"):
            lines.append(json.loads(raw))
    code = proc.wait()
    header = {
        "run": {
            "command": shown,
            "started": started,
            "wall_s": round(time.perf_counter() - t0, 1),
            "returncode": code,
            "report_command": report_cmd,
        }
    }
    os.makedirs(results_dir, exist_ok=True)
    with open(os.path.join(results_dir, f"{name}.jsonl"), "w") as fh:
        for obj in [header, *lines]:
            fh.write(json.dumps(obj) + "\n")
    return [header, *lines]


def load_results(name: str, results_dir: str) -> list[dict] | None:
    path = os.path.join(results_dir, f"{name}.jsonl")
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


# --------------------------------------------------------------------------------------
# Formatting.


def fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "--"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if x == 0:
            return "0"
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        return f"{x:.{digits}g}"
    return str(x)


def mb(x: Any) -> str:
    return "--" if x is None else f"{x / MB:,.1f}"


def table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return [*out, ""]


def run_info(results: list[dict]) -> dict:
    return next((r["run"] for r in results if "run" in r), {})


def machine(results: list[dict]) -> dict:
    return next((r["machine"] for r in results if "machine" in r), {})


def note_of(r: dict) -> str:
    if "error" in r:
        return "error: " + r["error"][:160]
    if "skipped" in r:
        return "skipped: " + r["skipped"]
    if "T_requested" in r:
        return f"ran {r['T']} of {r['T_requested']} steps (run budget)"
    if r.get("warmup_only"):
        return "single (warm-up) run"
    return ""


# --------------------------------------------------------------------------------------
# Sections.


def section_simulate(res: list[dict]) -> list[str]:
    line = next((r for r in res if r.get("benchmark") == "simulate"), None)
    if line is None:
        return ["No simulation results.", ""]
    out = [
        f"One run: N = {line['N']} LIF neurons ({line['N_E']} E / {line['N_I']} I), "
        f"connection probability {line['conn_prob']} ({line['conn_per_pre']} targets per "
        f"neuron), T = {line['T']} steps of {line['dt_ms']} ms, B = {line['B']}; brainevent "
        f"CPU backend `{line['brainevent_cpu_backend']}`. Ratios are against brainpy.state "
        "with per-synapse weights (the storage traxon uses).",
        "",
    ]
    if line["brainevent_cpu_backend"] == "jax_raw":
        out += [
            "numba was not installed, so brainpy.state's sparse event operators ran on "
            "brainevent's pure-JAX `jax_raw` kernels; its default numba CPU kernels may be "
            "faster, so these ratios hold for this configuration only.",
            "",
        ]
    names = [
        ("brainpy_state", "brainpy.state, EventFixedProb, per-synapse weights"),
        ("brainpy_state_scalar_w", "brainpy.state, EventFixedProb, one scalar weight"),
        ("traxon", 'traxon, FixedOutDegree, event="off" (same graph)'),
        ("traxon_auto", 'traxon, FixedOutDegree, event="auto" (the default; same graph)'),
        ("traxon_event", "traxon, FixedOutDegree(max_active=64) (same graph)"),
        ("traxon_in_degree", "traxon, FixedInDegree + Dale sign (other graph, same p)"),
    ]
    rows = []
    ref = line.get("brainpy_state_ms_per_step")
    for key, label in names:
        ms = line.get(f"{key}_ms_per_step")
        if ms is None:
            rows.append([label, "--", "--", "--", "--", line.get(f"{key}_error", "not run")])
            continue
        rows.append(
            [
                label,
                fmt(ms),
                fmt(ms / ref) if ref else "--",
                fmt(line.get(f"{key}_rate_hz")),
                mb(line.get(f"{key}_compiled_bytes")),
                fmt(line.get(f"{key}_n_reps")),
            ]
        )
    out += table(
        ["implementation", "ms / step", "x brainpy.state", "rate (Hz)", "compiled MB", "reps"],
        rows,
    )
    return out


TC_COLS = [
    "algorithm",
    "variant",
    "T run",
    "ms / step (median)",
    "ms / step (min)",
    "x forward",
    "x peer",
    "compiled MB",
    "temp MB",
    "note",
]


def section_trace_cost(res: list[dict]) -> list[str]:
    rows = [r for r in res if r.get("benchmark") == "trace_cost" and "algorithm" in r]
    if not rows:
        return ["No learning-rule results.", ""]
    out = []
    B = rows[0]["B"]
    for N in sorted({r["N"] for r in rows}):
        Ts = sorted({r.get("T_requested", r["T"]) for r in rows if r["N"] == N})
        for T in Ts:
            sel = [r for r in rows if r["N"] == N and r.get("T_requested", r["T"]) == T]
            out.append(f"**N = {N}, T = {T}, B = {B}**")
            out.append("")
            body = []
            for r in sel:
                body.append(
                    [
                        ("**" + r["algorithm"] + "**")
                        if r["library"] == "traxon"
                        else r["algorithm"],
                        r["variant"],
                        fmt(r.get("T")),
                        fmt(r.get("per_step_ms")),
                        fmt(r.get("per_step_ms_min")),
                        fmt(r.get("ratio_vs_forward")),
                        fmt(r.get("ratio_vs_peer")),
                        mb(r.get("compiled_bytes")),
                        mb(r.get("temp_bytes")),
                        note_of(r),
                    ]
                )
            out += table(TC_COLS, body)
            fw = next((r for r in sel if r["algorithm"] == "forward" and "rate_hz" in r), None)
            pf = next((r for r in sel if r["algorithm"] == "peer_forward"), None)
            if fw and pf and pf.get("rate_hz") is not None:
                out.append(
                    f"Firing rate: traxon {fmt(fw['rate_hz'])} Hz, braintrace peer "
                    f"{fmt(pf['rate_hz'])} Hz; largest readout difference over the run "
                    f"{fmt(pf.get('outputs_max_abs_diff_vs_traxon'))}"
                    + (
                        f"; the outputs agree to 1e-4 up to step "
                        f"{pf['outputs_first_differing_step']}, where a spike near threshold "
                        "flips by floating-point summation order (the libraries add the input "
                        "and recurrent currents in a different order) and the recurrent "
                        "network diverges."
                        if pf.get("outputs_first_differing_step") is not None
                        else "."
                    )
                )
                out.append("")
    return out


def section_memory(res: list[dict]) -> list[str]:
    rows = [r for r in res if r.get("benchmark") == "memory_scaling" and "axis" in r]
    fits = [r for r in rows if r.get("fit")]
    rows = [r for r in rows if not r.get("fit")]
    if not rows:
        return ["No memory-scaling results.", ""]
    out = []
    for axis, other in (("T", "N"), ("N", "T")):
        sel = [r for r in rows if r["axis"] == axis]
        if not sel:
            continue
        fixed = sel[0][other]
        out.append(f"**Versus {axis}** ({other} = {fixed}, B = {sel[0]['B']}, K = {sel[0]['K']})")
        out.append("")
        body = []
        for r in sorted(sel, key=lambda r: (r["algorithm"], r[axis])):
            rss = r.get("rss_peak_bytes")
            base = r.get("rss_baseline_bytes")
            body.append(
                [
                    r["algorithm"],
                    fmt(r[axis]),
                    mb(r.get("compiled_bytes")),
                    mb(r.get("temp_bytes")),
                    mb(rss),
                    mb(base),
                    mb(rss - base) if rss and base else "--",
                    fmt(r.get("exceeds_budget")),
                    r.get("skipped", r.get("rss_error", r.get("error", ""))),
                ]
            )
        out += table(
            [
                "algorithm",
                axis,
                "compiled MB",
                "temp MB",
                "RSS peak MB",
                "RSS before MB",
                "RSS growth MB",
                "> budget",
                "note",
            ],
            body,
        )
    if fits:
        out.append("Least-squares lines through the compiled estimates (bytes = a + b x):")
        out.append("")
        body = []
        for f in fits:
            cross = f.get("crosses_budget_at")
            check = ""
            if f.get("check_T"):
                gb = f["check_compiled_bytes"] / GB
                check = f"compiling at T = {f['check_T']:,} gives {gb:.2f} GB"
            body.append(
                [
                    f["algorithm"],
                    f["axis"],
                    f"{f['range'][0]:,}-{f['range'][1]:,}",
                    mb(f["intercept_bytes"]),
                    f"{f['slope_bytes_per_unit'] / 1024:,.2f}",
                    fmt(f.get("growth_over_range")),
                    f"{cross:,.0f}" if cross else "--",
                    check,
                ]
            )
        out += table(
            [
                "algorithm",
                "axis",
                "range",
                "a (MB)",
                "b (KB per unit)",
                "growth over range",
                "crosses budget at",
                "check",
            ],
            body,
        )
    return out


def section_profile(res: list[dict]) -> list[str]:
    rows = [r for r in res if r.get("benchmark") == "step_profile" and "component" in r]
    derived = [r for r in res if r.get("benchmark") == "step_profile" and "derived_ms" in r]
    if not rows:
        return ["No step-profile results.", ""]
    out = []
    for N in sorted({r["N"] for r in rows}):
        sel = [r for r in rows if r["N"] == N]
        out.append(f"**N = {N}, B = {sel[0]['B']}**")
        out.append("")
        body = [
            [
                r["component"],
                fmt(r.get("T")),
                fmt(r.get("per_step_ms")),
                fmt(r.get("per_step_ms_min")),
                fmt(r.get("ratio_vs_forward")),
                fmt(r.get("share_of_es_d_rtrl", r.get("share_of_d_rtrl"))),
                mb(r.get("temp_bytes")),
                r.get("error", ""),
            ]
            for r in sel
        ]
        out += table(
            [
                "component",
                "T",
                "ms / step (median)",
                "ms / step (min)",
                "x forward",
                "share of its full step",
                "temp MB",
                "note",
            ],
            body,
        )
        d = next((r["derived_ms"] for r in derived if r.get("N") == N), None)
        if d:
            out.append("Derived from the fastest repetitions (ms per step):")
            out.append("")
            out += table(["part", "ms / step"], [[k, fmt(v)] for k, v in d.items()])
    return out


def section_events(res: list[dict]) -> list[str]:
    """``event_forward.py``: each op's event path (auto capacity and fixed caps) over its
    all-rows path, then the recurrent network with ``event="auto"`` over ``"off"``."""
    ops = [r for r in res if r.get("op") not in (None, "network")]
    caps = sorted({k[len("ratio_cap") :] for r in ops for k in r if k.startswith("ratio_cap")})
    caps = [c for c in caps if not c.endswith(("_rounds", "_fastest"))]
    names = {"0.0625": "cap N/16", "0.25": "cap N/4"}
    header = ["op", "B", "firing", "all rows ms/step", "auto `max_active`", "auto / all rows"]
    header += ["fastest reps", *(names.get(c, f"cap {c} N") for c in caps)]
    body = [
        [
            r["op"],
            str(r["B"]),
            f"{100 * r['firing']:.3g}%",
            fmt(r["all_rows_ms_per_step"]),
            fmt(r.get("max_active_auto")) if r.get("max_active_auto") else "--",
            f"**{fmt(r['ratio_auto'], 2)}**",
            fmt(r.get("ratio_auto_fastest"), 2),
            *(fmt(r.get(f"ratio_cap{c}"), 2) for c in caps),
        ]
        for r in ops
    ]
    out = table(header, body)
    nets = [r for r in res if r.get("op") == "network"]
    if nets:
        firing = nets[0]["firing"]
        out += table(
            [
                f"network (N = {nets[0]['N']}, B = {nets[0]['B']}, firing {100 * firing:.1f} %)",
                '`event="off"` ms/step',
                '`event="auto"` ms/step',
                "auto / off (rounds)",
            ],
            [
                [
                    r["algorithm"],
                    fmt(r["off_ms_per_step"]),
                    fmt(r["auto_ms_per_step"]),
                    f"{fmt(r['ratio_auto'], 2)} ("
                    + ", ".join(fmt(x, 2) for x in r.get("ratio_auto_rounds", []))
                    + ")",
                ]
                for r in nets
            ],
        )
    return out


def section_ops(res: list[dict]) -> list[str]:
    """``step_profile.py --ops``: per-op times and XLA's counts of one step."""
    rows = [r for r in res if r.get("mode") == "ops" and "component" in r]
    out = []
    for N in sorted({r["N"] for r in rows}):
        sel = [r for r in rows if r["N"] == N]
        out += [f"**N = {N}, B = {sel[0]['B']}, {sel[0]['reps']} repetitions**", ""]
        body = [
            [
                r["component"],
                fmt(r["op_us_per_step"]),
                fmt(r.get("op_us_per_step_median_total")),
                fmt(r.get("ops_ratio_vs_forward")),
                fmt(r["xla_flops"] / 1e6) if r.get("xla_flops") else "--",
                mb(r.get("xla_bytes")) if r.get("xla_bytes") else "--",
                fmt(r.get("n_ops")),
                ", ".join(f"{op} {fmt(us)}" for op, us in r.get("top_ops", [])[:4]),
            ]
            for r in sel
        ]
        out += table(
            [
                "component",
                "op µs / step (fastest per op)",
                "op µs / step (median total)",
                "x forward",
                "XLA MFLOP / step",
                "XLA MB / step",
                "ops",
                "largest ops (µs)",
            ],
            body,
        )
    return out


# --------------------------------------------------------------------------------------
# Plots.


def plots(results: dict[str, list[dict]], static: str) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(static, exist_ok=True)
    made: dict[str, str] = {}
    ms = [r for r in results.get("memory_scaling", []) if "axis" in r and not r.get("fit")]
    budget = next((r["budget_bytes"] for r in ms if "budget_bytes" in r), 16 * GB)
    for axis, other in (("T", "N"), ("N", "T")):
        sel = [r for r in ms if r["axis"] == axis and r.get("compiled_bytes")]
        if not sel:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for i, alg in enumerate(("es_d_rtrl", "d_rtrl", "bptt", "bptt_remat")):
            pts = sorted((r[axis], r["compiled_bytes"]) for r in sel if r["algorithm"] == alg)
            if pts:
                x, y = zip(*pts, strict=True)
                ax.plot(x, [v / MB for v in y], "o-", color=f"C{i}", label=f"{alg} (XLA)")
            rss = sorted(
                (r[axis], r["rss_peak_bytes"] - r["rss_baseline_bytes"])
                for r in sel
                if r["algorithm"] == alg and r.get("rss_peak_bytes") and r.get("rss_baseline_bytes")
            )
            if rss:
                x, y = zip(*rss, strict=True)
                ax.plot(x, [v / MB for v in y], "x--", color=f"C{i}", label=f"{alg} (RSS growth)")
        ax.axhline(budget / MB, color="k", lw=0.8, ls=":", label=f"{budget / GB:.0f} GB budget")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(axis + (" (steps)" if axis == "T" else " (neurons)"))
        ax.set_ylabel("peak memory (MB)")
        ax.set_title(f"Memory vs {axis} ({other} = {sel[0][other]}, B = {sel[0]['B']})")
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        name = f"benchmarks_memory_vs_{axis}.png"
        fig.savefig(os.path.join(static, name), dpi=110)
        plt.close(fig)
        made[f"memory_vs_{axis}"] = name
    tc = [r for r in results.get("trace_cost", []) if "algorithm" in r and r.get("per_step_ms")]
    if tc:
        T0 = min(r.get("T_requested", r["T"]) for r in tc)
        sel = [r for r in tc if r.get("T_requested", r["T"]) == T0]
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        series = sorted({(r["algorithm"], r["variant"], r["library"]) for r in sel})
        family = {"peer_forward": "forward", "peer_pp_prop": "es_d_rtrl", "peer_d_rtrl": "d_rtrl"}
        colors = {"forward": "C0", "es_d_rtrl": "C1", "d_rtrl": "C2", "bptt": "C3"}
        markers = "o^vDsP"
        count: dict[str, int] = {}
        for alg, var, lib in series:
            fam = family.get(alg, alg)
            k = count.get(fam, 0)
            count[fam] = k + 1
            pts = sorted(
                (r["N"], r["per_step_ms"])
                for r in sel
                if (r["algorithm"], r["variant"]) == (alg, var)
            )
            x, y = zip(*pts, strict=True)
            ls = "-" if lib == "traxon" else "--"
            ax.plot(
                x,
                y,
                ls,
                marker=markers[k % len(markers)],
                color=colors.get(fam, "C4"),
                mfc="none" if lib != "traxon" else None,
                label=f"{alg}/{var}",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("N (neurons)")
        ax.set_ylabel("ms per step (median)")
        ax.set_title(f"Per-step time vs N (T = {T0} requested, B = {sel[0]['B']})")
        ax.legend(fontsize=6, ncol=2)
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        fig.savefig(os.path.join(static, "benchmarks_time_vs_N.png"), dpi=110)
        plt.close(fig)
        made["time_vs_N"] = "benchmarks_time_vs_N.png"
    return made


# --------------------------------------------------------------------------------------
# Document.


def _row(rows: list[dict], **match: Any) -> dict | None:
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()):
            return r
    return None


def _vs(row: dict, what: str, peer: str) -> str:
    """``what`` with ``row``'s ratios to traxon's forward and to the peer ``peer``."""
    return (
        f"{what} {fmt(row['ratio_vs_forward'])}x forward, {fmt(row.get('ratio_vs_peer'))}x {peer}"
    )


def _timed(rows: list[dict], **match: Any) -> dict | None:
    """The matching row if it was timed (not skipped, no error), else ``None``."""
    r = _row(rows, **match)
    return r if r and r.get("per_step_ms") else None


def findings(results: dict[str, list[dict]]) -> list[str]:
    """Short statements computed from the results (every number is read from them)."""
    out: list[str] = []
    sim = next((r for r in results.get("simulate", []) if r.get("benchmark") == "simulate"), None)
    if sim and sim.get("ratio") is not None:
        out.append(
            f"* Simulation (N = {sim['N']}, same graph and drive): traxon's `FixedOutDegree` "
            f"takes {fmt(sim['ratio'])}x the time of brainpy.state with per-synapse weights "
            f"({fmt(sim.get('ratio_traxon_vs_scalar_w'))}x brainpy.state with a scalar weight); "
            f"the event-driven `max_active` variant {fmt(sim.get('ratio_traxon_event'))}x. "
            f"Both fire at {fmt(sim.get('traxon_rate_hz'))} / "
            f"{fmt(sim.get('brainpy_state_rate_hz'))} Hz."
        )
    tc = [r for r in results.get("trace_cost", []) if "algorithm" in r]
    for N in sorted({r["N"] for r in tc}):
        T0 = min(r.get("T_requested", r["T"]) for r in tc if r["N"] == N)
        sel = [r for r in tc if r["N"] == N and r.get("T_requested", r["T"]) == T0]
        es = _timed(sel, algorithm="es_d_rtrl", variant="tracer")
        es1 = _timed(sel, algorithm="es_d_rtrl", variant="tracer_decay0.95")
        lrn = _timed(sel, algorithm="es_d_rtrl", variant="learner_sgd")
        lrn1 = _timed(sel, algorithm="es_d_rtrl", variant="learner_sgd_decay0.95")
        dr = _row(sel, algorithm="d_rtrl", variant="tracer")
        bp = _timed(sel, algorithm="bptt", variant="tracer")
        parts = []
        if es:
            parts.append(
                f"es_d_rtrl {fmt(es['ratio_vs_forward'])}x forward and "
                f"{fmt(es.get('ratio_vs_peer'))}x braintrace pp_prop"
            )
        if es1:
            parts.append(_vs(es1, "with one decay group", "pp_prop"))
        if lrn and es:
            over = lrn["per_step_ms"] / es["per_step_ms"]
            parts.append(
                f"a full learner step with an SGD update {fmt(lrn['ratio_vs_forward'])}x "
                f"forward ({fmt(over)}x the tracer step, {fmt(lrn.get('ratio_vs_peer'))}x "
                "braintrace pp_prop with an SGD update every step)"
            )
        lrno = _timed(sel, algorithm="es_d_rtrl", variant="learner_optax_sgd")
        if lrno:
            what = "the same learner with optax.sgd (every weight written every step)"
            parts.append(_vs(lrno, what, "the peer's"))
        floor = _timed(sel, algorithm="sgd_floor", variant="forward_outer_update")
        if floor:
            parts.append(
                "the bare per-step update alone (forward + one outer-product SGD update "
                f"written into each weight, no traces) {fmt(floor['ratio_vs_forward'])}x forward"
            )
        if lrn1:
            parts.append(_vs(lrn1, "the learner with one decay group", "the peer's"))
        lrnp = _timed(sel, algorithm="es_d_rtrl", variant="learner_sgd_peer_model")
        if lrnp:
            what = (
                "the learner on the peer's own model object (braintrace.nn layers, attached "
                "unmodified)"
            )
            parts.append(_vs(lrnp, what, "the peer's learner on it"))
        if dr and dr.get("per_step_ms"):
            parts.append(_vs(dr, "d_rtrl", "braintrace D_RTRL"))
        elif dr and dr.get("skipped"):
            parts.append("d_rtrl not run (" + dr["skipped"].split(":")[0] + ")")
        if bp:
            parts.append(f"BPTT {fmt(bp['ratio_vs_forward'])}x forward")
        if parts:
            out.append(
                f"* Learning rules at N = {N}, T = {T0} (median times): " + "; ".join(parts) + "."
            )
    ms = [r for r in results.get("memory_scaling", []) if r.get("fit")]
    for f in ms:
        if f["axis"] == "T" and f["algorithm"] in ("es_d_rtrl", "d_rtrl"):
            out.append(
                f"* {f['algorithm']}: compiled memory changes by a factor "
                f"{fmt(f['growth_over_range'])} from T = {f['range'][0]:,} to {f['range'][1]:,} "
                f"(N = {f['N']})."
            )
        if f["algorithm"].startswith("bptt") and f.get("crosses_budget_at"):
            where = (
                f"T = {f['crosses_budget_at']:,.0f} steps (N = {f['N']})"
                if f["axis"] == "T"
                else (f"N = {f['crosses_budget_at']:,.0f} neurons (T = {f['T']})")
            )
            out.append(
                f"* {f['algorithm']}: {f['slope_bytes_per_unit'] / 1024:,.1f} KB per "
                f"{'step' if f['axis'] == 'T' else 'neuron'}; the compiled estimate reaches "
                f"{f['budget_bytes'] / GB:.0f} GB at {where}."
            )
    prof = [r for r in results.get("step_profile", []) if r.get("derived_ms")]
    for d in prof:
        dm = d["derived_ms"]
        step = dm.get("es_d_rtrl_step")
        if not step:
            continue
        out.append(
            f"* es_d_rtrl step at N = {d['N']} (fastest repetitions): {fmt(step)} ms, of which "
            f"forward {fmt(dm['forward'])}, "
            f"learning-signal VJP {fmt(dm['learning_signal_vjp_and_g'])}, "
            f"Jacobian blocks {fmt(dm['jacobian_blocks_D_F'])}, traces + gradient "
            f"accumulation {fmt(dm['traces_and_gradient_accumulation'])}"
            + (
                f" (the second decay group alone {fmt(dm['second_decay_group'])})"
                if "second_decay_group" in dm
                else ""
            )
            + " ms. Differences of noisy timings: small or negative parts are within noise."
        )
    return out


def _verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("**met**" if ok else "**missed**")


def targets(results: dict[str, list[dict]]) -> list[str]:
    """The performance targets of the project, checked against the saved results.

    Every number is read from the results; a target whose rows are missing or were skipped
    is "not measured". Medians decide; the fastest repetitions are shown beside them.
    """
    tc = [r for r in results.get("trace_cost", []) if "algorithm" in r]
    rows: list[list[str]] = []

    def get(N: int, alg: str, var: str) -> dict | None:
        sel = [r for r in tc if r["N"] == N and r.get("T_requested", r["T"]) == 100]
        return _timed(sel, algorithm=alg, variant=var)

    def ms(r: dict) -> str:
        return f"{fmt(r['per_step_ms'])} ms (min {fmt(r.get('per_step_ms_min'))})"

    # The targets of issue #18 (default decays; ratios are medians timed round-robin).
    N = 1024
    floor = get(N, "sgd_floor", "forward_outer_update")
    lrn = get(N, "es_d_rtrl", "learner_sgd")
    if lrn is not None:
        ratio = lrn.get("ratio_vs_forward")
        same = lrn["per_step_ms"] / ratio if ratio else None
        bare = (
            "; the bare update (`sgd_floor`: forward + one outer-product SGD update written "
            f"into each weight, no traces) alone {fmt(floor.get('ratio_vs_forward'))}x "
            "forward"
            if floor
            else ""
        )
        rows.append(
            [
                f"es_d_rtrl, weight update every step (`learner_sgd`, default decays) <= 2.5x "
                f"forward, N = {N}, B = 16",
                f"{ms(lrn)}; forward timed in the same round-robin {fmt(same)} ms; "
                f"ratio {fmt(ratio)}{bare}",
                _verdict(None if ratio is None else ratio <= 2.5),
            ]
        )
    for n in (1024, 4096):
        for var, peer_var, what in (
            ("learner_sgd", "sgd_every_step", "pp_prop with an SGD update every step"),
            ("tracer", "etrace_grad", "pp_prop `etrace_grad`"),
            ("learner_sgd_decay0.95", "sgd_every_step", "pp_prop with an SGD update every step"),
            ("tracer_decay0.95", "etrace_grad", "pp_prop `etrace_grad`"),
        ):
            es = get(n, "es_d_rtrl", var)
            if es is None:
                continue
            peer = get(n, "peer_pp_prop", peer_var)
            rvp = es.get("ratio_vs_peer")
            limit = 1.0 if "decay" in var else 0.67
            rows.append(
                [
                    f"`{var}` <= {fmt(limit)}x braintrace {what}, N = {n}, B = 16",
                    f"{ms(es)} vs {ms(peer) if peer else '?'}; ratio {fmt(rvp)}",
                    _verdict(None if rvp is None else rvp <= limit),
                ]
            )
    for n in sorted({r["N"] for r in tc}):
        for t in (100, 1000):
            sel = [r for r in tc if r["N"] == n and r["T"] == t]
            fw = _timed(sel, algorithm="forward", variant="simulate")
            pf = _timed(sel, algorithm="peer_forward", variant="for_loop")
            if fw is None or pf is None:
                continue
            rvp = fw.get("ratio_vs_peer")
            rows.append(
                [
                    f"forward simulation <= braintrace's forward, N = {n}, T = {t}, B = 16",
                    f"{ms(fw)} vs {ms(pf)}; ratio {fmt(rvp)}"
                    + ("; single (warm-up) runs" if fw.get("warmup_only") else ""),
                    _verdict(None if rvp is None else rvp <= 1.0),
                ]
            )
    dr = next(
        (r for r in tc if r["N"] == N and r["algorithm"] == "d_rtrl" and r.get("per_step_ms")),
        None,
    )
    if dr is not None:
        pd = _row(
            [r for r in tc if r["N"] == N and r["T"] == dr["T"]],
            algorithm="peer_d_rtrl",
        )
        rvp = dr.get("ratio_vs_peer")
        rows.append(
            [
                f"d_rtrl >= 3x faster than braintrace D_RTRL, N = {N} (T = {dr['T']} steps run)",
                f"{ms(dr)} vs {ms(pd) if pd and pd.get('per_step_ms') else '?'}; "
                f"{fmt(1 / rvp if rvp else None)}x faster",
                _verdict(None if not rvp else 1 / rvp >= 3.0),
            ]
        )
    fits = [r for r in results.get("memory_scaling", []) if r.get("fit")]
    for f in fits:
        if f["axis"] == "T" and f["algorithm"] in ("es_d_rtrl", "d_rtrl"):
            g = f.get("growth_over_range")
            rows.append(
                [
                    f"{f['algorithm']} compiled memory independent of T (N = {f['N']})",
                    f"x{fmt(g)} from T = {f['range'][0]:,} to {f['range'][1]:,}",
                    _verdict(None if g is None else abs(g - 1.0) < 0.01),
                ]
            )
    pts = sorted(
        (r["N"], r["compiled_bytes"])
        for r in results.get("memory_scaling", [])
        if r.get("axis") == "N"
        and r.get("algorithm") == "es_d_rtrl"
        and not r.get("fit")
        and r.get("compiled_bytes")
    )
    if len(pts) >= 2:
        (n0, b0), (n1, b1) = pts[0], pts[-1]
        # linear: bytes grow no faster than N (a fixed part makes the growth smaller)
        growth = b1 / b0
        rows.append(
            [
                "es_d_rtrl compiled memory linear in N (T = 100)",
                f"x{fmt(growth)} for N x{fmt(n1 / n0)} ({mb(b0)} MB at N = {n0:,}, "
                f"{mb(b1)} MB at N = {n1:,})",
                _verdict(growth <= 1.05 * n1 / n0),
            ]
        )
    if not rows:
        return []
    return [
        *table(["target", "measured", "verdict"], rows),
        "Ratios are medians of a few repetitions timed round-robin in one process on a "
        "shared 2-core machine: differences under about 20 % are within its noise.",
        "",
    ]


def document(results: dict[str, list[dict]], images: dict[str, str], report_cmd: str) -> str:
    first = next((machine(r) for r in results.values() if machine(r)), {})
    commands = [run_info(r).get("command", "") for r in results.values()]
    quick = bool(commands) and all(c.endswith("--quick") for c in commands)
    regen = "python benchmarks/report.py" + (" --quick" if quick else "")
    out = [
        "# Benchmarks",
        "",
        f"Generated by `{report_cmd}` (see `benchmarks/README.md`). Every number below comes "
        "from the saved output of the command named in its section "
        f"(`benchmarks/results/*.jsonl`); `{regen}` reruns them all and regenerates this page.",
        "",
    ]
    if quick:
        out += [
            "These are the `--quick` modes (N = 1024 and T = 100 for the learning rules, 3 "
            "steps for the D-RTRL pair; T and N up to 10^4 for memory), about a minute per "
            "script; `python benchmarks/report.py` runs the full sweeps (N up to 4096, T up to "
            "10^5), which take much longer on this machine.",
            "",
        ]
    out += ["## Machine", ""]
    if first:
        out += table(
            [
                "CPU",
                "cores",
                "memory",
                "jax",
                "backend",
                "traxon",
                "brainstate",
                "braintrace",
                "brainpy",
                "brainevent",
            ],
            [
                [
                    first.get("cpu_model", "?"),
                    fmt(first.get("cpu_cores")),
                    f"{(first.get('mem_total_bytes') or 0) / GB:.0f} GB",
                    first.get("jax", "?"),
                    first.get("jax_backend", "?"),
                    first.get("traxon", "?"),
                    *[
                        next(
                            (machine(r).get(p) for r in results.values() if machine(r).get(p)), "--"
                        )
                        for p in ("brainstate", "braintrace", "brainpy", "brainevent")
                    ],
                ]
            ],
        )
    out += [
        "Timing: each function is compiled ahead of time, run once to warm up, then timed "
        "with `jax.block_until_ready`; the tables give the median (and the fastest) "
        "repetition. Functions compared with each other are timed round-robin in one process, "
        "so ratios are more reliable than absolute times. Memory: `compiled MB` is XLA's "
        "`memory_analysis()` of the same executable (temp + argument + output bytes).",
        "",
        "The 1-minute load average at the start and end of each script is listed below: the "
        "machine may have been shared with other jobs while measuring, which inflates and "
        "scatters absolute times (compare the median and min columns).",
        "",
        "## Commands",
        "",
    ]
    body = []
    for name in SCRIPTS:
        res = results.get(name)
        if not res:
            body.append([name, "not run", "--", "--", "--", "--"])
            continue
        info, mach = run_info(res), machine(res)
        end = next((r.get("loadavg_1min_at_end") for r in res if "loadavg_1min_at_end" in r), None)
        src = mach.get("git_commit", "?")
        if mach.get("src_uncommitted_changes"):
            src += " + uncommitted src changes"
        if mach.get("src_sha1"):
            src += f" (src sha1 {mach['src_sha1']})"
        body.append(
            [
                name,
                f"`{info.get('command', '?')}`",
                info.get("started", "?"),
                fmt(info.get("wall_s")) + " s",
                f"{fmt(mach.get('loadavg_1min_at_start'))} -> {fmt(end)}",
                src,
            ]
        )
    out += table(
        ["section", "command", "started", "wall time", "load avg start -> end", "traxon source"],
        body,
    )
    checked = targets(results)
    if checked:
        out += ["## Targets", "", *checked]
    found = findings(results)
    if found:
        out += ["## Summary", "", *found, ""]
    sections = [
        ("simulate", "Forward simulation: 1,000-neuron E/I network", section_simulate),
        ("trace_cost", "Learning rules: per-step time and compiled memory", section_trace_cost),
        ("memory_scaling", "Memory versus T and N", section_memory),
        ("step_profile", "Where an es_d_rtrl step spends its time", section_profile),
        ("step_profile_ops", "Per-op times of one step", section_ops),
        ("event_forward", "Event-driven forward (issue #18)", section_events),
    ]
    intro = {
        "simulate": "`benchmarks/simulate.py`: the same E/I LIF network (Expon AlignPost "
        "synapses, CUBA output, sparse random connectivity) simulated by traxon "
        "(`Network.simulate`) and brainpy.state (`for_loop`), same graph, drive and initial "
        "state.",
        "trace_cost": "`benchmarks/trace_cost.py`: recurrent LIF + Expon network with a leaky "
        "readout, B = 16, 100 Poisson inputs. traxon rows in bold; braintrace rows are the same "
        "network built from `brainpy.state` models and `braintrace.nn` layers (same initial "
        "weights). `x forward` divides by traxon's forward simulation timed in the same "
        "round-robin; `x peer` divides a traxon row by the braintrace row of the same "
        "algorithm (es_d_rtrl by pp_prop, d_rtrl by D_RTRL, forward by the peer forward).",
        "memory_scaling": "`benchmarks/memory_scaling.py`: sparse (`FixedInDegree`, 32 inputs "
        "per neuron) recurrent LIF network, so that weights are linear in N. `compiled MB` is "
        "XLA's estimate; `RSS` columns are measured in a child process per configuration "
        "(`VmHWM`, and `VmRSS` before compiling). Configurations over the budget are only "
        "compiled.",
        "step_profile": "`benchmarks/step_profile.py`: the components of one tracer step, each "
        "timed as a scan over T steps (see the script's docstring for what each one contains).",
        "event_forward": "`benchmarks/event_forward.py`: each weight op with an event-driven "
        "path, N = 1024 presynaptic and postsynaptic neurons (`Dense` N x N; `CSR` and "
        "`FixedOutDegree` with 100 random targets per neuron), T = 100 steps of `op.apply` in "
        "one `lax.scan` on Bernoulli spike trains at 1 %, 5 % and 20 % firing. `all rows` is "
        "the op without `max_active` (the dense product, or the scatter of every entry); "
        "`auto` is the op a `Network` uses for a projection that reads spikes "
        '(`event="auto"`, the default; `traxon.core.ops.auto_max_active`: `Dense` 0.25 N with '
        "two gather tiers, N/16 and N/4, when it has at least 64 targets; `FixedOutDegree` "
        "0.1 N; `CSR` is left as given); `cap N/16` and `cap N/4` are the event path with that "
        "capacity. Ratios are event / all rows: the median over the round-robin rounds of each "
        "round's median repetition (`fastest reps`: the same of the fastest repetitions). Every "
        "variant computes the same values (`*_max_abs_diff` in the saved lines). Above its "
        "capacity an op takes the all-rows path itself, so the `auto` rows at 20 % (and "
        "`Dense` at B = 16 above 1 %) time that fallback plus the count of active neurons. "
        "`CSR`'s `auto` is the all-rows op (the ratio is timing noise); its event path is the "
        "`cap` columns. The network rows are a recurrent LIF network (Dense recurrence, 100 "
        'Poisson inputs, leaky readout) built with `event="auto"` and with `event="off"`: '
        "`Network.simulate` and the `es_d_rtrl` tracer over the same steps. To turn the event "
        'path off: `Network(..., event="off")` for a whole network, `Projection(..., '
        'event="off")` for one projection; an op\'s own `max_active` is always kept.',
        "step_profile_ops": "`benchmarks/step_profile.py --ops`: each step run under "
        "`jax.profiler`; per XLA op the fastest repetition, summed (compute without the gaps "
        "between ops), beside XLA's flop and byte counts of the compiled step. Op times still "
        "move with the load, XLA's counts do not.",
    }
    for name, title, fn in sections:
        out += [f"## {title}", ""]
        res = results.get(name)
        if not res:
            out += ["Not run.", ""]
            continue
        out += [intro[name], "", f"Produced by `{run_info(res).get('command', '?')}`.", ""]
        out += fn(res)
        if name == "trace_cost" and "time_vs_N" in images:
            out += [f"![per-step time vs N](_static/{images['time_vs_N']})", ""]
        if name == "memory_scaling":
            for key in ("memory_vs_T", "memory_vs_N"):
                if key in images:
                    out += [f"![{key.replace('_', ' ')}](_static/{images[key]})", ""]
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="run every script with --quick")
    parser.add_argument("--quick-scripts", nargs="*", default=[], choices=SCRIPTS)
    parser.add_argument(
        "--reuse",
        nargs="*",
        default=[],
        choices=SCRIPTS,
        help="render saved results of these scripts instead of running them",
    )
    parser.add_argument("--scripts", nargs="*", default=list(SCRIPTS), choices=SCRIPTS)
    parser.add_argument("--results-dir", default=os.path.join(HERE, "results"))
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    args = parser.parse_args(argv)
    report_cmd = "python benchmarks/report.py" + ("".join(f" {a}" for a in (argv or sys.argv[1:])))
    results: dict[str, list[dict]] = {}
    for name in args.scripts:
        if name in args.reuse:
            loaded = load_results(name, args.results_dir)
            if loaded is None:
                print(f"[report] no saved results for {name}", file=sys.stderr)
                continue
            results[name] = loaded
        else:
            results[name] = run_script(
                name, args.quick or name in args.quick_scripts, args.results_dir, report_cmd
            )
    ops = load_results("step_profile_ops", args.results_dir)  # saved by hand: see --ops
    if ops is not None and "step_profile" in args.scripts:
        results["step_profile_ops"] = ops
    events = load_results("event_forward", args.results_dir)  # saved by hand (its run line)
    if events is not None:
        results["event_forward"] = events
    static = os.path.join(os.path.dirname(args.out), "_static")
    images = plots(results, static)
    text = document(results, images, report_cmd)
    with open(args.out, "w") as fh:
        fh.write(text)
    print(
        f"[report] wrote {os.path.relpath(args.out, ROOT)} and {len(images)} plot(s)",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
