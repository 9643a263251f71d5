"""Quickstart: a spiking network that learns online, in about fifteen lines.

Builds a network with the core API (64 inputs -> 100 LIF neurons behind an exponential
synapse -> a leaky readout of 10 classes), attaches ``traxon.online_learner`` with the
linear-memory rule ES-D-RTRL, trains it on scikit-learn's 8x8 digits encoded as spike
latencies, and prints the test accuracy. The same code is the quickstart of
``docs/getting_started.md``.

Run::

    python examples/quickstart.py            # 300 batches of 32
    python examples/quickstart.py --quick    # 10 batches (smoke test)
"""

from __future__ import annotations

import argparse

import optax

import traxon
from traxon.core import LIF, Dense, Expon, Network, Population, Projection, Readout
from traxon.tasks import SpikingDigits


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 batches instead of 300")
    parser.add_argument("--batches", type=int, default=None, help="number of training batches")
    args = parser.parse_args(argv)
    n_batches = args.batches or (10 if args.quick else 300)

    task = SpikingDigits(encoding="latency", n_steps=20)  # 8x8 digits as spike latencies
    net = Network(
        inputs=task.n_in,
        populations={"hidden": Population(LIF(tau=10.0, R=10.0), 100)},
        projections=[Projection("x", "hidden", Dense(gain=2.0), synapse=Expon(5.0))],
        readout=Readout("hidden", task.n_out, tau=10.0),
    )
    learner = traxon.online_learner(net, "es_d_rtrl", optax.adam(5e-3), update_every="sequence")
    learner.fit(task.stream(seed=0, batch_size=32), n_batches=n_batches, progress=True)

    test = next(task.epoch(batch_size=task.n_examples("test")))
    accuracy = learner.evaluate(learner.state, test.x, test.y, test.mask)["accuracy"]
    print(f"test accuracy: {accuracy:.3f}")
    return accuracy


if __name__ == "__main__":
    main()
