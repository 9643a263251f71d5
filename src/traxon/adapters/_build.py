"""Building the traxon network from an analysis: populations, projections, weight ops.

The adapted network is a :class:`~traxon.core.Network` whose parts evaluate the module's
own equations: an :class:`AdaptedOp` per weight (its ``apply`` is the traced equation that
applies the weight, its ``outer`` that equation's vector-Jacobian product), an
:class:`AdaptedPopulation` per population (its ``transition`` evaluates the states' part
of the step) with an :class:`_AdaptedNeuron` standing in for its neuron model. :func:`build`
makes them from an :class:`~traxon.adapters._analysis.Analysis`; :func:`is_elementwise`
probes whether a population's transition leaves other neurons alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import jax
import jax.numpy as jnp

from traxon._module import static
from traxon.adapters._analysis import Analysis, PopulationInfo, WeightUse, selected
from traxon.adapters._keys import InputKey
from traxon.core.network import ONE, READOUT, PopulationPlan, ProjectionPlan
from traxon.core.neurons import Neuron
from traxon.core.ops import WeightOp, _Frozen, _gram_sq_norm

if TYPE_CHECKING:
    from traxon.adapters.brainstate import AdaptedNetwork

__all__ = [
    "AdaptedOp",
    "AdaptedPopulation",
    "Contract",
    "build",
    "is_elementwise",
]


class Contract(NamedTuple):
    """What :func:`build` makes: the network's populations (by name), its projections and
    every weight's shape (by name)."""

    populations: dict[str, PopulationPlan]
    projections: tuple[ProjectionPlan, ...]
    weight_shapes: dict[str, tuple[int, ...]]


class AdaptedOp(WeightOp):
    """A module's weight application, read off its traced step.

    ``apply`` evaluates the module's own equations (or, for brainevent's binary kernels,
    an equivalent float kernel, so that filtered presynaptic traces can pass through it);
    ``outer`` is its vector-Jacobian product in the weight. ``pre_factor``/``to_params``
    (parameter-dimension traces) exist for dense, element-wise, bias and fixed-connectivity
    weights applied through an element-wise transform.
    """

    net: Any = static(default=None)
    name: str = static(default="")
    kind: str = static(default="")
    param_traces: bool = static(default=True)
    # A matmul `z W'` of the signal itself (no selection in front, its output the
    # weight's input as it is) with `W'` an element-wise function of the weight: its outer
    # product is `W'`'s slope times `zᵀ post`, for any number of rows (`stacks_rows`);
    # `plain` when `W'` is the weight itself (`plain_matmul`).
    stack: bool = static(default=False)
    plain: bool = static(default=False)

    def index_arrays(self) -> tuple[_Frozen, ...]:
        """The connectivity of a sparse weight (its kernel's index arrays, shared by the
        step at every batch size); none for the other kinds."""
        fixed = self.net.sparse_connectivity().get(self.name) if self.kind == "fixed" else None
        return () if fixed is None else fixed.index_arrays()

    def _info(self, batch: int) -> WeightUse:
        """This weight's use in the step traced at ``batch``."""
        return self.net.analysis(batch).ops[self.name]

    def weight_shape(self, n_in: int, n_out: int) -> tuple[int, ...]:
        """The weight's shape in the module (``()`` for a shared scalar)."""
        return self.net.weight_shapes[self.name]

    def apply(self, W: jax.Array, z: jax.Array) -> jax.Array:
        """``u = op(W, z)``: the module's own equation applied to the signal ``z``."""
        info = self._info(z.shape[0])
        if info.fixed is not None:
            return info.fixed.apply(info.transform(W), selected(info, z))
        a = self.net.analysis(z.shape[0])
        values = {info.param_id: W}
        if info.z_id is not None:
            values[info.z_id] = z.astype(a.graph.dtype(info.z_id))
        (u,), _ = a.graph.evaluate(values, [info.u_id])
        return jnp.broadcast_to(u, (z.shape[0], u.shape[-1]))  # a bias may be (1, N)

    def outer(self, W: jax.Array, pre: jax.Array, post: jax.Array) -> jax.Array:
        """The gradient in ``W`` of ``post . apply(W, pre)`` (the op's vector-Jacobian
        product); for a matmul, ``preᵀ post`` times the slope of the weight's transform,
        whatever the number of rows (the tracers stack several pairs' rows)."""
        if self.stack:
            g = pre.astype(W.dtype).T @ post.astype(W.dtype)
            if self.plain:
                return g
            return self._slope(self._info(self.net.attach_batch), W) * g
        _, vjp = jax.vjp(lambda w: self.apply(w, pre.astype(W.dtype)), W)
        return vjp(post.astype(W.dtype))[0]

    def outer_sq_norm(self, W: jax.Array, pre: jax.Array, post: jax.Array) -> jax.Array | None:
        """``||preᵀ post||²`` from the rows' Gram matrices for a plain matmul, else ``None``."""
        return _gram_sq_norm(W, pre, post) if self.plain else None

    def stacks_rows(self) -> bool:
        return self.stack

    def plain_matmul(self, n_in: int) -> bool:
        return self.plain

    def _slope(self, info: WeightUse, W: jax.Array) -> jax.Array:
        """The derivative of what the equation reads with respect to the weight leaf (its
        element-wise transform, e.g. a unit scale), one value per weight entry."""
        slope = jax.jvp(info.transform, (W,), (jnp.ones_like(W),))[1]
        if self.kind == "bias" and slope.shape != W.shape:  # broadcast over the batch
            slope = jnp.reshape(slope, (-1, *W.shape))[0]
        return slope

    def pre_factor(self, W: jax.Array, z: jax.Array) -> jax.Array:
        """``du/dW`` per sample in the weight's layout (for a dense weight ``z_j`` times the
        slope of its transform), the presynaptic factor of parameter-dimension traces."""
        info = self._info(z.shape[0])
        slope = self._slope(info, W)
        z = selected(info, z)
        if self.kind == "dense":
            return z[:, :, None] * slope[None]
        if self.kind == "elementwise":
            return z * jnp.reshape(slope, (1, -1))
        if self.kind == "bias":
            return jnp.broadcast_to(slope, (z.shape[0], *W.shape))
        assert info.fixed is not None
        return info.fixed.pre_factor(z) * slope[None]

    def to_params(self, x: jax.Array) -> jax.Array:
        """A per-neuron quantity ``(batch, N)`` broadcast to the weight's layout."""
        if self.kind == "dense":
            return x[:, None]
        if self.kind in ("elementwise", "bias"):
            return x
        info = self._info(x.shape[0])
        assert info.fixed is not None
        return info.fixed.to_params(x)


class _AdaptedNeuron(Neuron):
    """Stands in for the neuron model of an adapted population (decays measured). Its
    name appears in the core's messages about a population (kept as it was)."""

    pop: str = static(default="")
    net: Any = static(default=None)
    is_spiking: bool = static(default=True)

    @property
    def spiking(self) -> bool:
        """Whether the population spikes (every population but the readout)."""
        return self.is_spiking

    @property
    def state_names(self) -> tuple[str, ...]:
        """The population's traced state variables."""
        return self.net.populations[self.pop].traced

    def decays(self, dt: float) -> dict[str, float]:
        """Per-step decay of each traced variable, measured on the module's step."""
        return self.net.measured_decays(self.pop)


@dataclasses.dataclass(frozen=True)
class AdaptedPopulation(PopulationPlan):
    """An adapted population: its transition evaluates the module's own equations."""

    net: Any = None
    names: tuple[str, ...] = ()
    aux_list: tuple[str, ...] = ()
    prechecked: bool = True  # element-wise coupling was checked when the module was adapted

    @property
    def traced(self) -> tuple[str, ...]:
        """The population's traced (hidden) state variables."""
        return self.names

    @property
    def aux(self) -> tuple[str, ...]:
        """Its other state variables, carried along untraced."""
        return self.aux_list

    def init(self, batch: int, dtype: Any) -> dict[str, jax.Array]:
        """Its states at the start of a sequence (the module's reset when attached)."""
        return self.net.initial_population(self.name, batch, dtype)

    def transition(
        self, state: Mapping[str, jax.Array], u: Mapping[str, jax.Array], dt: float
    ) -> dict[str, jax.Array]:
        """One step of its states, given the inputs ``u`` (the module's own equations)."""
        return self.net.transition(self.name, state, u)

    def signals(self, state: Mapping[str, Any]) -> dict[str, jax.Array]:
        """Its signals as functions of its (new) state."""
        return self.net.population_signals(self.name, state)


def build(net: AdaptedNetwork, a: Analysis) -> Contract:
    """The model contract of ``net`` from the analysis of its step: a population plan per
    population found (the readout's named ``READOUT``), a projection plan per weight, the
    weights' shapes. Populations whose transition couples neurons are marked
    ``prechecked=False`` (the online rules refuse them when bound; BPTT and RTRL train
    them). Raises for a weight the step does not apply and for a step without a readout.
    """
    populations: dict[str, PopulationPlan] = {}
    for name, pop in a.pops.items():
        names = tuple(lf.local_name for lf in pop.traced)
        aux = tuple(lf.local_name for lf in pop.aux)
        _unique(names + aux, name)
        spiking = name != READOUT
        neuron = _AdaptedNeuron(pop=name, net=net, is_spiking=spiking)
        populations[name] = AdaptedPopulation(
            name,
            neuron,
            pop.size,
            channels=(),
            pre_traces=(),
            net=net,
            names=names,
            aux_list=aux,
        )
    projections = tuple(
        ProjectionPlan(
            name=op.name,
            source=op.source,
            signal=op.signal,
            target=op.target,
            channel=InputKey.weight(op.name).label,
            op=AdaptedOp(
                net=net,
                name=op.name,
                kind=op.kind,
                stack=_stacks(op),
                plain=_stacks(op) and op.identity,
                param_traces=(op.elementwise and op.kind in ("dense", "elementwise", "bias"))
                or (
                    op.kind == "fixed" and op.fixed is not None and a.graph.shape(op.param_id) != ()
                ),
            ),
            delay=op.delay,
            n_in=1 if op.source == ONE else a.graph.shape(op.z_id)[1],  # type: ignore[arg-type]
            n_out=a.pops[op.target].size,
            trainable=True,
            from_input=op.source in ("x", ONE),
        )
        for op in a.ops.values()
    )
    weight_shapes = {n: a.graph.shape(lf.in_id) for n, lf in a.params.items()}
    unused = sorted(set(a.params) - set(a.ops))
    if unused:
        raise ValueError(
            f"weights {unused} are not applied to any signal in the module's step; "
            "traxon cannot train them (remove them or apply them)."
        )
    for pop in a.pops.values():
        if not is_elementwise(a, pop):
            # Refused by the online rules when they are bound (their error says so);
            # BPTT and RTRL differentiate the whole step and train it as it is.
            plan = cast(AdaptedPopulation, populations[pop.name])
            populations[pop.name] = dataclasses.replace(plan, prechecked=False)
    if READOUT not in populations:
        raise ValueError("no readout population was found in the module.")
    return Contract(populations, projections, weight_shapes)


def _stacks(op: WeightUse) -> bool:
    """Whether weight use ``op`` is a matmul ``z W'`` of its signal as it is, whose output
    is the weight's input as it is, and ``W'`` an element-wise function of the weight."""
    return op.kind == "dense" and op.elementwise and op.select is None and op.u_id == op.raw_id


def is_elementwise(a: Analysis, pop: PopulationInfo) -> bool:
    """Whether the population's step leaves other neurons alone (a forward-mode probe)."""
    if pop.size < 2:
        return True
    g = a.graph
    own = list(pop.traced)
    values = {
        lf.in_id: jnp.zeros(g.shape(lf.in_id), g.dtype(lf.in_id)) + 0.1
        for lf in pop.traced + pop.aux
    }
    overrides = {
        a.ops[n].raw_id: jnp.zeros(g.shape(a.ops[n].raw_id), g.dtype(a.ops[n].raw_id))
        for n in pop.ops
    }
    for i in pop.ext:
        overrides[i] = jnp.zeros(g.shape(i), g.dtype(i))
    outs_ids = [lf.out_id for lf in own]

    def f(vals: Any) -> Any:
        return g.evaluate({**values, **vals}, outs_ids, overrides=overrides)[0]

    primal = {lf.in_id: values[lf.in_id] for lf in own}
    tangent = {i: jnp.zeros_like(v).at[:, 0].set(1.0) for i, v in primal.items()}
    _, out = jax.jit(lambda p, t: jax.jvp(f, (p,), (t,)))(primal, tangent)
    leak = max(float(jnp.max(jnp.abs(o[:, 1:]))) for o in out)
    return not leak > 0


def _unique(names: Sequence[str], pop: str) -> None:
    """Raise when two state variables of population ``pop`` have the same name."""
    if len(set(names)) != len(names):
        raise ValueError(f"population `{pop}` has states with equal names {sorted(names)}.")
