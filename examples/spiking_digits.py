"""Spiking digits: rate-coded handwritten digits, learned online with ES-D-RTRL.

scikit-learn's 1,797 8x8 digits (bundled, no download) become 64 Poisson spike trains of
40 steps, each pixel firing at up to 200 Hz in proportion to its brightness
(``traxon.tasks.SpikingDigits``). 128 LIF neurons behind an exponential synapse feed a
leaky readout of 10 classes. ES-D-RTRL, the linear-memory rule, updates the weights every
10 steps *within* each sequence (``update_every=10``): the network learns while it runs.
After every epoch of training batches the script reports the accuracy on the 359
held-out digits; at the end it saves a checkpoint and a learning curve to ``--out``.

Run::

    python examples/spiking_digits.py                      # 3 x 100 batches (about a minute)
    python examples/spiking_digits.py --algorithm d_rtrl   # exact per-synapse traces
    python examples/spiking_digits.py --encoding latency   # one spike per pixel
    python examples/spiking_digits.py --quick              # smoke test
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import optax

import traxon
from traxon.core import LIF, Dense, Expon, Network, Population, Projection, Readout
from traxon.plot import learning_curve
from traxon.tasks import SpikingDigits


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithm", default="es_d_rtrl", help="es_d_rtrl, d_rtrl or bptt")
    parser.add_argument("--encoding", default="rate", choices=["rate", "latency"])
    parser.add_argument("--steps", type=int, default=40, help="time steps per digit")
    parser.add_argument("--hidden", type=int, default=128, help="LIF neurons")
    parser.add_argument("--epochs", type=int, default=3, help="evaluations")
    parser.add_argument("--batches", type=int, default=100, help="training batches per epoch")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
    parser.add_argument("--update-every", type=int, default=10, help="steps between updates")
    parser.add_argument("--out", type=Path, default=Path("runs/spiking_digits"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick", action="store_true", help="2 epochs of 3 batches, 32 neurons, 20 steps"
    )
    return parser.parse_args(argv)


def build(task: SpikingDigits, hidden: int) -> Network:
    """64 inputs -> ``hidden`` LIF neurons (exponential synapse) -> leaky readout."""
    return Network(
        inputs=task.n_in,
        populations={"hidden": Population(LIF(tau=10.0, R=10.0), hidden)},
        projections=[Projection("x", "hidden", Dense(gain=2.0), synapse=Expon(5.0))],
        readout=Readout("hidden", task.n_out, tau=10.0),
    )


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    if args.quick:
        args.epochs, args.batches, args.hidden, args.steps = 2, 3, 32, 20
    task = SpikingDigits(encoding=args.encoding, n_steps=args.steps)
    net = build(task, args.hidden)
    learner = traxon.online_learner(
        net,
        args.algorithm,
        optax.adam(args.lr),
        update_every=args.update_every,
        seed=args.seed,
    )
    test = list(task.epoch(batch_size=512))  # the 359 held-out digits, fixed spikes

    def test_accuracy() -> float:
        accs = [learner.evaluate(learner.state, b.x, b.y, b.mask)["accuracy"] for b in test]
        return float(np.average(accs, weights=[b.x.shape[1] for b in test]))

    stream = task.stream(args.seed, args.batch_size)
    history, evaluations = [], []
    start = time.perf_counter()
    for epoch in range(args.epochs):
        history += learner.fit(stream, n_batches=args.batches)
        evaluations.append((len(history), test_accuracy()))
        print(
            f"epoch {epoch + 1}: {len(history)} batches, train loss {history[-1]['loss']:.3f}, "
            f"test accuracy {evaluations[-1][1]:.3f} ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    train_s = time.perf_counter() - start

    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint = learner.save(args.out / "checkpoint.npz")  # restore() continues exactly
    fig = learning_curve(history, evaluations=evaluations)
    fig.savefig(args.out / "learning_curve.png", dpi=100)
    plt.close(fig)
    summary = {
        "algorithm": args.algorithm,
        "encoding": args.encoding,
        "batches": len(history),
        "updates": int(learner.state.updates),
        "test_accuracy": evaluations[-1][1],
        "train_s": round(train_s, 1),
        "checkpoint": checkpoint,
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
