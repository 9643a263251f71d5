"""Learning across devices with ``jax.sharding``: the batch over devices, optionally the
neurons too.

:func:`data_parallel` wraps an :class:`~traxon.learn.OnlineLearner` so that its functional
core runs on a :class:`jax.sharding.Mesh` of devices with axes ``("data", "neurons")``:

* every array with a batch axis (network state, traces, per-sample accumulators, the
  inputs, targets and masks) is split over ``"data"`` along that axis;
* weights and optimiser state are replicated, except that with ``neuron_shards > 1`` every
  array axis whose length is a population's size (neuron-aligned state and traces, dense
  weights into or out of a large population) is split over ``"neurons"``, and so are the
  per-entry weights of sparse ops (:class:`~traxon.core.CSR`, :class:`~traxon.core.Sparse`)
  with their gradients and optimiser moments, when the number of entries is a multiple of
  ``neuron_shards`` (``pad_to`` makes it one);
* the step is one ``jax.jit`` with these shardings: the sums over the batch inside the
  gradient (one outer product per weight) become a cross-device reduction that XLA inserts
  (an all-reduce), so the update is the single-device update up to the order of floating
  point additions, and every device applies the same update to its copy of the weights.

Sharding only chooses where arrays live; the program's results do not depend on it. With
split sparse weights each device gathers, scatters and accumulates gradients for its own
entries; XLA sums the partial currents ``(B, N)`` across devices every step. The index
arrays of the sparse ops are arguments of the compiled step (not constants captured in it),
held whole by every device.

Across hosts, start every process with :func:`jax.distributed.initialize` (see
``docs/scaling.md``) before building the learner; ``jax.devices()`` then lists every host's
devices, and :meth:`DataParallel.shard_batch` turns each process's slice of the batch into
one global array.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from traxon._checks import TraxonWarning
from traxon.core.ops import CSR, Sparse, bind_indices
from traxon.learn.learner import LearnerState, OnlineLearner

__all__ = ["DataParallel", "data_parallel"]


class DataParallel:
    """An online learner whose steps run sharded over a mesh of devices (see the module
    docstring). Build one with :func:`data_parallel`.

    Attributes:
        learner: the wrapped :class:`~traxon.learn.OnlineLearner`.
        mesh: the ``("data", "neurons")`` device mesh.
    """

    def __init__(
        self,
        learner: OnlineLearner,
        devices: Sequence[Any] | None = None,
        neuron_shards: int = 1,
    ) -> None:
        if not isinstance(learner, OnlineLearner):
            raise TypeError(f"`learner` must be an OnlineLearner; got {type(learner).__name__}.")
        devs = list(jax.devices() if devices is None else devices)
        if not devs:
            raise ValueError("`devices` is empty; give at least one device.")
        if (
            isinstance(neuron_shards, bool)
            or not isinstance(neuron_shards, int)
            or neuron_shards < 1
            or len(devs) % neuron_shards
        ):
            raise ValueError(
                f"`neuron_shards` must be a positive divisor of the number of devices "
                f"({len(devs)}); got {neuron_shards!r}."
            )
        self.learner = learner
        self.neuron_shards = neuron_shards
        self.data_shards = len(devs) // neuron_shards
        grid = np.asarray(devs, dtype=object).reshape(self.data_shards, neuron_shards)
        self.mesh = Mesh(grid, ("data", "neurons"))
        sizes = {p.size for p in learner.net.populations.values()}
        self._neuron_sizes = (
            {s for s in sizes if s % neuron_shards == 0 and s >= neuron_shards}
            if neuron_shards > 1
            else set()
        )
        # Per-entry sparse weights are split over "neurons" too: each device then gathers,
        # scatters and accumulates the gradient of its own entries only (XLA sums the
        # partial currents across devices).
        self._entry_sizes: set[int] = set()
        for proj in learner.net.projections if neuron_shards > 1 else ():
            if not isinstance(proj.op, (CSR, Sparse)) or getattr(proj.op, "groups", None):
                continue
            nnz = int(np.prod(proj.op.weight_shape(0, 0)))
            if nnz % neuron_shards == 0:
                self._entry_sizes.add(nnz)
            elif nnz >= 64 * neuron_shards:
                warnings.warn(
                    f"weight `{proj.name}` has {nnz} entries, not a multiple of "
                    f"neuron_shards={neuron_shards}: it stays whole on every device. Build "
                    f"its op with `pad_to={neuron_shards}` (CSR.from_edges, "
                    "connectome_network) to split it.",
                    TraxonWarning,
                    stacklevel=3,
                )
        self._shardings: dict[int, Any] = {}
        # The sparse ops' index arrays are data, replicated on every device, and the jitted
        # functions take them first (connectivity as data: the compiled programs capture no
        # connectome).
        self._keys = learner.net.index_arrays()
        self._indices = jax.device_put(
            tuple(learner.connectivity), NamedSharding(self.mesh, PartitionSpec())
        )
        self._run = self._jit(self._run_impl)
        self._sequence = self._jit(self._sequence_impl)
        self._step = self._jit(self._step_impl)

    def _jit(self, fn: Any) -> Any:
        """``fn`` jitted with the connectivity bound to its first argument."""

        def with_indices(indices: Any, *args: Any) -> Any:
            with bind_indices(self._keys, indices):
                return fn(*args)

        return jax.jit(with_indices)

    # ------------------------------------------------------------------------------
    def _spec(self, shape: tuple[int, ...], batched: bool) -> PartitionSpec:
        axes: list[Any] = [None] * len(shape)
        if batched and shape:
            axes[0] = "data"
        for i in range(1 if batched else 0, len(shape)):
            if shape[i] in self._neuron_sizes:
                axes[i] = "neurons"
                break
        else:
            if not batched and len(shape) == 1 and shape[0] in self._entry_sizes:
                axes[0] = "neurons"  # per-entry sparse weights (and their gradients, moments)
        return PartitionSpec(*axes)

    def shardings(self, batch_size: int) -> Any:
        """The :class:`~jax.sharding.NamedSharding` of every leaf of a learner state.

        A leaf is batched when its leading axis follows the batch size (found by comparing
        the state's shapes for two batch sizes, without allocating anything; computed once
        per batch size).
        """
        if batch_size not in self._shardings:
            a = jax.eval_shape(lambda: self.learner.init(batch_size=batch_size))
            b = jax.eval_shape(lambda: self.learner.init(batch_size=batch_size + 1))

            def one(x: Any, y: Any) -> NamedSharding:
                batched = bool(x.shape) and x.shape[0] != y.shape[0]
                return NamedSharding(self.mesh, self._spec(tuple(x.shape), batched))

            self._shardings[batch_size] = jax.tree_util.tree_map(one, a, b)
        return self._shardings[batch_size]

    def _check_batch(self, batch_size: int) -> None:
        if batch_size % self.data_shards:
            raise ValueError(
                f"`batch_size` ({batch_size}) must be a multiple of the {self.data_shards} "
                "data shards (devices / neuron_shards)."
            )

    def init(
        self, batch_size: int, params: Any = None, key: jax.Array | int | None = None
    ) -> LearnerState:
        """A learner state placed on the mesh (see :meth:`OnlineLearner.init`)."""
        self._check_batch(batch_size)
        ls = self.learner.init(params=params, key=key, batch_size=batch_size)
        return jax.device_put(ls, self.shardings(batch_size))

    def shard_batch(self, x: Any, batch_axis: int = 1) -> Any:
        """Place one array (or pytree) of data with its batch axis split over ``"data"``.

        With several processes (``jax.distributed``), each passes its own slice of the
        global batch; the result is the global array.
        """

        def one(a: Any) -> jax.Array:
            a = np.asarray(a)
            axes: list[Any] = [None] * a.ndim
            axes[batch_axis] = "data"
            sharding = NamedSharding(self.mesh, PartitionSpec(*axes))
            if jax.process_count() > 1:
                return jax.make_array_from_process_local_data(sharding, a)
            return jax.device_put(a, sharding)

        return jax.tree_util.tree_map(one, x)

    # ------------------------------------------------------------------------------
    def _constrain(self, ls: LearnerState) -> LearnerState:
        batch = self.learner.net.batch_size(ls.net_state)
        return jax.lax.with_sharding_constraint(ls, self.shardings(batch))

    def _run_impl(self, ls: LearnerState, xs: Any, ys: Any, masks: Any) -> Any:
        ls = self._constrain(ls)
        new, metrics = self.learner.run(ls, xs, ys, masks)
        return self._constrain(new), metrics

    def _sequence_impl(self, ls: LearnerState, xs: Any, ys: Any, masks: Any) -> Any:
        ls = self._constrain(self.learner.reset_sequence(self._constrain(ls)))
        new, metrics = self.learner.run(ls, xs, ys, masks)
        new = self.learner.end_sequence(new)
        return self._constrain(new), metrics

    def _step_impl(self, ls: LearnerState, x: Any, y: Any, mask: Any) -> Any:
        ls = self._constrain(ls)
        new, metrics = self.learner.step_fn(ls, x, y, mask)
        return self._constrain(new), metrics

    def _sharded_sequence(self, ls: LearnerState, xs: Any, ys: Any, masks: Any) -> tuple:
        batch = self.learner.net.batch_size(ls.net_state)
        self._check_batch(batch)
        if masks is None:
            first = xs if not isinstance(xs, dict) else next(iter(xs.values()))
            local = int(np.shape(first)[1])  # this process's slice of the batch
            masks = np.ones((int(np.shape(first)[0]), local), np.float32)
        return tuple(self.shard_batch(a) for a in (xs, ys, masks))

    def run(self, ls: LearnerState, xs: Any, ys: Any, masks: Any = None) -> Any:
        """``T`` learning steps, sharded: ``xs`` ``(T, B, n_in)``; see
        :meth:`OnlineLearner.run`. Returns ``(state, metrics)``. With several processes
        each passes its own slice of the batch."""
        return self._run(self._indices, ls, *self._sharded_sequence(ls, xs, ys, masks))

    def train_sequence(self, ls: LearnerState, xs: Any, ys: Any, masks: Any = None) -> Any:
        """One training sequence, sharded, as :meth:`OnlineLearner.fit` runs each batch:
        reset the neurons and traces, run the ``T`` steps, apply what the window left
        accumulated. Returns ``(state, metrics)``."""
        return self._sequence(self._indices, ls, *self._sharded_sequence(ls, xs, ys, masks))

    def step(self, ls: LearnerState, x: Any, y: Any, mask: Any = None) -> Any:
        """One learning step, sharded: ``x`` ``(B, n_in)``. Returns ``(state, metrics)``."""
        if mask is None:
            first = x if not isinstance(x, dict) else next(iter(x.values()))
            mask = np.ones((int(np.shape(first)[0]),), np.float32)  # this process's slice
        x, y, mask = (self.shard_batch(a, batch_axis=0) for a in (x, y, mask))
        return self._step(self._indices, ls, x, y, mask)


def data_parallel(
    learner: OnlineLearner, devices: Sequence[Any] | None = None, neuron_shards: int = 1
) -> DataParallel:
    """Run ``learner``'s steps over several devices (see the module docstring).

    Arguments:
        learner: an :class:`~traxon.learn.OnlineLearner`.
        devices: the devices (default: all, ``jax.devices()``, every host's under
            ``jax.distributed``).
        neuron_shards: how many devices split each population's neurons (a divisor of the
            number of devices); the rest split the batch.

    Example:
        >>> import jax, jax.numpy as jnp, traxon
        >>> from traxon.core import LIF, Dense, Network, Population, Projection, Readout
        >>> from traxon.parallel import data_parallel
        >>> net = Network(3, {"h": Population(LIF(), 8)}, [Projection("x", "h", Dense(3.0))],
        ...               readout=Readout("h", 2))
        >>> dp = data_parallel(traxon.online_learner(net, "es_d_rtrl"), jax.devices()[:1])
        >>> ls = dp.init(batch_size=2)
        >>> ls, metrics = dp.run(ls, jnp.ones((5, 2, 3)), jnp.zeros((5, 2), jnp.int32))
        >>> int(ls.updates)
        5
    """
    return DataParallel(learner, devices, neuron_shards)
