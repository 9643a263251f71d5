"""Whole-brain online learning: fit every region's firing rate of a connectome network.

Builds a synthetic connectome with heavy-tailed degrees (or loads a FlyWire-style edge table
with ``--edges``), turns it into a traxon network (LIF neurons with exponential synapses,
sparse CSR recurrent weights signed by each neuron's transmitter and scaled by synapse
counts, one trainable scale per connection, a trainable input encoder, a fixed readout of
each region's mean rate) and fits the region rates to smooth target traces online with
ES-D-RTRL, whose trace memory is linear in the number of neurons. It prints the loss of a
fixed evaluation batch before training and after each round: the loss falls.

Run::

    python examples/whole_brain.py            # 2,000 neurons, 16 regions (about a minute)
    python examples/whole_brain.py --quick    # smoke test
    python examples/whole_brain.py --full     # 139,255 neurons, 1.5e7 connections, 80 regions
    python examples/whole_brain.py --edges connections.csv   # a FlyWire table (needs regions)
"""

from __future__ import annotations

import argparse
import math
import time

import optax

import traxon
from traxon.connectome import connectome_network, load_edges, synthetic_connectome
from traxon.tasks import RegionRates, region_rate_loss


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny network, 2 rounds")
    parser.add_argument("--full", action="store_true", help="full fly-brain size")
    parser.add_argument("--edges", default=None, help="a FlyWire-style edge table to load")
    parser.add_argument("--rounds", type=int, default=None, help="training rounds")
    args = parser.parse_args(argv)

    if args.edges:
        connectome = load_edges(args.edges, min_count=5)
    elif args.full:
        connectome = synthetic_connectome(seed=0)  # 139,255 neurons, 1.5e7 connections
    elif args.quick:
        connectome = synthetic_connectome(300, 6_000, 4, seed=0)
    else:
        connectome = synthetic_connectome(2_000, 200_000, 16, seed=0)
    print(
        f"connectome: {connectome.n_neurons:,} neurons, {connectome.n_connections:,} "
        f"connections, {connectome.n_synapses:,} synapses, {connectome.n_regions} regions"
    )
    rounds = args.rounds or (2 if args.quick else 10 if args.full else 15)
    steps, window, batch = (100, 25, 2) if args.quick else (300, 50, 2 if args.full else 4)
    net = connectome_network(connectome, n_inputs=16, rate_window=window)
    task = RegionRates(n_regions=connectome.n_regions, n_in=16, n_steps=steps, window=window)
    algo = traxon.trace.es_d_rtrl(decay=math.exp(-1.0 / 20.0))  # the membrane leak
    learner = traxon.online_learner(net, algo, optax.adam(2e-2), loss=region_rate_loss())

    test = task.sample(12345, batch, split="test")
    first = learner.evaluate(learner.init_state(batch), test.x, test.y, test.mask)["loss"]
    print(f"before training: region-rate loss {first:.3f}")
    loss = first
    for i, train in enumerate(task.stream(seed=0, batch_size=batch)):
        if i >= rounds:
            break
        start = time.perf_counter()
        summary = learner.fit([train])[0]
        loss = learner.evaluate(learner.state, test.x, test.y, test.mask)["loss"]
        print(
            f"round {i + 1:2d}: train loss {summary['loss']:.3f}, test loss {loss:.3f}, "
            f"mean rate {1000 * summary['rate/brain']:.1f} Hz, "
            f"{1000 * (time.perf_counter() - start) / steps:.1f} ms/step"
        )
    print(f"test loss {first:.3f} -> {loss:.3f}")
    return loss


if __name__ == "__main__":
    main()
