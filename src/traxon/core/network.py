r"""Network composition: inputs, populations, projections and a readout.

A :class:`Network` is configuration only; its numbers live in two pytrees:

* ``params`` -- ``{projection name: weight array}``, the trainable weights;
* ``state`` -- ``{population or input name: {variable: (B, N) array}}``.

One step (:meth:`Network.step`) follows the model contract of ``docs/concepts.md``:

1. presynaptic signals ``z``: an input, a population's spikes of this step (``delay=0``)
   or of the previous step (``delay=1``), or an AlignPre synaptic trace;
2. weight ops ``u = op(W, z)``, summed per postsynaptic channel;
3. the element-wise transition of every population, in dependency order;
4. the readout, a :class:`~traxon.core.LeakyIntegrator` population named ``"readout"``.

:meth:`Network.simulate` runs many steps as one ``lax.scan``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from traxon._checks import (
    check_finite,
    check_positive,
    check_positive_int,
    is_concrete,
    to_float,
)
from traxon._module import Module, static
from traxon.core._deferred import DeferredWeight
from traxon.core.neurons import LeakyIntegrator, Neuron
from traxon.core.ops import (
    Bias,
    Dense,
    WeightOp,
    bind_indices,
    index_arrays,
    index_values,
    indices_bound,
)
from traxon.core.synapses import Delta, Synapse

__all__ = ["Network", "Population", "Projection", "Readout", "SimulationResult"]

READOUT = "readout"
ONE = "__one__"  # the constant signal a Bias op reads


class Population(Module):
    """``size`` neurons of one model.

    Example:
        >>> from traxon.core import LIF, Population
        >>> Population(LIF(tau=20.0), 100).size
        100
    """

    neuron: Neuron
    size: int = static(default=1)

    def __post_init__(self) -> None:
        if not isinstance(self.neuron, Neuron):
            raise TypeError(f"`neuron` must be a traxon Neuron; got {type(self.neuron).__name__}.")
        object.__setattr__(self, "size", check_positive_int(self.size, "size"))
        self.check_parameters()

    def check_parameters(self, name: str | None = None) -> None:
        """Raise unless every neuron parameter is one value or one per neuron (``size``)."""
        kind = type(self.neuron).__name__
        where = f"population `{name}`" if name else "a population"
        for path, leaf in jax.tree_util.tree_leaves_with_path(self.neuron):
            shape = tuple(np.shape(leaf))
            if shape in ((), (1,), (self.size,)):
                continue
            label = "neuron" + jax.tree_util.keystr(path)
            raise ValueError(
                f"{where} of {self.size} {kind} neurons has `{label}` of shape {shape}; give "
                f"one value, or one per neuron: shape ({self.size},)."
            )


class Projection(Module):
    """Weights from a ``source`` (input or population) to a ``target`` population.

    Arguments:
        source: name of an input or a population.
        target: name of a population.
        op: the weight op (:class:`~traxon.core.Dense` by default).
        synapse: kinetics (:class:`~traxon.core.Expon`, ...). ``None`` sends ``op(W, z)`` as an
            instantaneous current; :class:`~traxon.core.Delta` adds it to the membrane
            potential directly.
        align: ``"post"`` (one synapse state per target neuron) or ``"pre"`` (one per source
            neuron; the target receives ``W`` times the filtered presynaptic signal).
        delay: ``0`` reads the source's spikes of this step, ``1`` those of the previous step
            (required for recurrent loops).
        reversal: reversal potential (mV) for conductance-based input
            ``I = g (E - V)``; ``None`` for current-based input.
        name: key of the weight in ``params`` (default ``"source->target"``).
        trainable: whether the learning rules compute a gradient for this weight.
        signal: what the projection reads from a source population: ``"spike"`` (the
            default: the neuron's output, spikes or a graded neuron's rate ``f(V)``) or the
            name of one of its state variables, e.g. ``"V"`` for the membrane potential.
            Inputs have one signal, their values.
        port: the gate the projection feeds when the target is a gated cell
            (:class:`~traxon.core.GRU`, :class:`~traxon.core.MinGRU`): one of its ``gates``
            (e.g. ``"z"``). Projections onto the same gate are summed; a gate with none gets
            zero. Leave it ``None`` for other targets.
        event: ``"auto"`` (the default) turns on the op's event-driven forward when the
            projection reads a spiking population's spikes (binary: only the rows of
            neurons that spiked are read), where it was measured to pay (``Dense`` with at
            least 64 targets, ``FixedOutDegree``; capacity and rule:
            :func:`~traxon.core.ops.auto_max_active`); ``"off"`` keeps the op as given (an
            op's own ``max_active`` is always kept). Values and gradients are the same
            either way.

    Example:
        >>> from traxon.core import Dense, Expon, Projection
        >>> Projection("hidden", "hidden", Dense(gain=0.5), synapse=Expon(5.0), delay=1).delay
        1
    """

    source: str = static(default="")
    target: str = static(default="")
    op: WeightOp = dataclasses.field(default_factory=Dense)
    synapse: Synapse | None = None
    align: str = static(default="post")
    delay: int = static(default=0)
    reversal: float | None = static(default=None)
    name: str | None = static(default=None)
    trainable: bool = static(default=True)
    signal: str = static(default="spike")
    port: str | None = static(default=None)
    event: str = static(default="auto")

    def __post_init__(self) -> None:
        _check_event(self.event, "event")
        if self.port is not None and (not isinstance(self.port, str) or not self.port):
            raise TypeError(
                "`port` must be None or the name of a gate of the target cell (e.g. 'z'); "
                f"got {self.port!r}."
            )
        if not isinstance(self.signal, str) or not self.signal:
            raise TypeError(
                "`signal` must be 'spike' or the name of a state variable of the source "
                f"neuron (e.g. 'V'); got {self.signal!r}."
            )
        if self.align not in ("post", "pre"):
            raise ValueError(f"`align` must be 'post' or 'pre'; got {self.align!r}.")
        if (
            isinstance(self.delay, (bool, np.bool_))
            or not isinstance(self.delay, (int, np.integer))
            or self.delay not in (0, 1)
        ):
            raise ValueError(f"`delay` must be 0 or 1; got {self.delay!r}.")
        object.__setattr__(self, "delay", int(self.delay))
        if not isinstance(self.op, WeightOp):
            raise TypeError(f"`op` must be a traxon WeightOp; got {type(self.op).__name__}.")
        if self.synapse is not None and not isinstance(self.synapse, Synapse):
            raise TypeError(
                f"`synapse` must be a traxon Synapse or None; got {type(self.synapse).__name__}."
            )
        if self.align == "pre" and (self.synapse is None or isinstance(self.synapse, Delta)):
            raise ValueError(
                "`align='pre'` needs a synapse with state (Expon, Alpha, DualExpon); "
                f"got {self.synapse!r}."
            )
        if self.reversal is not None:
            object.__setattr__(self, "reversal", float(to_float(self.reversal, None, "reversal")))


class Readout(Module):
    r"""A non-spiking readout :math:`y_t = \kappa y_{t-1} + \sum_k W_k z_{k,t} + b`.

    Arguments:
        sources: population name(s) whose spikes (this step) the readout reads.
        size: number of outputs.
        tau: readout time constant (ms); ``None`` with ``kappa=None`` means instantaneous.
        kappa: decay per step, instead of ``tau``.
        bias: add a trainable bias.
        gain: initial weight scale (see :class:`~traxon.core.Dense`).

    Example:
        >>> from traxon.core import Readout
        >>> Readout("hidden", 2, tau=20.0).size
        2
    """

    sources: Any = static(default=())
    size: int = static(default=1)
    tau: float | None = static(default=None)
    kappa: float | None = static(default=None)
    bias: bool = static(default=True)
    gain: float = static(default=1.0)

    def __post_init__(self) -> None:
        if isinstance(self.sources, str):
            object.__setattr__(self, "sources", (self.sources,))
        object.__setattr__(self, "sources", tuple(self.sources))
        if not self.sources:
            raise ValueError("`sources` must name at least one population.")
        object.__setattr__(self, "size", check_positive_int(self.size, "size"))
        if self.tau is not None and self.kappa is not None:
            raise ValueError("Give `tau` or `kappa` for the readout, not both.")

    def neuron(self) -> LeakyIntegrator:
        if self.tau is not None:
            return LeakyIntegrator(tau=self.tau)
        return LeakyIntegrator(kappa=0.0 if self.kappa is None else self.kappa)


# --------------------------------------------------------------------------------------
# Resolved structure (built once by Network).


@dataclasses.dataclass(frozen=True)
class Channel:
    """A postsynaptic input channel of a population: where projections' ``u`` arrives."""

    id: str
    kind: str  # "current", "jump", "synapse" or "gate"
    synapse: Synapse | None
    reversal: float | None
    port: str | None = None  # the gate of a gated cell this channel feeds (kind "gate")

    def state_names(self) -> tuple[str, ...]:
        if self.kind != "synapse":
            return ()
        return tuple(f"{self.id}.{n}" for n in self.synapse.state_names)  # type: ignore[union-attr]


@dataclasses.dataclass(frozen=True)
class PreTrace:
    """An AlignPre synaptic trace held by the presynaptic population (or input)."""

    id: str
    synapse: Synapse

    def state_names(self) -> tuple[str, ...]:
        return tuple(f"{self.id}.{n}" for n in self.synapse.state_names)


def _sub(state: Mapping[str, jax.Array], prefix: str, names: Sequence[str]) -> dict:
    return {n: state[f"{prefix}.{n}"] for n in names}


@dataclasses.dataclass(frozen=True)
class PopulationPlan:
    """A population with its synapse channels and presynaptic traces resolved."""

    name: str
    neuron: Neuron
    size: int
    channels: tuple[Channel, ...]
    pre_traces: tuple[PreTrace, ...]
    state_signals: tuple[str, ...] = ()  # state variables that projections read

    @property
    def traced(self) -> tuple[str, ...]:
        """Names of the differentiable state variables, in trace order (the S axis)."""
        names = list(self.neuron.state_names)
        for ch in self.channels:
            names += ch.state_names()
        for tr in self.pre_traces:
            names += tr.state_names()
        return tuple(names)

    @property
    def aux(self) -> tuple[str, ...]:
        return tuple(self.neuron.aux_names)

    def init(self, batch: int, dtype: Any) -> dict[str, jax.Array]:
        shape = (batch, self.size)
        state = dict(self.neuron.init(shape, dtype))
        for ch in self.channels:
            if ch.kind == "synapse":
                for k, v in ch.synapse.init(shape, dtype).items():  # type: ignore[union-attr]
                    state[f"{ch.id}.{k}"] = v
        for tr in self.pre_traces:
            for k, v in tr.synapse.init(shape, dtype).items():
                state[f"{tr.id}.{k}"] = v
        return state

    def signals(self, state: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        """Output signals: ``"spike"`` (or the value, for non-spiking models), traces and
        the state variables that projections read (``Projection(signal=...)``)."""
        neuron_state = {k: state[k] for k in (*self.neuron.state_names, *self.aux)}
        out = {"spike": self.neuron.output(neuron_state)}
        for k in self.state_signals:
            out[k] = state[k]
        for tr in self.pre_traces:
            out[tr.id] = tr.synapse.output(_sub(state, tr.id, tr.synapse.state_names))
        return out

    def transition(
        self, state: Mapping[str, jax.Array], u: Mapping[str, jax.Array], dt: float
    ) -> dict[str, jax.Array]:
        """One element-wise step of every neuron: channels, membrane, then AlignPre traces."""
        new: dict[str, jax.Array] = {}
        v_prev = state[self.neuron.state_names[0]]
        current: Any = 0.0
        jump: Any = 0.0
        for ch in self.channels:
            inp = u[ch.id]
            if ch.kind == "jump":
                jump = jump + inp
                continue
            if ch.kind == "synapse":
                syn = ch.synapse
                syn_new = syn.update(_sub(state, ch.id, syn.state_names), inp, dt)  # type: ignore[union-attr]
                new.update({f"{ch.id}.{k}": v for k, v in syn_new.items()})
                inp = syn.output(syn_new)  # type: ignore[union-attr]
            current = current + (inp if ch.reversal is None else inp * (ch.reversal - v_prev))
        neuron_state = {k: state[k] for k in (*self.neuron.state_names, *self.aux)}
        gates = _gates(self.neuron)
        if gates:  # a gated cell: each channel is one gate's input, the others are zero
            by_port = {ch.port: u[ch.id] for ch in self.channels}
            inputs = {g: by_port.get(g, jnp.zeros_like(v_prev)) for g in gates}
            new.update(self.neuron.update_gates(neuron_state, inputs, dt))  # type: ignore[attr-defined]
        else:
            new.update(self.neuron.update(neuron_state, current, jump, dt))
        if self.pre_traces:
            spike = self.neuron.output({k: new[k] for k in neuron_state})
            for tr in self.pre_traces:
                tr_new = tr.synapse.update(_sub(state, tr.id, tr.synapse.state_names), spike, dt)
                new.update({f"{tr.id}.{k}": v for k, v in tr_new.items()})
        return new


@dataclasses.dataclass(frozen=True)
class ProjectionPlan:
    """A projection with its endpoints resolved."""

    name: str
    source: str
    signal: str  # which output of the source: "spike", a PreTrace id, "x" for inputs
    target: str
    channel: str
    op: WeightOp
    delay: int
    n_in: int
    n_out: int
    trainable: bool
    from_input: bool
    port: str | None = None  # the gate fed, for a target that is a gated cell


class SimulationResult(NamedTuple):
    """What :meth:`Network.simulate` returns.

    Attributes:
        state: the final state.
        outputs: per-step readout values, ``(T, B, n_out)`` (or ``None`` without readout).
        record: ``{population: {variable: (T, B, N)}}`` for the recorded variables
            (``"spike"`` for spikes, or any state variable name such as ``"V"``), or the
            values of a ``record`` function stacked over time.
    """

    state: Any
    outputs: Any
    record: Any


class Network:
    r"""A spiking network: inputs, populations, projections and an optional readout.

    Arguments:
        inputs: ``{name: size}`` of external inputs (or one ``int`` for a single input ``"x"``).
        populations: ``{name: Population}``.
        projections: a sequence of :class:`Projection`.
        readout: a :class:`Readout`, added as a population named ``"readout"``.
        dt: time step (ms).
        event: ``"auto"`` (the default): every projection that reads a spiking population's
            spikes uses its op's event-driven forward (see :class:`Projection`'s ``event``);
            ``"off"``: no projection does (the ops run as given).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from traxon.core import LIF, Dense, Expon, Network, Population, Projection, Readout
        >>> net = Network(
        ...     inputs=3,
        ...     populations={"hidden": Population(LIF(), 8)},
        ...     projections=[
        ...         Projection("x", "hidden", Dense(gain=2.0), synapse=Expon(5.0)),
        ...         Projection("hidden", "hidden", Dense(), synapse=Expon(5.0), delay=1),
        ...     ],
        ...     readout=Readout("hidden", 2, tau=20.0),
        ... )
        >>> params, state = net.init(jax.random.PRNGKey(0), batch_size=4)
        >>> state, y = net.step(params, state, jnp.ones((4, 3)))
        >>> y.shape
        (4, 2)
    """

    def __init__(
        self,
        inputs: Mapping[str, int] | int,
        populations: Mapping[str, Population],
        projections: Sequence[Projection],
        readout: Readout | None = None,
        dt: float = 1.0,
        event: str = "auto",
    ) -> None:
        _check_event(event, "event")
        self.event = event
        self.dt = float(to_float(dt, "ms", "dt"))
        check_positive(self.dt, "dt")
        self.inputs: dict[str, int] = (
            {"x": inputs} if isinstance(inputs, (int, np.integer)) else dict(inputs)
        )
        for name, n in self.inputs.items():
            if not _is_count(n):
                raise ValueError(f"input `{name}` must have a positive integer size; got {n!r}.")
        self.inputs = {name: int(n) for name, n in self.inputs.items()}
        if not isinstance(populations, Mapping):
            raise TypeError(
                "`populations` must map names to Population(neuron, size); got "
                f"{type(populations).__name__}."
            )
        pops = dict(populations)
        for name, pop in pops.items():
            if not isinstance(pop, Population):
                raise TypeError(
                    f"population `{name}` must be a traxon Population; got {type(pop).__name__}."
                )
            pop.check_parameters(name)
        projs = list(projections)
        for i, proj in enumerate(projs):
            if not isinstance(proj, Projection):
                hint = (
                    " `Network.projections` holds the resolved plans, not Projections: "
                    "rebuild a network with `net.rebuild(...)`, or from `net.spec`."
                    if isinstance(proj, ProjectionPlan)
                    else ""
                )
                got = type(proj).__name__
                raise TypeError(f"projection {i} must be a traxon Projection; got {got}." + hint)
        # The arguments this network was built from (`rebuild` changes some of them).
        self.spec: dict[str, Any] = {
            "inputs": dict(self.inputs),
            "populations": dict(pops),
            "projections": tuple(projs),
            "readout": readout,
            "dt": dt,
            "event": event,
        }
        self.readout = readout
        if readout is not None:
            if READOUT in pops:
                raise ValueError(f"`{READOUT}` is reserved for the readout population.")
            pops[READOUT] = Population(readout.neuron(), readout.size)
            for src in readout.sources:
                projs.append(
                    Projection(src, READOUT, Dense(gain=readout.gain), name=f"{src}->{READOUT}")
                )
            if readout.bias:
                projs.append(Projection(ONE, READOUT, Bias(), name=f"{READOUT}.bias"))
        if not pops:
            raise ValueError(
                "the network has no population: `populations` is empty and there is no "
                'readout. Give at least one, e.g. {"h": Population(LIF(), 100)}.'
            )
        clash = set(self.inputs) & set(pops)
        if clash:
            raise ValueError(f"names used for both an input and a population: {sorted(clash)}.")
        self._build(pops, projs)

    def rebuild(self, **changes: Any) -> Network:
        """A new network from the arguments of this one (:attr:`spec`), some changed.

        Example:
            >>> from traxon.core import LIF, Dense, Network, Population, Projection
            >>> net = Network(2, {"h": Population(LIF(), 4)}, [Projection("x", "h", Dense())])
            >>> net.rebuild(populations={"h": Population(LIF(), 8)}).populations["h"].size
            8
        """
        unknown = sorted(set(changes) - set(self.spec))
        if unknown:
            raise TypeError(f"rebuild() takes {sorted(self.spec)}; got {unknown}.")
        return Network(**{**self.spec, **changes})

    # ----------------------------------------------------------------------------------
    def _build(self, pops: dict[str, Population], projs: list[Projection]) -> None:
        sizes = {**self.inputs, **{k: p.size for k, p in pops.items()}, ONE: 1}
        channels: dict[str, dict[tuple, Channel]] = {k: {} for k in pops}
        pre_traces: dict[str, dict[tuple, PreTrace]] = {k: {} for k in [*pops, *self.inputs]}
        state_reads: dict[str, list[str]] = {k: [] for k in pops}
        plans: list[ProjectionPlan] = []
        names: set[str] = set()
        for i, proj in enumerate(projs):
            where = f"projection {i} ({proj.source!r} -> {proj.target!r})"
            if proj.source not in sizes:
                raise ValueError(
                    f"{where}: unknown source {proj.source!r}; inputs are {sorted(self.inputs)}, "
                    f"populations are {sorted(pops)}."
                )
            if proj.target not in pops:
                raise ValueError(
                    f"{where}: unknown target {proj.target!r}; populations are {sorted(pops)}."
                )
            from_input = proj.source in self.inputs or proj.source == ONE
            if from_input and proj.delay:
                raise ValueError(f"{where}: inputs are read at the current step; use delay=0.")
            if proj.source == proj.target and not proj.delay:
                raise ValueError(f"{where}: a population reading itself needs delay=1.")
            name = proj.name or f"{proj.source}->{proj.target}"
            if name in names:
                k = 1
                while f"{name}#{k}" in names:
                    k += 1
                name = f"{name}#{k}" if proj.name is None else name
                if name in names:
                    raise ValueError(f"{where}: duplicate projection name {name!r}.")
            names.add(name)
            n_in, n_out = sizes[proj.source], sizes[proj.target]
            proj.op.check_sizes(n_in, n_out, where)
            check_projection = getattr(proj.op, "check_projection", None)
            if check_projection is not None:  # ops that constrain their projection
                check_projection(proj, where)
            signal = "x" if from_input else "spike"
            if proj.signal != "spike":
                signal = self._state_signal(proj, where, pops, from_input)
                if proj.signal not in state_reads[proj.source]:
                    state_reads[proj.source].append(proj.signal)
            gates = _gates(pops[proj.target].neuron)
            ch_key: tuple
            if gates or proj.port is not None:
                ch_key = self._gate_channel(proj, where, pops, gates)
            elif proj.align == "pre":
                key = proj.synapse.key()  # type: ignore[union-attr]
                table = pre_traces[proj.source]
                if key not in table:
                    table[key] = PreTrace(f"pre{len(table)}", proj.synapse)  # type: ignore[arg-type]
                signal = table[key].id
                ch_key = ("current", proj.reversal)
            elif proj.synapse is None:
                ch_key = ("current", proj.reversal)
            elif isinstance(proj.synapse, Delta):
                ch_key = ("jump", None)
            else:
                ch_key = ("synapse", proj.synapse.key(), proj.reversal)
            table_c = channels[proj.target]
            if ch_key not in table_c:
                kind = ch_key[0]
                syn = proj.synapse if kind == "synapse" else None
                port = proj.port if kind == "gate" else None
                table_c[ch_key] = Channel(f"in{len(table_c)}", kind, syn, proj.reversal, port)
            source, delay, op = proj.source, proj.delay, proj.op.sized(n_in, n_out)
            spikes = signal == "spike" and not from_input and pops[proj.source].neuron.spiking
            if spikes and self.event == "auto" and proj.event == "auto":
                op = op.with_events(n_in, n_out)  # binary signal: gather the active rows
            if isinstance(proj.op, Bias):
                # A bias reads the constant one whatever source it names: its presynaptic
                # signal (es_d_rtrl's trace of it) is 1, not the source's first column.
                source, signal, delay, from_input, n_in = ONE, "x", 0, True, 1
            plans.append(
                ProjectionPlan(
                    name=name,
                    source=source,
                    signal=signal,
                    target=proj.target,
                    channel=table_c[ch_key].id,
                    op=op,
                    delay=delay,
                    n_in=n_in,
                    n_out=n_out,
                    trainable=proj.trainable,
                    from_input=from_input,
                    port=ch_key[1] if ch_key[0] == "gate" else None,
                )
            )
        self.populations: dict[str, PopulationPlan] = {
            k: PopulationPlan(
                k,
                _neuron_row(p.neuron, p.size),
                p.size,
                tuple(channels[k].values()),
                tuple(pre_traces[k].values()),
                tuple(state_reads[k]),
            )
            for k, p in pops.items()
        }
        self.input_traces: dict[str, tuple[PreTrace, ...]] = {
            k: tuple(pre_traces[k].values()) for k in self.inputs
        }
        self.projections: tuple[ProjectionPlan, ...] = tuple(plans)
        self.order: tuple[str, ...] = self._topological_order()

    @staticmethod
    def _state_signal(
        proj: Projection, where: str, pops: Mapping[str, Population], from_input: bool
    ) -> str:
        """The state variable a projection reads (``signal=``), checked against its source."""
        if from_input:
            raise ValueError(
                f"{where}: `signal={proj.signal!r}` reads a population's state, but "
                f"{proj.source!r} is an input, whose one signal is its values; leave `signal` "
                "at its default."
            )
        neuron = pops[proj.source].neuron
        if proj.signal not in neuron.state_names:
            available = ["spike", *neuron.state_names]
            raise ValueError(
                f"{where}: unknown signal {proj.signal!r}; population {proj.source!r} "
                f"({type(neuron).__name__}) exposes {available}."
            )
        if proj.align == "pre":
            raise ValueError(
                f"{where}: `align='pre'` filters the source's output, so it cannot read "
                f"`signal={proj.signal!r}`; use align='post' with a synapse on the target."
            )
        return proj.signal

    @staticmethod
    def _gate_channel(
        proj: Projection, where: str, pops: Mapping[str, Population], gates: tuple[str, ...]
    ) -> tuple:
        """The channel key of a projection onto a gated cell (``port=``), checked."""
        neuron = pops[proj.target].neuron
        kind = type(neuron).__name__
        if not gates:
            raise ValueError(
                f"{where}: `port={proj.port!r}` names a gate, but population {proj.target!r} "
                f"({kind}) has no gates; leave `port` unset (ports are for gated cells such "
                "as GRU and MinGRU)."
            )
        if proj.port is None:
            raise ValueError(
                f"{where}: population {proj.target!r} is a gated cell ({kind}) whose inputs "
                f"are its gates {list(gates)}; give the projection `port=` one of them."
            )
        if proj.port not in gates:
            raise ValueError(
                f"{where}: unknown port {proj.port!r}; population {proj.target!r} ({kind}) "
                f"has the gates {list(gates)}."
            )
        if proj.synapse is not None or proj.reversal is not None:
            raise ValueError(
                f"{where}: a gate's input is the instantaneous sum of its weight ops; leave "
                "`synapse` and `reversal` unset on projections onto a gated cell "
                f"({kind} {proj.target!r}). To filter an input, put a population in between."
            )
        return ("gate", proj.port)

    def _topological_order(self) -> tuple[str, ...]:
        deps: dict[str, set[str]] = {k: set() for k in self.populations}
        for p in self.projections:
            if not p.delay and not p.from_input:
                deps[p.target].add(p.source)
        order: list[str] = []
        remaining = dict(deps)
        while remaining:
            ready = [k for k, d in remaining.items() if not (d - set(order))]
            if not ready:
                raise ValueError(
                    "projections with delay=0 form a loop among populations "
                    f"{sorted(remaining)}; give one projection of the loop delay=1."
                )
            ready.sort(key=lambda k: (k == READOUT, list(self.populations).index(k)))
            order.append(ready[0])
            del remaining[ready[0]]
        return tuple(order)

    # ----------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """A JSON description of this network's configuration, stable across processes:
        inputs, ``dt``, every population's neuron model and parameters, synapse channels
        and presynaptic traces, and every projection's endpoints, weight op (with its
        settings), delay and trainability. Arrays of more than 16 values appear as their
        shape, dtype and a SHA-256 prefix. Checkpoints record it, so a state is never
        restored into a network with other dynamics.

        Example:
            >>> from traxon.core import LIF, Dense, Network, Population, Projection
            >>> net = Network(2, {"h": Population(LIF(tau=10.0), 3)}, [Projection("x", "h")])
            >>> d = net.describe()
            >>> d["populations"]["h"]["neuron"]["type"], d["populations"]["h"]["neuron"]["tau"]
            ('LIF', 10.0)
            >>> d["projections"]["x->h"]["op"]
            {'type': 'Dense', 'gain': 1.0, 'sign': None, 'max_active': None}
        """
        cached = self.__dict__.get("_description")
        if cached is None:
            cached = {
                "dt": self.dt,
                "inputs": dict(self.inputs),
                "input_traces": {
                    k: [[tr.id, _describe(tr.synapse)] for tr in v]
                    for k, v in self.input_traces.items()
                },
                "populations": {
                    k: {
                        "size": p.size,
                        "neuron": _describe(p.neuron),
                        "channels": [
                            [ch.id, ch.kind, _describe(ch.synapse), ch.reversal]
                            + ([ch.port] if ch.port is not None else [])
                            for ch in p.channels
                        ],
                        "pre_traces": [[tr.id, _describe(tr.synapse)] for tr in p.pre_traces],
                    }
                    for k, p in self.populations.items()
                },
                "projections": {
                    p.name: {
                        "source": p.source,
                        "signal": p.signal,
                        "target": p.target,
                        "channel": p.channel,
                        "op": _describe(p.op),
                        "delay": p.delay,
                        "trainable": p.trainable,
                        **({"port": p.port} if p.port is not None else {}),
                    }
                    for p in self.projections
                },
            }
            self.__dict__["_description"] = cached
        return copy.deepcopy(cached)

    @property
    def has_readout(self) -> bool:
        return READOUT in self.populations

    def projections_into(self, target: str) -> tuple[ProjectionPlan, ...]:
        return tuple(p for p in self.projections if p.target == target)

    def init_params(self, key: jax.Array, dtype: Any = None) -> dict[str, jax.Array]:
        """Fresh weights ``{projection name: array}``, one key per projection."""
        dtype = _float_dtype(dtype)
        keys = jax.random.split(key, max(len(self.projections), 1))
        return {
            p.name: p.op.init(k, p.n_in, p.n_out, dtype)
            for p, k in zip(self.projections, keys, strict=False)
        }

    def init_state(self, batch_size: int, dtype: Any = None) -> dict[str, dict[str, jax.Array]]:
        """Resting state of every population (and AlignPre traces of inputs)."""
        batch_size = check_positive_int(batch_size, "batch_size")
        dtype = _float_dtype(dtype)
        state = {k: p.init(int(batch_size), dtype) for k, p in self.populations.items()}
        for name, traces in self.input_traces.items():
            if traces:
                state[name] = {}
                for tr in traces:
                    for k, v in tr.synapse.init((batch_size, self.inputs[name]), dtype).items():
                        state[name][f"{tr.id}.{k}"] = v
        return state

    def init(
        self, key: jax.Array, batch_size: int, dtype: Any = None
    ) -> tuple[dict[str, jax.Array], dict[str, dict[str, jax.Array]]]:
        """``(params, state)`` for a batch of ``batch_size`` independent copies."""
        return self.init_params(key, dtype), self.init_state(batch_size, dtype)

    # ----------------------------------------------------------------------------------
    def as_inputs(self, x: Any, batch: int | None = None, leading: int = 0) -> dict[str, jax.Array]:
        """Normalise ``x`` to ``{input name: array}`` and check shapes (before any work)."""
        if not isinstance(x, Mapping):
            if len(self.inputs) != 1:
                raise TypeError(
                    f"this network has inputs {sorted(self.inputs)}: pass a dict of arrays."
                )
            x = {next(iter(self.inputs)): x}
        missing = set(self.inputs) - set(x)
        extra = set(x) - set(self.inputs)
        if missing or extra:
            raise ValueError(
                f"inputs must be exactly {sorted(self.inputs)}; missing {sorted(missing)}, "
                f"unexpected {sorted(extra)}."
            )
        out = {}
        for name, arr in x.items():
            # Check the dtype before jnp.asarray, which rejects strings and objects itself.
            kind = arr.dtype if isinstance(arr, jax.Array) else np.asarray(arr).dtype
            if not np.issubdtype(kind, np.number) and kind != np.bool_:
                raise TypeError(f"input `{name}` must be numeric; got dtype {kind}.")
            arr = jnp.asarray(arr)
            want = (*([None] * leading), batch, self.inputs[name])
            if arr.ndim != len(want) or any(
                w is not None and w != s for w, s in zip(want, arr.shape, strict=False)
            ):
                shown = (
                    "("
                    + ", ".join(
                        "T" if w is None and i < leading else "B" if w is None else str(w)
                        for i, w in enumerate(want)
                    )
                    + ")"
                )
                raise ValueError(f"input `{name}` must have shape {shown}; got {tuple(arr.shape)}.")
            check_finite(arr, f"input `{name}`")
            out[name] = arr
        return out

    def batch_size(self, state: Mapping[str, Any]) -> int:
        first = next(iter(self.populations))
        return int(state[first][self.populations[first].traced[0]].shape[0])

    def check_state(self, state: Any, name: str = "state") -> None:
        """Raise if ``state`` does not match this network's structure."""
        expected: object = jax.tree_util.tree_structure(self.init_state(1))  # a PyTreeDef
        got = jax.tree_util.tree_structure(state)
        if expected != got:
            raise ValueError(
                f"`{name}` does not match this network.\n  expected: {expected}\n  got:      {got}"
            )

    def check_params(self, params: Any, name: str = "params") -> None:
        """Raise if ``params`` lacks a weight or a weight has the wrong shape."""
        if not isinstance(params, Mapping):
            raise TypeError(f"`{name}` must be a dict of weights; got {type(params).__name__}.")
        want = {p.name: p.op.weight_shape(p.n_in, p.n_out) for p in self.projections}
        missing, extra = set(want) - set(params), set(params) - set(want)
        if missing or extra:
            raise ValueError(
                f"`{name}` must hold exactly the weights {sorted(want)}; missing "
                f"{sorted(missing)}, unexpected {sorted(extra)}."
            )
        for k, shape in want.items():
            if tuple(np.shape(params[k])) != tuple(shape):
                got = tuple(np.shape(params[k]))
                raise ValueError(f"weight `{k}` must have shape {tuple(shape)}; got {got}.")

    # ----------------------------------------------------------------------------------
    def index_arrays(self) -> tuple[Any, ...]:
        """The connectivity of the network's weight ops: their index arrays (read-only NumPy
        arrays; see :func:`traxon.core.ops.index_arrays`), in projection order."""
        cached = self.__dict__.get("_index_arrays")
        if cached is None:
            cached = index_arrays(p.op for p in self.projections)
            self.__dict__["_index_arrays"] = cached
        return cached

    def connectivity(self) -> tuple[jax.Array, ...]:
        """The values of :meth:`index_arrays` as device arrays, put on the device once.

        The jitted functions of :meth:`simulate` and of the online learner receive them as
        arguments (connectivity as data): the compiled program holds no copy of the indices,
        and runs another network of the same shapes with that network's ``connectivity()``.

        Example:
            >>> from traxon.connectome import connectome_network, synthetic_connectome
            >>> net = connectome_network(synthetic_connectome(50, 400, 2, seed=0), n_inputs=2)
            >>> [a.shape for a in net.connectivity()][:2]
            [(51,), (400,)]
        """
        cached = self.__dict__.get("_connectivity")
        if cached is None:
            cached = index_values(self.index_arrays())
            self.__dict__["_connectivity"] = cached
        return cached

    # ----------------------------------------------------------------------------------
    def signals(self, state: Mapping[str, Any]) -> dict[str, dict[str, jax.Array]]:
        """Every population's output signals computed from a state."""
        return {k: p.signals(state[k]) for k, p in self.populations.items()}

    def input_signals(
        self, state: Mapping[str, Any], x: Mapping[str, jax.Array]
    ) -> tuple[dict[str, dict[str, jax.Array]], dict[str, dict[str, jax.Array]]]:
        """Signals of the inputs this step (raw and AlignPre-filtered) and their new traces."""
        sig: dict[str, dict[str, jax.Array]] = {}
        new_state: dict[str, dict[str, jax.Array]] = {}
        for name, traces in self.input_traces.items():
            xi = x[name]
            sig[name] = {"x": xi}
            if traces:
                new_state[name] = {}
                for tr in traces:
                    st = tr.synapse.update(
                        _sub(state[name], tr.id, tr.synapse.state_names), xi, self.dt
                    )
                    new_state[name].update({f"{tr.id}.{k}": v for k, v in st.items()})
                    sig[name][tr.id] = tr.synapse.output(st)
        return sig, new_state

    def forward(
        self,
        params: Mapping[str, jax.Array],
        state: Mapping[str, Any],
        x: Mapping[str, jax.Array],
        perturb: Mapping[str, Mapping[str, jax.Array]] | None = None,
        sever: frozenset[str] = frozenset(),
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """One step with its internals exposed (used by the learning rules).

        Arguments:
            params: the weights; a plain matmul's may be a
                :class:`~traxon.core._deferred.DeferredWeight` (updates held as factors,
                as the learner's ``run`` passes them).
            perturb: ``{population: {signal: array}}`` added to this step's signals right
                after each transition (zero perturbations give the learning signals).
            sever: projection names whose weight-op output is held fixed
                (``stop_gradient``) -- used to cut gradient paths.

        Returns:
            ``(new_state, internals)``, where ``internals`` holds ``u`` (per population and
            channel), ``z`` (per projection), this step's signals and the previous step's.
        """
        prev = self.signals(state)
        now, new_state = self.input_signals(state, x)
        batch = next(iter(x.values())).shape[0]
        dtype = _state_dtype(state)
        now[ONE] = {"x": jnp.ones((batch, 1), dtype)}
        us: dict[str, dict[str, jax.Array]] = {}
        zs: dict[str, jax.Array] = {}
        for target in self.order:
            plan = self.populations[target]
            u = {ch.id: jnp.zeros((batch, plan.size), dtype) for ch in plan.channels}
            for proj in self.projections_into(target):
                z = (prev if proj.delay else now)[proj.source][proj.signal]
                z = z.astype(dtype)
                zs[proj.name] = z
                w = params[proj.name]
                if isinstance(w, DeferredWeight):  # updates held as factors (learner.run)
                    contrib = w.apply(proj.op, z)
                else:
                    contrib = proj.op.apply(w, z)
                if proj.name in sever:
                    contrib = jax.lax.stop_gradient(contrib)
                u[proj.channel] = u[proj.channel] + contrib
            us[target] = u
            new = plan.transition(state[target], u, self.dt)
            new_state[target] = new
            sig = plan.signals(new)
            if perturb is not None and target in perturb:
                sig = {
                    k: v + perturb[target][k] if k in perturb[target] else v for k, v in sig.items()
                }
            now[target] = sig
        return new_state, {"u": us, "z": zs, "signals": now, "prev_signals": prev}

    def output(self, signals: Mapping[str, Mapping[str, jax.Array]]) -> Any:
        """The step's output: the readout value, or every population's spikes."""
        if self.has_readout:
            return signals[READOUT]["spike"]
        return {k: signals[k]["spike"] for k in self.populations}

    def step(
        self, params: Mapping[str, jax.Array], state: Mapping[str, Any], x: Any
    ) -> tuple[dict[str, Any], Any]:
        """One time step: ``(state, x) -> (new_state, output)``.

        ``x`` is an array ``(B, n_in)`` (single input) or ``{name: array}``; ``output`` is the
        readout value ``(B, n_out)``, or ``{population: spikes}`` without a readout.
        """
        self.check_params(params)
        xs = self.as_inputs(x, batch=self.batch_size(state))
        new_state, internals = self.forward(params, state, xs)
        return new_state, self.output(internals["signals"])

    def simulate(
        self,
        params: Mapping[str, jax.Array],
        state: Mapping[str, Any],
        xs: Any,
        record: Sequence[str] | Callable[[Any, Any], Any] = ("spike",),
    ) -> SimulationResult:
        """Run ``T`` steps as one ``lax.scan``; ``xs`` has a leading time axis ``(T, B, n_in)``.

        ``record`` names what to keep per step for every population: ``"spike"`` and/or
        state variables such as ``"V"`` (variables a population lacks are skipped). Or a
        function ``record(state, signals)`` of each step's new state and signals
        (``{population: {"spike": (B, N), ...}}``) returning what to keep: only that is
        stored, e.g. a firing rate per step instead of ``T x B x N`` spikes.

        Example:
            >>> import jax, jax.numpy as jnp
            >>> from traxon.core import LIF, Dense, Network, Population, Projection
            >>> net = Network(2, {"h": Population(LIF(), 4)}, [Projection("x", "h", Dense(3.0))])
            >>> params, state = net.init(jax.random.PRNGKey(0), batch_size=1)
            >>> res = net.simulate(params, state, jnp.ones((10, 1, 2)), record=("spike", "V"))
            >>> res.record["h"]["V"].shape
            (10, 1, 4)
            >>> rate = lambda state, signals: signals["h"]["spike"].mean()
            >>> net.simulate(params, state, jnp.ones((10, 1, 2)), record=rate).record.shape
            (10,)
        """
        self.check_params(params)
        xs = self.as_inputs(xs, batch=self.batch_size(state), leading=1)
        record = record if callable(record) else tuple(record)
        keys = self.index_arrays()
        if not keys or indices_bound(keys):  # no indices, or the caller passes them as data
            return self._simulate(params, state, xs, record)
        run = self.__dict__.get("_simulate_jit")
        if run is None:

            def with_indices(indices: Any, params: Any, state: Any, xs: Any, record: Any) -> Any:
                with bind_indices(keys, indices):
                    return self._simulate(params, state, xs, record)

            run = jax.jit(with_indices, static_argnums=4)
            self.__dict__["_simulate_jit"] = run
        return run(self.connectivity(), params, state, xs, record)

    def _simulate(
        self, params: Mapping[str, jax.Array], state: Mapping[str, Any], xs: Any, record: Any
    ) -> SimulationResult:
        def body(carry: Any, x_t: Any) -> tuple[Any, Any]:
            new_state, internals = self.forward(params, carry, x_t)
            out = self.output(internals["signals"]) if self.has_readout else None
            if callable(record):
                return new_state, (out, record(new_state, internals["signals"]))
            rec = {}
            for k in self.populations:
                entry = {}
                for var in record:
                    if var == "spike":
                        entry[var] = internals["signals"][k]["spike"]
                    elif var in new_state[k]:
                        entry[var] = new_state[k][var]
                rec[k] = entry
            return new_state, (out, rec)

        final, (outs, rec) = jax.lax.scan(body, state, xs)
        return SimulationResult(final, outs, rec)


def _describe(obj: Any) -> Any:
    """A JSON value describing a configuration object (see :meth:`Network.describe`)."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if np.isfinite(value) else repr(value)
    if isinstance(obj, Module) or (
        dataclasses.is_dataclass(obj) and not isinstance(obj, type) and not isinstance(obj, Network)
    ):
        out: dict[str, Any] = {"type": type(obj).__name__}
        for field in dataclasses.fields(obj):  # type: ignore[arg-type]
            out[field.name] = _describe(getattr(obj, field.name))
        return out
    if isinstance(obj, (list, tuple)):
        return [_describe(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): _describe(v) for k, v in obj.items()}
    array = getattr(obj, "array", obj)  # ops keep static arrays in a read-only wrapper
    if isinstance(array, (np.ndarray, jax.Array)) and is_concrete(array):
        a = np.asarray(array)
        if a.size <= 16 and a.dtype.kind in "biuf":
            return {"array": [_describe(v) for v in a.reshape(-1).tolist()], "shape": list(a.shape)}
        digest = hashlib.sha256(np.ascontiguousarray(a).reshape(-1).view(np.uint8).data).hexdigest()
        return {"shape": list(a.shape), "dtype": str(a.dtype), "sha256": digest[:16]}
    if callable(obj) and hasattr(obj, "__qualname__"):
        return f"{getattr(obj, '__module__', '?')}.{obj.__qualname__}"
    return f"<{type(obj).__qualname__}>"  # no repr: it may hold a memory address


def _gates(neuron: Neuron) -> tuple[str, ...]:
    """The gate names of a gated cell (its input ports), ``()`` for other neurons."""
    return tuple(getattr(neuron, "gates", ()))


def _neuron_row(neuron: Neuron, size: int) -> Neuron:
    """``neuron`` with each per-neuron parameter ``(size,)`` as a row ``(1, size)``, so that
    it meets the ``(B, size)`` state without rank promotion (which JAX can be set to refuse:
    ``jax_numpy_rank_promotion='raise'``)."""

    def row(leaf: Any) -> Any:
        if np.ndim(leaf) == 1 and np.shape(leaf)[0] == size and size > 1:
            return leaf.reshape(1, size)
        return leaf

    return jax.tree_util.tree_map(row, neuron)


def _check_event(value: Any, name: str) -> None:
    if value not in ("auto", "off") or not isinstance(value, str):
        raise ValueError(
            f"`{name}` must be 'auto' (event-driven forward for projections that read spikes) "
            f"or 'off'; got {value!r}."
        )


def _is_count(n: Any) -> bool:
    """True for a positive integer (a bool is not a count)."""
    return isinstance(n, (int, np.integer)) and not isinstance(n, (bool, np.bool_)) and bool(n >= 1)


def _float_dtype(dtype: Any) -> Any:
    if dtype is None:
        return jnp.zeros(()).dtype  # float32, or float64 under jax_enable_x64
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"`dtype` must be a floating dtype; got {dtype}.")
    return dtype


def state_dtype(state: Any) -> Any:
    """The floating dtype of a network state (its first floating leaf)."""
    for leaf in jax.tree_util.tree_leaves(state):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            return leaf.dtype
    return jnp.zeros(()).dtype


_state_dtype = state_dtype
