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
    from jax.experimental import multihost_utils

    from helpers import small_brain  # this folder is first on the path of a script
    from traxon.parallel import data_parallel

    learner, b = small_brain()
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
