"""Draw the figures of the documentation into ``docs/_static/``.

Run from the repository root (about 70 s of CPU time on a 2-core CPU)::

    python docs/make_figures.py

Every figure is computed by traxon itself, from fixed seeds:

* ``fig_contract.png`` -- the model contract: signals, weight ops, neuron-aligned
  transition, readout and loss, and where ``D``, ``F`` and ``delta`` come from;
* ``fig_align.png`` -- AlignPost and AlignPre synapses side by side;
* ``fig_activity.png`` -- input and network spikes and membrane potentials of the
  evidence-accumulation network (random weights, one trial);
* ``fig_trace.png`` -- the eligibility trace of one synapse over time: the exact
  per-synapse trace of D-RTRL and the rank-one product of ES-D-RTRL.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

import traxon
from traxon.core import LIF, Dense, Expon, Network, Population, Projection, Readout
from traxon.learn import cross_entropy
from traxon.plot import membrane, raster
from traxon.recipes import evidence_network
from traxon.tasks import EvidenceAccumulation
from traxon.trace import step_quantities

OUT = Path(__file__).resolve().parent / "_static"
DPI = 110


# ---------------------------------------------------------------------------------------
# Diagrams.


def _box(ax, xy, w, h, text, color, fontsize=9):
    x, y = xy
    ax.add_patch(
        FancyBboxPatch(
            (x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.05", fc=color, ec="0.25", lw=1
        )
    )
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize)


def _arrow(ax, a, b, text=None, color="0.2", style="-|>", offset=(0.0, 0.08), rad=0.0):
    ax.add_patch(
        FancyArrowPatch(
            a,
            b,
            arrowstyle=style,
            mutation_scale=12,
            color=color,
            lw=1.2,
            connectionstyle=f"arc3,rad={rad}",
        )
    )
    if text:
        mx, my = (a[0] + b[0]) / 2 + offset[0], (a[1] + b[1]) / 2 + offset[1]
        ax.text(mx, my, text, ha="center", va="bottom", fontsize=8, color=color)


def fig_contract(path: Path) -> None:
    fig, ax = plt.subplots(figsize=(10, 4.2))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 4.2)
    ax.axis("off")
    sig, op, pop, out = "#dbe9f6", "#fde7c8", "#d9f0d3", "#ead9f2"
    _box(ax, (0.1, 3.0), 1.9, 0.7, "input $x_t$", sig)
    _box(ax, (0.1, 2.0), 1.9, 0.7, "spikes $s_{t-1}$\n(delay = 1)", sig)
    _box(ax, (0.1, 1.0), 1.9, 0.7, "spikes $s_t$ / AlignPre\ntrace (delay = 0)", sig)
    ax.text(1.05, 3.85, "1. presynaptic signals $z_k$", ha="center", fontsize=9, weight="bold")
    _box(
        ax,
        (2.6, 1.6),
        1.7,
        1.4,
        "weight ops\n$u_k = \\mathrm{op}_k(W_k, z_k)$\nDense, Sparse,\nFixedInDegree, ...",
        op,
    )
    ax.text(3.45, 3.85, "2. weight ops", ha="center", fontsize=9, weight="bold")
    for y in (3.35, 2.35, 1.35):
        _arrow(ax, (2.0, y), (2.6, 2.3))
    _box(ax, (4.9, 1.2), 2.3, 2.2, "", pop)
    ax.text(6.05, 3.85, "3. neuron-aligned transition", ha="center", fontsize=9, weight="bold")
    ax.text(6.05, 3.1, "$h_t = f(h_{t-1}, \\sum_k u_k, x_t)$", ha="center", fontsize=9)
    ax.text(6.05, 2.65, "element-wise over neurons:", ha="center", fontsize=8)
    for i, x in enumerate((5.05, 5.8, 6.55)):
        ax.add_patch(
            FancyBboxPatch(
                (x, 1.35), 0.55, 1.05, boxstyle="round,pad=0.02", fc="white", ec="0.4", lw=0.8
            )
        )
        ax.text(x + 0.275, 1.87, "$V$\n$g$\n$a$", ha="center", va="center", fontsize=8)
        ax.text(x + 0.275, 2.45, f"$i={i}$" if i < 2 else "$\\dots$", ha="center", fontsize=7)
    _arrow(ax, (4.3, 2.3), (4.9, 2.3), "$u$ (B, N)")
    _box(ax, (7.8, 2.5), 1.9, 0.9, "readout\n$y_t = \\kappa y_{t-1} + W s_t$", out)
    _box(ax, (7.8, 1.2), 1.9, 0.7, "loss $l_t(y_t, \\mathrm{target}_t)$", out)
    ax.text(8.75, 3.85, "4. readout and loss", ha="center", fontsize=9, weight="bold")
    _arrow(ax, (7.2, 2.9), (7.8, 2.95), "$s_t$")
    _arrow(ax, (8.75, 2.5), (8.75, 1.9))
    # what the tracer computes
    ax.text(
        6.05,
        0.75,
        "$D_t = \\partial h_t/\\partial h_{t-1}$ per neuron  (B, N, S, S)"
        "     $F_t = \\partial h_t/\\partial u$  (B, N, S)",
        ha="center",
        fontsize=8.5,
        color="#1b5e20",
    )
    ax.text(
        6.05,
        0.4,
        "learning signal $\\delta_t = \\partial l_t/\\partial h_t$ (B, N, S):"
        " one VJP from the loss back through this step only",
        ha="center",
        fontsize=8.5,
        color="#6a1b9a",
    )
    _arrow(ax, (8.0, 1.2), (7.0, 1.05), color="#6a1b9a", rad=-0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


# Per panel of fig_align: title, the boxes' x, their label, the arrow's x from and to, the
# x where the weights' lines start and end, the formula's x and text.
ALIGN = {
    "post": (
        'AlignPost (align="post"): state per target neuron',
        6.6,
        "$g_i$",
        (7.5, 8.9),
        [1.1, 6.6],
        3.8,
        "$g_t = e^{-\\Delta t/\\tau} g_{t-1} + z_t W$     memory: $B\\cdot N$ per synapse variable",
    ),
    "pre": (
        'AlignPre (align="pre"): state per source neuron',
        1.6,
        "$\\bar g_j$",
        (1.1, 1.6),
        [2.5, 8.9],
        5.0,
        "$\\bar g_t = e^{-\\Delta t/\\tau} \\bar g_{t-1} + s_t$,  "
        "$u_t = \\bar g_t W$     memory: $B\\cdot I$ per synapse variable",
    ),
}


def fig_align(path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, kind in zip(axes, ("post", "pre"), strict=True):
        ax.set_xlim(0, 10)
        ax.set_ylim(0, 5)
        ax.set_aspect("equal")
        ax.axis("off")
        pre_y = [4.2, 3.2, 2.2, 1.2]
        post_y = [3.7, 2.7, 1.7]
        for y in pre_y:
            ax.add_patch(plt.Circle((0.8, y), 0.28, fc="#dbe9f6", ec="0.3"))
        for y in post_y:
            ax.add_patch(plt.Circle((9.2, y), 0.28, fc="#d9f0d3", ec="0.3"))
        ax.text(0.8, 4.75, "$I$ presynaptic", ha="center", fontsize=9)
        ax.text(9.2, 4.75, "$N$ postsynaptic", ha="center", fontsize=9)
        title, box_x, label, arrow_x, lines_x, formula_x, formula = ALIGN[kind]
        ax.set_title(title, fontsize=10)
        for y in post_y if kind == "post" else pre_y:  # the synapse variable's boxes
            ax.add_patch(plt.Rectangle((box_x, y - 0.25), 0.9, 0.5, fc="#fde7c8", ec="0.3"))
            ax.text(box_x + 0.45, y, label, ha="center", va="center", fontsize=9)
            _arrow(ax, (arrow_x[0], y), (arrow_x[1], y))
        for y0 in pre_y:
            for y1 in post_y:
                ax.plot(lines_x, [y0, y1], color="0.6", lw=0.6)
        ax.text(formula_x, 0.45, formula, ha="center", fontsize=8.5)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


# ---------------------------------------------------------------------------------------
# Activity of the evidence-accumulation network.


def fig_activity(path: Path) -> None:
    task = EvidenceAccumulation(n_cues=5, cue_ms=50, gap_ms=25, delay_ms=200, recall_ms=100)
    net = evidence_network(task.n_in)
    params, state = net.init(jax.random.PRNGKey(0), batch_size=1)
    batch = task.sample(3, 1, split="test")
    res = net.simulate(params, state, jnp.asarray(batch.x), record=("spike", "V"))
    fig, axes = plt.subplots(
        3, 1, figsize=(9, 7.5), sharex=True, gridspec_kw={"height_ratios": [1, 1.4, 1]}
    )
    raster(batch.x, ax=axes[0], title="inputs: left cue, right cue, recall, noise (40 channels)")
    for lo, hi in (*task.cue_windows, task.recall_window):
        axes[0].axvspan(lo, hi, color="0.9", zorder=0)
    spikes = {k: v["spike"] for k, v in res.record.items() if k != "readout"}
    raster(spikes, ax=axes[1], title="network spikes (50 LIF + 50 ALIF, random weights)")
    threshold = float(net.populations["lif"].neuron.V_th)
    membrane(res.record["lif"]["V"], neurons=(0, 1, 2), threshold=threshold, ax=axes[2])
    axes[2].set_title("membrane potential of three LIF neurons")
    for ax in axes[:2]:
        ax.set_xlabel("")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


# ---------------------------------------------------------------------------------------
# The eligibility trace of one synapse.


def trace_of_one_synapse(steps: int = 300, seed: int = 1) -> dict[str, np.ndarray]:
    """Exact and factorised eligibility traces of the synapse input 0 -> neuron 0.

    A LIF population (tau = 20 ms, soft reset with surrogate gradient) behind an exponential
    AlignPost synapse (tau = 5 ms): S = 2 state variables per neuron, {V, g}. Computed from
    the per-step quantities of the model contract (``traxon.trace.step_quantities``):

    * exact (D-RTRL): ``E_t = D_t E_{t-1} + F_t z_t[j]``;
    * ES-D-RTRL: ``xbar_t = alpha xbar_{t-1} + z_t``, ``eps_t = D_t eps_{t-1} + F_t``, and
      ``E_t[s] ~ c_n(alpha_s) xbar_t eps_t[s]`` with ``c_n = (1 - alpha) / (1 - alpha^n)``.
    """
    n_in, n = 3, 4
    net = Network(
        n_in,
        {"h": Population(LIF(tau=20.0, R=20.0), n)},
        [Projection("x", "h", Dense(gain=1.0), synapse=Expon(5.0))],
        readout=Readout("h", 2),
    )
    params, state = net.init(jax.random.PRNGKey(seed), batch_size=1, dtype=jnp.float64)
    params["x->h"] = jnp.full((n_in, n), 0.22, jnp.float64)
    rng = np.random.default_rng(seed)
    xs = (rng.random((steps, 1, n_in)) < 0.06).astype(np.float64)
    plan = net.populations["h"]
    channel = plan.channels[0].id
    alphas = np.array(
        [plan.neuron.decays(net.dt)["V"], plan.channels[0].synapse.decays(net.dt)["g"]]
    )
    target = jnp.zeros((1,), jnp.int32)
    weight = jnp.ones((1,), jnp.float64)

    @jax.jit
    def quantities(state, x):
        q = step_quantities(
            net,
            params,
            state,
            {"x": x},
            target,
            weight,
            cross_entropy.fn,
            {"h": (channel,)},
            {"h": ("spike",)},
        )
        return q.new_state, q.D["h"][0, 0], q.F["h"][channel][0, 0], q.new_state["h"]["V"][0, 0]

    E = np.zeros(2)
    eps = np.zeros(2)
    xbar = np.zeros(2)
    out = {k: [] for k in ("z", "V", "spike", "E", "approx")}
    for t in range(steps):
        state, D, F, v = quantities(state, jnp.asarray(xs[t]))
        D, F, z = np.asarray(D), np.asarray(F), xs[t, 0, 0]
        E = D @ E + F * z
        eps = D @ eps + F
        xbar = alphas * xbar + z
        c = (1 - alphas) / (1 - alphas ** (t + 1))
        out["z"].append(z)
        out["V"].append(float(v))
        out["spike"].append(float(np.asarray(plan.neuron.output({"V": state["h"]["V"]}))[0, 0]))
        out["E"].append(E.copy())
        out["approx"].append(c * xbar * eps)
    res = {k: np.asarray(v) for k, v in out.items()}
    # The same exact trace from the D-RTRL tracer itself.
    tracer = traxon.d_rtrl().bind(net, cross_entropy.fn)
    st = net.init_state(1, jnp.float64)
    ts = tracer.init(params, st)
    for t in range(steps):
        st, ts, _ = tracer.step(params, st, ts, {"x": jnp.asarray(xs[t])}, target, weight)
    from_tracer = np.array([ts.E["x->h"][s][0, 0, 0] for s in range(2)])
    assert np.allclose(from_tracer, res["E"][-1], rtol=1e-9, atol=1e-12), (from_tracer, E)
    return res


def fig_trace(path: Path) -> None:
    with jax.enable_x64(True):
        r = trace_of_one_synapse()
    t = np.arange(len(r["z"]))
    fig, axes = plt.subplots(
        4, 1, figsize=(9, 7), sharex=True, gridspec_kw={"height_ratios": [0.5, 1, 1, 1]}
    )
    axes[0].eventplot([t[r["z"] > 0]], colors="C0", lineoffsets=1, linelengths=0.8)
    axes[0].eventplot([t[r["spike"] > 0]], colors="C3", lineoffsets=0, linelengths=0.8)
    axes[0].set_yticks([0, 1], ["post $i$", "pre $j$"])
    axes[0].set_title("synapse $j \\to i$: presynaptic and postsynaptic spikes")
    axes[1].plot(t, r["V"], color="k", lw=1)
    axes[1].axhline(1.0, color="k", ls="--", lw=0.6)
    axes[1].set_ylabel("$V_i$")
    for ax, s, name in ((axes[2], 1, "g"), (axes[3], 0, "V")):
        ax.plot(t, r["E"][:, s], color="C2", lw=1.6, label="exact $E_t[j,i]$ (D-RTRL)")
        ax.plot(
            t,
            r["approx"][:, s],
            color="C1",
            lw=1,
            ls="--",
            label="$c_n\\,\\bar x_t[j]\\,\\epsilon_t[i]$ (ES-D-RTRL)",
        )
        ax.set_ylabel(f"$\\partial {name}_i / \\partial w_{{ji}}$")
        ax.legend(fontsize="small", loc="upper right")
    axes[2].set_title("trace of the synapse variable $g$: linear, the product is exact")
    axes[3].set_title(
        "trace of the membrane $V$: $D_t$ varies ($V$ reads $g$, reset surrogate), "
        "the product approximates"
    )
    axes[3].set_xlabel("time step")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


FIGURES = {
    "fig_contract.png": fig_contract,
    "fig_align.png": fig_align,
    "fig_activity.png": fig_activity,
    "fig_trace.png": fig_trace,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="output folder (docs/_static)")
    parser.add_argument("names", nargs="*", help="figures to draw (default: all)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.names or FIGURES:
        FIGURES[name](args.out / name)
        print("wrote", args.out / name)


if __name__ == "__main__":
    main()
