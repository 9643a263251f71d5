r"""``online_learner``: a network that learns while it runs.

The functional core is pure and jit-able:

* ``ls = learner.init(params=None, key=..., batch_size=B)`` -- a :class:`LearnerState`
  (weights, optimiser state, network state, traces, counters, RNG key);
* ``ls, metrics = learner.step_fn(ls, x, y, mask=None)`` -- one step: simulate, update the
  traces, accumulate the gradient and, when the schedule says so, apply an optax update;
* ``ls, metrics = learner.run(ls, xs, ys, masks=None)`` -- many steps as one ``lax.scan``;
* ``ls = learner.end_sequence(ls)`` -- apply what is accumulated, then reset the neuron state
  and the traces (weights kept) for the next sequence.

A thin stateful convenience sits on top: ``learner.step(x, y)`` keeps the state inside the
learner, ``learner.fit(batches)`` trains on whole sequences with an optional progress bar,
``learner.save(path)`` / ``learner.restore(path)`` checkpoint everything.

**What is optimised.** With ``mask`` :math:`m_{t,b}` (1 where a target is present) the
gradient of one update window is that of

.. math::
    \mathcal{L} = \sum_{t \in \text{window}} \frac{1}{Z} \sum_b m_{t,b}\, l_t^{(b)},
    \qquad Z = B \text{ (``batch_reduction="mean"``) or } 1 \text{ (``"sum"``)},

divided by the window's length when ``time_reduction="mean"``.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from traxon._checks import check_finite, first_nonfinite, is_concrete
from traxon.core._deferred import DeferredWeight
from traxon.core.network import READOUT, Network
from traxon.core.ops import bind_indices
from traxon.learn.checkpoint import load_checkpoint, save_checkpoint
from traxon.learn.losses import Loss, get_loss
from traxon.learn.optimizers import SGD
from traxon.trace.base import Algorithm, get_algorithm

__all__ = ["LearnerState", "OnlineLearner", "online_learner"]

MEMORY_LIMIT_ENV = "TRAXON_MEMORY_LIMIT"
#: The key under which `_update` asks a linear optimiser for its scale (not a weight name:
#: weights are named by projections, which never start with a space).
_UNIT = " unit"


@runtime_checkable
class MirroredModel(Protocol):
    """A network that stands for a model held outside traxon (an adapted brainstate
    module, :func:`traxon.adapters.adapt`): the one interface the learner uses for it.

    The learner adopts the weights the user assigned in the model before each step
    (``adopt_params``, which raises when the model's weights were replaced), writes the
    trained weights back after each update (``write_back``), and, when
    ``draws_initial_state`` is true, starts every sequence from ``init_state(batch, dtype,
    key=...)`` with a new key. Its memory is not estimated beforehand (that would run the
    model on abstract values).
    """

    draws_initial_state: bool

    def adopt_params(self, params: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        """``params`` with the weights assigned in the model since the last write."""
        ...

    def write_back(self, params: Mapping[str, jax.Array]) -> None:
        """Write ``params`` into the model."""
        ...


class LearnerState(NamedTuple):
    """Everything a learner carries from one step to the next (a pytree of arrays).

    Attributes:
        params: ``{weight name: array}`` -- all weights (trainable or not).
        opt_state: the optax state of the trainable weights.
        net_state: ``{population: {variable: (B, N)}}``.
        trace_state: the algorithm's state (traces and gradient accumulators).
        step: total steps taken (int32).
        window: steps since the last update (int32).
        window_nonfinite: whether a loss in the current window was NaN/Inf (bool).
        updates: updates applied (int32).
        skipped: updates skipped because the loss or gradient was not finite (int32).
        rates: ``{population: (N,)}`` running firing probability per step of each spiking
            neuron (batch mean, exponential average over ``rate_tau``).
        key: PRNG key (uint32[2]) for stochastic parts of training.

    Example:
        >>> import traxon
        >>> from traxon.core import LIF, Dense, Network, Population, Projection, Readout
        >>> net = Network(3, {"h": Population(LIF(), 8)}, [Projection("x", "h", Dense(3.0))],
        ...               readout=Readout("h", 2))
        >>> ls = traxon.online_learner(net, "d_rtrl").init(batch_size=4)
        >>> ls.net_state["h"]["V"].shape, int(ls.step), sorted(ls.params)
        ((4, 8), 0, ['h->readout', 'readout.bias', 'x->h'])
    """

    params: dict[str, jax.Array]
    opt_state: Any
    net_state: dict[str, Any]
    trace_state: Any
    step: jax.Array
    window: jax.Array
    window_nonfinite: jax.Array
    updates: jax.Array
    skipped: jax.Array
    rates: dict[str, jax.Array]
    key: jax.Array


class OnlineLearner:
    """A network, a learning rule, a loss and an optax optimiser (see the module docstring).

    Build one with :func:`online_learner`.

    Example:
        >>> import jax.numpy as jnp, optax, traxon
        >>> from traxon.core import LIF, Dense, Network, Population, Projection, Readout
        >>> net = Network(3, {"h": Population(LIF(), 8)}, [Projection("x", "h", Dense(3.0))],
        ...               readout=Readout("h", 2))
        >>> learner = traxon.online_learner(net, "es_d_rtrl", optax.adam(1e-2))
        >>> ls = learner.init(batch_size=2)  # the functional core: pure and jit-able
        >>> ls, metrics = learner.run(ls, jnp.ones((5, 2, 3)), jnp.zeros((5, 2), jnp.int32))
        >>> int(ls.updates), metrics["loss"].shape
        (5, (5,))
    """

    def __init__(
        self,
        net: Network,
        algorithm: str | Algorithm = "es_d_rtrl",
        optimizer: optax.GradientTransformation | None = None,
        loss: str | Loss | Callable[..., jax.Array] = "cross_entropy",
        update_every: int | str = 1,
        batch_reduction: str = "mean",
        time_reduction: str = "sum",
        on_nonfinite: str = "raise",
        clip_norm: float | None = None,
        sequence_length: int | None = None,
        rate_target: float | None = None,
        rate_reg: float = 1.0,
        rate_tau: float = 1000.0,
        seed: int = 0,
        dtype: Any = None,
        input_size: int | None = None,
        memory_limit: float | None = None,
    ) -> None:
        if not isinstance(net, Network):
            net = _adapt_module(net, input_size)
        elif input_size is not None and input_size != sum(net.inputs.values()):
            raise ValueError(
                f"`input_size` is {input_size} but the network has inputs {net.inputs}."
            )
        if update_every != "sequence" and (
            isinstance(update_every, bool) or not isinstance(update_every, int) or update_every < 1
        ):
            raise ValueError(
                f"`update_every` must be a positive integer or 'sequence'; got {update_every!r}."
            )
        for label, value, allowed in (
            ("batch_reduction", batch_reduction, ("mean", "sum")),
            ("time_reduction", time_reduction, ("sum", "mean")),
            ("on_nonfinite", on_nonfinite, ("raise", "skip")),
        ):
            if value not in allowed:
                raise ValueError(f"`{label}` must be one of {allowed}; got {value!r}.")
        if clip_norm is not None and not clip_norm > 0:
            raise ValueError(f"`clip_norm` must be positive or None; got {clip_norm!r}.")
        if rate_target is not None and not 0 <= rate_target < 1000.0 / net.dt:
            raise ValueError(
                f"`rate_target` must be a firing rate in Hz in [0, {1000.0 / net.dt:g}); got "
                f"{rate_target!r}."
            )
        if not rate_reg >= 0:
            raise ValueError(f"`rate_reg` must be >= 0; got {rate_reg!r}.")
        if not rate_tau > 0:
            raise ValueError(f"`rate_tau` must be positive (ms); got {rate_tau!r}.")
        if memory_limit is not None and not memory_limit > 0:
            raise ValueError(
                "`memory_limit` must be a positive number of bytes (or None); got "
                f"{memory_limit!r}."
            )
        self.memory_limit = memory_limit
        self.rate_target = rate_target
        self.rate_reg = float(rate_reg)
        self.rate_decay = math.exp(-net.dt / float(rate_tau))
        self.spiking = tuple(k for k, p in net.populations.items() if p.neuron.spiking)
        self.net = net
        # The model an adapted network stands for (None for a traxon network).
        self._mirror = net if isinstance(net, MirroredModel) else None
        self.algorithm = get_algorithm(algorithm)
        self.loss = get_loss(loss)
        self.update_every = update_every
        self.batch_reduction = batch_reduction
        self.time_reduction = time_reduction
        self.on_nonfinite = on_nonfinite
        self.seed = int(seed)
        self.dtype = dtype
        self.n_out = net.populations[READOUT].size if net.has_readout else 0
        window = update_every if isinstance(update_every, int) else sequence_length
        if (
            self.algorithm.replays_window
            and window is None
            and not getattr(self.algorithm, "window", None)
        ):
            raise ValueError(
                f"{self.algorithm.name} with update_every='sequence' needs `sequence_length` "
                f"(the longest sequence), or pass traxon.trace.{self.algorithm.name}(window=T)."
            )
        self._window = window
        self.tracer = self.algorithm.bind(net, self.loss.fn, window=window)
        # BPTT buffers at most this many steps between updates.
        self._buffer = (
            (getattr(self.algorithm, "window", None) or window)
            if self.algorithm.replays_window
            else None
        )
        self.trainable = tuple(p.name for p in net.projections if p.trainable)
        opt = optimizer if optimizer is not None else optax.adam(1e-3)
        if clip_norm is not None:
            opt = optax.chain(optax.clip_by_global_norm(float(clip_norm)), opt)
        self.optimizer = opt
        self._state: LearnerState | None = None
        self._guard = True  # while tracing a function of `jit`: its `guard`
        # The stateful shell reads, advances and commits `_state`: one thread at a time.
        self._lock = threading.RLock()
        # Connectivity as data: each jitted function takes the network's index arrays as its
        # first argument (`self._indices`), so the compiled program holds no copy of them.
        self._indices = net.connectivity()
        # With on_nonfinite="raise" the shell discards a call with any non-finite update
        # whole, so its steps need not keep such an update out (see `jit`'s `guard`).
        guard = on_nonfinite == "skip"
        self._run_jit = self.jit("run", guard=guard)
        self._step_jit = self.jit("step_fn", guard=guard)
        self._finish_jit = self.jit("_finish", guard=guard)
        self._reset_jit = self.jit("reset_sequence")
        self._eval_jit = self.jit("_evaluate")

    def jit(self, method: str = "run", guard: bool = True, **jit_kwargs: Any) -> Any:
        """A method of the functional core, jitted with the connectivity passed as data.

        The jitted function takes the network's index arrays (:attr:`connectivity`) first,
        then the method's own arguments. Its compiled program holds no copy of the sparse
        ops' indices (``jax.jit(learner.run)`` would capture them as constants) and runs,
        without compiling again, the learner of another network of the same shapes given
        that network's ``connectivity()`` (see :meth:`rewired`).

        Arguments:
            method: ``"run"``, ``"step_fn"``, ``"end_sequence"`` or ``"reset_sequence"``.
            guard: keep a non-finite update out of the returned state (the weights and
                optimiser state stay as they were, the step is counted in ``skipped``), as
                the methods do. ``False`` (``"run"`` and ``"step_fn"`` only) commits every
                update and only reports it in the metrics' ``nonfinite``: for a caller
                that discards the whole result of a call with a non-finite step, as
                :meth:`step` and :meth:`fit` do with ``on_nonfinite="raise"``. It saves
                the per-step choice between the old and the new weights, which copies
                every weight and moment, and checks the weights and optimiser state once
                at the end of the call instead of after every update (per step, the loss
                and the gradient's norm are checked; a weight or moment that overflowed
                is reported at the last step).
            jit_kwargs: passed to :func:`jax.jit` (e.g. ``donate_argnums=1``: the state).

        Example:
            >>> import jax.numpy as jnp, traxon
            >>> from traxon.connectome import connectome_network, synthetic_connectome
            >>> net = connectome_network(synthetic_connectome(40, 300, 2, seed=0), n_inputs=2)
            >>> learner = traxon.online_learner(net, "es_d_rtrl", loss="mse")
            >>> run = learner.jit("run")
            >>> ls, m = run(learner.connectivity, learner.init(), jnp.ones((3, 1, 2)),
            ...             jnp.zeros((3, 1, 2)))
            >>> m["loss"].shape
            (3,)
        """
        allowed = ("run", "step_fn", "end_sequence", "reset_sequence", "_finish", "_evaluate")
        if method not in allowed:
            raise ValueError(f"`method` must be one of {allowed[:4]}; got {method!r}.")
        if not guard and method not in _REPORTS_NONFINITE:
            raise ValueError(
                f"guard=False needs a method that reports a non-finite update ("
                f"{', '.join(m for m in _REPORTS_NONFINITE if not m.startswith('_'))}); "
                f"{method!r} returns the state only: use guard=True."
            )
        fn = getattr(self, method)
        keys = self.net.index_arrays()

        def with_indices(indices: Any, *args: Any) -> Any:
            # `guard` is read while tracing (a Python flag, not data).
            previous, self._guard = self._guard, guard
            try:
                with bind_indices(keys, indices):
                    out = fn(*args)
            finally:
                self._guard = previous
            return out if guard else _report_state(method, out)

        with_indices.__name__ = with_indices.__qualname__ = method
        return jax.jit(with_indices, **jit_kwargs)

    @property
    def connectivity(self) -> tuple[jax.Array, ...]:
        """The network's index arrays on the device (``net.connectivity()``): the first
        argument of the functions of :meth:`jit`."""
        return self._indices

    def rewired(self, net: Network) -> OnlineLearner:
        """This learner for another network that differs only in its connectivity: the
        same compiled steps, run with ``net``'s index arrays (no compilation).

        ``net`` must describe the same network but for the values of its index arrays
        (same populations, ops, shapes, parameters), e.g. the same connectome builder on
        another connectome with as many connections per op. The new learner has no state
        yet (``init_state``); the weights are per connection of ``net``.

        Example:
            >>> import jax.numpy as jnp, traxon
            >>> from traxon.connectome import connectome_network, synthetic_connectome
            >>> nets = [connectome_network(synthetic_connectome(40, 300, 2, seed=s), n_inputs=2)
            ...         for s in (0, 1)]
            >>> a = traxon.online_learner(nets[0], "es_d_rtrl", loss="mse")
            >>> b = a.rewired(nets[1])
            >>> _ = b.init_state(1)
            >>> _ = b.step(jnp.ones((1, 2)), jnp.zeros((1, 2)))
            >>> b._step_jit is a._step_jit
            True
        """
        if not isinstance(net, Network) or type(net) is not type(self.net):
            raise TypeError(
                f"`net` must be a {type(self.net).__name__} like this learner's; got "
                f"{type(net).__name__}."
            )
        mine, theirs = _structure(self.net), _structure(net)
        if mine != theirs:
            where = _first_difference(mine, theirs)
            raise ValueError(
                f"`net` differs from this learner's network in more than its connectivity "
                f"(at {where}); rewired() reuses the compiled steps, so only the values of "
                "the index arrays may change. Build a learner for it: online_learner(net, ...)."
            )
        new = copy.copy(self)
        new.net = net
        new.tracer = self.algorithm.bind(net, self.loss.fn, window=self._window)
        new._indices = net.connectivity()
        new._state = None
        new._lock = threading.RLock()
        return new

    # ------------------------------------------------------------------------------
    # Functional core.

    def init(
        self,
        params: Mapping[str, jax.Array] | None = None,
        key: jax.Array | int | None = None,
        batch_size: int = 1,
    ) -> LearnerState:
        """A fresh :class:`LearnerState`; new weights from ``key`` unless ``params`` given."""
        if key is None:
            key = self.seed
        if isinstance(key, int):
            key = jax.random.PRNGKey(key)
        k_params, k_run = jax.random.split(key)
        if params is None:
            params = self.net.init_params(k_params, self.dtype)
        else:
            self.net.check_params(params)
            check_finite(
                params,
                "params",
                "Pass finite weights (a checkpoint or weights saved after a NaN update?).",
            )
            # Copies: the caller's arrays must survive a donated learner state.
            params = {k: jnp.array(v, copy=True) for k, v in params.items()}
        dtype = next(iter(params.values())).dtype
        net_state, _ = self._start_state(batch_size, dtype, jax.random.fold_in(k_run, 1))
        example = self.loss.example(batch_size, self.n_out) if self.loss.example else None
        trace_state = self.tracer.init(params, net_state, target_example=example)
        opt_state = self.optimizer.init(self._trainable(params))
        zero = jnp.zeros((), jnp.int32)
        start = (self.rate_target or 0.0) * self.net.dt / 1000.0
        rates = {k: jnp.full((self.net.populations[k].size,), start, dtype) for k in self.spiking}
        ls = LearnerState(
            dict(params),
            opt_state,
            net_state,
            trace_state,
            zero,
            zero,
            jnp.zeros((), bool),
            zero,
            zero,
            rates,
            k_run,
        )
        return _distinct_buffers(ls)

    def memory_estimate(self, batch_size: int) -> int:
        """Bytes of one learner state of ``batch_size`` (weights, optimiser state, network
        state, traces), from shapes alone (``jax.eval_shape``: nothing is allocated).

        A step holds the old and the new state at once, so training needs at least twice this.
        """
        shapes = jax.eval_shape(
            lambda key: self.init(key=key, batch_size=batch_size), jax.random.PRNGKey(0)
        )
        return sum(
            math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize
            for leaf in jax.tree_util.tree_leaves(shapes)
        )

    def _available_memory(self) -> tuple[float | None, str]:
        """The memory a state may use, and where that number comes from."""
        if self.memory_limit is not None:
            return float(self.memory_limit), "memory_limit"
        env = os.environ.get(MEMORY_LIMIT_ENV)
        if env:
            try:
                value = float(env)
            except ValueError:
                value = math.nan
            if not value > 0:
                raise ValueError(
                    f"the environment variable {MEMORY_LIMIT_ENV} must be a positive number "
                    f"of bytes; got {env!r}."
                )
            return value, MEMORY_LIMIT_ENV
        device = jax.devices()[0]
        try:
            stats = device.memory_stats() or {}
        except Exception:  # backends without memory statistics
            stats = {}
        if stats.get("bytes_limit"):
            free = stats["bytes_limit"] - stats.get("bytes_in_use", 0)
            return float(free), f"free memory of {device.device_kind}"
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):  # not available on this system
            return None, ""
        available = _mem_available()
        if available is not None and available < 0.9 * total:
            return float(available), "memory available now"
        return 0.9 * total, "90% of physical memory"

    def check_memory(self, batch_size: int) -> None:
        """Raise ``MemoryError`` if a state of ``batch_size`` cannot fit, before allocating.

        The limit is ``memory_limit`` (an argument of the learner), else the environment
        variable ``TRAXON_MEMORY_LIMIT`` (bytes), else the accelerator's free memory, else
        the memory available now (at most 90% of physical memory).
        """
        if self._mirror is not None:
            # An adapted brainstate module: tracing its init would run the user's module on
            # abstract values, which it may keep. Not checked.
            return
        limit, source = self._available_memory()
        if limit is None or math.isinf(limit):
            return
        try:
            state = self.memory_estimate(batch_size)
        except Exception:  # an init that cannot run on shapes alone: no estimate, no check
            return
        need = 2 * state
        if need <= limit:
            return
        hints = []
        if batch_size > 1:
            per_sample = max(state - self.memory_estimate(1), 0) / (batch_size - 1)
            fixed = state - per_sample * batch_size
            if per_sample > 0 and limit / 2 > fixed:
                fits = int((limit / 2 - fixed) // per_sample)
                if fits >= 1:
                    hints.append(f"batch_size <= {fits}")
        if self.algorithm.name != "es_d_rtrl":
            try:
                other = OnlineLearner(
                    self.net,
                    "es_d_rtrl",
                    self.optimizer,
                    self.loss,
                    update_every=self.update_every,
                    memory_limit=math.inf,
                    dtype=self.dtype,
                ).memory_estimate(batch_size)
                if 2 * other <= limit:
                    hints.append(f"algorithm 'es_d_rtrl' (about {_size(2 * other)})")
            except Exception:  # no es_d_rtrl for this network: no hint
                pass
        hint = f" What would fit: {' or '.join(hints)}." if hints else ""
        raise MemoryError(
            f"{self.algorithm.name} at batch_size={batch_size} needs about {_size(need)} "
            f"(twice its state of {_size(state)}: traces, network state, weights, optimiser "
            f"state), more than the {_size(limit)} available ({source}).{hint} To try anyway, "
            f"raise the limit with memory_limit= or the {MEMORY_LIMIT_ENV} environment "
            "variable (bytes; 'inf' turns the check off)."
        )

    def _check_label_dtype(self, y: Any) -> None:
        """Classification targets must be integers: a float label would be truncated."""
        if self.loss.kind == "classification":
            dtype = jnp.result_type(y)
            if not jnp.issubdtype(dtype, jnp.integer):
                raise TypeError(
                    f"`y` for {self.loss.name} must be integer class indices; got dtype "
                    f"{dtype} (a float label such as 0.7 would be truncated to a class). "
                    "Convert it with y.astype(int) if it holds whole numbers."
                )

    def _trainable(self, params: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        return {k: params[k] for k in self.trainable}

    def _weights(self, mask: jax.Array) -> jax.Array:
        mask = mask.astype(jnp.result_type(float))
        return mask / mask.shape[0] if self.batch_reduction == "mean" else mask

    def _update(
        self,
        ls: LearnerState,
        reset: bool = True,
        grad_sq: jax.Array | None = None,
        factors: Mapping[str, tuple[jax.Array, jax.Array]] | None = None,
    ) -> tuple[LearnerState, jax.Array, jax.Array, dict[str, tuple[jax.Array, jax.Array]]]:
        """Apply the accumulated gradient. ``grad_sq``: its squared norm when the tracer gave
        it (this step's gradient alone, from the factors of its outer products), which
        spares a pass over every weight; else the norm is summed over the gradient.
        ``factors``: the gradients of the weights held as factors (``_run_deferred``), as
        ``(pre, post)``; their updates are returned as factors, ``(-η pre, post)``, with
        zero rows when the update is skipped."""
        grads = self.tracer.gradients(ls.params, ls.trace_state)
        dtype = next(iter(ls.params.values())).dtype
        n = jnp.maximum(ls.window, 1).astype(dtype) if self.time_reduction == "mean" else None
        if n is not None:
            grads = {k: g / n for k, g in grads.items()}
        if grad_sq is None:
            norm = optax.tree.norm(grads)
        else:
            norm = jnp.sqrt(grad_sq.astype(dtype))
            norm = norm if n is None else norm / n
        trainable = self._trainable(ls.params)
        held = dict(factors or {})
        if held:
            # A linear optimiser (`traxon.learn.sgd`): its update of a gradient of ones is the
            # scale -η_t every factored weight's update takes, and its state advances as
            # for any gradient.
            trainable = {k: w for k, w in trainable.items() if k not in held}
            grads = {**grads, _UNIT: jnp.ones((), dtype)}
            updates, opt_state = self.optimizer.update(
                grads, ls.opt_state, {**trainable, _UNIT: jnp.zeros((), dtype)}
            )
            updates = dict(updates)
            scale = updates.pop(_UNIT) if n is None else updates.pop(_UNIT) / n
        else:
            updates, opt_state = self.optimizer.update(grads, ls.opt_state, trainable)
            scale = jnp.zeros((), dtype)
        new_trainable = optax.apply_updates(trainable, updates)
        # An update is committed only when the loss, the gradient, the new weights and the
        # new optimiser state are all finite (one fused reduction over the new values).
        # Unguarded, only the loss and the gradient's norm are checked per step; the weights
        # and optimiser state are checked once per call instead, at its end
        # (`_report_state`): a non-finite one cannot leave the call unreported.
        checked = (norm, new_trainable, opt_state, scale) if self._guard else norm
        finite = _all_finite_fused(checked) & ~ls.window_nonfinite
        if self._guard:
            # One choice between whole buffers (a conditional), not an element-wise select
            # that reads the new and the old values once more (docs/decisions.md: the
            # learner's step); XLA copies the chosen buffers.
            new_trainable, opt_state = jax.lax.cond(
                finite, lambda: (new_trainable, opt_state), lambda: (trainable, ls.opt_state)
            )
        scaled = {k: ((scale * a).astype(a.dtype), b) for k, (a, b) in held.items()}
        if self._guard:  # a skipped update adds zero rows (a factor may be NaN: select)
            scaled = {
                k: (jnp.where(finite, a, 0.0), jnp.where(finite, b, 0.0))
                for k, (a, b) in scaled.items()
            }
        params = {**ls.params, **new_trainable}
        ls = ls._replace(
            params=params,
            opt_state=opt_state,
            trace_state=self.tracer.reset_gradients(ls.trace_state) if reset else ls.trace_state,
            window=jnp.zeros_like(ls.window),
            window_nonfinite=jnp.zeros_like(ls.window_nonfinite),
            updates=ls.updates + finite.astype(jnp.int32),
            skipped=ls.skipped + (~finite).astype(jnp.int32),
        )
        return ls, norm, ~finite, scaled

    def _no_update(
        self, ls: LearnerState
    ) -> tuple[LearnerState, jax.Array, jax.Array, dict[str, tuple[jax.Array, jax.Array]]]:
        dtype = next(iter(ls.params.values())).dtype
        return ls, jnp.zeros((), dtype), jnp.zeros((), bool), {}

    def step_fn(
        self, ls: LearnerState, x: Any, y: Any, mask: Any = None
    ) -> tuple[LearnerState, dict[str, Any]]:
        """One learning step (pure; see the module docstring). ``mask``: ``(B,)`` or ``None``."""
        ls, metrics, _ = self._step(ls, x, y, mask)
        return ls, metrics

    def _step(
        self,
        ls: LearnerState,
        x: Any,
        y: Any,
        mask: Any = None,
        pending: Mapping[str, tuple[jax.Array, jax.Array]] | None = None,
    ) -> tuple[LearnerState, dict[str, Any], dict[str, tuple[jax.Array, jax.Array]]]:
        """:meth:`step_fn`. ``pending``: ``{weight: (pre, post)}`` updates not yet written
        into those weights (``_run_deferred``); their gradients come back as factors and
        their updates are returned, ``(-η pre, post)``, instead of applied."""
        xs = self.net.as_inputs(x, batch=self.net.batch_size(ls.net_state))
        batch = next(iter(xs.values())).shape[0]
        if mask is None:
            mask = jnp.ones((batch,))
        mask = jnp.asarray(mask)
        y = jnp.asarray(y)
        self._check_label_dtype(y)
        weights = self._weights(mask)
        costs = None
        if self.rate_target is not None and self.rate_reg > 0:
            # Firing-rate regulariser: the gradient of rate_reg/2 * sum_i (r_i - r*)^2 with the
            # running rate r held fixed, spread over the steps as a cost on each spike.
            target = self.rate_target * self.net.dt / 1000.0
            scale = self.rate_reg / batch if self.batch_reduction == "mean" else self.rate_reg
            costs = {
                k: jnp.broadcast_to(scale * (r - target), (batch, r.shape[0]))
                for k, r in ls.rates.items()
            }
        every_step = self.update_every == 1
        trace_state = ls.trace_state
        if every_step:
            # Start each step from zero gradients: the zeros are constants of this step, so
            # the accumulator costs nothing, and no reset pass is needed after the update.
            trace_state = self.tracer.reset_gradients(trace_state)
        params: dict[str, Any] = dict(ls.params)
        for k, (pre, post) in (pending or {}).items():
            params[k] = DeferredWeight(ls.params[k], pre, post)
        net_state, trace_state, out = self.tracer.step(
            params, ls.net_state, trace_state, xs, y, weights, spike_cost=costs
        )
        signals = self.net.signals(net_state)
        rates = {
            k: self.rate_decay * r + (1.0 - self.rate_decay) * jnp.mean(signals[k]["spike"], 0)
            for k, r in ls.rates.items()
        }
        loss_ok = jnp.all(jnp.isfinite(out.loss) | (mask == 0))
        ls = ls._replace(
            net_state=net_state,
            trace_state=trace_state,
            step=ls.step + 1,
            window=ls.window + 1,
            window_nonfinite=ls.window_nonfinite | ~loss_ok,
            rates=rates,
        )
        if every_step:
            due = jnp.ones((), bool)
            # The trace state started this step from zero: the step's gradient is all there
            # is, and the tracer may know its norm from the factors (StepOutput.grad_sq).
            factors = out.factors if pending else None
            ls, norm, bad, updates = self._update(
                ls, reset=False, grad_sq=out.grad_sq, factors=factors
            )
        elif isinstance(self.update_every, int):
            due = ls.window >= self.update_every
            ls, norm, bad, updates = jax.lax.cond(due, self._update, self._no_update, ls)
        else:
            due = jnp.zeros((), bool)
            ls, norm, bad, updates = self._no_update(ls)
        metrics = self._metrics(ls, out.output, out.loss, y, mask)
        metrics.update(grad_norm=norm, updated=due, nonfinite=bad | ~loss_ok)
        return ls, metrics, updates

    def _metrics(
        self, ls: LearnerState, output: jax.Array, loss: jax.Array, y: Any, mask: jax.Array
    ) -> dict[str, Any]:
        m = mask.astype(loss.dtype)
        total = jnp.maximum(jnp.sum(m), 1.0)
        metrics: dict[str, Any] = {"loss": jnp.sum(loss * m) / total, "weight": jnp.sum(m)}
        if self.loss.kind == "classification":
            hit = (jnp.argmax(output, -1) == y).astype(loss.dtype)
            metrics["accuracy"] = jnp.sum(hit * m) / total
        signals = self.net.signals(ls.net_state)
        metrics["rates"] = {k: jnp.mean(signals[k]["spike"]) for k in self.spiking}
        return metrics

    def run(
        self, ls: LearnerState, xs: Any, ys: Any, masks: Any = None
    ) -> tuple[LearnerState, dict[str, Any]]:
        """``T`` learning steps as one ``lax.scan`` (pure). ``xs``: ``(T, B, n_in)``."""
        xs = self.net.as_inputs(xs, batch=self.net.batch_size(ls.net_state), leading=1)
        T = next(iter(xs.values())).shape[0]
        batch = next(iter(xs.values())).shape[1]
        if masks is None:
            masks = jnp.ones((T, batch))
        self._check_label_dtype(ys)

        inputs = (xs, jnp.asarray(ys), jnp.asarray(masks))
        steps = self._update_steps(batch)
        if steps and T:
            return self._run_deferred(ls, inputs, steps)

        def body(carry: LearnerState, inp: Any) -> tuple[LearnerState, dict[str, Any]]:
            x, y, m = inp
            return self.step_fn(carry, x, y, m)

        return jax.lax.scan(body, ls, inputs)

    def _update_steps(self, batch: int) -> dict[str, int]:
        """``{weight: steps}``: the weights whose updates :meth:`run` holds as factors, and
        for how many steps (see ``traxon.core._deferred``). Only with an update every step
        by a linear optimiser (:func:`traxon.learn.sgd`) and a rule that returns factors
        (``es_d_rtrl``; every network's ``forward`` takes them)."""
        if (
            self.update_every != 1
            or not isinstance(self.optimizer, SGD)
            or self.tracer.update_steps is None
        ):
            return {}
        return self.tracer.update_steps(batch)

    def _run_deferred(
        self, ls: LearnerState, inputs: Any, steps: Mapping[str, int]
    ) -> tuple[LearnerState, dict[str, Any]]:
        """:meth:`run` with the updates of the weights in ``steps`` held as factors: chunks
        of ``R`` steps (the fewest any weight asks for), each a ``lax.scan`` with those
        weights fixed and their updates written into buffers of ``R`` steps of rows, then
        written into the weights with one GEMM each. The same weights at the end as step by
        step, to rounding; the state returned holds whole weights."""
        names = tuple(steps)
        R = min(steps.values())
        T = jax.tree_util.tree_leaves(inputs)[0].shape[0]
        # The rule keeps no gradient accumulator for these weights while they are factored.
        kept = {k: ls.trace_state.grads[k] for k in names}
        grads = {k: g for k, g in ls.trace_state.grads.items() if k not in names}
        ls = ls._replace(trace_state=ls.trace_state._replace(grads=grads))
        dtype = next(iter(ls.params.values())).dtype

        def empty(rows: Mapping[str, int]) -> dict[str, tuple[jax.Array, jax.Array]]:
            shapes = {k: ls.params[k].shape for k in names}
            return {
                k: (jnp.zeros((rows[k], n_in), dtype), jnp.zeros((rows[k], n_out), dtype))
                for k, (n_in, n_out) in shapes.items()
            }

        # K[k]: the rows of one step's update of weight k (batch x decay groups, and a term
        # more per group where a spike cost is given): read from the step's shapes.
        x0, y0, m0 = jax.tree_util.tree_map(lambda a: a[0], inputs)
        none = empty(dict.fromkeys(names, 0))
        out = jax.eval_shape(lambda s: self._step(s, x0, y0, m0, pending=none)[2], ls)
        K = {k: out[k][0].shape[0] for k in names}

        def chunk(ls: LearnerState, part: Any) -> tuple[LearnerState, dict[str, Any]]:
            r = jax.tree_util.tree_leaves(part)[0].shape[0]

            def body(carry: Any, inp: Any) -> tuple[Any, dict[str, Any]]:
                ls, pend = carry
                (x, y, m), j = inp
                ls, metrics, new = self._step(ls, x, y, m, pending=pend)
                row = {k: j * K[k] for k in names}
                pend = {
                    k: (
                        jax.lax.dynamic_update_slice_in_dim(pend[k][0], a.astype(dtype), row[k], 0),
                        jax.lax.dynamic_update_slice_in_dim(pend[k][1], b.astype(dtype), row[k], 0),
                    )
                    for k, (a, b) in new.items()
                }
                return (ls, pend), metrics

            pend = empty({k: r * K[k] for k in names})
            (ls, pend), metrics = jax.lax.scan(body, (ls, pend), (part, jnp.arange(r)))
            folded = {k: DeferredWeight(ls.params[k], *pend[k]).value() for k in names}
            return ls._replace(params={**ls.params, **folded}), metrics

        full = T // R
        parts = []
        if full:
            head = jax.tree_util.tree_map(
                lambda a: a[: full * R].reshape(full, R, *a.shape[1:]), inputs
            )
            ls, metrics = jax.lax.scan(chunk, ls, head)
            parts.append(
                jax.tree_util.tree_map(lambda a: a.reshape(full * R, *a.shape[2:]), metrics)
            )
        if T % R:
            ls, metrics = chunk(ls, jax.tree_util.tree_map(lambda a: a[full * R :], inputs))
            parts.append(metrics)
        metrics = jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *parts)
        trace_state = ls.trace_state._replace(grads={**ls.trace_state.grads, **kept})
        return ls._replace(trace_state=trace_state), metrics

    def end_sequence(self, ls: LearnerState) -> LearnerState:
        """Apply the accumulated gradient (if any), then reset neuron state and traces."""
        return self._finish(ls)[0]

    def _finish(self, ls: LearnerState) -> tuple[LearnerState, jax.Array, jax.Array, jax.Array]:
        """:meth:`end_sequence`, also returning the update's gradient norm, whether it ran and
        whether it was skipped as not finite."""
        due = ls.window > 0
        ls, norm, bad, _ = jax.lax.cond(due, self._update, self._no_update, ls)
        batch = self.net.batch_size(ls.net_state)
        dtype = next(iter(ls.params.values())).dtype
        fresh, key = self._start_state(batch, dtype, ls.key)
        trace_state = self.tracer.reset_traces(ls.params, fresh, ls.trace_state)
        ls = ls._replace(net_state=fresh, trace_state=trace_state, key=key)
        return ls, norm, due, bad

    def _start_state(self, batch: int, dtype: Any, key: jax.Array) -> tuple[Any, jax.Array]:
        """The network state a sequence starts from, and the key left for the next one.

        A network whose initial state is random (``draws_initial_state``: an adapted
        brainstate module with ``V_initializer=Uniform(...)``) draws it from a key split
        from ``key``; any other network starts from ``init_state`` and ``key`` is unchanged.
        """
        if self._mirror is None or not self._mirror.draws_initial_state:
            return self.net.init_state(batch, dtype), key
        key, sub = jax.random.split(key)
        return self.net.init_state(batch, dtype, key=sub), key  # type: ignore[call-arg]

    def reset_sequence(self, ls: LearnerState) -> LearnerState:
        """Reset neuron state and traces without applying anything (weights kept)."""
        batch = self.net.batch_size(ls.net_state)
        dtype = next(iter(ls.params.values())).dtype
        fresh, key = self._start_state(batch, dtype, ls.key)
        trace_state = self.tracer.reset_gradients(
            self.tracer.reset_traces(ls.params, fresh, ls.trace_state)
        )
        return ls._replace(
            net_state=fresh,
            trace_state=trace_state,
            key=key,
            window=jnp.zeros_like(ls.window),
            window_nonfinite=jnp.zeros_like(ls.window_nonfinite),
        )

    def _evaluate(self, params: Mapping[str, jax.Array], xs: Any, ys: Any, masks: Any) -> Any:
        batch = next(iter(xs.values())).shape[1]
        dtype = next(iter(params.values())).dtype
        # The same start for every evaluation (a random initial state: drawn from the seed).
        state, _ = self._start_state(batch, dtype, jax.random.PRNGKey(self.seed))
        res = self.net.simulate(params, state, xs)
        outputs = res.outputs
        loss = jax.vmap(self.loss.fn)(outputs, ys)
        m = masks.astype(loss.dtype)
        # An all-zero mask has nothing to report: NaN rather than 0.
        total = jnp.sum(m)
        out: dict[str, Any] = {"loss": _ratio(jnp.sum(loss * m), total)}
        if self.loss.kind == "classification":
            votes = jnp.sum(m[..., None] * jax.nn.softmax(outputs, -1), axis=0)
            last = jnp.argmax(jnp.cumsum(m, axis=0) * (m > 0), axis=0)
            labels = jnp.take_along_axis(ys, last[None], axis=0)[0]
            # Sequences without a masked step (padding) have no answer: they do not count.
            real = (jnp.sum(m, axis=0) > 0).astype(loss.dtype)
            right = (jnp.argmax(votes, -1) == labels).astype(loss.dtype)
            out["accuracy"] = _ratio(jnp.sum(right * real), jnp.sum(real))
            hit = (jnp.argmax(outputs, -1) == ys).astype(loss.dtype)
            out["step_accuracy"] = _ratio(jnp.sum(hit * m), total)
        out["rates"] = {
            k: jnp.mean(v["spike"])
            for k, v in res.record.items()
            if self.net.populations[k].neuron.spiking
        }
        return out

    def evaluate(self, params_or_state: Any, xs: Any, ys: Any, masks: Any = None) -> dict[str, Any]:
        """Run whole sequences without learning; report loss and accuracy.

        For classification, ``accuracy`` is per sequence: the class with the largest
        softmax summed over the masked steps against the target at the last masked step;
        ``step_accuracy`` is per masked step.
        """
        params = (
            params_or_state.params if isinstance(params_or_state, LearnerState) else params_or_state
        )
        check_finite(
            params,
            "params",
            "Evaluating NaN/Inf weights would report a meaningless accuracy; evaluate finite "
            "weights (an earlier state or checkpoint).",
        )
        xs, ys, masks = _as_arrays(xs), _as_arrays(ys), _as_arrays(masks)
        self._check_sequences(xs, ys, masks)
        xs = self.net.as_inputs(xs, leading=1)
        T, B = next(iter(xs.values())).shape[:2]
        if masks is None:
            masks = np.ones((T, B), np.float32)
        self._check_mask(masks, (T, B))
        self.loss.check_target(ys, B, self.n_out, leading=1)
        out = self._eval_jit(self._indices, params, xs, jnp.asarray(ys), jnp.asarray(masks))
        return jax.tree_util.tree_map(float, out)

    # ------------------------------------------------------------------------------
    # Stateful convenience.

    @property
    def state(self) -> LearnerState:
        """The learner's current state (created on the first :meth:`step` or :meth:`fit`)."""
        if self._state is None:
            raise RuntimeError("the learner has no state yet: call step(), fit() or init_state().")
        return self._state

    @state.setter
    def state(self, value: LearnerState) -> None:
        with self._lock:
            self._adopt(value)

    def _adopt(self, state: LearnerState) -> None:
        """Make ``state`` the learner's, its weights written into an adapted module (so
        that they, not the module's older values, are what the next step starts from)."""
        self._state = state
        if self._mirror is not None:
            self._mirror.write_back(state.params)

    @property
    def params(self) -> dict[str, jax.Array]:
        """The current weights."""
        return self.state.params

    def init_state(
        self, batch_size: int, params: Mapping[str, jax.Array] | None = None, key: Any = None
    ) -> LearnerState:
        """Create (or replace) the learner's own state.

        Raises ``MemoryError`` before allocating when the state would not fit (see
        :meth:`memory_estimate`).
        """
        self.check_memory(batch_size)
        state = self.init(params=params, key=key, batch_size=batch_size)
        with self._lock:
            self._adopt(state)
        return state

    @staticmethod
    def _check_sequences(x: Any, y: Any, mask: Any) -> None:
        """Whole sequences: ``x``, ``y`` and ``mask`` share a positive length ``T``."""
        lengths = {
            name: np.shape(v)[0]
            for name, v in (("x", x), ("y", y), ("mask", mask))
            if v is not None and not isinstance(v, Mapping) and np.ndim(v) > 0
        }
        if isinstance(x, Mapping):
            lengths.update({f"x[{k!r}]": np.shape(v)[0] for k, v in x.items() if np.ndim(v)})
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"`{k}` has {t}" for k, t in lengths.items())
            raise ValueError(
                "`x`, `y` and `mask` must have the same number of time steps T (axis 0); "
                + shown
                + "."
            )
        if 0 in lengths.values():
            raise ValueError(
                "the sequence has no time steps (T = 0 along axis 0 of `x`); there is nothing "
                "to learn or report. Drop empty sequences before passing them."
            )

    @staticmethod
    def _check_mask(mask: Any, want: tuple[int, ...]) -> None:
        """``mask`` has shape ``want`` and finite, non-negative weights."""
        if mask is None:
            return
        if tuple(np.shape(mask)) != want:
            raise ValueError(f"`mask` must have shape {want}; got {tuple(np.shape(mask))}.")
        if not is_concrete(mask):
            return
        arr = np.asarray(mask, np.float32)
        check_finite(arr, "mask")
        if np.any(arr < 0):
            raise ValueError(
                f"`mask` holds loss weights and must be >= 0; got {arr.min()} (smallest "
                "element). A negative weight would turn that sample's gradient into ascent."
            )

    def _check_step_input(self, x: Any, y: Any, mask: Any, leading: int) -> None:
        if leading:
            self._check_sequences(x, y, mask)
        xs = self.net.as_inputs(x, leading=leading)
        shape = next(iter(xs.values())).shape
        batch = shape[leading]
        if self._state is not None:
            want = self.net.batch_size(self._state.net_state)
            if batch != want:
                raise ValueError(
                    f"`x` has batch size {batch}; this learner's state has batch size {want}. "
                    "Use init_state(batch_size=...) to change it."
                )
        self.loss.check_target(y, batch, self.n_out, leading=leading)
        if self._buffer is not None:
            pending = 0 if leading else (int(self._state.window) if self._state is not None else 0)
            held = pending + (shape[0] if leading else 1)
            if isinstance(self.update_every, int):
                # An update every k steps empties the buffer: it never holds more than k.
                held = min(held, self.update_every)
            if held > self._buffer:
                raise ValueError(
                    f"bptt buffers at most {self._buffer} steps between updates; this call "
                    f"would hold {held}. Call end() at the end of each sequence, or "
                    "set sequence_length to the longest sequence."
                )
        self._check_mask(mask, (*shape[:leading], batch))

    def _sync_module(self) -> None:
        """For an adapted brainstate module: raise if its weights were replaced; adopt
        values the user wrote into them since the learner last did."""
        if self._state is None or self._mirror is None:
            return
        params = self._mirror.adopt_params(self._state.params)
        if any(params[k] is not v for k, v in self._state.params.items()):
            self._state = self._state._replace(params=params)

    def _commit(self, new: LearnerState, metrics: Mapping[str, Any], end_bad: Any = False) -> None:
        """Make ``new`` the learner's state, unless a NaN/Inf update must raise.

        Non-finite updates were already left out of ``new`` inside the jitted step; with
        ``on_nonfinite="raise"`` nothing is committed at all.
        """
        bad = np.append(np.asarray(metrics["nonfinite"]).ravel(), bool(end_bad))
        if self.on_nonfinite == "raise" and bad.any():
            at = int(self.state.step) + min(int(np.argmax(bad)) + 1, bad.size - 1)
            raise FloatingPointError(
                "the loss, the gradient or the updated weights/optimiser state became NaN/Inf "
                f"(first seen at step {at}); nothing of this call was applied: the learner "
                "state is the one before it. Lower the learning rate, set clip_norm (or a "
                "larger eps for adam), or pass on_nonfinite='skip' to skip such updates and "
                "count them."
            )
        self._adopt(new)

    def step(self, x: Any, y: Any, mask: Any = None) -> dict[str, float]:
        """Learn from one step of data; returns this step's metrics as floats.

        Example:
            >>> import jax, jax.numpy as jnp, optax, traxon
            >>> from traxon.core import LIF, Dense, Network, Population, Projection, Readout
            >>> net = Network(3, {"h": Population(LIF(), 8)}, [Projection("x", "h", Dense(3.0))],
            ...               readout=Readout("h", 2))
            >>> learner = traxon.online_learner(net, "d_rtrl", optax.adam(1e-2))
            >>> m = learner.step(jnp.ones((4, 3)), jnp.array([0, 1, 0, 1]))
            >>> sorted(m)[:3]
            ['accuracy', 'grad_norm', 'loss']
        """
        x, y, mask = _as_arrays(x), _as_arrays(y), _as_arrays(mask)
        with self._lock:
            self._check_step_input(x, y, mask, leading=0)
            self._sync_module()
            if self._state is None:
                batch = next(iter(self.net.as_inputs(x).values())).shape[0]
                self.init_state(batch)
            new, metrics = self._step_jit(self._indices, self.state, x, y, mask)
            self._commit(new, metrics)
        return jax.tree_util.tree_map(lambda v: float(v), metrics)

    def end(self) -> None:
        """Stateful :meth:`end_sequence`."""
        with self._lock:
            new, _, _, bad = self._finish_jit(self._indices, self.state)
            self._commit(new, {"nonfinite": np.zeros(0, bool)}, bad)

    def fit(
        self,
        batches: Iterable[Any],
        n_batches: int | None = None,
        progress: bool = False,
        callback: Callable[[int, dict[str, float]], Any] | None = None,
    ) -> list[dict[str, float]]:
        """Train on whole sequences: for each ``(x, y, mask)`` batch (``x`` ``(T, B, n_in)``),
        reset the neuron state and traces, learn online through the sequence, then apply what
        the schedule left accumulated. Returns one summary per sequence.

        Arguments:
            batches: an iterable of ``(x, y, mask)`` tuples or :class:`traxon.tasks.Batch`.
            n_batches: stop after this many (needed for infinite streams).
            progress: show a ``tqdm`` progress bar.
            callback: ``callback(i, summary)`` after each sequence.
        """
        if isinstance(batches, (np.ndarray, jax.Array)) or not isinstance(batches, Iterable):
            raise TypeError(
                "`batches` must be an iterable of (x, y) or (x, y, mask) batches (or "
                "traxon.tasks.Batch); got "
                + (
                    f"an array of shape {tuple(np.shape(batches))}"
                    if isinstance(batches, (np.ndarray, jax.Array))
                    else type(batches).__name__
                )
                + ". For one batch, pass [(x, y, mask)]."
            )
        bar = _progress(n_batches, progress)
        history: list[dict[str, float]] = []
        try:
            # islice: a stream is never asked for a batch beyond the last one trained on.
            for i, batch in enumerate(itertools.islice(batches, n_batches)):
                if not isinstance(batch, (tuple, list)) or not 2 <= len(batch) <= 4:
                    got = f"length {len(batch)}" if isinstance(batch, (tuple, list)) else "a "
                    got += "" if isinstance(batch, (tuple, list)) else type(batch).__name__
                    raise TypeError(
                        f"each item of `batches` must be (x, y), (x, y, mask) or a "
                        f"traxon.tasks.Batch; item {i} is {got}."
                    )
                x, y = _as_arrays(batch[0]), _as_arrays(batch[1])
                mask = _as_arrays(batch[2]) if len(batch) > 2 else None
                with self._lock:
                    self._check_step_input(x, y, mask, leading=1)
                    self._sync_module()
                    if self._state is None:
                        self.init_state(np.shape(x)[1])
                    start = time.perf_counter()
                    ind = self._indices
                    new, metrics = self._run_jit(ind, self._reset_jit(ind, self.state), x, y, mask)
                    new, norm, due, end_bad = jax.block_until_ready(self._finish_jit(ind, new))
                    self._commit(new, metrics, end_bad)
                summary = _summarise(metrics, time.perf_counter() - start, norm, due, end_bad)
                history.append(summary)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(
                        {k: f"{v:.3g}" for k, v in summary.items() if k in ("loss", "accuracy")}
                    )
                if callback is not None:
                    callback(i, summary)
        finally:
            if bar is not None:
                bar.close()
        return history

    # ------------------------------------------------------------------------------
    # Checkpoints.

    def fingerprint(self) -> dict[str, Any]:
        """A JSON description of the network and learner that a checkpoint must match."""
        net = self.net
        return {
            "inputs": net.inputs,
            "populations": {
                k: [type(p.neuron).__name__, p.size, list(p.traced)]
                for k, p in net.populations.items()
            },
            "weights": {
                p.name: [p.source, p.target, list(p.op.weight_shape(p.n_in, p.n_out))]
                for p in net.projections
            },
            "algorithm": self.algorithm.name,
            "loss": self.loss.name,
            "network": net.describe(),
        }

    def save(self, path: str | os.PathLike, allow_nonfinite: bool = False) -> str:
        """Save the learner's whole state (atomically, no pickle). Returns the path.

        A state holding NaN/Inf (weights, optimiser state, traces) is refused unless
        ``allow_nonfinite=True`` (to keep it for debugging).
        """
        with self._lock:
            state = self.state
        if not allow_nonfinite:
            found = first_nonfinite(state, "state")
            if found is not None:
                label, count, where = found
                raise ValueError(
                    f"refusing to save a non-finite learner state: `{label}` holds {count} "
                    f"NaN/Inf value(s), the first at index {where}. Restore an earlier "
                    "checkpoint, or pass allow_nonfinite=True to save it anyway."
                )
        return str(save_checkpoint(path, state, self.fingerprint()))

    def restore(self, path: str | os.PathLike, batch_size: int | None = None) -> LearnerState:
        """Load a checkpoint written by :meth:`save`; training continues bit-identically."""
        with self._lock:
            if self._state is None:
                if batch_size is None:
                    batch_size = _batch_from_checkpoint(path)
                self.init_state(batch_size)
            added = tuple(f".trace_state.{f}" for f in self.algorithm.optional_state)
            self._adopt(
                load_checkpoint(
                    path, self.state, self.fingerprint(), optional=lambda k: k.startswith(added)
                )
            )
            return self.state


# The methods of `OnlineLearner.jit` whose results say whether an update was not finite.
_REPORTS_NONFINITE = ("run", "step_fn", "_finish")


def _report_state(method: str, out: Any) -> Any:
    """``out`` of an unguarded ``method`` (see :meth:`OnlineLearner.jit`), with non-finite
    weights or optimiser state at the end of the call reported as a non-finite last step."""
    if method == "_finish":
        ls, norm, due, bad = out
        return ls, norm, due, bad | ~_all_finite_fused((ls.params, ls.opt_state))
    ls, metrics = out
    bad = ~_all_finite_fused((ls.params, ls.opt_state))
    nonfinite = metrics["nonfinite"]
    if nonfinite.ndim:  # run: (T,) flags; the state is the one after the last step
        nonfinite = nonfinite.at[-1].set(nonfinite[-1] | bad)
    else:
        nonfinite = nonfinite | bad
    return ls, {**metrics, "nonfinite": nonfinite}


def _all_finite_fused(tree: Any) -> jax.Array:
    """Whether every floating element of ``tree`` is finite, as one float sum of ``x - x``
    per array (0 where finite, NaN elsewhere; a sum of zeros never overflows): a reduction
    that XLA fuses with the code making the values, with no boolean array in between."""
    total = sum(
        (
            jnp.sum(leaf - leaf)
            for leaf in jax.tree_util.tree_leaves(tree)
            if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
        ),
        start=jnp.zeros(()),
    )
    return jnp.isfinite(total)


def _structure(net: Network) -> dict[str, Any]:
    """``net.describe()`` with every op's index arrays reduced to their shapes and dtypes."""
    from traxon.core.network import _describe
    from traxon.core.ops import _Frozen

    desc = net.describe()
    for p in net.projections:
        op: dict[str, Any] = {"type": type(p.op).__qualname__}
        for field in dataclasses.fields(p.op):
            v = getattr(p.op, field.name)
            op[field.name] = (
                ["array", list(v.array.shape), str(v.array.dtype)]
                if isinstance(v, _Frozen)
                else _describe(v)
            )
        # Sizes derived from the index values (the gather capacity of an event-driven op).
        op["event_capacity"] = getattr(p.op, "event_capacity", None)
        desc["projections"][p.name]["op"] = op
    return desc


def _first_difference(a: Any, b: Any, where: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if a.get(k, None) != b.get(k, None):
                return _first_difference(a.get(k), b.get(k), f"{where}/{k}")
    return f"{where or '/'}: {a!r} vs {b!r}"[:300]


def _mem_available() -> int | None:
    """Linux's estimate of the memory available to a new process (bytes), within this
    container's cgroup limit when there is one; ``None`` when unknown."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            current = int(f.read().strip())
        if limit != "max":
            found.append(int(limit) - current)
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def _size(n: float) -> str:
    """A number of bytes for people: ``'6.5 GB'``."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} bytes"


def _ratio(num: jax.Array, den: jax.Array) -> jax.Array:
    """``num / den``, NaN when nothing was counted (``den == 0``)."""
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), jnp.nan)


def _as_arrays(value: Any) -> Any:
    """Python lists and tuples of numbers as NumPy arrays (other values unchanged)."""
    if isinstance(value, (list, tuple)):
        return np.asarray(value)
    return value


def _distinct_buffers(tree: Any) -> Any:
    """``tree`` with every repeated array copied, so that each leaf owns its buffer:
    ``jax.jit(learner.run, donate_argnums=0)`` then reuses the state's memory in place
    instead of failing on a buffer donated twice."""
    seen: set[int] = set()

    def own(x: Any) -> Any:
        if isinstance(x, jax.Array) and id(x) in seen:
            return jnp.array(x, copy=True)
        seen.add(id(x))
        return x

    return jax.tree_util.tree_map(own, tree)


def _batch_from_checkpoint(path: str | os.PathLike) -> int:
    from traxon.learn.checkpoint import CheckpointError, checkpoint_path, read_checkpoint_header

    meta = read_checkpoint_header(path)
    for key, shape in zip(meta["keys"], meta["shapes"], strict=True):
        if key.startswith(".net_state") and shape:
            return int(shape[0])
    raise CheckpointError(
        f"cannot restore checkpoint '{checkpoint_path(path)}': it holds no network state "
        "(a checkpoint of something other than an online learner?)."
    )


def _progress(total: int | None, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError as err:  # pragma: no cover - tqdm is in the examples extra
        raise ImportError('progress bars need tqdm: pip install "traxon[examples]"') from err
    return tqdm(total=total, unit="seq")


def _summarise(
    metrics: Mapping[str, Any], seconds: float, end_norm: Any, end_update: Any, end_bad: Any
) -> dict[str, float]:
    weight = np.asarray(metrics["weight"])
    # Nothing masked in: NaN, not a loss or accuracy of 0.
    total = float(weight.sum()) if weight.sum() > 0 else math.nan
    out = {"loss": float(np.sum(np.asarray(metrics["loss"]) * weight) / total)}
    if "accuracy" in metrics:
        out["accuracy"] = float(np.sum(np.asarray(metrics["accuracy"]) * weight) / total)
    for k, v in metrics["rates"].items():
        out[f"rate/{k}"] = float(np.mean(v))
    norms = np.asarray(metrics["grad_norm"])[np.asarray(metrics["updated"])]
    if bool(end_update):
        norms = np.append(norms, float(end_norm))
    out["grad_norm"] = float(norms.mean()) if norms.size else math.nan
    # Updates skipped as not finite (on_nonfinite="skip"): not a normal-looking summary.
    out["nonfinite"] = float(np.sum(np.asarray(metrics["nonfinite"])) + bool(end_bad))
    out["seconds"] = seconds
    return out


#: Readers of models that are not traxon Networks (e.g. a brainstate module), tried in turn:
#: ``reader(model, input_size, call, input_unit, draw_initial_state) -> Network``, or ``None``
#: when the model is not of its kind. ``traxon`` registers ``traxon.adapters``' reader when
#: it is imported (``traxon.learn`` cannot be imported without it), so the learner sees the
#: adapter only through the model contract, never by import.
_MODEL_READERS: list[Callable[..., Network | None]] = []


def register_model_reader(reader: Callable[..., Network | None]) -> None:
    """Let :func:`online_learner` accept another kind of model: ``reader(model, input_size,
    call, input_unit, draw_initial_state)`` returns its :class:`~traxon.core.Network` (with
    the learner's interface for outside models, see :class:`MirroredModel`), or ``None``."""
    if reader not in _MODEL_READERS:
        _MODEL_READERS.append(reader)


def _adapt_module(
    module: Any,
    input_size: int | None,
    call: Any = None,
    input_unit: Any = None,
    draw_initial_state: bool = True,
) -> Network:
    for reader in _MODEL_READERS:
        net = reader(module, input_size, call, input_unit, draw_initial_state)
        if net is not None:
            return net
    raise TypeError(
        f"`net` must be a traxon Network or a brainstate.nn.Module; got {type(module).__name__}."
    )


def online_learner(
    net: Network,
    algorithm: str | Algorithm = "es_d_rtrl",
    optimizer: optax.GradientTransformation | None = None,
    loss: str | Loss | Callable[..., jax.Array] = "cross_entropy",
    **options: Any,
) -> OnlineLearner:
    """Attach a learning rule to a network: it then learns while it runs.

    Arguments:
        net: a :class:`traxon.Network`, or an unmodified ``brainstate.nn.Module`` /
            ``brainpy.state`` network (give ``input_size``; see :mod:`traxon.adapters`).
        algorithm: ``"es_d_rtrl"`` (default), ``"d_rtrl"``, ``"rtrl"``, ``"bptt"`` or an
            :class:`~traxon.trace.Algorithm` (e.g. ``traxon.trace.es_d_rtrl(decay=0.99)``).
        optimizer: any optax optimiser (default ``optax.adam(1e-3)``); learning-rate
            schedules are optax's own.
        loss: ``"cross_entropy"`` (integer targets), ``"mse"`` or ``fn(output, target) -> (B,)``.
        **options: ``update_every`` (int or ``"sequence"``, default 1), ``batch_reduction``
            (``"mean"``/``"sum"``), ``time_reduction`` (``"sum"``/``"mean"``),
            ``on_nonfinite`` (``"raise"``/``"skip"``), ``clip_norm``, ``sequence_length``
            (for BPTT with per-sequence updates), ``rate_target`` (Hz; turns on a firing-rate
            regulariser of strength ``rate_reg`` on a running rate over ``rate_tau`` ms),
            ``seed``, ``dtype``; for a brainstate module, ``input_size`` (the input
            channels per sample; read from the module when omitted) and ``call``
            (``call(module, x)`` runs one step when that is not ``module.update(x)``, e.g.
            ``lambda m, x: m.update(x * u.nA)``) or ``input_unit`` (the unit of its input,
            e.g. ``u.nA``: plain arrays are mantissas in it and Quantities are read in it),
            ``draw_initial_state`` (default ``True``: random initial values of the module's
            states are drawn anew for every sequence from the learner's key).

    Example:
        >>> import jax.numpy as jnp, optax, traxon
        >>> from traxon.core import LIF, Dense, Network, Population, Projection, Readout
        >>> net = Network(3, {"h": Population(LIF(), 8)}, [Projection("x", "h", Dense(3.0))],
        ...               readout=Readout("h", 2, tau=10.0))
        >>> learner = traxon.online_learner(net, "es_d_rtrl", optax.adam(1e-2))
        >>> for t in range(3):
        ...     metrics = learner.step(jnp.ones((2, 3)), jnp.array([0, 1]))
        >>> int(learner.state.updates)
        3
    """
    if not isinstance(net, Network):
        net = _adapt_module(
            net,
            options.pop("input_size", None),
            options.pop("call", None),
            options.pop("input_unit", None),
            options.pop("draw_initial_state", True),
        )
    return OnlineLearner(net, algorithm, optimizer, loss, **options)
