"""The shape every learning rule takes, and the registry that names them.

A rule is configured by an :class:`Algorithm` object (``d_rtrl()``, ``es_d_rtrl(decay=0.9)``,
...) and bound to a network and a loss with :meth:`Algorithm.bind`, which returns a
:class:`Tracer`: a pure ``(init, step)`` pair, in the spirit of optax's
``GradientTransformation``.

* ``tstate = tracer.init(params, state)`` -- a NamedTuple of arrays (traces, gradient
  accumulators, step counters): a ``lax.scan`` carry and a checkpoint for free.
* ``state, tstate, out = tracer.step(params, state, tstate, x, target, weight)`` -- one
  network step; the gradient of this step's loss is added to the accumulator.
* ``grads = tracer.gradients(params, tstate)`` -- the accumulated gradient
  ``{weight name: array}`` for every trainable weight.
* ``tracer.reset_gradients(tstate)`` -- start a new update window (traces are kept);
* ``tracer.reset_traces(params, state, tstate)`` -- start a new sequence from ``state``
  (gradients accumulated so far are kept).

The gradient is of :math:`\\sum_t \\sum_b w_{t,b}\\, l_t^{(b)}` where ``weight`` is
:math:`w_t` (``(B,)``): the learner passes ``mask / B`` to average over the batch and sum
over time, or other weights for other reductions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

import jax
import jax.numpy as jnp

from traxon.core.network import READOUT, Network, ProjectionPlan
from traxon.trace._quantities import (
    StepQuantities,
    check_elementwise,
    loss_reach,
    step_quantities,
    within_step_signals,
)

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "BoundRule",
    "GradientsFn",
    "InitFn",
    "ResetGradientsFn",
    "ResetTracesFn",
    "SignalRule",
    "StepData",
    "StepFn",
    "StepOutput",
    "Tracer",
    "get_algorithm",
    "register",
]

LossFn = Callable[[jax.Array, Any], jax.Array]


class StepOutput(NamedTuple):
    """Per-step output of a tracer: the readout ``output`` ``(B, n_out)`` and ``loss`` ``(B,)``.

    ``grad_sq``: the squared norm of the gradient this step adds to the trace state, where
    the rule has it cheaply (from the factors of its outer products; ``es_d_rtrl``), else
    ``None``. A learner that starts each step from zero gradients reads its gradient norm
    here; unused, it costs nothing under ``jit``.

    ``factors``: ``{weight: (pre, post)}`` for the weights given to ``step`` as a
    :class:`~traxon.core._deferred.DeferredWeight` (see :attr:`Tracer.update_steps`): this
    step's gradient of each is ``preᵀ post``, returned instead of added to the trace state.
    """

    output: jax.Array
    loss: jax.Array
    grad_sq: jax.Array | None = None
    factors: dict[str, tuple[jax.Array, jax.Array]] | None = None


Params = Mapping[str, jax.Array]


class InitFn(Protocol):
    """``init(params, state, target_example=None) -> tstate``: a rule's zero state."""

    def __call__(self, params: Params, state: Any, /, target_example: Any = None) -> Any: ...


class StepFn(Protocol):
    """``step(params, state, tstate, x, target, weight, spike_cost=None)``: one network step.

    Returns ``(new_state, new_tstate, StepOutput)``; the gradient of this step's weighted
    loss (plus ``spike_cost``, ``{population: (B, N)}`` per spike) is added to ``tstate``.
    """

    def __call__(
        self,
        params: Params,
        state: Any,
        tstate: Any,
        x: Mapping[str, jax.Array],
        target: Any,
        weight: jax.Array,
        /,
        spike_cost: Mapping[str, jax.Array] | None = None,
    ) -> tuple[Any, Any, StepOutput]: ...


class GradientsFn(Protocol):
    """``gradients(params, tstate) -> {weight: gradient}``, the sum since the last reset."""

    def __call__(self, params: Params, tstate: Any, /) -> dict[str, jax.Array]: ...


class ResetGradientsFn(Protocol):
    """``reset_gradients(tstate) -> tstate``: a new update window, traces kept."""

    def __call__(self, tstate: Any, /) -> Any: ...


class ResetTracesFn(Protocol):
    """``reset_traces(params, state, tstate) -> tstate``: a new sequence from ``state``."""

    def __call__(self, params: Params, state: Any, tstate: Any, /) -> Any: ...


class Tracer(NamedTuple):
    """A learning rule bound to a network and a loss (see the module docstring)."""

    name: str
    init: InitFn
    step: StepFn
    gradients: GradientsFn
    reset_gradients: ResetGradientsFn
    reset_traces: ResetTracesFn
    #: ``update_steps(batch) -> {weight: steps}`` (or ``None``): the weights whose per-step
    #: gradient the rule can return as factors (``StepOutput.factors``) when ``step`` is
    #: given them as ``DeferredWeight``, and how many steps of factors a learner updating
    #: every step with plain SGD should hold before writing them into the weight. For those
    #: weights ``step`` accepts a trace state whose ``grads`` lacks them.
    update_steps: Callable[[int], dict[str, int]] | None = None


class Algorithm:
    """Base class of learning-rule configurations."""

    name: str = ""
    #: True when gradients reach weights only through learning signals within a step
    #: (the online rules); False when they flow through time (BPTT, RTRL).
    online: bool = True
    #: True when the rule keeps one trace per weight entry and so must know which neuron
    #: each entry drives (D-RTRL); such a rule refuses weight ops that do not say.
    per_entry_traces: bool = False
    #: Fields of the tracer's state that a checkpoint of an older traxon may lack: restored,
    #: they start empty (e.g. ``es_d_rtrl``'s deferred-factor buffers).
    optional_state: tuple[str, ...] = ()
    #: True when the rule buffers the steps of an update window and replays them (BPTT):
    #: it needs the window's length when it is bound.
    replays_window: bool = False

    def bind(self, net: Network, loss_fn: LossFn, window: int | None = None) -> Tracer:
        """The rule bound to ``net`` and ``loss_fn`` (``window``: the learner's update
        period, for the rules that replay it), once :func:`check_network` accepts ``net``."""
        check_network(net, self)
        return self._bound(net, loss_fn, window).tracer(self.name)

    def _bound(self, net: Network, loss_fn: LossFn, window: int | None) -> BoundRule[Any]:
        """The rule's :class:`BoundRule` (each rule gives its own)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


ALGORITHMS: dict[str, Callable[..., Algorithm]] = {}


def register(name: str) -> Callable[[Callable[..., Algorithm]], Callable[..., Algorithm]]:
    """Class decorator: make an algorithm selectable by ``name``."""

    def deco(factory: Callable[..., Algorithm]) -> Callable[..., Algorithm]:
        ALGORITHMS[name] = factory
        return factory

    return deco


def get_algorithm(algorithm: str | Algorithm, **kwargs: Any) -> Algorithm:
    """An :class:`Algorithm` from its name (with options) or passed through.

    Example:
        >>> from traxon.trace import get_algorithm
        >>> get_algorithm("es_d_rtrl", decay=0.9).decay
        0.9
    """
    if isinstance(algorithm, Algorithm):
        if kwargs:
            raise TypeError("options go to the algorithm's constructor, not with an instance.")
        return algorithm
    if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
        raise ValueError(
            f"`algorithm` must be one of {sorted(ALGORITHMS)} or an Algorithm; got {algorithm!r}."
        )
    return ALGORITHMS[algorithm](**kwargs)


# --------------------------------------------------------------------------------------
# Shared structure analysis.


def trainable(net: Network) -> tuple[ProjectionPlan, ...]:
    return tuple(p for p in net.projections if p.trainable)


def check_network(net: Network, algorithm: Algorithm) -> None:
    """Raise, before any work, if the rule cannot give every trainable weight its gradient."""
    if not net.has_readout:
        raise ValueError(
            "learning needs a readout: give the Network a `readout=Readout(...)` whose "
            "output the loss compares with the target."
        )
    reach_any = loss_reach(net, within_step_only=False)
    reach_now = loss_reach(net, within_step_only=True)
    for p in trainable(net):
        if p.target not in reach_any:
            raise ValueError(
                f"weight `{p.name}` cannot affect the loss: population `{p.target}` has no "
                "path to the readout. Connect it, or mark the projection trainable=False."
            )
        if algorithm.online and p.target not in reach_now:
            raise ValueError(
                f"weight `{p.name}` is not reached by any trace of `{algorithm.name}`: "
                f"population `{p.target}` reaches the readout only through delay=1 "
                "projections, so its learning signal would always be zero. Use a delay=0 "
                "path to the readout, algorithm='bptt' or 'rtrl', or mark the projection "
                "trainable=False."
            )
    # Per-neuron traces are exact only for element-wise transitions; BPTT and RTRL
    # differentiate the whole step and need no such check (its error advises them).
    for name, plan in net.populations.items():
        if not algorithm.online or getattr(plan, "prechecked", False):
            continue
        if any(p.target == name for p in trainable(net)):
            check_elementwise(net, plan)
    exact = set(getattr(algorithm, "exact", ()))
    for p in trainable(net):
        needs_traces = algorithm.per_entry_traces or p.name in exact
        if needs_traces and not getattr(p.op, "param_traces", True):
            hint = getattr(p.op, "param_traces_hint", "Use algorithm='es_d_rtrl' (or 'bptt').")
            raise ValueError(
                f"weight `{p.name}`: {algorithm.name} needs to know which neuron each entry "
                f"of it drives, which this weight op does not say. {hint}"
            )


def post_populations(net: Network) -> dict[str, tuple[str, ...]]:
    """``{population: channels}`` that receive at least one trainable projection."""
    out: dict[str, list[str]] = {}
    for p in trainable(net):
        chans = out.setdefault(p.target, [])
        if p.channel not in chans:
            chans.append(p.channel)
    return {k: tuple(v) for k, v in out.items()}


def readout_decay(net: Network) -> float:
    """The readout's per-step decay ``kappa`` (0 for an instantaneous readout)."""
    values = list(net.populations[READOUT].neuron.decays(net.dt).values())
    if len(values) != 1:
        raise ValueError(
            f"the readout has {len(values)} state variables; traxon's online rules need a "
            "linear leaky readout with one (use algorithm='bptt')."
        )
    return float(values[0])


def learning_signals(net: Network) -> dict[str, tuple[str, ...]]:
    """Signals whose learning signal is needed, per population that has trainable inputs.

    Those read within the step, and the spikes of every spiking population (for spike costs).
    """
    used = within_step_signals(net)
    out = {}
    for p in post_populations(net):
        sigs = set(used[p])
        if net.populations[p].neuron.spiking:
            sigs.add("spike")
        if sigs:
            out[p] = tuple(sorted(sigs))
    return out


def zeroed(ts: Any, fields: tuple[str, ...]) -> Any:
    """``ts`` with the named fields (pytrees of arrays) set to zeros of the same shapes."""
    return ts._replace(
        **{f: jax.tree_util.tree_map(jnp.zeros_like, getattr(ts, f)) for f in fields}
    )


# --------------------------------------------------------------------------------------
# The tracer's functions as methods of a bound rule.


class StepData(NamedTuple):
    """One step's data as :class:`StepFn` receives it: ``x`` ``{input: (B, n)}``, the
    ``target``, the loss ``weight`` ``(B,)`` and the ``spike_cost`` (``None`` for none)."""

    x: Mapping[str, jax.Array]
    target: Any
    weight: jax.Array
    spike_cost: Mapping[str, jax.Array] | None


#: The state of a bound rule (a NamedTuple of arrays).
TS = TypeVar("TS", bound=Any)


class BoundRule(Generic[TS]):
    """A rule bound to a network and a loss; :meth:`tracer` gives its :class:`Tracer`.

    A subclass gives :meth:`init` and :meth:`advance` (one step on a :class:`StepData`).
    The defaults read the gradient from the state's ``grads`` field, zero the fields named in
    ``grad_fields`` to start an update window and those in ``trace_fields`` to start a
    sequence; a rule that keeps them otherwise overrides :meth:`gradients`,
    :meth:`reset_gradients` or :meth:`reset_traces`.

    Example:
        >>> from traxon.trace.base import BoundRule
        >>> BoundRule.grad_fields, BoundRule.trace_fields  # the defaults
        (('grads',), ())
    """

    #: The fields of the state that sum the gradient (zeroed by :meth:`reset_gradients`).
    grad_fields: tuple[str, ...] = ("grads",)
    #: The fields of the state that carry a sequence's traces (zeroed by :meth:`reset_traces`).
    trace_fields: tuple[str, ...] = ()

    def __init__(self, net: Network, loss_fn: LossFn) -> None:
        self.net, self.loss_fn = net, loss_fn
        self.projs = trainable(net)
        self.names = tuple(p.name for p in self.projs)

    def init(self, params: Params, state: Any, target_example: Any = None) -> TS:
        """The tracer's ``init`` (:class:`InitFn`)."""
        raise NotImplementedError

    def advance(
        self, params: Params, state: Any, ts: TS, data: StepData
    ) -> tuple[Any, TS, StepOutput]:
        """One network step: ``(new_state, new_tstate, StepOutput)``."""
        raise NotImplementedError

    def step(
        self,
        params: Params,
        state: Any,
        ts: TS,
        x: Mapping[str, jax.Array],
        target: Any,
        weight: jax.Array,
        spike_cost: Mapping[str, jax.Array] | None = None,
    ) -> tuple[Any, TS, StepOutput]:
        """The tracer's ``step`` (:class:`StepFn`): :meth:`advance` on the step's data."""
        return self.advance(params, state, ts, StepData(x, target, weight, spike_cost))

    def gradients(self, params: Params, ts: Any) -> dict[str, jax.Array]:
        """The tracer's ``gradients`` (:class:`GradientsFn`)."""
        return dict(ts.grads)

    def reset_gradients(self, ts: TS) -> TS:
        """The tracer's ``reset_gradients`` (:class:`ResetGradientsFn`)."""
        return zeroed(ts, self.grad_fields)

    def reset_traces(self, params: Params, state: Any, ts: TS) -> TS:
        """The tracer's ``reset_traces`` (:class:`ResetTracesFn`)."""
        return zeroed(ts, self.trace_fields)

    def update_steps(self, batch: int) -> dict[str, int]:
        """The tracer's ``update_steps`` (:attr:`Tracer.update_steps`); none by default."""
        return {}

    def tracer(self, name: str) -> Tracer:
        """The bound methods as a :class:`Tracer` named ``name``."""
        return Tracer(
            name,
            self.init,
            self.step,
            self.gradients,
            self.reset_gradients,
            self.reset_traces,
            self.update_steps,
        )


def _merged(a: Mapping[str, tuple[str, ...]], b: Mapping[str, tuple[str, ...]]) -> dict:
    out = {k: tuple(v) for k, v in a.items()}
    for k, v in b.items():
        out[k] = tuple(sorted(set(out.get(k, ())) | set(v)))
    return out


class SignalRule(BoundRule[TS]):
    """A bound rule that works on the step's quantities (:func:`step_quantities`): the
    blocks ``posts`` ``{population: channels}`` and learning signals ``sigs``
    ``{population: signals}`` it needs, and the readout's decay ``kappa``.

    Arguments:
        signals: extra ``{population: signals}`` whose learning signals are needed
            (besides :func:`learning_signals`).
        blocks: extra ``{population: channels}`` whose ``D`` and ``F`` are needed (besides
            :func:`post_populations`).
    """

    def __init__(
        self,
        net: Network,
        loss_fn: LossFn,
        signals: Mapping[str, tuple[str, ...]] | None = None,
        blocks: Mapping[str, tuple[str, ...]] | None = None,
    ) -> None:
        super().__init__(net, loss_fn)
        self.posts = _merged(post_populations(net), blocks or {})
        self.sigs = _merged(learning_signals(net), signals or {})
        self.kappa = readout_decay(net)

    def quantities(self, params: Params, state: Any, data: StepData) -> StepQuantities:
        """This step's :class:`~traxon.trace.StepQuantities` for ``posts`` and ``sigs``."""
        x, target, weight, spike_cost = data
        return step_quantities(
            self.net,
            params,
            state,
            x,
            target,
            weight,
            self.loss_fn,
            self.posts,
            self.sigs,
            spike_cost,
        )
