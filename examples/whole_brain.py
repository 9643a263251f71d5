"""Whole-brain online learning: fit every region's firing rate of a connectome network.

Builds a synthetic connectome with heavy-tailed degrees (or loads a FlyWire-style edge table
with ``--edges``), turns it into a traxon network (LIF neurons with exponential synapses,
sparse CSR recurrent weights signed by each neuron's transmitter and scaled by synapse
counts, one trainable scale per connection, a trainable input encoder, a fixed readout of
each region's mean rate) and fits the region rates to stimulus-driven target traces online
with ES-D-RTRL, whose trace memory is linear in the number of neurons.

On a fixed held-out batch it reports the trained network's loss beside the baselines a
reviewer asks for: a constant rate (the training targets' mean), each region's training
mean, the untrained network and -- with ``--bptt`` -- BPTT on the same model from the same
initial weights on the same batches; and the fraction of the target's variance explained
beyond each region's mean. The last line is a JSON summary of these numbers (also written to
``--json PATH``).

Run::

    python examples/whole_brain.py            # 2,000 neurons, 16 regions (a few minutes)
    python examples/whole_brain.py --bptt     # ... and the BPTT reference (half an hour more)
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
import itertools
import json
import time
from typing import Any

import jax
import numpy as np

import traxon
from traxon.connectome import connectome_network, load_edges, synthetic_connectome
from traxon.recipes import REGION_LR, region_rates, region_rates_learner
from traxon.tasks import RegionRates

# The recipe (chosen by measured runs, docs/scaling.md): stimulus channels of 0-800 Hz whose
# rates drift over ~300 ms, a readout averaged over 100 ms, no loss in the first 100 ms (the
# readout settles), Adam with a cosine-decayed learning rate, an update every step
# (traxon.recipes.region_rates and region_rates_learner). At full size (--full) fewer
# sequences fit in ~30 min on one CPU core, so the peak learning rate is higher (chosen by
# measured runs at 20,000 neurons and 80 regions, docs/scaling.md).
FULL_ROUNDS, FULL_BATCH, FULL_TEST, FULL_LR = 48, 2, 8, 5e-3


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny network, 2 rounds")
    parser.add_argument("--full", action="store_true", help="full fly-brain size")
    parser.add_argument("--edges", default=None, help="a FlyWire-style edge table to load")
    parser.add_argument("--rounds", type=int, default=None, help="training rounds")
    parser.add_argument(
        "--lr", type=float, default=None, help="peak learning rate (Adam; default: the recipe's)"
    )
    parser.add_argument(
        "--bptt", action="store_true", help="also train BPTT on the same model (reference)"
    )
    parser.add_argument("--test-size", type=int, default=None, help="held-out sequences")
    parser.add_argument("--json", default=None, help="write the summary to this file")
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
    rounds = args.rounds or (2 if args.quick else FULL_ROUNDS if args.full else 120)
    # steps per sequence, loss window, readout window, unscored start, batch, test sequences
    if args.quick:
        steps, window, rate_window, burn_in, batch, n_test = 150, 25, 25, 50, 2, 2
    else:
        steps, window, rate_window, burn_in, batch, n_test = 300, 50, 100, 100, 4, 16
        if args.full:
            batch, n_test = FULL_BATCH, FULL_TEST
    n_test = args.test_size or n_test
    parallel = args.data_parallel or args.neuron_shards > 1
    if parallel:
        batch *= len(jax.devices()) // args.neuron_shards  # at least one sample per shard
    net = connectome_network(
        connectome, n_inputs=16, rate_window=rate_window, pad_to=args.neuron_shards
    )
    task = region_rates(connectome.n_regions, 16, steps, window, burn_in)
    lr = args.lr or (FULL_LR if args.full else REGION_LR)
    learner = region_rates_learner(net, rounds, steps, lr=lr)

    test = task.sample(12345, n_test, split="test")
    # The initial weights, copied to the host (training may reuse the learner's buffers).
    init_params = jax.tree_util.tree_map(np.asarray, learner.init_state(batch).params)
    untrained = learner.evaluate(init_params, test.x, test.y, test.mask)["loss"]
    say(f"untrained network: held-out loss {untrained:.3f}")
    loss = untrained
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
    seen = []
    start = time.perf_counter()
    for i, train in enumerate(itertools.islice(task.stream(seed=0, batch_size=batch), rounds)):
        seen.append(train)
        tick = time.perf_counter()
        if parallel:
            ls, metrics = dp.train_sequence(
                ls, train.x[:, mine], train.y[:, mine], train.mask[:, mine]
            )
            weights = _gather(ls.params)
            losses, w = _gather((metrics["loss"], metrics["weight"]))
            train_loss = float(np.sum(losses * w) / max(float(np.sum(w)), 1.0))
            rate = float(np.mean(_gather(metrics["rates"]["brain"])))
        else:
            summary = learner.fit([train])[0]
            weights, train_loss = learner.state.params, summary["loss"]
            rate = summary["rate/brain"]
        per_step = 1000 * (time.perf_counter() - tick) / steps
        if (i + 1) % max(1, rounds // 10) == 0 or i + 1 == rounds:
            loss = learner.evaluate(weights, test.x, test.y, test.mask)["loss"]
            say(
                f"round {i + 1:3d}: train loss {train_loss:.3f}, held-out loss {loss:.3f}, "
                f"mean rate {1000 * rate:.1f} Hz, {per_step:.1f} ms/step"
            )
    seconds = time.perf_counter() - start
    base = task.baselines(test, seen)
    result: dict[str, Any] = {
        "neurons": connectome.n_neurons,
        "connections": connectome.n_connections,
        "regions": connectome.n_regions,
        "rounds": rounds,
        "lr": lr,
        "steps": steps,
        "batch": batch,
        "test_sequences": n_test,
        "train_seconds": round(seconds, 1),
        "loss": loss,
        "baseline_constant": base["constant"],
        "baseline_region_mean": base["region_mean"],
        "untrained": untrained,
        "explained_variance": RegionRates.explained_variance(loss, base["region_mean"]),
    }
    if args.bptt and not parallel:
        # The reference: BPTT through each whole sequence (memory grows with its length),
        # one update per sequence, from the same initial weights, on the same batches.
        bptt = region_rates_learner(net, rounds, steps, bptt=True)
        bptt.init_state(batch, params=init_params)
        tick = time.perf_counter()
        for train in seen:
            bptt.fit([train])
        result["bptt"] = bptt.evaluate(bptt.state.params, test.x, test.y, test.mask)["loss"]
        result["bptt_explained_variance"] = RegionRates.explained_variance(
            result["bptt"], base["region_mean"]
        )
        result["bptt_seconds"] = round(time.perf_counter() - tick, 1)
    say(f"held-out loss, {n_test} sequences (mean squared error in units of 10 Hz):")
    rows = [
        ("a constant rate (training mean)", base["constant"]),
        ("each region's training mean", base["region_mean"]),
        ("the untrained network", untrained),
        (f"es_d_rtrl, {rounds} sequences", loss),
    ]
    if "bptt" in result:
        rows.append((f"bptt, {rounds} sequences (reference)", result["bptt"]))
    for label, value in rows:
        say(f"  {label:<36} {value:.3f}")
    say(
        f"explained variance beyond each region's mean: {result['explained_variance']:.2f}"
        + (f" (bptt {result['bptt_explained_variance']:.2f})" if "bptt" in result else "")
    )
    say(f"test loss {untrained:.3f} -> {loss:.3f}")
    say(json.dumps(result))
    if args.json and jax.process_index() == 0:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    if args.coordinator:
        jax.distributed.shutdown()
    return result


def _gather(tree: Any) -> Any:
    """The whole of every (possibly sharded, possibly multi-process) array, on the host."""
    from jax.experimental import multihost_utils

    if jax.process_count() == 1:
        return jax.tree_util.tree_map(np.asarray, tree)
    return multihost_utils.process_allgather(tree, tiled=True)


if __name__ == "__main__":
    main()
