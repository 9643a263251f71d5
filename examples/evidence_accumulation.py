"""Evidence accumulation (e-prop's working-memory task), learned online.

A trial shows seven cues, each on the left or the right; after a delay, a recall signal
asks which side had more. The network is e-prop's: 50 LIF and 50 adaptive (ALIF) neurons
with a 2 s adaptation time constant, recurrently connected, read by a leaky readout
(``traxon.recipes.evidence_network``). It learns online with ES-D-RTRL, the linear-memory
rule, keeping exact per-synapse traces only for the input weights of the adaptive neurons
(``traxon.es_d_rtrl(exact=("x->alif",))``: their slow adaptation is where the memory of
the cues lives), plus a firing-rate regulariser. ``--algorithm d_rtrl`` (exact traces for
every weight, slower per trial), ``es_d_rtrl`` or ``bptt`` to compare.

By default the delay is 200 ms and training stops after a time budget of 70 s, so the
whole script finishes in under two minutes on a 2-core CPU; ``--delay-ms 1000`` gives the
canonical task (2,200 steps per trial; give it a larger ``--time-budget``). It writes a
learning curve and a spike raster of one test trial to ``--out``.

Run::

    python examples/evidence_accumulation.py
    python examples/evidence_accumulation.py --delay-ms 1000 --time-budget 600
    python examples/evidence_accumulation.py --algorithm d_rtrl
    python examples/evidence_accumulation.py --quick          # a tiny version (smoke test)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import traxon
from traxon.plot import learning_curve, raster
from traxon.recipes import evidence_network
from traxon.tasks import EvidenceAccumulation


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay-ms", type=float, default=200.0, help="delay before recall")
    parser.add_argument(
        "--algorithm",
        default="hybrid",
        choices=["hybrid", "d_rtrl", "es_d_rtrl", "bptt"],
        help="hybrid: es_d_rtrl with exact traces for the input weights of the ALIF neurons",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-3, help="Adam learning rate")
    parser.add_argument("--iterations", type=int, default=300, help="most training batches")
    parser.add_argument("--time-budget", type=float, default=70.0, help="training seconds")
    parser.add_argument("--eval-every", type=int, default=10, help="batches between tests")
    parser.add_argument("--out", type=Path, default=Path("runs/evidence_accumulation"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="short trials, 3 batches")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    if args.quick:
        task = EvidenceAccumulation(
            n_cues=3, cue_ms=30, gap_ms=20, delay_ms=60, recall_ms=40, n_test=64
        )
        args.iterations, args.eval_every, args.batch_size = 3, 3, 8
    else:
        task = EvidenceAccumulation(delay_ms=args.delay_ms, n_test=256)
    net = evidence_network(task.n_in)  # 50 LIF + 50 ALIF, leaky readout
    algorithm = args.algorithm
    if algorithm == "hybrid":
        # linear-memory traces, but exact per-synapse traces for the input weights of the
        # adaptive neurons, whose slow adaptation carries the memory across the delay
        algorithm = traxon.es_d_rtrl(exact=("x->alif",))
    learner = traxon.online_learner(
        net,
        algorithm,
        optax.adam(args.lr),
        update_every="sequence",
        sequence_length=task.n_steps,  # BPTT buffers whole sequences
        rate_target=10.0,  # Hz: firing-rate regulariser
        seed=args.seed,
    )
    print(f"{task!r}: {task.n_steps} steps per trial; algorithm {args.algorithm}")
    test = list(task.epoch(batch_size=256))

    def test_accuracy() -> float:
        accs = [learner.evaluate(learner.state, b.x, b.y, b.mask)["accuracy"] for b in test]
        return float(np.average(accs, weights=[b.x.shape[1] for b in test]))

    history, evaluations = [], []
    stream = task.stream(args.seed, args.batch_size)
    start = time.perf_counter()
    for i in range(args.iterations):
        history += learner.fit(stream, n_batches=1)
        elapsed = time.perf_counter() - start
        last = i + 1 == args.iterations or elapsed > args.time_budget
        if (i + 1) % args.eval_every == 0 or last:
            evaluations.append((i + 1, test_accuracy()))
            print(
                f"batch {i + 1:4d}  loss {history[-1]['loss']:.3f}  "
                f"test accuracy {evaluations[-1][1]:.3f}  ({elapsed:.0f} s)",
                flush=True,
            )
        if last:
            break
    train_s = time.perf_counter() - start

    args.out.mkdir(parents=True, exist_ok=True)
    trial = task.sample(12345, 1, split="test")
    state = net.init_state(1)
    res = net.simulate(learner.params, state, jnp.asarray(trial.x))
    spikes = {k: v["spike"] for k, v in res.record.items() if k != "readout"}
    title = f"one test trial (label {int(trial.label[0])}) after training"
    figures = {
        "learning_curve": learning_curve(history, evaluations=evaluations),
        "raster": raster(spikes, title=title),
    }
    for name, fig in figures.items():
        fig.savefig(args.out / f"{name}.png", dpi=100)
        plt.close(fig)

    summary = {
        "algorithm": args.algorithm,
        "delay_ms": task.delay_ms,
        "batches": len(history),
        "test_accuracy": evaluations[-1][1],
        "train_s": round(train_s, 1),
        "out": str(args.out),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
