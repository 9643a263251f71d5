"""Write ``docs/algorithms_generated.md``: every registered learning rule on one benchmark.

Run from the repository root (a few minutes on a 2-core CPU)::

    python docs/algorithms_table.py

The benchmark is a recurrent network of 64 LIF neurons with exponential synapses (input and
recurrent, delay 1) and a leaky readout, 80 steps, batch 4, float64, random input spikes and
targets (fixed seeds) -- the network of ``test_recurrent_network_fidelity`` in
``tests/test_trace.py``. :func:`traxon.diagnostics.compare` runs each rule and BPTT on the
same weights and data; the table gives, per rule, its memory and per-step compute, when it
is exact, and the measured cosine and norm ratio of its gradient against BPTT per weight,
with the bytes of its tracer state and its time per step.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import traxon
from traxon.core import LIF, Dense, Expon, Network, Population, Projection, Readout
from traxon.diagnostics import compare
from traxon.learn import cross_entropy
from traxon.trace import ALGORITHMS

OUT = Path(__file__).resolve().parent / "algorithms_generated.md"
N, N_IN, T, B = 64, 5, 80, 4
WEIGHTS = ("x->h", "h->h", "h->readout", "readout.bias")

#: name: (memory, compute per step, exact when). B batch, N neurons, S state variables per
#: neuron, I presynaptic neurons, #W weight entries, H = N S all state, P all weights.
CARDS = {
    "bptt": (
        "O(T·B·(N·S + I)), grows with T",
        "≈ 2 forward steps (backward pass once per window)",
        "always (the reference)",
    ),
    "rtrl": (
        "O(B·H·P)",
        "O(B·H·(H + P)) forward products",
        "always; tiny networks only",
    ),
    "d_rtrl": (
        "O(B·#W·S)",
        "O(B·#W·S²)",
        "one population without recurrent weights (instantaneous or leaky readout)",
    ),
    "ostl": (
        "O(B·#W·S)",
        "O(B·#W·S²)",
        "shallow: one population, as D-RTRL (same gradient); drops the residual "
        "(downstream-state) and cross-neuron terms",
    ),
    "eprop": (
        "O(B·#W·S) (+ N·n_out random feedback)",
        "O(B·#W·S²)",
        "symmetric feedback: as D-RTRL, e.g. one LIF population with detach_reset; "
        "random feedback: never (feedback alignment)",
    ),
    "snap": (
        "O(B·#W·S)",
        "O(B·#W·S²) + O(B·N·S)",
        "Jacobian block-diagonal per neuron: one population, recurrence only through "
        "self-connections",
    ),
    "es_d_rtrl": (
        "O(B·(I·A + N·S)), A decays",
        "O(B·N·S²) + one outer product per decay",
        "e-prop case: one LIF population, detach_reset, decay = membrane leak",
    ),
    "uoro": (
        "O(B·(H + P))",
        "one JVP + one VJP of the step, O(B·P)",
        "never for one seed; unbiased (mean over seeds → BPTT)",
    ),
    "three_factor": (
        "O(B·(I + N·S))",
        "O(B·N·S²) + one outer product",
        "never: reward-modulated, not a gradient (the readout's own weights are exact)",
    ),
    "synthetic_gradients": (
        "O(window·B·I + H²)",
        "1 forward + 1 backward step, O(B·H²); BPTT once per window",
        "window ≥ sequence; truncated BPTT while the predictor is zero",
    ),
}

#: Variants shown besides the defaults (label, algorithm).
VARIANTS = (
    ("eprop(feedback='random')", traxon.trace.eprop(feedback="random")),
    ("ostl(readout_filter=False)", traxon.trace.ostl(readout_filter=False)),
    ("synthetic_gradients(window=20)", traxon.trace.synthetic_gradients(window=20)),
)

#: Not run on the benchmark (with the reason shown in the table).
SKIPPED = {"rtrl": "not run at N = 64 (B·H·P Jacobian); equals BPTT to 1e-8 in the tests"}


def benchmark() -> tuple[Network, dict, np.ndarray, np.ndarray]:
    net = Network(
        N_IN,
        {"h": Population(LIF(tau=20.0), N)},
        [
            Projection("x", "h", Dense(gain=4.0), synapse=Expon(5.0)),
            Projection("h", "h", Dense(gain=1.0), synapse=Expon(5.0), delay=1),
        ],
        readout=Readout("h", 2, tau=20.0),
    )
    params = net.init_params(jax.random.PRNGKey(0), jnp.float64)
    k1, k2 = jax.random.split(jax.random.PRNGKey(1))
    xs = np.asarray(jax.random.uniform(k1, (T, B, N_IN)) < 0.3, np.float64)
    ys = np.asarray(jax.random.randint(k2, (T, B), 0, 2))
    return net, params, xs, ys


def gated_cell(cell: str) -> tuple[str, Network, dict, np.ndarray, np.ndarray]:
    """A layer of 16 gated cells on 5 continuous inputs (T 50, batch 4): every gate fed by
    the input and a bias; the GRU also by its own ``h`` at delay 1; a leaky readout."""
    from traxon.core import GRU, Bias, MinGRU

    n, neuron = 16, GRU() if cell == "GRU" else MinGRU()
    projs = [Projection("x", "h", Dense(1.5), port=g, name=f"x->{g}") for g in neuron.gates]
    projs += [Projection("x", "h", Bias(), port=g, name=f"b_{g}") for g in neuron.gates]
    if cell == "GRU":
        projs += [
            Projection("h", "h", Dense(1.0), port=g, delay=1, name=f"h->{g}")
            for g in ("z", "r", "hh")
        ]
    net = Network(N_IN, {"h": Population(neuron, n)}, projs, readout=Readout("h", 2, tau=20.0))
    params = net.init_params(jax.random.PRNGKey(0), jnp.float64)
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    for i, k in enumerate(sorted(k for k in params if k.startswith("b_"))):
        params[k] = 0.5 * jax.random.normal(jax.random.fold_in(keys[2], i), params[k].shape)
    xs = np.asarray(jax.random.normal(keys[0], (50, B, N_IN)), np.float64)
    ys = np.asarray(jax.random.randint(keys[1], (50, B), 0, 2))
    setting = (
        f"{n} units, gates from the input and biases"
        + (", recurrent weights onto z, r, hh" if cell == "GRU" else ", no recurrent weight")
        + ", leaky readout, 50 steps, batch 4"
    )
    return setting, net, params, xs, ys


def gap_junctions(symmetric: bool) -> tuple[str, Network, dict, np.ndarray, np.ndarray]:
    """16 graded (tanh) neurons on 5 continuous inputs coupled by dense gap junctions (one
    conductance per pair, or per direction) reading the membrane at delay 1 (T 50, batch 4);
    a leaky readout."""
    from traxon.core import GapJunction, Graded

    n = 16
    net = Network(
        N_IN,
        {"h": Population(Graded(tau=10.0, activation="tanh"), n)},
        [
            Projection("x", "h", Dense(2.0)),
            Projection("h", "h", GapJunction(1.0, symmetric=symmetric), signal="V", delay=1),
        ],
        readout=Readout("h", 2, tau=20.0),
    )
    params = net.init_params(jax.random.PRNGKey(0), jnp.float64)
    keys = jax.random.split(jax.random.PRNGKey(1), 2)
    xs = np.asarray(jax.random.normal(keys[0], (50, B, N_IN)), np.float64)
    ys = np.asarray(jax.random.randint(keys[1], (50, B), 0, 2))
    setting = (
        f"{n} graded neurons (tanh, τ = 10 ms), Dense input, dense gap junctions "
        f"(total conductance 1 per neuron, {'one per pair' if symmetric else 'one per direction'}"
        "), leaky readout, 50 steps, batch 4"
    )
    return setting, net, params, xs, ys


def conv_lif() -> tuple[str, Network, dict, np.ndarray, np.ndarray]:
    """A strided Conv2D from a (2, 6, 6) spike map into 4 maps of 3x3 LIF neurons, a 'SAME'
    recurrent Conv2D between the maps (delay 1), exponential synapses, a leaky readout
    (T 50, batch 4)."""
    from traxon.core import Conv2D

    conv = Conv2D(2, 4, kernel_size=3, in_shape=(6, 6), stride=2, gain=6.0)
    rec = Conv2D(4, 4, kernel_size=3, in_shape=(3, 3), gain=1.0)
    net = Network(
        conv.n_in,
        {"h": Population(LIF(tau=20.0), conv.n_out)},
        [
            Projection("x", "h", conv, synapse=Expon(5.0)),
            Projection("h", "h", rec, synapse=Expon(5.0), delay=1),
        ],
        readout=Readout("h", 2, tau=20.0),
    )
    params = net.init_params(jax.random.PRNGKey(0), jnp.float64)
    keys = jax.random.split(jax.random.PRNGKey(1), 2)
    xs = np.asarray(jax.random.uniform(keys[0], (50, B, conv.n_in)) < 0.3, np.float64)
    ys = np.asarray(jax.random.randint(keys[1], (50, B), 0, 2))
    setting = (
        "(2, 6, 6) input spikes, `Conv2D` 3x3 stride 2 into 4 maps of 3x3 LIF, recurrent "
        "3x3 'SAME' `Conv2D` (delay 1), Expon synapses, leaky readout, 50 steps, batch 4"
    )
    return setting, net, params, xs, ys


#: Models beyond the LIF benchmark, one row each: ``name: () -> (setting, net, params, xs,
#: ys)``; each is compared with BPTT by ``MODEL_RULES`` (cells: the lowest cosine over the
#: model's weights, with that weight, and the mean).
MODELS = {
    "`GRU`": lambda: gated_cell("GRU"),
    "`MinGRU`": lambda: gated_cell("MinGRU"),
    "`Graded` + `GapJunction(symmetric=False)`": lambda: gap_junctions(symmetric=False),
    "`Graded` + `GapJunction()` (symmetric)": lambda: gap_junctions(symmetric=True),
    "`LIF` + `Conv2D` (input and recurrent)": conv_lif,
}
MODEL_RULES = ("d_rtrl", "es_d_rtrl", "rtrl")


def model_lines() -> list[str]:
    lines = [
        "## Models beyond LIF",
        "",
        "Each model's gradient of one sequence against BPTT's (float64, "
        "`traxon.diagnostics.compare`). Cells give the *lowest cosine over the model's "
        "weights (that weight) / the mean cosine*.",
        "",
        "| model | setting | " + " | ".join(f"`{r}`" for r in MODEL_RULES) + " |",
        "|" + "---|" * (2 + len(MODEL_RULES)),
    ]
    for name, build in MODELS.items():
        setting, net, params, xs, ys = build()
        refused = {}  # rules that refuse the model when bound (their error is the cell)
        for rule in MODEL_RULES:
            try:
                traxon.get_algorithm(rule).bind(net, cross_entropy.fn, window=xs.shape[0])
            except ValueError as err:
                msg = str(err).split(". ")[1].split(";")[0]
                refused[rule] = "refused: " + msg[:1].lower() + msg[1:]
        runs = [r for r in MODEL_RULES if r not in refused]
        cos = compare(net, xs, ys, algorithms=runs, params=params).metric("cosine")
        cells = []
        for rule in MODEL_RULES:
            if rule in refused:
                cells.append(refused[rule])
                continue
            worst = min(cos[rule], key=cos[rule].get)
            mean = float(np.mean(list(cos[rule].values())))
            cells.append(f"{cos[rule][worst]:.4f} (`{worst}`) / {mean:.4f}")
        lines.append(f"| {name} | {setting} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    device = jax.devices()[0]
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs visible, {platform.system()} "
        f"{platform.release()}; Python {platform.python_version()}, jax {jax.__version__} "
        f"({device.platform}), traxon {traxon.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)

    net, params, xs, ys = benchmark()
    names = [n for n in sorted(ALGORITHMS) if n not in SKIPPED]
    record = net.simulate(params, net.init_state(B, jnp.float64), xs).record
    spikes = float(record["h"]["spike"].sum())
    table = compare(net, xs, ys, algorithms=names + [a for _, a in VARIANTS], params=params)
    labels = dict(zip(table.algorithms(), names + [label for label, _ in VARIANTS], strict=True))
    cos, ratio = table.metric("cosine"), table.metric("norm_ratio")
    meta = {r["algorithm"]: r for r in table.rows}

    lines = [
        "# Learning rules side by side (generated)",
        "",
        "<!-- Generated by docs/algorithms_table.py; do not edit by hand. -->",
        "",
        f"Benchmark: {N} recurrent LIF neurons (τ = 20 ms) with exponential synapses "
        f"(τ = 5 ms) on the input and the delay-1 recurrent weights, a leaky readout "
        f"(τ = 20 ms, 2 outputs), {T} steps, batch {B}, {N_IN} inputs firing with probability "
        f"0.3 per step, random class targets at every step, cross-entropy averaged over the "
        f"batch and summed over time, float64 ({spikes:.0f} hidden spikes in the batch). "
        "Each rule's gradient of one sequence is compared with BPTT's on the same weights "
        "(`traxon.diagnostics.compare`). Cells give *cosine / norm ratio* against BPTT.",
        "",
        "Notation: B batch, N neurons, S state variables per neuron (here 2: V and the "
        "synaptic current), I presynaptic neurons, #W weight entries, H = N·S all state "
        "variables, P all weights, T steps.",
        "",
        "| algorithm | memory | compute / step | exact when | "
        + " | ".join(f"`{w}`" for w in WEIGHTS)
        + " | trace state | time / step |",
        "|" + "---|" * (6 + len(WEIGHTS)),
    ]
    for key, label in labels.items():
        base = label.split("(")[0]
        memory, compute, exact = CARDS.get(base, ("see docstring",) * 3)
        cells = [
            f"{cos[key][w]:.4f} / {ratio[key][w]:.3f}" if w in cos[key] else "—" for w in WEIGHTS
        ]
        row = meta[key]
        mib = row["memory_bytes"] / 2**20
        lines.append(
            f"| `{label}` | {memory} | {compute} | {exact} | "
            + " | ".join(cells)
            + f" | {mib:.2f} MiB | {row['step_seconds'] * 1e3:.2f} ms |"
        )
    for name, why in SKIPPED.items():
        memory, compute, exact = CARDS[name]
        lines.append(
            f"| `{name}` | {memory} | {compute} | {exact} | "
            + " | ".join("—" for _ in WEIGHTS)
            + f" | {why} | — |"
        )
    lines += [
        "",
        f"BPTT itself (`jax.grad` through the scan): {table.info['bptt_step_seconds'] * 1e3:.2f} "
        "ms per step.",
        "",
        "Reading the table: `uoro` is one seed's estimate (unbiased, so only the mean over "
        "many seeds approaches BPTT; `tests/test_algorithms.py` checks that), `three_factor` "
        "and `eprop(feedback='random')` are not gradients of this loss (their readout weights "
        "are), `synthetic_gradients(window=20)` is shown with an untrained predictor (zero), "
        "which is truncated BPTT. Times are the fastest of three runs after compilation, the "
        "gradient read included, on a shared machine: `d_rtrl`, `ostl` and `eprop` run the "
        "same computation, so their spread shows the timing noise.",
        "",
        *model_lines(),
        f"Generated by `python docs/algorithms_table.py` on {datetime.date.today().isoformat()}.",
        "",
        f"Machine: {machine()}.",
        "",
    ]
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
