"""Event-driven forward of the weight ops against their all-rows path at 1 %, 5 % and 20 % firing.

For each weight op that has an event-driven path -- ``Dense`` (``N x N``), ``CSR`` and
``FixedOutDegree`` (``N`` presynaptic neurons, ``DEGREE`` random targets each) -- and each
batch size ``B``, the same op is timed two ways on the same Bernoulli spike trains:

* ``all_rows``: the op as built without ``max_active`` (a dense product, or a scatter of
  every entry);
* ``auto``: the op a :class:`~traxon.core.Network` uses for a projection that reads spikes
  (``event="auto"``: ``op.with_events(N, N)``, rule ``traxon.core.ops.auto_max_active``;
  for CSR, which the rule leaves alone, the same op as ``all_rows``); when more neurons
  are active than the capacity the op takes the all-rows path itself;
* ``cap<f>`` (with ``--fractions``): the event path with ``max_active = ceil(f * N)``, to
  see where gathering stops paying.

Each function is ``T`` steps of ``op.apply(W, z_t)`` in one ``lax.scan`` (the output feeds a
carry, so no step can be skipped). The variants of one ``(op, B)`` are timed round-robin in
one process (``_common.time_round_robin``); this is repeated ``--rounds`` times and each line
reports the median over rounds of the per-round ratio ``auto / all_rows`` of the median
repetitions (and of each ``cap<f>``), which a change of load on a shared machine hits alike,
and ``ratio_<variant>_fastest``, the same ratio of the fastest repetitions.

``--network`` adds the rows of a recurrent LIF network (``N`` neurons, Dense recurrence and
readout, 100 Poisson inputs, B = 16) built with ``event="auto"`` and with ``event="off"``:
``forward`` (``Network.simulate``) and ``es_d_rtrl`` (the tracer stepped over ``T`` steps,
gradients accumulated): the learner's forward goes through the same ops.

Run::

    python benchmarks/event_forward.py                 # N = 1024, B in {1, 16}, 5 rounds
    python benchmarks/event_forward.py --quick         # 3 rounds, fewer repetitions
    python benchmarks/event_forward.py --smoke         # tiny sizes (add --network too)
    python benchmarks/event_forward.py --fractions 0.0625 0.25 0.5 --network

Every result line carries the common fields (``algorithm = "forward"``, ``variant``,
``per_step_ms`` of the ``auto`` variant, ``ratio_vs_forward`` = ``auto / all_rows``).
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from _common import (
    base_parser,
    compile_jax,
    emit,
    emit_machine,
    loadavg,
    log,
    memory_stats,
    time_round_robin,
    tracer_run,
)

RATES = (0.01, 0.05, 0.2)
DEGREE = 100  # targets per presynaptic neuron of the sparse ops
OPS = ("dense", "csr", "fixed_out")


def make_op(kind: str, n: int, degree: int, seed: int = 0) -> Any:
    """The op without an event path (``max_active=None``)."""
    from traxon.core import CSR, Dense, FixedOutDegree

    if kind == "dense":
        return Dense()
    rng = np.random.default_rng(seed)
    post = np.stack([rng.choice(n, degree, replace=False) for _ in range(n)])
    if kind == "csr":
        return CSR.from_edges(np.repeat(np.arange(n), degree), post.ravel(), n_in=n, n_out=n)
    return FixedOutDegree(post_index=post, n_out=n)


def variants(op: Any, n: int, fractions: list[float]) -> dict[str, Any]:
    out = {"all_rows": op, "auto": op.with_events(n, n)}
    for f in fractions:
        out[f"cap{f:g}"] = op.replace(max_active=max(1, math.ceil(f * n)))
    return out


def op_runner(op: Any, W: jax.Array, zs: jax.Array, n_out: int) -> tuple[Any, dict]:
    """``T`` steps of ``op.apply`` in one scan, compiled for the shapes of ``W`` and ``zs``:
    ``(run(W, zs), memory stats)``."""

    def run(W: jax.Array, zs: jax.Array) -> jax.Array:
        def body(c: jax.Array, z: jax.Array) -> tuple[jax.Array, None]:
            return 0.5 * c + op.apply(W, z), None

        c0 = jnp.zeros((zs.shape[1], n_out), W.dtype)
        return jax.lax.scan(body, c0, zs)[0]

    compiled, _ = compile_jax(run, W, zs)
    return compiled, memory_stats(compiled)


def timed_rounds(
    calls: dict[str, Any],
    rounds: int,
    reps: int,
    budget: float,
    label: str,
    reference: Any,
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, list[float]]]:
    """``rounds`` round-robin timings of ``calls``: per key, each round's median seconds,
    and its ratio to the key ``reference(key)`` of the same round (medians, and fastest
    repetitions)."""
    times: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {}
    fastest: dict[str, list[float]] = {}
    for r in range(rounds):
        log(f"{label}: round {r + 1}/{rounds}")
        stats = time_round_robin(calls, reps, budget)
        for key, st in stats.items():
            ref = stats[reference(key)]
            times.setdefault(key, []).append(st["median_s"])
            ratios.setdefault(key, []).append(st["median_s"] / ref["median_s"])
            fastest.setdefault(key, []).append(st["min_s"] / ref["min_s"])
    return times, ratios, fastest


def measure_op(
    kind: str, n: int, B: int, T: int, rounds: int, reps: int, fractions: list[float], budget: float
) -> list[dict]:
    """One line per firing rate for one ``(op, B)``."""
    base = make_op(kind, n, min(DEGREE, n))
    rng = np.random.default_rng(1)
    W = jnp.asarray(rng.normal(size=base.weight_shape(n, n)), jnp.float32)
    calls: dict[str, Any] = {}
    mems: dict[str, dict] = {}
    ops = variants(base, n, fractions)
    outputs: dict[str, Any] = {}
    trains = {
        rate: jnp.asarray((rng.random((T, B, n)) < rate).astype(np.float32)) for rate in RATES
    }
    for name, op in ops.items():
        compiled, mem = op_runner(op, W, trains[RATES[0]], n)  # one compile for every rate
        for rate, zs in trains.items():
            key = f"{rate}/{name}"
            calls[key] = lambda compiled=compiled, zs=zs: compiled(W, zs)
            mems[key] = mem
            outputs[key] = np.asarray(calls[key]())
    times, ratios, fastest = timed_rounds(
        calls, rounds, reps, budget, f"{kind} B={B}", lambda key: key.split("/")[0] + "/all_rows"
    )
    lines = []
    for rate in RATES:
        ref = outputs[f"{rate}/all_rows"]
        line: dict[str, Any] = {
            "benchmark": "event_forward",
            "op": kind,
            "firing": rate,
            "algorithm": "forward",
            "variant": f"{kind}_auto",
            "N": n,
            "T": T,
            "B": B,
            "degree": None if kind == "dense" else min(DEGREE, n),
            "max_active_auto": ops["auto"].max_active,
            "rounds": rounds,
        }
        for name in ops:
            key = f"{rate}/{name}"
            line[f"{name}_ms_per_step"] = float(np.median(times[key])) / T * 1e3
            line[f"{name}_compiled_bytes"] = mems[key].get("compiled_bytes")
            if name != "all_rows":
                line[f"ratio_{name}"] = float(np.median(ratios[key]))
                line[f"ratio_{name}_rounds"] = [round(x, 4) for x in ratios[key]]
                # The same ratio of the fastest repetitions (less moved by other jobs).
                line[f"ratio_{name}_fastest"] = float(np.median(fastest[key]))
            # Every variant computes the same values (up to summation order).
            line[f"{name}_max_abs_diff"] = float(np.max(np.abs(outputs[key] - ref)))
        line["per_step_ms"] = line["auto_ms_per_step"]
        line["compiled_bytes"] = line["auto_compiled_bytes"]
        line["ratio_vs_forward"] = line["ratio_auto"]
        lines.append(line)
    return lines


# --------------------------------------------------------------------------------------
# A recurrent network: simulate and the es_d_rtrl tracer with event="auto" and "off".

N_IN, N_OUT = 100, 10


def make_network(n: int, event: str) -> Any:
    from traxon.core import LIF, Dense, Expon, Network, Population, Projection, Readout

    return Network(
        N_IN,
        {"h": Population(LIF(tau=20.0, V_th=1.0, V_reset=0.0, V_rest=0.0), n)},
        [
            Projection("x", "h", Dense(gain=6.0), synapse=Expon(5.0)),
            Projection("h", "h", Dense(gain=1.0), synapse=Expon(5.0), delay=1),
        ],
        readout=Readout("h", N_OUT, tau=20.0, bias=False),
        event=event,
    )


def network_calls(n: int, B: int, T: int, event: str) -> dict[str, tuple[Any, dict]]:
    from traxon.learn import cross_entropy
    from traxon.trace import get_algorithm

    net = make_network(n, event)
    params, state = net.init(jax.random.PRNGKey(0), B)
    kx, ky = jax.random.split(jax.random.PRNGKey(1))
    xs = (jax.random.uniform(kx, (T, B, N_IN)) < 0.05).astype(jnp.float32)
    ys = jax.random.randint(ky, (T, B), 0, N_OUT)
    ws = jnp.full((T, B), 1.0 / B, jnp.float32)

    def forward(params: Any, state: Any, xs: jax.Array) -> Any:
        res = net.simulate(params, state, xs, record=lambda st, sig: jnp.mean(sig["h"]["spike"]))
        return res.outputs, jnp.mean(res.record)

    learn = tracer_run(get_algorithm("es_d_rtrl").bind(net, cross_entropy.fn, window=T))

    out = {}
    c_fwd, _ = compile_jax(forward, params, state, xs)
    out["forward"] = ((lambda: c_fwd(params, state, xs)), memory_stats(c_fwd))
    c_learn, _ = compile_jax(learn, params, state, xs, ys, ws)
    out["es_d_rtrl"] = ((lambda: c_learn(params, state, xs, ys, ws)), memory_stats(c_learn))
    return out


def measure_network(n: int, B: int, T: int, rounds: int, reps: int, budget: float) -> list[dict]:
    calls, mems = {}, {}
    for event in ("auto", "off"):
        for alg, (call, mem) in network_calls(n, B, T, event).items():
            calls[f"{alg}/{event}"], mems[f"{alg}/{event}"] = call, mem
    results = {k: jax.block_until_ready(f()) for k, f in calls.items()}
    rate = float(results["forward/off"][1])
    times, by_key, _ = timed_rounds(
        calls, rounds, reps, budget, f"network N={n}", lambda key: key.split("/")[0] + "/off"
    )
    ratios = {alg: by_key[f"{alg}/auto"] for alg in ("forward", "es_d_rtrl")}
    lines = []
    for alg in ("forward", "es_d_rtrl"):
        a, b = results[f"{alg}/auto"], results[f"{alg}/off"]
        diff = max(
            float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
            for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
        )
        lines.append(
            {
                "benchmark": "event_forward",
                "op": "network",
                "algorithm": alg,
                "variant": "event_auto",
                "N": n,
                "T": T,
                "B": B,
                "firing": rate,
                "auto_ms_per_step": float(np.median(times[f"{alg}/auto"])) / T * 1e3,
                "off_ms_per_step": float(np.median(times[f"{alg}/off"])) / T * 1e3,
                "ratio_auto": float(np.median(ratios[alg])),
                "ratio_auto_rounds": [round(x, 4) for x in ratios[alg]],
                "auto_max_abs_diff": diff,
                "per_step_ms": float(np.median(times[f"{alg}/auto"])) / T * 1e3,
                "compiled_bytes": mems[f"{alg}/auto"].get("compiled_bytes"),
                "ratio_vs_forward": float(np.median(ratios[alg])),
                "rounds": rounds,
            }
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1024, help="presynaptic (= postsynaptic) size")
    parser.add_argument("--batch", type=int, nargs="*", default=[1, 16], help="batch sizes B")
    parser.add_argument("--steps", type=int, default=100, help="time steps T per call")
    parser.add_argument("--rounds", type=int, default=None, help="round-robin rounds")
    parser.add_argument("--ops", nargs="*", default=list(OPS), choices=OPS)
    parser.add_argument(
        "--fractions", type=float, nargs="*", default=[], help="extra capacities (f * N)"
    )
    parser.add_argument("--network", action="store_true", help="add the network rows")
    parser.add_argument("--max-seconds", type=float, default=4.0, help="timing budget per fn")
    args = parser.parse_args(argv)
    if args.smoke:
        args.n, args.batch, args.steps, args.max_seconds = 24, [2], 4, 0.2
    rounds = args.rounds or (1 if args.smoke else 3 if args.quick else 5)
    reps = args.reps or (1 if args.smoke else 5 if args.quick else 9)
    emit_machine("event_forward.py", sys.argv[1:] if argv is None else argv)
    t_start = time.perf_counter()
    for kind in args.ops:
        for B in args.batch:
            for line in measure_op(
                kind, args.n, B, args.steps, rounds, reps, args.fractions, args.max_seconds
            ):
                emit(line)
    if args.network:
        for line in measure_network(
            args.n, 16 if not args.smoke else 2, args.steps, rounds, reps, args.max_seconds
        ):
            emit(line)
    emit(
        {
            "benchmark": "event_forward",
            "summary": True,
            "wall_s": time.perf_counter() - t_start,
            "loadavg_1min_at_end": loadavg(),
        }
    )


if __name__ == "__main__":
    main()
