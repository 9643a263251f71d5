"""A minimal gated recurrent cell in traxon and in braintrace: time per step and gradient
fidelity of the online rules, side by side on the same weights and data.

The model (identical function in both libraries): one layer of ``N`` minGRU cells on
``n_in = 20`` continuous inputs (standard normal every step) with a leaky readout of
``n_out = 4`` units (tau = 20 ms, dt = 1 ms, no bias); per-step cross-entropy against random
labels, averaged over the batch and summed over time:

    z_t = sigmoid(W_z [x_t; h_{t-1}] + b_z),   h_t = (1 - z_t) h_{t-1} + z_t (W_x x_t + b_x)

traxon builds it as a :class:`~traxon.core.MinGRU` population fed on its gates
(``Projection("x", "h", Dense(), port="z")``, ``Projection("h", "h", Dense(), port="z",
delay=1)``, ``Projection("x", "h", Dense(), port="hx")`` and a ``Bias`` on each gate). The
peer is ``braintrace.nn.MiniGRU`` (the same update, with ``W_z`` reading ``[x; h]``) read by
``braintrace.nn.LeakyRateReadout``, compiled in braintrace's batched mode; it receives
traxon's initial weights, and the ``peer_forward`` row reports the largest difference of
the two libraries' outputs.

Rows (``algorithm`` / ``variant``): ``forward`` / ``simulate`` (``Network.simulate``);
``d_rtrl`` / ``tracer`` and ``es_d_rtrl`` / ``tracer`` (``tracer.step`` in a ``lax.scan``,
gradient read at the end; es_d_rtrl with one presynaptic decay, ``DECAY``); ``bptt`` /
``direct`` (``jax.grad`` through the scan: the reference); ``peer_forward`` / ``for_loop``;
``peer_d_rtrl`` / ``etrace_grad`` (``braintrace.D_RTRL``) and ``peer_pp_prop`` /
``etrace_grad`` (``braintrace.pp_prop(decay_or_rank=DECAY)``), per-step gradients summed.
Every gradient row carries ``cosine_vs_bptt`` and ``norm_ratio_vs_bptt`` (all weights as
one vector) and ``cosine_by_weight``; ``ratio_vs_forward`` divides by traxon's ``forward`` and
``ratio_vs_peer`` by the peer's same algorithm, timed in the same round-robin.

Run from the repository root::

    python benchmarks/gated_cells.py            # N = 128, T = 200, B = 16
    python benchmarks/gated_cells.py --quick    # N = 32, T = 100, B = 8
    python benchmarks/gated_cells.py --smoke    # every code path in seconds
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bench

N_IN, N_OUT = 20, 4
TAU_O, DT = 20.0, 1.0
DECAY = 0.5  # es_d_rtrl's and pp_prop's presynaptic decay: 1 - sigma(0), the cell's decay at rest
WEIGHTS = ("x->z", "h->z", "b_z", "x->hx", "b_hx", "h->readout")
PEER_OF = {"forward": "peer_forward", "d_rtrl": "peer_d_rtrl", "es_d_rtrl": "peer_pp_prop"}


def make_problem(N: int, B: int, T: int) -> dict[str, Any]:
    from traxon.core import Bias, Dense, MinGRU, Network, Population, Projection, Readout

    net = Network(
        N_IN,
        {"h": Population(MinGRU(), N)},
        [
            Projection("x", "h", Dense(gain=1.0), port="z", name="x->z"),
            Projection("h", "h", Dense(gain=1.0), port="z", delay=1, name="h->z"),
            Projection("x", "h", Bias(), port="z", name="b_z"),
            Projection("x", "h", Dense(gain=1.0), port="hx", name="x->hx"),
            Projection("x", "h", Bias(), port="hx", name="b_hx"),
        ],
        readout=Readout("h", N_OUT, tau=TAU_O, bias=False),
        dt=DT,
    )
    params, state = net.init(jax.random.PRNGKey(0), B)
    kx, ky, kb = jax.random.split(jax.random.PRNGKey(1), 3)
    params["b_z"] = 0.5 * jax.random.normal(kb, (N,))
    xs = jax.random.normal(kx, (T, B, N_IN))
    ys = jax.random.randint(ky, (T, B), 0, N_OUT)
    ws = jnp.full((T, B), 1.0 / B, jnp.float32)
    return {
        "N": N,
        "B": B,
        "T": T,
        "net": net,
        "params": params,
        "state": state,
        "data": (xs, ys, ws),
    }


# --------------------------------------------------------------------------------------
# traxon.


def build_forward(pb: dict) -> bench.Built:
    xs = pb["data"][0]

    def run(params: dict, state: dict, xs: jax.Array) -> Any:
        return pb["net"].simulate(params, state, xs).outputs

    return bench.jax_compiled(run, pb["params"], pb["state"], xs)


def build_tracer(pb: dict, name: str, **options: Any) -> bench.Built:
    from traxon.learn import cross_entropy
    from traxon.trace import get_algorithm

    tracer = get_algorithm(name, **options).bind(pb["net"], cross_entropy.fn, window=pb["T"])
    return bench.jax_compiled(bench.tracer_run(tracer), pb["params"], pb["state"], *pb["data"])


def build_bptt(pb: dict) -> bench.Built:
    from traxon.learn import cross_entropy
    from traxon.trace import bptt_gradient

    def run(params: dict, state: dict, xs: jax.Array, ys: jax.Array, ws: jax.Array) -> Any:
        return bptt_gradient(pb["net"], cross_entropy.fn, params, state, {"x": xs}, ys, ws)[0]

    args = (pb["params"], pb["state"], *pb["data"])
    return bench.jax_compiled(run, *args)


# --------------------------------------------------------------------------------------
# braintrace peer.


def _peer_model(pb: dict) -> Any:
    import brainstate
    import braintrace
    import brainunit as u

    p, N = pb["params"], pb["N"]

    class PeerMinGRU(brainstate.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cell = braintrace.nn.MiniGRU(N_IN, N)
            self.out = braintrace.nn.LeakyRateReadout(N, N_OUT, tau=TAU_O * u.ms)

        def update(self, x: jax.Array) -> jax.Array:
            return self.out(self.cell(x))

    model = PeerMinGRU()
    model.cell.W_z.weight.value = {
        "weight": jnp.concatenate([p["x->z"], p["h->z"]], axis=0),
        "bias": p["b_z"],
    }
    model.cell.W_x.weight.value = {"weight": p["x->hx"], "bias": p["b_hx"]}
    model.out.W.value = p["h->readout"]
    return model


def _peer_grads(g: dict) -> dict[str, jax.Array]:
    """The peer's gradient dict under traxon's weight names."""
    wz, wx = g[("cell", "W_z", "weight")], g[("cell", "W_x", "weight")]
    return {
        "x->z": wz["weight"][:N_IN],
        "h->z": wz["weight"][N_IN:],
        "b_z": wz["bias"],
        "x->hx": wx["weight"],
        "b_hx": wx["bias"],
        "h->readout": g[("out", "W")],
    }


def build_peer_forward(pb: dict) -> bench.Built:
    import brainstate

    model = _peer_model(pb)
    brainstate.nn.init_all_states(model, batch_size=pb["B"])
    return bench.brainstate_compiled(
        lambda xs: brainstate.transform.for_loop(model, xs), pb["data"][0]
    )


def build_peer_etrace(pb: dict, algorithm: str) -> bench.Built:
    import braintools
    import braintrace

    model = _peer_model(pb)
    xs, ys, _ = pb["data"]
    if algorithm == "pp_prop":
        learner = braintrace.compile(
            model, braintrace.pp_prop, xs[0], batch_size=pb["B"], decay_or_rank=DECAY
        )
    else:
        learner = braintrace.compile(model, braintrace.D_RTRL, xs[0], batch_size=pb["B"])

    def step_loss(x: jax.Array, y: jax.Array) -> jax.Array:
        out = learner(x)
        return braintools.metric.softmax_cross_entropy_with_integer_labels(out, y).mean()

    def run(xs: jax.Array, ys: jax.Array) -> Any:
        return learner.etrace_grad(xs, ys, step_fn=step_loss, reduction="sum")

    call, mem, sec = bench.brainstate_compiled(run, xs, ys)
    return (lambda: _peer_grads(call())), mem, sec


# --------------------------------------------------------------------------------------


def fidelity(got: dict, ref: dict) -> dict[str, Any]:
    """Cosine and norm ratio of a gradient against BPTT's: all weights as one vector, and
    the cosine per weight."""

    def cos(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))

    flat = {k: (np.ravel(np.asarray(got[k], np.float64)), np.ravel(ref[k])) for k in WEIGHTS}
    g = np.concatenate([a for a, _ in flat.values()])
    r = np.concatenate([b for _, b in flat.values()])
    return {
        "cosine_vs_bptt": cos(g, r),
        "norm_ratio_vs_bptt": float(np.linalg.norm(g) / max(np.linalg.norm(r), 1e-30)),
        "cosine_by_weight": {k: round(cos(a, b), 6) for k, (a, b) in flat.items()},
    }


def main(argv: list[str] | None = None) -> None:
    parser = bench.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=None, help="N, the number of cells")
    parser.add_argument("--steps", type=int, default=None, help="T")
    parser.add_argument("--batch", type=int, default=None, help="B")
    parser.add_argument("--max-seconds", type=float, default=None, help="timing budget per row")
    args = parser.parse_args(argv)
    N = args.size or (8 if args.smoke else 32 if args.quick else 128)
    T = args.steps or (10 if args.smoke else 100 if args.quick else 200)
    B = args.batch or (2 if args.smoke else 8 if args.quick else 16)
    reps = args.reps or (1 if args.smoke else 3 if args.quick else 5)
    max_seconds = args.max_seconds or (1.0 if args.smoke else 10.0 if args.quick else 30.0)
    bench.emit_machine("gated_cells.py", sys.argv[1:], ("brainstate", "braintrace"))

    import brainstate
    import brainunit as u

    brainstate.environ.set(dt=DT * u.ms)
    t_start = time.perf_counter()
    pb = make_problem(N, B, T)
    builders: dict[str, tuple[str, str, Callable[[], bench.Built]]] = {
        "forward": ("simulate", "traxon", lambda: build_forward(pb)),
        "d_rtrl": ("tracer", "traxon", lambda: build_tracer(pb, "d_rtrl")),
        "es_d_rtrl": ("tracer", "traxon", lambda: build_tracer(pb, "es_d_rtrl", decay=DECAY)),
        "bptt": ("direct", "traxon", lambda: build_bptt(pb)),
        "peer_forward": ("for_loop", "braintrace", lambda: build_peer_forward(pb)),
        "peer_d_rtrl": ("etrace_grad", "braintrace", lambda: build_peer_etrace(pb, "d_rtrl")),
        "peer_pp_prop": ("etrace_grad", "braintrace", lambda: build_peer_etrace(pb, "pp_prop")),
    }
    calls, info = {}, {}
    for name, (variant, library, build) in builders.items():
        bench.log(f"compile {name} (N={N} T={T} B={B})")
        try:
            call, mem, sec = build()
        except Exception as exc:  # a failing row is reported, the others still run
            bench.emit(
                {
                    "algorithm": name,
                    "variant": variant,
                    "library": library,
                    "N": N,
                    "T": T,
                    "B": B,
                    "error": bench.error_text(exc),
                }
            )
            continue
        calls[name] = call
        info[name] = (variant, library, mem, sec)
    timed = bench.time_round_robin(calls, reps, max_seconds)
    ref = (
        {k: np.asarray(v, np.float64) for k, v in timed["bptt"]["result"].items()}
        if "bptt" in timed
        else None
    )
    for name, t in timed.items():
        variant, library, mem, sec = info[name]
        row: dict[str, Any] = {
            "algorithm": name,
            "variant": variant,
            "library": library,
            "model": "MinGRU",
            "N": N,
            "T": T,
            "B": B,
            "per_step_ms": 1e3 * t["median_s"] / T,
            "compiled_bytes": mem.get("compiled_bytes"),
            "compile_s": sec,
            "n_reps": t["n_reps"],
            "ratio_vs_forward": t["median_s"] / timed["forward"]["median_s"]
            if "forward" in timed
            else None,
        }
        if library == "traxon":
            peer = PEER_OF.get(name)
            row["ratio_vs_peer"] = (
                t["median_s"] / timed[peer]["median_s"] if peer in timed else None
            )
        if name == "peer_forward" and "forward" in timed:
            ours = np.asarray(timed["forward"]["result"])
            row["max_output_diff"] = float(np.max(np.abs(np.asarray(t["result"]) - ours)))
        if ref is not None and name not in ("forward", "peer_forward"):
            row.update(fidelity(t["result"], ref))
        bench.emit(row)
    bench.emit_summary("gated_cells", t_start, reps=reps)


if __name__ == "__main__":
    main()
