r"""Parameter-dimension traces: the machinery D-RTRL, OSTL, e-prop and SnAp-1 share.

Each entry :math:`w_p` of a weight keeps one eligibility trace per state variable of its
postsynaptic neuron (:func:`init_param_traces`), advanced every step by the neuron's
Jacobian blocks (:func:`param_trace_terms`, :func:`advance_param_traces`; the equations are
in :mod:`traxon.trace.d_rtrl`). :class:`ParamTraces` is the bound part of every such rule;
:class:`ParamTraceRule` completes a rule that only adjusts the step's quantities (another
learning signal, another Jacobian block); :func:`batch_dot` is the fast batch-summed product.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from traxon.core.network import READOUT, Network
from traxon.trace._quantities import StepQuantities
from traxon.trace.base import TS, LossFn, SignalRule, StepData, StepOutput

__all__ = [
    "Adjust",
    "ParamTraceRule",
    "ParamTraceState",
    "ParamTraces",
    "advance_param_traces",
    "batch_dot",
    "init_param_traces",
    "param_trace_terms",
]


def init_param_traces(
    net: Network,
    params: Mapping[str, jax.Array],
    projs: Any,
    filtered: Mapping[str, tuple[str, ...]],
    batch: int,
) -> tuple[dict, dict, dict]:
    """Zero parameter-dimension traces ``E``, filtered traces ``G`` and per-sample sums."""
    E: dict[str, tuple[jax.Array, ...]] = {}
    G: dict[str, dict[str, jax.Array]] = {}
    acc: dict[str, jax.Array] = {}
    for p in projs:
        S = len(net.populations[p.target].traced)
        w = params[p.name]
        shape = (batch, *w.shape)
        E[p.name] = tuple(jnp.zeros(shape, w.dtype) for _ in range(S))
        if p.name in filtered:
            G[p.name] = {s: jnp.zeros(shape, w.dtype) for s in filtered[p.name]}
        acc[p.name] = jnp.zeros(shape, w.dtype)
    return E, G, acc


def batch_dot(terms: Any) -> jax.Array:
    r"""``sum_b sum_k f_k[b] * a_k[b]``: a batch-summed sum of products, as adds of slices.

    ``terms`` is a sequence of pairs ``(f_k, a_k)`` that broadcast to ``(B, *shape)``. Inside
    a ``lax.scan`` on CPU, XLA's ``reduce`` over a leading axis of a large array is an order
    of magnitude slower than one pass over memory, a batched ``dot`` adds a transpose, and a
    materialised ``(B, *shape)`` product costs one more pass; products of slices summed one
    sample after another fuse into a single loop that reads each trace element once. (More
    than 32 samples: the products are materialised and summed by pairwise halving.)
    """
    terms = list(terms)
    batch = max(jnp.shape(a)[0] for _, a in terms)
    if batch <= 32:
        out: Any = 0.0
        for b in range(batch):
            for f, a in terms:
                out = out + f[b if jnp.shape(f)[0] > 1 else 0] * a[b if jnp.shape(a)[0] > 1 else 0]
        return out
    x = sum(f * a for f, a in terms)
    while x.shape[0] > 1:
        half = x.shape[0] // 2
        rest = x[2 * half :]
        x = x[:half] + x[half : 2 * half]
        if rest.shape[0]:
            x = x.at[:1].add(rest)
    return x[0]


def param_trace_terms(
    p: Any,
    q: Any,
    W: jax.Array,
    E: tuple[jax.Array, ...],
    G: Mapping[str, jax.Array] | None,
    kappa: float,
) -> tuple[tuple[jax.Array, ...], dict[str, jax.Array] | None, list[tuple[jax.Array, jax.Array]]]:
    """One D-RTRL step of one weight: new ``E``, new ``G`` and this step's gradient terms.

    The gradient of this step is ``batch_dot(terms)`` (``sum_b sum_k f_k[b] * a_k[b]``); a
    per-sample gradient is ``sum(f * a for f, a in terms)``.

    ``G`` is ``None`` for the unfiltered rule (instantaneous readout, or the readout's own
    weights); otherwise ``{signal: (B, *W.shape)}`` filtered with ``kappa``.
    """
    op = p.op
    D = q.D[p.target]
    F = q.F[p.target][p.channel]
    pre = op.pre_factor(W, q.z[p.name])
    S = len(E)
    e = tuple(
        sum((op.to_params(D[..., s, r]) * E[r] for r in range(S)), start=0.0)
        + op.to_params(F[..., s]) * pre
        for s in range(S)
    )
    if G is None:
        delta = q.delta[p.target]
        return e, None, [(op.to_params(delta[..., r]), e[r]) for r in range(S)]
    new_g = {}
    terms = []
    for sig, old in G.items():
        g = q.g[p.target][sig]
        gs = sum(op.to_params(g[..., r]) * e[r] for r in range(S))
        new_g[sig] = kappa * old + gs
        if sig == "spike" and p.target in q.cost:
            # Spike costs act on this step's spikes, not through the readout.
            terms.append((op.to_params(q.cost[p.target]), gs))
        terms.append((op.to_params(q.lam[p.target][sig]), new_g[sig]))
    return e, new_g, terms


def advance_param_traces(
    projs: Any,
    q: StepQuantities,
    params: Mapping[str, jax.Array],
    traces: tuple[Mapping[str, Any], Mapping[str, Any], Mapping[str, jax.Array]],
    kappa: float,
    summed: bool,
) -> tuple[dict, dict, dict]:
    """One step of the weights ``projs``: the new ``(E, G, acc)`` from ``traces``, this
    step's gradient added to ``acc`` summed over the batch (``summed``, with
    :func:`batch_dot`) or per sample ``(B, *W.shape)``."""
    E, G, acc = (dict(t) for t in traces)
    for p in projs:
        W = params[p.name]
        e, g, terms = param_trace_terms(p, q, W, E[p.name], G.get(p.name), kappa)
        E[p.name] = e
        if g is not None:
            G[p.name] = g
        if summed:
            contrib = batch_dot(terms)
        else:
            contrib = sum((f * a for f, a in terms), start=jnp.zeros((), W.dtype))
        acc[p.name] = acc[p.name] + contrib.astype(W.dtype)
    return E, G, acc


#: ``adjust(params, state, q, extra) -> q``: a rule's change to the step's quantities.
Adjust = Callable[[Mapping[str, jax.Array], Any, StepQuantities, Any], StepQuantities]


class ParamTraceState(NamedTuple):
    """State of the parameter-dimension rules (:func:`~traxon.trace.ostl`,
    :func:`~traxon.trace.eprop`, :func:`~traxon.trace.snap`).

    Attributes:
        E: ``{weight: (E_1, ..., E_S)}`` eligibility traces, one ``(B, *W.shape)`` array per
            state variable of the postsynaptic population.
        G: ``{weight: {signal: (B, *W.shape)}}`` readout-filtered traces (leaky readout).
        grads: ``{weight: (B, *W.shape)}`` accumulated gradient, per sample (summed over the
            batch when read).
        extra: rule-specific constants (e-prop's random feedback matrices), else ``{}``.

    Example:
        >>> from traxon.trace._param_traces import ParamTraceState
        >>> ParamTraceState._fields
        ('E', 'G', 'grads', 'extra')
    """

    E: dict[str, tuple[jax.Array, ...]]
    G: dict[str, dict[str, jax.Array]]
    grads: dict[str, jax.Array]
    extra: dict[str, Any]


class ParamTraces(SignalRule[TS]):
    """The bound part of the rules with per-weight traces updated as in D-RTRL: the weights
    whose traces it filters with the readout's decay, and the traces' zero and one step (the
    state's ``E``, ``G`` and ``grads`` fields).

    Arguments:
        rule: the rule's name (for the error raised when a weight op cannot lay out
            per-entry traces).
        readout_filter: filter the hidden weights' traces with the readout's decay.
        signals, blocks: as :class:`~traxon.trace.base.SignalRule`.
        init_extra: ``(params, state) -> dict`` of constants kept in the state
            (:class:`ParamTraceRule`).
        adjust: ``(params, state, q, extra) -> q``, applied before the traces are updated
            (:class:`ParamTraceRule`).
    """

    trace_fields = ("E", "G")

    def __init__(
        self,
        rule: str,
        net: Network,
        loss_fn: LossFn,
        readout_filter: bool = True,
        signals: Mapping[str, tuple[str, ...]] | None = None,
        blocks: Mapping[str, tuple[str, ...]] | None = None,
        init_extra: Callable[[Mapping[str, jax.Array], Any], dict[str, Any]] | None = None,
        adjust: Adjust | None = None,
    ) -> None:
        for p in net.projections:
            if p.trainable and not getattr(p.op, "param_traces", True):
                hint = getattr(p.op, "param_traces_hint", "Use algorithm='es_d_rtrl' (or 'bptt').")
                raise ValueError(
                    f"weight `{p.name}`: {rule} keeps one trace per weight entry and needs to "
                    "know which neuron each entry drives, which this weight op does not say. "
                    + hint
                )
        super().__init__(net, loss_fn, signals, blocks)
        self.filtered = {
            p.name: self.sigs.get(p.target, ())
            for p in self.projs
            if readout_filter and self.kappa > 0 and p.target != READOUT
        }
        self.init_extra, self.adjust = init_extra, adjust

    def zero_traces(self, params: Mapping[str, jax.Array], state: Any) -> tuple[dict, dict, dict]:
        """``(E, G, per-sample sums)`` at zero (:func:`init_param_traces`)."""
        batch = self.net.batch_size(state)
        return init_param_traces(self.net, params, self.projs, self.filtered, batch)

    def traces(
        self, params: Mapping[str, jax.Array], q: StepQuantities, ts: Any, summed: bool
    ) -> tuple[dict, dict, dict]:
        """The new ``(E, G, grads)`` of ``ts`` after this step (:func:`advance_param_traces`)."""
        traces = (ts.E, ts.G, ts.grads)
        return advance_param_traces(self.projs, q, params, traces, self.kappa, summed)


class ParamTraceRule(ParamTraces[ParamTraceState]):
    """A rule with per-weight traces updated as in D-RTRL, per-sample gradient sums, and an
    optional change to the step's quantities (the arguments of :class:`ParamTraces`).

    Example:
        >>> import jax, traxon
        >>> from traxon.core import LIF, Dense, Network, Population, Projection, Readout
        >>> from traxon.learn import cross_entropy
        >>> from traxon.trace._param_traces import ParamTraceRule
        >>> net = Network(3, {"h": Population(LIF(), 4)}, [Projection("x", "h", Dense(3.0))],
        ...               readout=Readout("h", 2))
        >>> tracer = ParamTraceRule("ostl", net, cross_entropy.fn).tracer("ostl")
        >>> params, state = net.init(jax.random.PRNGKey(0), 2)
        >>> tracer.init(params, state).E["x->h"][0].shape
        (2, 3, 4)
    """

    def init(
        self, params: Mapping[str, jax.Array], state: Any, target_example: Any = None
    ) -> ParamTraceState:
        E, G, acc = self.zero_traces(params, state)
        extra = self.init_extra(params, state) if self.init_extra is not None else {}
        return ParamTraceState(E, G, acc, extra)

    def advance(
        self, params: Mapping[str, jax.Array], state: Any, ts: ParamTraceState, data: StepData
    ) -> tuple[Any, ParamTraceState, StepOutput]:
        q = self.quantities(params, state, data)
        if self.adjust is not None:
            q = self.adjust(params, state, q, ts.extra)
        E, G, grads = self.traces(params, q, ts, summed=False)
        return q.new_state, ParamTraceState(E, G, grads, ts.extra), StepOutput(q.output, q.loss)

    def gradients(
        self, params: Mapping[str, jax.Array], ts: ParamTraceState
    ) -> dict[str, jax.Array]:
        return {k: jnp.sum(g, axis=0) for k, g in ts.grads.items()}
