r"""Train an unmodified brainstate / ``brainpy.state`` network: the module -> the model contract.

:func:`adapt` reads the module's step (``module.update(x)``) as a jaxpr and finds, without
any change to the user's code:

* the **weights**: every ``ParamState`` leaf (``Linear``'s ``weight`` and ``bias`` are two
  weights) and the equation that applies it to a presynaptic signal -- a dense matmul, an
  element-wise product, a bias addition, or brainevent's fixed-connectivity kernels
  (``EventFixedProb``);
* the **populations**: groups of hidden states that interact element-wise within the step
  once every weight's output is held fixed (a LIF's ``V`` and the ``g`` of the ``Expon``
  synapses aligned to it; an ``align_pre`` trace and its presynaptic neurons);
* the **signal** each weight reads (an input, or a population's spikes of this step or of
  the previous one) and the **readout**: the population the module's output is read from.

The result, an :class:`AdaptedNetwork`, is a :class:`~traxon.core.Network`: every learning
rule, the learner, checkpoints and the benchmarks work on it unchanged. States are
identified by object identity. Units are stripped to mantissas for the maths and restored
when weights are written back (:meth:`AdaptedNetwork.write_back`). ``dt`` comes from
``brainstate.environ``; the environment's ``i`` and ``t`` advance every step, and
brainstate's random state is threaded through the network state.

What cannot be traced raises an error naming the module or the weight and saying what to do:
a weight whose output is not aligned to neurons, a transition coupling different neurons
(gap junctions), a weight entering non-linearly, a weight shared by several operations.

This module holds :class:`AdaptedNetwork` (the model contract over a module: its start
state, its step, its signals) and :func:`adapt`. The other jobs live beside it, one per
module: :mod:`~traxon.adapters._prepare` (batched states, the input size),
:mod:`~traxon.adapters._analysis` (reading the traced step),
:mod:`~traxon.adapters._build` (the populations, projections and weight ops made from it),
:mod:`~traxon.adapters._states` (the module's states: paths, batch axis, start values,
random resets), :mod:`~traxon.adapters._writeback` (reading and writing the weights),
:mod:`~traxon.adapters._sparse` and :mod:`~traxon.adapters._spikes` (brainevent
connectivity, spike functions), :mod:`~traxon.adapters._graph` (the jaxpr as a graph),
:mod:`~traxon.adapters._values` and :mod:`~traxon.adapters._keys` (values and keys).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from traxon._checks import check_positive_int
from traxon.adapters import _prepare, _sparse
from traxon.adapters._analysis import Analysis, StateLeaf
from traxon.adapters._build import build
from traxon.adapters._keys import ENV, GLOBAL, InputKey
from traxon.adapters._states import (
    DrawnReset,
    as_key_like,
    batch_of,
    initial_values,
    shortest_paths,
)
from traxon.adapters._values import (
    brainstate,
    is_quantity,
    is_random_state,
    leaf_keys,
    leaves,
    mantissa,
    state_kind,
)
from traxon.adapters._writeback import ModuleWeights
from traxon.core._deferred import DeferredWeight
from traxon.core.network import READOUT, Network

__all__ = ["AdaptedNetwork", "adapt"]


class AdaptedNetwork(Network):
    """A brainstate module seen through the model contract (build one with :func:`adapt`).

    ``params`` are the mantissas of the module's weights, keyed by their paths (for example
    ``"inp.comm.weight['weight']"``); the network state holds every population's states
    plus the environment's ``i``/``t`` and brainstate's random state.
    """

    def __init__(
        self,
        module: Any,
        input_size: int | None = None,
        call: Callable[[Any, Any], Any] | None = None,
        input_unit: Any = None,
        draw_initial_state: bool = True,
    ) -> None:
        bs = brainstate()
        import brainunit as u

        if not isinstance(module, bs.nn.Module):
            raise TypeError(
                f"`module` must be a brainstate.nn.Module; got {type(module).__name__}."
            )
        if input_unit is not None and not isinstance(input_unit, u.Unit):
            raise TypeError(
                f"`input_unit` must be a brainunit unit (e.g. u.nA); got {input_unit!r}."
            )
        if not isinstance(draw_initial_state, bool):
            raise TypeError(
                f"`draw_initial_state` must be True or False; got {draw_initial_state!r}."
            )
        self.input_unit = input_unit
        if call is None:
            call = (
                (lambda m, x: m.update(x * input_unit))
                if input_unit is not None
                else (lambda m, x: m.update(x))
            )
        _prepare.ensure_batched_states(module)
        if input_size is None:
            input_size = _prepare.infer_input_size(module, call, batch_of(module.states()))
        if isinstance(input_size, bool) or not isinstance(input_size, (int, np.integer)):
            raise TypeError(f"`input_size` must be an integer; got {input_size!r}.")
        if input_size < 1:
            raise ValueError(f"`input_size` must be positive; got {input_size}.")
        self.module = module
        _sparse.ensure_cpu_backend()  # brainevent's pure-JAX CPU kernels when numba is absent
        self.call = call
        self.n_in = int(input_size)
        try:
            dt = bs.environ.get_dt()
        except KeyError as err:
            raise ValueError(
                "brainstate.environ has no `dt`: call brainstate.environ.set(dt=...) before "
                "adapting the module."
            ) from err
        self.dt = float(dt / u.ms) if isinstance(dt, u.Quantity) else float(dt)
        # The environment when attached (dt may be set only in an environ.context).
        self.environment = {
            k: v for k, v in bs.environ.all().items() if k not in ("i", "t", "platform")
        }
        self.inputs = {"x": self.n_in}
        self.readout = None
        self.input_traces: dict[str, tuple] = {"x": ()}
        states = module.states()
        if not len(states):
            raise ValueError(
                "the module has no states: call brainstate.nn.init_all_states(module, "
                "batch_size) before adapting it."
            )
        self.paths, self.slots = shortest_paths(module)
        self.attached = {id(s): s for s in states.values()}
        self.attach_batch = batch_of(states)
        self.batched_states = [
            s
            for s in states.values()
            if state_kind(s) != "param"
            and leaves(s.value)
            and jnp.ndim(mantissa(leaves(s.value)[0])) >= 1
            and jnp.shape(mantissa(leaves(s.value)[0]))[0] == self.attach_batch
        ]
        self.start = initial_values(module, states, self.attach_batch, self.slots)
        self._resets: dict[int, DrawnReset] = {}
        #: Whether :meth:`init_state` given a key draws the module's random initial values
        #: anew (its ``reset_state`` reads brainstate's random state) -- the learner then
        #: passes one key per sequence.
        self.draws_initial_state = draw_initial_state and self._reset(self.attach_batch).draws
        self._analyses: dict[int, Analysis] = {}
        self._values: dict[str, Any] = {}
        self._decays: dict[str, dict[str, float]] = {}
        #: brainstate random states the step reads that belong to no submodule (the
        #: global one, drawn by noise and Poisson inputs), by id.
        self.random_states: dict[int, Any] = {}
        a = self.analysis(self.attach_batch)
        # A step that draws noise starts every sequence from a new key too.
        self.draws_initial_state = self.draws_initial_state or (
            draw_initial_state and any(is_random_state(lf.state) for lf in a.globals)
        )
        self.weights = ModuleWeights(module, a.params, self.paths)
        self._build_from(a)

    def as_inputs(self, x: Any, batch: int | None = None, leading: int = 0) -> dict[str, jax.Array]:
        """As :meth:`Network.as_inputs`; a brainunit Quantity is read in ``input_unit``."""
        if isinstance(x, Mapping):
            x = {k: self._in_unit(v) for k, v in x.items()}
        else:
            x = self._in_unit(x)
        return super().as_inputs(x, batch, leading)

    def _in_unit(self, x: Any) -> Any:
        """``x`` as a plain array: a Quantity read in ``input_unit`` (raises without one)."""
        if not is_quantity(x):
            return x
        if self.input_unit is None:
            import brainunit as u

            raise ValueError(
                f"the input is a Quantity in {u.get_unit(x)}, but the module was attached "
                "without `input_unit`: attach it with input_unit=<the unit its step takes "
                "its input in> (e.g. online_learner(module, ..., input_unit=u.nA)), or pass "
                "plain arrays."
            )
        return x.to_decimal(self.input_unit)

    def analysis(self, batch: int) -> Analysis:
        """The step traced at ``batch`` (cached); its structure must not depend on it."""
        if batch not in self._analyses:
            a = Analysis(self, int(batch))
            if self._analyses:
                ref = next(iter(self._analyses.values()))
                if sorted(a.pops) != sorted(ref.pops) or sorted(a.ops) != sorted(ref.ops):
                    raise ValueError(
                        f"the module's step has a different structure at batch size {batch}; "
                        "adapt it at the batch size you train with."
                    )
            self._analyses[int(batch)] = a
        return self._analyses[int(batch)]

    def sparse_connectivity(self) -> dict[str, _sparse.SparseConn]:
        """The connectivity of every sparse weight (by name), as first read (at the batch
        size the module was attached with): the steps traced at other batch sizes read the
        same index arrays, which :meth:`index_arrays` lists and the learner passes to its
        jitted steps as data."""
        if not self._analyses:
            return {}
        first = next(iter(self._analyses.values()))
        return {k: op.fixed for k, op in first.ops.items() if op.fixed is not None}

    def _build_from(self, a: Analysis) -> None:
        """Set the network's populations, projections and weight shapes from ``a``."""
        self.populations, self.projections, self.weight_shapes = build(self, a)
        self.order = tuple(self.populations)

    # ------------------------------------------------------------------------------
    # Values.

    def init_params(self, key: Any = None, dtype: Any = None) -> dict[str, jax.Array]:
        """The module's current weights (mantissas), keyed by path. ``key`` is unused."""
        return self.weights.read(dtype)

    def _reset(self, batch: int) -> DrawnReset:
        """The module's ``reset_state`` at ``batch`` as a function of a key (cached)."""
        if batch not in self._resets:
            self._resets[batch] = DrawnReset(
                self.module, self.batched_states, self.environment, self.slots, batch
            )
        return self._resets[batch]

    def initial_population(
        self,
        pop: str,
        batch: int,
        dtype: Any,
        drawn: Mapping[tuple[int, int], jax.Array] | None = None,
    ) -> dict[str, jax.Array]:
        """Population ``pop``'s states at the start of a sequence: the values the module's
        reset draws (``drawn``, one per sample, see :meth:`init_state`), else the first
        sample of its reset when attached, for every sample."""
        a = self.analysis(self.attach_batch)
        p = a.pops[pop]
        out = {}
        for lf in p.traced + p.aux:
            index = leaf_keys(lf.state.value).index(lf.key)
            if drawn is not None and (id(lf.state), index) in drawn:
                arr = drawn[(id(lf.state), index)]
            else:
                v = self.start[id(lf.state)][index]
                arr = jnp.broadcast_to(v[:1], (batch, *v.shape[1:]))
            if jnp.issubdtype(arr.dtype, jnp.floating) and dtype is not None:
                arr = arr.astype(dtype)
            out[lf.local_name] = jnp.asarray(arr)
        return out

    def batched_leaves(self, a: Analysis) -> list[StateLeaf]:
        """The leaves of ``a`` whose states carry a batch axis."""
        ids = {id(s) for s in self.batched_states}
        return [lf for lf in a.leaves if id(lf.state) in ids]

    def init_state(
        self, batch_size: int, dtype: Any = None, key: jax.Array | None = None
    ) -> dict[str, dict[str, jax.Array]]:
        """The network state at the start of a sequence of ``batch_size`` samples.

        Without ``key`` (or when :attr:`draws_initial_state` is false) every sample starts
        from the first sample of the module's reset when it was attached. With ``key``,
        a module whose ``reset_state`` draws random values (``V_initializer=
        braintools.init.Uniform(...)``) has them drawn anew from ``key``, one draw per
        sample, as its own ``reset_state`` would; brainstate's random state, when the
        step uses it, starts from the key too. The learner passes a new key for every
        sequence, split from its own (reproducible from its ``seed``).
        """
        check_positive_int(batch_size, "batch_size")
        dtype = dtype if dtype is not None else jnp.zeros(()).dtype
        drawn = (
            self._reset(int(batch_size))(key)
            if key is not None and self.draws_initial_state
            else None
        )
        state: dict[str, dict[str, jax.Array]] = {
            k: self.initial_population(k, int(batch_size), dtype, drawn) for k in self.populations
        }
        a = self.analysis(self.attach_batch)
        if a.globals:
            glob = {}
            batched = {id(lf.state) for lf in self.batched_leaves(a)}
            for n, lf in enumerate(a.globals):
                index = leaf_keys(lf.state.value).index(lf.key)
                # `drawn` is given when this start is drawn from `key`.
                if (
                    key is not None
                    and drawn is not None
                    and is_random_state(lf.state)
                    and (id(lf.state), index) not in drawn
                ):
                    # A random state the reset does not draw from: its own key.
                    v = as_key_like(
                        jax.random.fold_in(key, 1 << 20 | n), self.start[id(lf.state)][index]
                    )
                    glob[lf.local_name] = jnp.broadcast_to(v, (batch_size, *jnp.shape(v)))
                    continue
                if drawn is not None and (id(lf.state), index) in drawn:
                    v = drawn[(id(lf.state), index)]
                    if id(lf.state) not in batched:
                        v = jnp.broadcast_to(v, (batch_size, *jnp.shape(v)))
                    glob[lf.local_name] = v
                    continue
                v = self.start[id(lf.state)][index]
                if id(lf.state) in batched:
                    v = v[0]
                glob[lf.local_name] = jnp.broadcast_to(v, (batch_size, *jnp.shape(v)))
            state[GLOBAL] = glob
        state[ENV] = {
            "i": jnp.zeros((batch_size,), jnp.int32),
            "t": jnp.zeros((batch_size,), dtype),
        }
        return state

    def batch_size(self, state: Mapping[str, Any]) -> int:
        """The batch size of a network state."""
        return int(state[ENV]["i"].shape[0])

    # ------------------------------------------------------------------------------
    # The step.

    def _inputs(
        self, a: Analysis, params: Mapping[str, Any], state: Mapping[str, Any], x: Any
    ) -> dict[int, Any]:
        """The values of the traced step's inputs: the input ``x``, the environment's
        ``i``/``t``, the weights and every state, in the dtypes the step was traced with."""
        g = a.graph
        values: dict[int, Any] = {a.x_id: jnp.asarray(x).astype(g.dtype(a.x_id))}
        values[a.i_id] = state[ENV]["i"][0].astype(g.dtype(a.i_id))
        values[a.t_id] = state[ENV]["t"][0].astype(g.dtype(a.t_id))
        for name, lf in a.params.items():
            values[lf.in_id] = params[name].astype(g.dtype(lf.in_id))
        for pop in a.pops.values():
            for lf in pop.traced + pop.aux:
                values[lf.in_id] = state[pop.name][lf.local_name].astype(g.dtype(lf.in_id))
        batched = {id(lf.state) for lf in self.batched_leaves(a)}
        for lf in a.globals:
            v = state[GLOBAL][lf.local_name]
            values[lf.in_id] = (v if id(lf.state) in batched else v[0]).astype(g.dtype(lf.in_id))
        return values

    def forward(
        self,
        params: Mapping[str, jax.Array],
        state: Mapping[str, Any],
        x: Mapping[str, jax.Array],
        perturb: Mapping[str, Mapping[str, jax.Array]] | None = None,
        sever: frozenset[str] = frozenset(),
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """One step of the module (see :meth:`traxon.core.Network.forward`): the new state
        and the step's internals (every weight's input ``u`` and presynaptic signal ``z``,
        every population's signals), by evaluating the traced step; ``perturb`` adds to
        signals (the learning signal's probe), ``sever`` stops the gradient through the
        named weights' outputs."""
        xs = x["x"]
        a = self.analysis(xs.shape[0])
        g = a.graph
        params, delta = _deferred_products(a, params)
        values = self._inputs(a, params, state, xs)
        for pop_name, sigs in (perturb or {}).items():
            for sig, d in sigs.items():
                if pop_name == READOUT and sig == "spike":
                    delta[a.y_id] = _plus(delta.get(a.y_id), d)
                elif sig in a.pops[pop_name].signals:
                    i = a.pops[pop_name].signals[sig]
                    d = d.astype(g.dtype(i)) if jnp.issubdtype(g.dtype(i), jnp.floating) else d
                    delta[i] = _plus(delta.get(i), d)
        targets: list[Any] = [a.y_id]
        for pop in a.pops.values():
            targets += [lf.out_id for lf in pop.traced + pop.aux]
        targets += [lf.out_id for lf in a.globals]
        record = {op.u_id for op in a.ops.values()}
        record |= {op.z_id for op in a.ops.values() if op.z_id is not None}
        record |= {i for pop in a.pops.values() for i in pop.ext}
        record |= {i for pop in a.pops.values() for i in pop.signals.values()}
        outs, rec = g.evaluate(values, targets, perturb=delta, record=sorted(record))
        y = outs[0]
        cursor = 1
        new_state: dict[str, Any] = {}
        dtype = state[ENV]["t"].dtype
        for pop in a.pops.values():
            entry = {}
            for lf in pop.traced + pop.aux:
                v = outs[cursor]
                cursor += 1
                entry[lf.local_name] = jnp.asarray(v).astype(state[pop.name][lf.local_name].dtype)
            new_state[pop.name] = entry
        if a.globals:
            glob = {}
            for lf in a.globals:
                v = jnp.asarray(outs[cursor])
                cursor += 1
                old = state[GLOBAL][lf.local_name]
                glob[lf.local_name] = jnp.broadcast_to(v, old.shape).astype(old.dtype)
            new_state[GLOBAL] = glob
        # t = i dt, as brainstate's loops set it (`environ.context(i=i, t=i * dt)`), not a
        # running sum of dt: a refractory period (`t - last_spike_time < tau_ref`) ends at
        # the step the module's own loop ends it, and t does not drift over long runs.
        i = state[ENV]["i"] + 1
        new_state[ENV] = {"i": i, "t": i.astype(state[ENV]["t"].dtype) * self.dt}
        us: dict[str, dict[str, jax.Array]] = {p: {} for p in a.pops}
        zs: dict[str, jax.Array] = {}
        batch = xs.shape[0]
        for op in a.ops.values():
            u = rec[op.u_id].astype(dtype)
            u = jnp.broadcast_to(u, (batch, u.shape[-1]))  # a bias may be (1, N)
            if op.name in sever:
                u = jax.lax.stop_gradient(u)
            us[op.target][InputKey.weight(op.name).label] = u
            zs[op.name] = (
                jnp.ones((batch, 1), dtype) if op.z_id is None else rec[op.z_id].astype(dtype)
            )
        for pop in a.pops.values():
            for i in pop.ext:
                us[pop.name][InputKey.external(i).label] = rec[i]
        signals = {
            pop.name: {s: rec[i].astype(dtype) for s, i in pop.signals.items()}
            for pop in a.pops.values()
        }
        signals[READOUT]["spike"] = jnp.asarray(y).astype(dtype)
        for pop in a.pops.values():
            if pop.spike is not None and pop.name != READOUT:
                signals[pop.name]["spike"] = pop.spike(new_state[pop.name]).astype(dtype)
            elif "spike" not in signals[pop.name]:
                full = [s for s, i in pop.signals.items() if g.shape(i) == (batch, pop.size)]
                signals[pop.name]["spike"] = (
                    signals[pop.name][full[0]]
                    if full
                    else self.population_signals(pop.name, new_state[pop.name])["spike"]
                )
        return new_state, {"u": us, "z": zs, "signals": signals, "prev_signals": {}}

    def transition(
        self, pop: str, state: Mapping[str, jax.Array], u: Mapping[str, jax.Array]
    ) -> dict[str, jax.Array]:
        """One step of population ``pop``'s states given its inputs ``u`` (by
        :class:`~traxon.adapters._keys.InputKey` label; an input not given is zero): the
        states' part of the traced step."""
        batch = next(iter(state.values())).shape[0]
        a = self.analysis(batch)
        p = a.pops[pop]
        g = a.graph
        values = {
            lf.in_id: state[lf.local_name].astype(g.dtype(lf.in_id)) for lf in p.traced + p.aux
        }
        overrides = {}
        for name in p.ops:  # an input not given is zero (the element-wise probe gives none)
            op = a.ops[name]
            ui = u.get(InputKey.weight(name).label, jnp.zeros((batch, p.size), g.dtype(op.raw_id)))
            overrides[op.raw_id] = op.to_raw(ui).astype(g.dtype(op.raw_id))
        for i in p.ext:
            overrides[i] = u.get(
                InputKey.external(i).label, jnp.zeros((batch, *g.shape(i)[1:]), g.dtype(i))
            )
        targets = [lf.out_id for lf in p.traced + p.aux]
        try:
            outs, _ = g.evaluate(values, targets, overrides=overrides)
        except KeyError as err:
            raise ValueError(
                f"population `{pop}`'s transition reads values traxon did not identify ({err}); "
                "this module's structure is not supported."
            ) from err
        return {
            lf.local_name: jnp.asarray(v).astype(state[lf.local_name].dtype)
            for lf, v in zip(p.traced + p.aux, outs, strict=True)
        }

    def population_signals(self, pop: str, state: Mapping[str, Any]) -> dict[str, jax.Array]:
        """This step's signals of a population as functions of its (new) state.

        ``"spike"`` is the population's full-width signal: one it sends within the step, or
        the one it sends to the next step read off the given state.
        """
        batch = next(iter(state.values())).shape[0]
        a = self.analysis(batch)
        p = a.pops[pop]
        g = a.graph
        dtype = next(iter(state.values())).dtype
        as_new = {
            lf.out_id: state[lf.local_name].astype(g.dtype(lf.in_id))
            for lf in p.traced + p.aux
            if isinstance(lf.out_id, int)
        }
        as_old = {
            lf.in_id: state[lf.local_name].astype(g.dtype(lf.in_id)) for lf in p.traced + p.aux
        }
        names = list(p.signals)
        ids = [p.signals[n] for n in names]
        if pop == READOUT:
            names.append("spike")
            ids.append(a.y_id)
        out: dict[str, jax.Array] = {}
        try:
            if ids:
                vals, _ = g.evaluate(as_new, ids)
                out = {n: jnp.asarray(v).astype(dtype) for n, v in zip(names, vals, strict=True)}
            if pop != READOUT:
                full = [n for n in names if g.shape(p.signals[n]) == (batch, p.size)]
                if p.spike is not None:
                    out["spike"] = p.spike(state).astype(dtype)
                elif full:
                    out["spike"] = out[full[0]]
                else:
                    prev = [
                        op.z_id
                        for op in a.ops.values()
                        if op.source == pop
                        and op.delay == 1
                        and op.z_id is not None
                        and g.shape(op.z_id) == (batch, p.size)
                    ]
                    if prev:
                        (v,), _ = g.evaluate(as_old, [prev[0]])
                        out["spike"] = jnp.asarray(v).astype(dtype)
                    else:
                        out["spike"] = jnp.zeros((batch, p.size), dtype)
            # What the weights that read this population at the start of the next step read
            # (``prev:`` signals): functions of the given state as the step's old one.
            later = {
                op.signal: op.z_id
                for op in a.ops.values()
                if op.source == pop and op.delay == 1 and op.z_id is not None
            }
            for name, z_id in later.items():
                try:
                    (v,), _ = g.evaluate(as_old, [z_id])
                except KeyError:  # it reads more than this population's state: not given
                    continue
                out[name] = jnp.asarray(v).astype(dtype)
        except KeyError as err:
            raise ValueError(
                f"a signal of population `{pop}` is not a function of its state alone ({err})."
            ) from err
        return out

    def signals(self, state: Mapping[str, Any]) -> dict[str, dict[str, jax.Array]]:
        """Every population's signals as functions of its state."""
        return {k: self.population_signals(k, state[k]) for k in self.populations}

    # ------------------------------------------------------------------------------
    def measured_decays(self, pop: str) -> dict[str, float]:
        """Per-step decay of each traced variable, read off the per-neuron Jacobian at rest."""
        if pop not in self._decays:
            plan = self.populations[pop]
            a = self.analysis(1)
            dtype = a.graph.dtype(a.pops[pop].traced[0].in_id)
            state = plan.init(1, dtype)
            zero = jnp.zeros((1, plan.size), dtype)
            u = {InputKey.weight(n).label: zero for n in a.pops[pop].ops}
            for i in a.pops[pop].ext:
                u[InputKey.external(i).label] = jnp.zeros(a.graph.shape(i), a.graph.dtype(i))
            names = plan.traced
            diag = {}
            for k, n in enumerate(names):
                tangent = {m: jnp.zeros_like(v) for m, v in state.items()}
                tangent[n] = jnp.ones_like(state[n])

                def f(st: Any) -> Any:
                    return plan.transition({**state, **st}, u, self.dt)

                _, out = jax.jit(lambda p, t: jax.jvp(f, (p,), (t,)))(
                    {m: state[m] for m in names}, {m: tangent[m] for m in names}
                )
                diag[n] = float(np.clip(np.mean(np.asarray(out[n])), 0.0, 1.0))
                del k
            self._decays[pop] = diag
        return self._decays[pop]

    # ------------------------------------------------------------------------------
    def write_back(self, params: Mapping[str, jax.Array]) -> None:
        """Write weights into the module's ``ParamState`` objects, units restored."""
        self.weights.write(params)

    def as_module_weights(self, values: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        """``values`` keyed by the network's weights (its parameters, or their gradients)
        keyed by the module's: a weight the adapter split into blocks (one ``Linear`` on
        ``concatenate([x, h])``, or feeding several gates, as in ``LSTMCell``) assembled
        from them. Blocks are named after the module's weight and their rows and columns
        (``"cell.W.weight['weight'][6:16, 10:20]"``).

        Example:
            >>> whole = learner.net.as_module_weights(learner.params)  # doctest: +SKIP
            >>> whole["cell.W.weight['weight']"].shape                 # doctest: +SKIP
            (16, 40)
        """
        return self.weights.whole(values)

    def changed_params(self) -> list[str]:
        """Weights whose module value is not the one :meth:`write_back` last wrote."""
        return self.weights.changed()

    def value_state(self, path: str, shape: tuple[int, ...], dtype: Any) -> Any:
        """The state that stands for a value of the step that is no state of the module (the
        module's output when it is a weight's output, or a weight's input computed from
        other weights' outputs; :meth:`Analysis._stateless_values`), by its path: made once,
        zero at the start of every sequence (nothing reads its previous value)."""
        if path not in self._values:
            import brainstate

            zeros = jnp.zeros((self.attach_batch, *shape), dtype)
            state = brainstate.HiddenState(zeros)
            self.paths[id(state)] = path
            self.start[id(state)] = [zeros]
            self._values[path] = state
        return self._values[path]

    def adopt_random_state(self, state: Any) -> None:
        """Carry ``state``, a brainstate random state the step reads that belongs to no
        submodule (``brainstate.random``'s global one), in the network state: its start
        value is its value now, or one drawn from the key of :meth:`init_state`."""
        name = (
            "random" if "random" not in self.paths.values() else f"random#{len(self.random_states)}"
        )
        self.paths[id(state)] = name
        self.random_states[id(state)] = state
        self.start[id(state)] = [jnp.asarray(v) for v in leaves(state.value)]

    def check_attached(self) -> None:
        """Raise if the module's weights were replaced since they were attached."""
        self.weights.check()

    def adopt_params(self, params: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        """``params`` with every weight the user assigned in the module since the learner
        last wrote it (in ``params``' dtype); raises if the module's weights were replaced
        (:meth:`check_attached`). The learner calls it before each step."""
        self.check_attached()
        changed = self.changed_params()
        if not changed:
            return dict(params)
        current = self.init_params(dtype=next(iter(params.values())).dtype)
        return {**params, **{k: current[k] for k in changed}}


def adapt(
    module: Any,
    input_size: int | None = None,
    call: Callable[[Any, Any], Any] | None = None,
    input_unit: Any = None,
    draw_initial_state: bool = True,
) -> AdaptedNetwork:
    """Read a brainstate module's step into the model contract (see the module docstring).

    Arguments:
        module: a ``brainstate.nn.Module`` whose ``update(x)`` returns the readout's
            output. Its states are initialised with a batch axis if they are not
            (``brainstate.nn.init_all_states(module, batch_size=1)``); any batch size
            works afterwards.
        input_size: the number of input channels per sample (default: the first input
            size declared by the module's layers with which its step traces).
        call: ``call(module, x)`` when one step is not ``module.update(x)``.
        input_unit: the brainunit unit the module takes its input in (e.g. ``u.nA``): the
            step is ``module.update(x * input_unit)`` and Quantities given to the learner
            are read in this unit. Plain arrays are taken as mantissas in it.
        draw_initial_state: when the module's ``reset_state`` draws random values
            (``V_initializer=braintools.init.Uniform(...)``), draw them anew for every
            sequence from the learner's key, one draw per sample, as brainstate's
            ``reset_state`` does (default); ``False``: every sequence and sample starts
            from the first sample of the draw made when attaching.

    Example:
        >>> import brainstate, brainunit as u, brainpy.state as bps  # doctest: +SKIP
        >>> net = traxon.adapters.adapt(my_module, input_size=40)    # doctest: +SKIP
    """
    return AdaptedNetwork(module, input_size, call, input_unit, draw_initial_state)


def _deferred_products(
    a: Analysis, params: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[int, Any]]:
    """``params`` with each :class:`~traxon.core._deferred.DeferredWeight` replaced by its
    base, and the perturbations that add its held updates where the module's matmul
    produces its output: ``(z Pᵀ) Q`` from the signal the weight reads (only plain matmuls,
    ``u = z W``, are given as such; see ``es_d_rtrl``'s ``update_steps``)."""
    plain: dict[str, Any] = dict(params)
    delta: dict[int, Any] = {}
    for name, w in params.items():
        if not isinstance(w, DeferredWeight):
            continue
        op = a.ops[name]
        assert op.z_id is not None  # a plain matmul reads a signal
        plain[name] = w.base
        dtype = a.graph.dtype(op.raw_id)

        def held(env: Mapping[int, Any], z_id: int = op.z_id, w: Any = w, op: Any = op) -> Any:
            return op.to_raw(w.held(env[z_id])).astype(dtype)

        delta[op.raw_id] = _plus(delta.get(op.raw_id), held)
    return plain, delta


def _plus(a: Any, b: Any) -> Any:
    """The sum of two perturbations of one value (arrays or callables of the values known;
    see ``Graph.evaluate``); ``a`` may be ``None``."""
    if a is None:
        return b
    if not (callable(a) or callable(b)):
        return a + b

    def both(env: Mapping[int, Any]) -> Any:
        return (a(env) if callable(a) else a) + (b(env) if callable(b) else b)

    return both
