"""Forward simulation of a 1,000-neuron E/I LIF network: traxon versus ``brainpy.state``.

The network (the same in both libraries, built in the same process):

* 800 excitatory + 200 inhibitory LIF neurons (tau = 20 ms, V_th = 1, V_reset = V_rest = 0,
  R = 1, soft reset, no refractory period), dt = 0.1 ms;
* sparse recurrent connectivity with probability 0.1: every presynaptic neuron projects to
  ``int(0.1 * 1000) = 100`` random targets (brainstate's ``EventFixedProb``, drawn with
  replacement); traxon's ``FixedOutDegree`` uses *the same index arrays*, read back from the
  brainpy.state network, so both simulate exactly the same graph;
* exponential AlignPost synapses (tau = 5 ms) with current-based output (``CUBA``, scale 1),
  excitatory weight ``+w_e``, inhibitory ``-w_i`` (one shared synapse state per neuron in
  both libraries: brainpy.state merges the two ``Expon.desc`` of equal kinetics);
* external drive: the same ``(T, N)`` array of noisy currents ``mu + sigma * xi`` fed to
  both, and the same random initial membrane potentials;
* 1,000 steps under jit: ``Network.simulate`` (one ``lax.scan``) in traxon,
  ``brainstate.transform.for_loop`` inside ``brainstate.transform.jit`` in brainpy.state.
  Both record the spikes of every step.

Variants reported in the same line (all timed round-robin in one process):

* ``traxon_ms_per_step``: ``FixedOutDegree`` (scatter of all rows, ``event="off"``) with
  per-synapse weights;
* ``traxon_auto_ms_per_step``: the same op in a network built with the default
  ``event="auto"`` (the event-driven gather with ``auto_max_active``'s capacity);
* ``traxon_event_ms_per_step``: ``FixedOutDegree(max_active=64)`` (event-driven gather and
  scatter of the active rows only);
* ``traxon_in_degree_ms_per_step``: ``FixedInDegree`` with Dale's sign (a different random
  graph with the same in-degree 100; its rate is reported separately);
* ``brainpy_state_ms_per_step``: ``EventFixedProb`` with per-synapse weights (an array, as
  traxon stores them) -- the reference of ``ratio``;
* ``brainpy_state_scalar_w_ms_per_step``: ``EventFixedProb`` with one scalar weight per
  projection, the way brainpy.state examples usually write an E/I network.

brainevent's CPU kernels need numba by default; without numba this script selects its
``jax_raw`` backend (``brainevent.config.set_backend('cpu', 'jax_raw')``), which the line
reports as ``brainevent_cpu_backend``.

Run::

    python benchmarks/simulate.py            # T = 1000 steps, B = 1
    python benchmarks/simulate.py --quick    # the same, fewer repetitions (< 60 s)
    python benchmarks/simulate.py --smoke    # T = 20, one repetition: every code path

The line also carries the common fields of every benchmark (``algorithm = "forward"``,
``per_step_ms`` and ``compiled_bytes`` of ``traxon``, ``ratio_vs_peer = ratio``).
"""

from __future__ import annotations

import sys
import time

import _common as bench
import jax
import jax.numpy as jnp
import numpy as np

N_E, N_I = 800, 200
N = N_E + N_I
PROB = 0.1
DT = 0.1  # ms
TAU_M, TAU_S = 20.0, 5.0  # ms
W_E, W_I = 0.1, 0.4
MU, SIGMA = 1.1, 2.0  # drive: mean current and noise amplitude (units of V_th / R)
MAX_ACTIVE = 64


def select_brainevent_backend() -> str:
    """``numba`` when installed, else brainevent's pure-JAX ``jax_raw`` kernels."""
    import importlib.util

    import brainevent

    if importlib.util.find_spec("numba") is not None:
        return "numba"
    brainevent.config.set_backend("cpu", "jax_raw")
    return "jax_raw"


# --------------------------------------------------------------------------------------
# brainpy.state


def build_brainpy(v0: np.ndarray, scalar_weights: bool, batch: int) -> tuple[object, np.ndarray]:
    """The E/I network in brainpy.state; returns it and its ``(N, 100)`` target indices."""
    import brainpy.state as bps
    import brainstate
    import braintools
    import brainunit as u

    conn_num = int(PROB * N)

    class EINet(brainstate.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.neu = bench.brainpy_lif(N, TAU_M)
            w_e = W_E if scalar_weights else np.full((N_E, conn_num), W_E, np.float32)
            w_i = -W_I if scalar_weights else np.full((N_I, conn_num), -W_I, np.float32)
            syn = bps.Expon.desc(N, tau=TAU_S * u.ms, g_initializer=braintools.init.ZeroInit())
            self.exc = bps.AlignPostProj(
                comm=brainstate.nn.EventFixedProb(N_E, N, PROB, w_e, seed=1),
                syn=syn,
                out=bps.CUBA.desc(scale=1.0),
                post=self.neu,
            )
            self.inh = bps.AlignPostProj(
                comm=brainstate.nn.EventFixedProb(N_I, N, PROB, w_i, seed=2),
                syn=bps.Expon.desc(N, tau=TAU_S * u.ms, g_initializer=braintools.init.ZeroInit()),
                out=bps.CUBA.desc(scale=1.0),
                post=self.neu,
            )

        def update(self, inp: jax.Array) -> jax.Array:
            spk = self.neu.get_spike() != 0.0
            self.exc(spk[..., :N_E])
            self.inh(spk[..., N_E:])
            self.neu(inp)
            return self.neu.get_spike()

    with brainstate.environ.context(dt=DT * u.ms):
        net = EINet()
        brainstate.nn.init_all_states(net, batch_size=None if batch == 1 else batch)
    net.neu.V.value = jnp.asarray(v0[0] if batch == 1 else v0, jnp.float32)
    if net.exc.syn is not net.inh.syn:
        bench.log("warning: brainpy.state did not merge the E and I synapses")
    idx = np.concatenate(
        [np.asarray(net.exc.comm.conn.indices), np.asarray(net.inh.comm.conn.indices)], axis=0
    )
    return net, idx


def brainpy_runner(net: object, xs: jax.Array) -> tuple[object, dict]:
    """Compile ``for_loop`` over ``xs``; returns (call, memory stats)."""
    import brainstate
    import brainunit as u

    def run(xs: jax.Array) -> jax.Array:
        with brainstate.environ.context(dt=DT * u.ms):
            spikes = brainstate.transform.for_loop(net.update, xs)  # type: ignore[attr-defined]
        return spikes.reshape(spikes.shape[0], -1).sum(axis=-1)

    jitted = brainstate.transform.jit(run)
    compiled = jitted.compile(xs)
    values = jitted.stateful_fun.get_state_trace(xs, compile_if_miss=True).get_state_values()

    def call() -> jax.Array:
        return compiled(values, xs)[1]  # (new state values, outputs); state not written back

    return call, bench.memory_stats(compiled)


# --------------------------------------------------------------------------------------
# traxon


def build_traxon(op: object, event: str) -> object:
    from traxon.core import LIF, ElementWise, Expon, Network, Population, Projection

    return Network(
        {"x": N},
        {"h": Population(LIF(tau=TAU_M, V_th=1.0, V_reset=0.0, V_rest=0.0, R=1.0), N)},
        [
            Projection("x", "h", ElementWise(), synapse=None, trainable=False),
            Projection("h", "h", op, synapse=Expon(TAU_S), delay=1, name="rec"),
        ],
        dt=DT,
        event=event,
    )


def traxon_runner(net: object, params: dict, state: dict, xs: jax.Array) -> tuple[object, dict]:
    def run(params: dict, state: dict, xs: jax.Array) -> jax.Array:
        res = net.simulate(params, state, xs, record=("spike",))  # type: ignore[attr-defined]
        return res.record["h"]["spike"].sum(axis=(1, 2))

    call, mem, _ = bench.jax_compiled(run, params, state, xs)
    return call, mem


def traxon_variants(
    idx: np.ndarray, v0: np.ndarray, batch: int
) -> dict[str, tuple[object, dict, dict]]:
    """``{name: (network, params, state)}`` for the three traxon connectivity variants."""
    from traxon.core import FixedInDegree, FixedOutDegree

    is_inh_pre = np.arange(N) >= N_E
    w_out = np.where(is_inh_pre[:, None], -W_I, W_E) * np.ones(idx.shape)
    rng = np.random.default_rng(3)
    in_idx = np.stack([rng.choice(N, idx.shape[1], replace=False) for _ in range(N)])
    w_in = np.where(is_inh_pre[in_idx], W_I, W_E)
    sign = np.where(is_inh_pre, -1.0, 1.0)
    specs = {
        "traxon": (FixedOutDegree(post_index=idx, n_out=N), w_out, "off"),
        "traxon_auto": (FixedOutDegree(post_index=idx, n_out=N), w_out, "auto"),
        "traxon_event": (
            FixedOutDegree(post_index=idx, n_out=N, max_active=MAX_ACTIVE),
            w_out,
            "auto",
        ),
        "traxon_in_degree": (FixedInDegree(pre_index=in_idx, sign=sign), w_in, "auto"),
    }
    out = {}
    for name, (op, w, event) in specs.items():
        net = build_traxon(op, event)
        params, state = net.init(jax.random.PRNGKey(0), batch)
        params["rec"] = jnp.asarray(w, jnp.float32)
        state["h"]["V"] = jnp.asarray(v0, jnp.float32)
        out[name] = (net, params, state)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = bench.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="time steps T")
    parser.add_argument("--batch", type=int, default=1, help="batch size B")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="timing budget per fn")
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps, args.max_seconds = min(args.steps, 20), 1.0
    reps = args.reps or (1 if args.smoke else 3 if args.quick else 7)
    T, B = args.steps, args.batch
    bench.emit_machine("simulate.py", sys.argv[1:], ("brainstate", "brainpy", "brainevent"))
    t_start = time.perf_counter()

    backend = select_brainevent_backend()
    rng = np.random.default_rng(0)
    v0 = rng.uniform(0.0, 1.0, (B, N)).astype(np.float32)
    drive = (MU + SIGMA * rng.standard_normal((T, B, N))).astype(np.float32)
    xs_traxon = jnp.asarray(drive)
    xs_brainpy = jnp.asarray(drive[:, 0] if B == 1 else drive)

    line: dict = {
        "benchmark": "simulate",
        "N": N,
        "N_E": N_E,
        "N_I": N_I,
        "T": T,
        "B": B,
        "dt_ms": DT,
        "conn_prob": PROB,
        "conn_per_pre": int(PROB * N),
        "brainevent_cpu_backend": backend,
    }
    calls, mems, counts = {}, {}, {}
    bench.log("building brainpy.state networks")
    net_bp, idx = build_brainpy(v0, scalar_weights=False, batch=B)
    net_bp_s, _ = build_brainpy(v0, scalar_weights=True, batch=B)
    for name, net in (("brainpy_state", net_bp), ("brainpy_state_scalar_w", net_bp_s)):
        try:
            calls[name], mems[name] = brainpy_runner(net, xs_brainpy)
        except Exception as exc:
            line[f"{name}_error"] = bench.error_text(exc)
            bench.log(name, "failed:", bench.error_text(exc))
    bench.log("building traxon networks")
    for name, (net, params, state) in traxon_variants(idx, v0, B).items():
        try:
            calls[name], mems[name] = traxon_runner(net, params, state, xs_traxon)
        except Exception as exc:
            line[f"{name}_error"] = bench.error_text(exc)
            bench.log(name, "failed:", bench.error_text(exc))

    bench.log("timing", sorted(calls))
    for name, f in calls.items():
        counts[name] = float(np.asarray(f()).sum())
    stats = bench.time_round_robin(calls, reps, args.max_seconds)
    sim_seconds = T * DT * 1e-3
    for name, st in stats.items():
        line[f"{name}_ms_per_step"] = st["median_s"] / T * 1e3
        line[f"{name}_rate_hz"] = counts[name] / (B * N) / sim_seconds
        line[f"{name}_compiled_bytes"] = mems[name].get("compiled_bytes")
        line[f"{name}_temp_bytes"] = mems[name].get("temp_bytes")
        line[f"{name}_n_reps"] = st["n_reps"]
    ref = stats.get("brainpy_state")
    for name in (
        "traxon",
        "traxon_auto",
        "traxon_event",
        "traxon_in_degree",
        "brainpy_state_scalar_w",
    ):
        if ref and name in stats:
            key = "ratio" if name == "traxon" else f"ratio_{name}"
            line[key] = stats[name]["median_s"] / ref["median_s"]
    for name in ("traxon", "traxon_auto", "traxon_event", "traxon_in_degree"):
        if "brainpy_state_scalar_w" in stats and name in stats:
            line[f"ratio_{name}_vs_scalar_w"] = (
                stats[name]["median_s"] / stats["brainpy_state_scalar_w"]["median_s"]
            )
    # The common fields of a result line: traxon's forward simulation against the peer's.
    if "traxon" in stats:
        line.update(
            algorithm="forward",
            library="traxon",
            per_step_ms=line["traxon_ms_per_step"],
            compiled_bytes=line["traxon_compiled_bytes"],
            ratio_vs_forward=1.0,
            ratio_vs_peer=line.get("ratio"),
            peer="brainpy_state",
        )
    line["reps"] = reps
    line["loadavg_1min_at_end"] = bench.loadavg()
    line["wall_s"] = time.perf_counter() - t_start
    bench.emit(line)


if __name__ == "__main__":
    main()
