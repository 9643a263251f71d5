"""The whole C. elegans connectome trained online: which sense was stimulated?

The 302 neurons of the Cook et al. 2019 hermaphrodite (``traxon.connectome.load_cect``, the
``cect`` package) as graded cells (``Graded``, tanh output) coupled by their chemical synapses
(one trainable scale per connection, Dale's sign of each presynaptic transmitter) and their
gap junctions (``SparseGapJunction``, one trainable conductance per coupled pair). The input
reaches only real sensory neurons and the readout reads only real command interneurons.

Default task (``--task touch``): a noisy stimulus is delivered to one of three groups of
sensory neurons -- the anterior touch cells (ALML/R, AVM), the posterior touch cells
(PLML/R, PVM) or the amphid chemosensory cells (ASEL/R, AWCL/R) -- and the network must tell
which, from the activity of the ten command interneurons (AVAL/R, AVBL/R, AVDL/R, AVEL/R,
PVCL/R) alone, on held-out noise. Trained online with ES-D-RTRL (linear memory; a trainable
gap conductance is shared by the two cells of a pair, which the per-entry rule D-RTRL refuses),
against BPTT on the same model from the same weights, chance, the untrained network and a
readout-only model (the connectome frozen, only the readout trained).

``--task atlas``: the functional atlas of Randi et al. 2023 (through ``cect``): stimulate each
of the 58 measured sensory neurons and predict the responses of the 181 measured neurons, on
held-out stimulations. No rule learns it beyond the constant baseline (BPTT included: it fits
the training stimulations and gets worse on held-out ones); the command prints the numbers.

Run::

    python examples/worm.py                        # the touch task (a few minutes on a CPU)
    python examples/worm.py --task atlas           # the atlas's negative result
    python examples/worm.py --plot worm.png        # ... and a plot of the responses
    python examples/worm.py --quick                # smoke test

Each result is printed as a JSON line; the last line is the summary.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import traxon
from traxon.connectome import Connectome, connectome_network, load_cect
from traxon.core import (
    Bias,
    Graded,
    LeakyIntegrator,
    Network,
    Population,
    Projection,
    Sparse,
    SparseGapJunction,
)
from traxon.learn import Loss

GROUPS = {
    "anterior touch": ("ALML", "ALMR", "AVM"),
    "posterior touch": ("PLML", "PLMR", "PVM"),
    "chemosensory": ("ASEL", "ASER", "AWCL", "AWCR"),
}
COMMAND = ("AVAL", "AVAR", "AVBL", "AVBR", "AVDL", "AVDR", "AVEL", "AVER", "PVCL", "PVCR")
# The cell model and synapse scales (chosen by measured runs, see docs/connectomes.md).
CELL = Graded(tau=5.0, activation="tanh")
WEIGHT_SCALE, TAU_SYN, INPUT_GAIN = 0.01, 2.0, 3.0


def the_worm() -> Connectome:
    """The 302 neurons of Cook et al. 2019 (muscles and other cells left out)."""
    worm = load_cect("Cook2019Herm", region="neuron", self_loops="drop")
    return worm.subset(worm.is_neuron)


def worm_network(
    worm: Connectome, input_cells: list[np.ndarray], read_cells: np.ndarray, n_out: int, dense: bool
) -> Network:
    """The worm with input channel ``k`` onto the cells ``input_cells[k]`` (fixed weights) and
    a trainable readout of ``read_cells``: every read cell onto every output (``dense``) or
    read cell ``i`` onto output ``i``; plus a trainable bias per output."""
    base = connectome_network(
        worm,
        n_inputs=len(input_cells),
        neuron=CELL,
        electrical=True,
        weight_scale=WEIGHT_SCALE,
        tau_syn=TAU_SYN,
    )
    inner = [p for p in base.spec["projections"] if p.source != "x" and p.target != "readout"]
    pre = np.concatenate([np.full(len(c), k) for k, c in enumerate(input_cells)])
    post = np.concatenate(input_cells)
    encoder = Sparse.from_edges(pre, post, n_out=worm.n_neurons, gain=INPUT_GAIN)
    if dense:
        read = Sparse.from_edges(
            np.repeat(read_cells, n_out), np.tile(np.arange(n_out), len(read_cells)), n_out=n_out
        )
    else:
        read = Sparse.from_edges(read_cells, np.arange(n_out), n_out=n_out)
    return Network(
        inputs={"x": len(input_cells)},
        populations={
            "brain": base.spec["populations"]["brain"],
            "readout": Population(LeakyIntegrator(kappa=0.0), n_out),
        },
        projections=[
            Projection("x", "brain", encoder, trainable=False),
            *inner,
            Projection("brain", "readout", read),
            Projection("x", "readout", Bias(), name="bias"),
        ],
    )


def directed_gaps(net: Network) -> Network:
    """The same network with each gap junction as two directed entries (one conductance per
    direction), which the per-entry rules (D-RTRL) can trace; with equal conductances in
    both directions it is the symmetric network."""
    projections = []
    for p in net.spec["projections"]:
        if p.name == "gap":
            a, b, base = (np.asarray(v.array) for v in (p.op.a, p.op.b, p.op.base))
            op = SparseGapJunction.from_pairs(
                np.concatenate([a, b]),
                np.concatenate([b, a]),
                p.op.n,
                base=np.concatenate([base, base]),
                symmetric=False,
                positive=True,
            )
            p = dataclasses.replace(p, op=op)
        projections.append(p)
    spec = net.spec
    return Network(inputs=spec["inputs"], populations=spec["populations"], projections=projections)


def initial_params(net: Network, seed: int, read_gain: float) -> dict[str, jax.Array]:
    params = dict(net.init_params(jax.random.PRNGKey(seed)))
    params["x->brain"] = jnp.ones_like(params["x->brain"])  # the encoder's gain does the rest
    params["brain->readout"] = read_gain * jnp.asarray(
        np.random.default_rng(seed).standard_normal(params["brain->readout"].shape), jnp.float32
    )
    params["bias"] = jnp.zeros_like(params["bias"])
    return params


def optimizer(
    params0: dict[str, Any], lr: float, connectome_lr: float | None
) -> optax.GradientTransformation:
    """Adam on the readout at ``lr``; on the connectome at ``connectome_lr`` (``None``:
    frozen, the readout-only model), with steps proportional to each weight's initial
    size (Adam's steps are about ``lr`` whatever the weight: the gap conductances start near
    1e-3, the chemical scales at 1)."""
    size = {k: float(jnp.mean(jnp.abs(v))) for k, v in params0.items()}
    groups: dict[str, optax.GradientTransformation] = {
        "readout": optax.adam(lr),
        "frozen": optax.set_to_zero(),
    }
    if connectome_lr is not None:
        groups.update({k: optax.adam(connectome_lr * size[k]) for k in ("brain->brain", "gap")})

    def labels(params: dict[str, Any]) -> dict[str, str]:
        return {
            k: "readout" if k in ("brain->readout", "bias") else k if k in groups else "frozen"
            for k in params
        }

    return optax.multi_transform(groups, labels)


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


# ----------------------------------------------------------------------------------------
# The touch task: which group of sensory neurons was stimulated.


def touch_batch(seed: int, batch: int, steps: int, noise: float, amplitude: float) -> tuple:
    """``x (T, B, 3)``: channel ``label`` carries a pulse of random amplitude in the first
    half, every channel Gaussian noise; the answer is scored over the last quarter."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(GROUPS), batch)
    x = noise * rng.standard_normal((steps, batch, len(GROUPS)))
    strength = amplitude * rng.uniform(0.5, 1.5, batch)
    x[: steps // 2, np.arange(batch), labels] += strength
    y = np.broadcast_to(labels, (steps, batch)).astype(np.int32)
    mask = np.zeros((steps, batch), np.float32)
    mask[-(steps // 4) :] = 1.0
    return x.astype(np.float32), y, mask


def run_touch(args: argparse.Namespace, worm: Connectome) -> dict[str, Any]:
    ids = worm.ids.tolist()
    groups = [np.asarray([ids.index(n) for n in cells]) for cells in GROUPS.values()]
    command = np.asarray([ids.index(n) for n in COMMAND])
    net = worm_network(worm, groups, command, len(GROUPS), dense=True)
    steps, batch = args.steps, args.batch
    rounds = args.rounds or (3 if args.quick else 150)
    n_test = 64 if args.quick else 512
    test = touch_batch(10_000, n_test, steps, args.noise, args.amplitude)
    params0 = initial_params(net, args.seed, 0.1)
    directed = directed_gaps(net)
    n_gap = 2 * params0["gap"].shape[0]

    def train(algorithm: str, connectome_lr: float | None) -> tuple[dict[str, Any], Any]:
        # One update per batch of trials for every rule (the same number of updates).
        options: dict[str, Any] = {"clip_norm": 1.0, "update_every": "sequence"}
        if algorithm == "bptt":
            options["sequence_length"] = steps
        model, start = net, params0
        if algorithm == "d_rtrl":  # it traces one conductance per direction
            model, start = directed, {**params0, "gap": jnp.full(n_gap, params0["gap"][0])}
        opt = optimizer(params0, args.lr, connectome_lr)
        learner = traxon.online_learner(model, algorithm, opt, "cross_entropy", **options)
        learner.init_state(batch, params=start)
        tick = time.perf_counter()
        for i in range(rounds):
            learner.fit(
                [touch_batch(i + 1_000 * args.seed, batch, steps, args.noise, args.amplitude)]
            )
        took = time.perf_counter() - tick
        held = learner.evaluate(learner.params, *test)
        return {
            "model": algorithm
            + (" readout only" if connectome_lr is None else "")
            + (" (gap conductance per direction)" if algorithm == "d_rtrl" else ""),
            "test loss": round(held["loss"], 4),
            "accuracy": round(held["accuracy"], 4),
            "train_s": round(took, 1),
        }, learner.params

    untrained = traxon.online_learner(net, "es_d_rtrl", loss="cross_entropy").evaluate(
        params0, *test
    )
    counts = np.bincount(test[1][0], minlength=len(GROUPS))
    results = [
        {
            "model": "chance (majority class)",
            "accuracy": round(counts.max() / n_test, 4),
            "test loss": round(float(np.log(len(GROUPS))), 4),
        },
        {
            "model": "untrained",
            "test loss": round(untrained["loss"], 4),
            "accuracy": round(untrained["accuracy"], 4),
        },
    ]
    for r in results:
        emit(r)
    trained: dict[str, Any] = {"untrained": params0}
    runs = [("es_d_rtrl", None), ("es_d_rtrl", args.connectome_lr)]
    if not args.no_d_rtrl:
        runs.append(("d_rtrl", args.connectome_lr))
    if not args.no_bptt:
        runs.append(("bptt", args.connectome_lr))
    for algorithm, connectome_lr in runs:
        record, params = train(algorithm, connectome_lr)
        emit(record)
        results.append(record)
        trained[record["model"]] = params
    if args.plot:
        plot_touch(args.plot, net, trained, test, command)
    return {"task": "touch", "steps": steps, "rounds": rounds, "batch": batch, "results": results}


def plot_touch(path: str, net: Network, trained: dict[str, Any], test: tuple, command: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y, _ = test
    chosen = [k for k in ("untrained", "es_d_rtrl") if k in trained]
    fig, axes = plt.subplots(
        len(chosen), len(GROUPS), figsize=(12, 3.2 * len(chosen)), squeeze=False, sharey=True
    )
    for row, name in enumerate(chosen):
        state = net.init_state(x.shape[1])
        res = net.simulate(trained[name], state, jnp.asarray(x), record=("spike",))
        act = np.asarray(res.record["brain"]["spike"])[:, :, command]  # (T, B, 10)
        for c, group in enumerate(GROUPS):
            ax = axes[row, c]
            mean = act[:, y[0] == c].mean(axis=1)
            for i, cell in enumerate(COMMAND):
                ax.plot(mean[:, i], label=cell, color=plt.cm.tab10(i))
            ax.axvspan(x.shape[0] - x.shape[0] // 4, x.shape[0] - 1, color="0.9")  # scored
            ax.set_title(f"{name}: stimulus to {group}", fontsize=9)
            ax.set_xlabel("step")
    axes[0, 0].set_ylabel("command interneuron output f(V)")
    axes[0, -1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# ----------------------------------------------------------------------------------------
# The functional atlas: responses to the stimulation of each sensory neuron.

SKIP = 1e6  # a target entry that is not scored (the stimulated cell itself)


def run_atlas(args: argparse.Namespace, worm: Connectome) -> dict[str, Any]:
    from cect.readers.WormNeuroAtlasFuncReader import get_instance

    with contextlib.redirect_stdout(io.StringIO()):
        atlas = get_instance(from_cache=True)
    functional = np.asarray(atlas.connections["Functional"], np.float64)
    names = list(atlas.nodes)
    ids = worm.ids.tolist()
    measured = [n for n in names if n in ids]
    rows = [names.index(n) for n in measured]
    F = functional[np.ix_(rows, rows)]  # F[i, j]: response of j to the stimulation of i
    cells = np.asarray([ids.index(n) for n in measured])
    sensory = worm.cells_of("sensory")
    stim = [k for k, n in enumerate(measured) if sensory[ids.index(n)] and np.any(F[k] != 0)]
    order = np.random.default_rng(0).permutation(len(stim))
    n_test = len(stim) // 4
    test = [stim[i] for i in order[:n_test]]
    train = [stim[i] for i in order[n_test:]]
    n_m, steps, pulse, start = len(measured), 30, 10, 10
    net = worm_network(worm, [np.asarray([cells[k]]) for k in stim], cells, n_m, dense=False)

    def batch(ks: list[int]) -> tuple:
        x = np.zeros((steps, len(ks), len(stim)), np.float32)
        target = np.zeros((steps, len(ks), n_m), np.float32)
        for b, k in enumerate(ks):
            x[:pulse, b, stim.index(k)] = 1.0
            target[:, b] = F[k]
            target[:, b, k] = SKIP
        mask = np.zeros((steps, len(ks)), np.float32)
        mask[start:] = 1.0
        return x, target, mask

    def atlas_loss(y: jax.Array, t: jax.Array) -> jax.Array:
        return jnp.sum(jnp.where(t > SKIP / 2, 0.0, jnp.square(y - t)), axis=-1) / n_m

    loss = Loss("atlas", atlas_loss, "regression", lambda b, n: jnp.zeros((b, n)))
    params0 = dict(net.init_params(jax.random.PRNGKey(0)))
    params0["x->brain"] = jnp.ones_like(params0["x->brain"])
    params0["brain->readout"] = 0.1 * jnp.ones_like(params0["brain->readout"])

    def constant(prediction: Any, ks: list[int]) -> float:
        total = 0.0
        for k in ks:
            scored = np.arange(n_m) != k
            total += np.sum(scored * (prediction - F[k]) ** 2) / n_m
        return float(total / len(ks))

    scored = np.ones((len(train), n_m))
    for i, k in enumerate(train):
        scored[i, k] = 0
    F_train = F[train]
    mean = np.sum(F_train * scored) / np.sum(scored)
    cell_mean = np.sum(F_train * scored, 0) / np.maximum(np.sum(scored, 0), 1)
    evaluator = traxon.online_learner(net, "es_d_rtrl", loss=loss)
    held = {"train": batch(train), "test": batch(test)}

    def scores(params: Any) -> dict[str, float]:
        return {
            f"{split} loss": round(evaluator.evaluate(params, *held[split])["loss"], 5)
            for split in ("train", "test")
        }

    results = [
        {
            "model": "zero",
            "train loss": round(constant(0.0, train), 5),
            "test loss": round(constant(0.0, test), 5),
        },
        {
            "model": "constant (training mean)",
            "train loss": round(constant(mean, train), 5),
            "test loss": round(constant(mean, test), 5),
        },
        {
            "model": "per-cell training mean",
            "train loss": round(constant(cell_mean, train), 5),
            "test loss": round(constant(cell_mean, test), 5),
        },
        {"model": "untrained", **scores(params0)},
    ]
    for r in results:
        emit(r)
    epochs = args.rounds or (2 if args.quick else 150)
    for algorithm in ("es_d_rtrl", "bptt"):
        options: dict[str, Any] = {"clip_norm": 1.0, "update_every": "sequence"}
        if algorithm == "bptt":
            options["sequence_length"] = steps
        opt = optimizer(params0, args.atlas_lr, args.atlas_lr)
        learner = traxon.online_learner(net, algorithm, opt, loss, **options)
        learner.init_state(len(train), params=params0)
        rng = np.random.default_rng(1)
        best: dict[str, Any] = {}
        curve = []
        tick = time.perf_counter()
        for epoch in range(epochs):
            learner.fit([batch([train[i] for i in rng.permutation(len(train))])])
            if (epoch + 1) % max(1, epochs // 6) == 0 or epoch == epochs - 1:
                s = scores(learner.params)
                curve.append({"epoch": epoch + 1, **s})
                if not best or s["test loss"] < best["test loss"]:
                    best = {"epoch": epoch + 1, **s}
        record = {
            "model": algorithm,
            **curve[-1],
            "best test": best,
            "curve": curve,
            "train_s": round(time.perf_counter() - tick, 1),
        }
        emit(record)
        results.append(record)
        if args.plot and algorithm == "bptt":
            plot_atlas(args.plot, net, learner.params, batch(test), test, F, start)
    return {
        "task": "atlas",
        "stimulated": len(stim),
        "measured": n_m,
        "held-out": n_test,
        "epochs": epochs,
        "results": results,
    }


def plot_atlas(
    path: str, net: Network, params: Any, data: tuple, ks: list[int], F: Any, start: int
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, target, _ = data
    y = np.asarray(net.simulate(params, net.init_state(x.shape[1]), jnp.asarray(x)).outputs)
    model = y[start:].mean(axis=0)  # (B, n_m)
    scored = target[0] < SKIP / 2
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(target[0][scored], model[scored], s=4, alpha=0.5)
    ax.set_xlabel("measured response (Randi et al. 2023), held-out stimulations")
    ax.set_ylabel("model response (BPTT-trained worm)")
    ax.set_title("functional atlas: held-out stimulations", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("touch", "atlas"), default="touch")
    parser.add_argument("--quick", action="store_true", help="a few rounds (smoke test)")
    parser.add_argument("--rounds", type=int, default=None, help="training batches (epochs)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=40, help="steps per trial")
    parser.add_argument("--noise", type=float, default=1.0, help="input noise (std)")
    parser.add_argument("--amplitude", type=float, default=0.5, help="mean pulse amplitude")
    parser.add_argument("--lr", type=float, default=3e-2, help="readout learning rate (touch)")
    parser.add_argument(
        "--connectome-lr", type=float, default=1e-1, help="connectome learning rate (touch)"
    )
    parser.add_argument("--atlas-lr", type=float, default=1e-2, help="learning rate (atlas)")
    parser.add_argument("--no-d-rtrl", action="store_true", help="skip D-RTRL")
    parser.add_argument("--no-bptt", action="store_true", help="skip the BPTT reference")
    parser.add_argument(
        "--seed", type=int, default=0, help="initial readout and training trials (touch)"
    )
    parser.add_argument("--plot", default=None, help="save a plot of the responses here")
    args = parser.parse_args(argv)
    # The touch task's training trials of seed s are drawn from seeds 1,000 s + i; the
    # held-out trials from seed 10,000.
    if not 0 <= args.seed < 10:
        parser.error("--seed must be 0-9 (seed 10,000 draws the held-out trials)")
    if args.task == "touch" and 1_000 * args.seed + (args.rounds or 0) > 10_000:
        parser.error("--rounds must be at most 10,000 - 1,000 * seed (held-out trials)")
    tick = time.perf_counter()
    worm = the_worm()
    print(
        f"worm: {worm.n_neurons} neurons, {worm.n_connections} chemical connections, "
        f"{worm.electrical.pre.size // 2} gap-junction pairs"
    )
    summary = run_atlas(args, worm) if args.task == "atlas" else run_touch(args, worm)
    summary["seconds"] = round(time.perf_counter() - tick, 1)
    emit(summary)
    return summary


if __name__ == "__main__":
    main()
