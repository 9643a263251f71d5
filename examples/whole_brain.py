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

Across devices and processes (``traxon.parallel.data_parallel``; every process runs the same
command with its own ``--process-id`` and trains on its slice of each batch)::

    python examples/whole_brain.py --data-parallel --neuron-shards 2     # this host's devices
    # two processes (here both on this machine; on a cluster, one per host):
    python examples/whole_brain.py --quick --coordinator localhost:1234 \
        --num-processes 2 --process-id 0 &
    python examples/whole_brain.py --quick --coordinator localhost:1234 \
        --num-processes 2 --process-id 1
"""

from __future__ import annotations

import argparse
import math
import time

import jax
import numpy as np
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
    parser.add_argument(
        "--data-parallel", action="store_true", help="split each batch over all devices"
    )
    parser.add_argument(
        "--neuron-shards", type=int, default=1, help="devices that split the neurons"
    )
    parser.add_argument("--coordinator", default=None, help="HOST:PORT of process 0")
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    args = parser.parse_args(argv)
    if args.coordinator:
        # Collectives between CPU processes (GPUs use NCCL regardless). Like `initialize`,
        # this must come before anything starts JAX's backend.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
        args.data_parallel = True

    say = print if jax.process_index() == 0 else (lambda *a, **k: None)  # process 0 reports
    if args.edges:
        connectome = load_edges(args.edges, min_count=5)
    elif args.full:
        connectome = synthetic_connectome(seed=0)  # 139,255 neurons, 1.5e7 connections
    elif args.quick:
        connectome = synthetic_connectome(300, 6_000, 4, seed=0)
    else:
        connectome = synthetic_connectome(2_000, 200_000, 16, seed=0)
    say(
        f"connectome: {connectome.n_neurons:,} neurons, {connectome.n_connections:,} "
        f"connections, {connectome.n_synapses:,} synapses, {connectome.n_regions} regions"
    )
    rounds = args.rounds or (2 if args.quick else 10 if args.full else 15)
    steps, window, batch = (100, 25, 2) if args.quick else (300, 50, 2 if args.full else 4)
    parallel = args.data_parallel or args.neuron_shards > 1
    if parallel:
        batch *= len(jax.devices()) // args.neuron_shards  # at least one sample per shard
    net = connectome_network(connectome, n_inputs=16, rate_window=window, pad_to=args.neuron_shards)
    task = RegionRates(n_regions=connectome.n_regions, n_in=16, n_steps=steps, window=window)
    algo = traxon.trace.es_d_rtrl(decay=math.exp(-1.0 / 20.0))  # the membrane leak
    learner = traxon.online_learner(net, algo, optax.adam(2e-2), loss=region_rate_loss())

    test = task.sample(12345, batch, split="test")
    first = learner.evaluate(learner.init_state(batch), test.x, test.y, test.mask)["loss"]
    say(f"before training: region-rate loss {first:.3f}")
    loss = first
    if parallel:
        dp = traxon.parallel.data_parallel(learner, neuron_shards=args.neuron_shards)
        say(
            f"{jax.process_count()} process(es), {len(jax.devices())} devices: "
            f"{dp.data_shards} split the batch of {batch}, {dp.neuron_shards} the neurons"
        )
        ls = dp.init(batch_size=batch)
        # Every process draws the same global batch and trains on its own slice of it.
        per = batch // jax.process_count()
        mine = slice(jax.process_index() * per, (jax.process_index() + 1) * per)
    for i, train in enumerate(task.stream(seed=0, batch_size=batch)):
        if i >= rounds:
            break
        start = time.perf_counter()
        if parallel:
            ls, metrics = dp.train_sequence(ls, train.x[:, mine], train.y[:, mine])
            weights = _gather(ls.params)
            per_step, w = _gather((metrics["loss"], metrics["weight"]))
            train_loss = float(np.sum(per_step * w) / max(float(np.sum(w)), 1.0))
            rate = float(np.mean(_gather(metrics["rates"]["brain"])))
        else:
            summary = learner.fit([train])[0]
            weights, train_loss = learner.state.params, summary["loss"]
            rate = summary["rate/brain"]
        loss = learner.evaluate(weights, test.x, test.y, test.mask)["loss"]
        say(
            f"round {i + 1:2d}: train loss {train_loss:.3f}, test loss {loss:.3f}, "
            f"mean rate {1000 * rate:.1f} Hz, "
            f"{1000 * (time.perf_counter() - start) / steps:.1f} ms/step"
        )
    say(f"test loss {first:.3f} -> {loss:.3f}")
    if args.coordinator:
        jax.distributed.shutdown()
    return loss


def _gather(tree: object) -> object:
    """The whole of every (possibly sharded, possibly multi-process) array, on the host."""
    from jax.experimental import multihost_utils

    if jax.process_count() == 1:
        return jax.tree_util.tree_map(np.asarray, tree)
    return multihost_utils.process_allgather(tree, tiled=True)


if __name__ == "__main__":
    main()
