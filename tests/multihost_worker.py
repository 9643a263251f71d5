"""One process of the multi-process test in ``tests/test_whole_brain.py`` (not a test).

``python tests/multihost_worker.py PROCESS_ID N_PROCESSES PORT OUT NEURON_SHARDS`` joins a
``jax.distributed`` job on localhost (2 CPU devices per process, gloo collectives), trains the
small connectome learner of the test on its own slice of the batch with
``traxon.parallel.data_parallel`` and, in process 0, saves the gathered weights and losses to
``OUT`` (``.npz``).
"""

from __future__ import annotations

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")


def main() -> None:
    pid, n_proc, port, out, neuron_shards = sys.argv[1:6]
    pid, n_proc = int(pid), int(n_proc)
    jax.distributed.initialize(
        coordinator_address=f"localhost:{port}", num_processes=n_proc, process_id=pid
    )
    import numpy as np
    import optax
    from jax.experimental import multihost_utils

    import traxon
    from traxon.connectome import connectome_network, synthetic_connectome
    from traxon.parallel import data_parallel
    from traxon.tasks import RegionRates, region_rate_loss

    c = synthetic_connectome(n_neurons=64, n_connections=600, n_regions=4, seed=0)
    net = connectome_network(c, n_inputs=8, rate_window=10)
    b = RegionRates(n_regions=4, n_in=8, n_steps=10, window=5).sample(0, 4)
    learner = traxon.online_learner(net, "es_d_rtrl", optax.adam(1e-2), loss=region_rate_loss())
    dp = data_parallel(learner, neuron_shards=int(neuron_shards))
    ls = dp.init(batch_size=4)
    per = 4 // n_proc  # this process's slice of the global batch of 4
    mine = slice(pid * per, (pid + 1) * per)
    ls, metrics = dp.run(ls, b.x[:, mine], b.y[:, mine], b.mask[:, mine])
    params = multihost_utils.process_allgather(ls.params, tiled=True)
    loss = multihost_utils.process_allgather(metrics["loss"], tiled=True)
    if pid == 0:
        np.savez(out, loss=np.asarray(loss), **{k: np.asarray(v) for k, v in params.items()})
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
