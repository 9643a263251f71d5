r"""OSTL: online spatio-temporal learning (Bohnstingl et al. 2022, IEEE TNNLS).

OSTL splits the gradient of every step into a *temporal* part, an eligibility trace that
follows each weight's influence through its own layer's dynamics, and a *spatial* part, the
learning signal of this step propagated through the layers above within the same step:

.. math::
    E_{t,p} = D_t[\mathrm{post}(p)]\; E_{t-1,p} + F^c_t[\mathrm{post}(p)]\;
              \frac{\partial u_{\mathrm{post}(p)}}{\partial w_p}(z_t)
    \qquad\text{(temporal)}

    \nabla_{w_p} \mathrel{+}= \sum_b \sum_s \delta_t[b, \mathrm{post}(p), s]\; E_{t,p}[b, s],
    \qquad \delta_t = \sum_{\mathrm{sig}} \lambda_t^{\mathrm{sig}}\, g^{\mathrm{sig}}_t
    \qquad\text{(spatial)}

In traxon's neuron-aligned contract a layer is a population, the temporal trace is the
per-neuron trace :math:`E` built from :math:`D` and :math:`F`, and the spatial signal is
:math:`\lambda = \partial l_t / \partial \mathrm{sig}_t`, back-propagated within the step
through the downstream populations and the readout (their previous states held fixed). OSTL
therefore computes the same gradient as :func:`~traxon.trace.d_rtrl`; ``ostl`` exists under
its own name so that users coming from the paper find it, and so that the assumptions are
stated in its terms.

**Leaky readout.** A readout :math:`y_t = \kappa y_{t-1} + \dots` is a layer with state; the
spatial signal holds :math:`y_{t-1}` fixed, which drops the readout's memory (the "residual"
term below). With ``readout_filter=True`` (default) the hidden weights filter their
output-contracted traces with :math:`\kappa` (as D-RTRL does), which puts that memory back:
:math:`\bar G_{t,p} = \kappa \bar G_{t-1,p} + \sum_s g_t[\cdot, s] E_{t,p}[s]`,
:math:`\nabla_{w_p} \mathrel{+}= \sum_b \lambda_t \bar G_{t,p}`. ``readout_filter=False``
is the plain spatial signal of the paper.

* Memory: :math:`O(B \cdot |W| \cdot S)` per weight (:math:`B \cdot I \cdot N \cdot S` dense).
* Compute per step: :math:`O(B \cdot |W| \cdot S^2)` plus one step's VJP for :math:`\lambda`.
* Exact (equal to BPTT) for a *shallow* network: one population with no recurrent weights,
  any neuron model, instantaneous readout, or a leaky readout with ``readout_filter=True``.
* Dropped on deeper or recurrent networks: (i) the *residual* term -- a weight's influence
  carried to later steps by the state of a *downstream* population (its membrane, its
  synapses) -- and (ii) on recurrent weights, every term that crosses between neurons of the
  same population through :math:`\partial h_t / \partial h_{t-1}` (including a neuron's
  own self-connection; :func:`~traxon.trace.snap` keeps that one).

This module also holds :func:`bind_param_rule`, the machinery the parameter-dimension rules
(OSTL, e-prop, SnAp-1) share: it runs :func:`~traxon.trace.step_quantities`, lets a rule
adjust the quantities (another learning signal, another Jacobian block), then updates the
per-weight traces with :func:`traxon.trace.d_rtrl.update_param_traces`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from traxon.core.network import READOUT, Network
from traxon.trace._quantities import StepQuantities, step_quantities
from traxon.trace.base import (
    Algorithm,
    LossFn,
    StepOutput,
    Tracer,
    check_network,
    learning_signals,
    post_populations,
    readout_decay,
    register,
    trainable,
)
from traxon.trace.d_rtrl import init_param_traces, update_param_traces

__all__ = ["ParamTraceState", "bind_param_rule", "ostl"]

#: ``adjust(params, state, q, extra) -> q``: a rule's change to the step's quantities.
Adjust = Callable[[Mapping[str, jax.Array], Any, StepQuantities, Any], StepQuantities]


class ParamTraceState(NamedTuple):
    """State of the parameter-dimension rules (:func:`ostl`, :func:`~traxon.trace.eprop`,
    :func:`~traxon.trace.snap`).

    Attributes:
        E: ``{weight: (E_1, ..., E_S)}`` eligibility traces, one ``(B, *W.shape)`` array per
            state variable of the postsynaptic population.
        G: ``{weight: {signal: (B, *W.shape)}}`` readout-filtered traces (leaky readout).
        grads: ``{weight: (B, *W.shape)}`` accumulated gradient, per sample (summed over the
            batch when read).
        extra: rule-specific constants (e-prop's random feedback matrices), else ``{}``.

    Example:
        >>> from traxon.trace.ostl import ParamTraceState
        >>> ParamTraceState._fields
        ('E', 'G', 'grads', 'extra')
    """

    E: dict[str, tuple[jax.Array, ...]]
    G: dict[str, dict[str, jax.Array]]
    grads: dict[str, jax.Array]
    extra: dict[str, Any]


def _merge(a: Mapping[str, tuple[str, ...]], b: Mapping[str, tuple[str, ...]]) -> dict:
    out = {k: tuple(v) for k, v in a.items()}
    for k, v in b.items():
        out[k] = tuple(sorted(set(out.get(k, ())) | set(v)))
    return out


def bind_param_rule(
    algorithm: Algorithm,
    net: Network,
    loss_fn: LossFn,
    readout_filter: bool = True,
    signals: Mapping[str, tuple[str, ...]] | None = None,
    blocks: Mapping[str, tuple[str, ...]] | None = None,
    init_extra: Callable[[Mapping[str, jax.Array], Any], dict[str, Any]] | None = None,
    adjust: Adjust | None = None,
) -> Tracer:
    """A :class:`~traxon.trace.Tracer` with per-weight traces updated as in D-RTRL.

    Arguments:
        algorithm: the rule (its ``name`` names the tracer; checked with ``check_network``).
        readout_filter: filter the hidden weights' traces with the readout's decay.
        signals: extra ``{population: signals}`` whose learning signals are needed.
        blocks: extra ``{population: channels}`` whose ``D`` and ``F`` are needed.
        init_extra: ``(params, state) -> dict`` of constants kept in the state.
        adjust: ``(params, state, q, extra) -> q``, applied before the traces are updated.

    Returns:
        The bound tracer; its state is a :class:`ParamTraceState`.

    Example:
        >>> import jax, traxon
        >>> from traxon.core import LIF, Dense, Network, Population, Projection, Readout
        >>> from traxon.learn import cross_entropy
        >>> from traxon.trace.ostl import bind_param_rule
        >>> net = Network(3, {"h": Population(LIF(), 4)}, [Projection("x", "h", Dense(3.0))],
        ...               readout=Readout("h", 2))
        >>> tracer = bind_param_rule(traxon.trace.ostl(), net, cross_entropy.fn)
        >>> params, state = net.init(jax.random.PRNGKey(0), 2)
        >>> tracer.init(params, state).E["x->h"][0].shape
        (2, 3, 4)
    """
    check_network(net, algorithm)
    projs = trainable(net)
    for p in projs:
        if not getattr(p.op, "param_traces", True):
            raise ValueError(
                f"weight `{p.name}`: {algorithm.name} keeps one trace per weight entry and needs "
                "to know which neuron each entry drives, which this weight op does not say. "
                "Use algorithm='es_d_rtrl' (or 'bptt')."
            )
    posts = _merge(post_populations(net), blocks or {})
    sigs = _merge(learning_signals(net), signals or {})
    kappa = readout_decay(net)
    filtered = {
        p.name: sigs.get(p.target, ())
        for p in projs
        if readout_filter and kappa > 0 and p.target != READOUT
    }

    def init(
        params: Mapping[str, jax.Array], state: Any, target_example: Any = None
    ) -> ParamTraceState:
        E, G, acc = init_param_traces(net, params, projs, filtered, net.batch_size(state))
        extra = init_extra(params, state) if init_extra is not None else {}
        return ParamTraceState(E, G, acc, extra)

    def step(
        params: Mapping[str, jax.Array],
        state: Any,
        ts: ParamTraceState,
        x: Mapping[str, jax.Array],
        target: Any,
        weight: jax.Array,
        spike_cost: Mapping[str, jax.Array] | None = None,
    ) -> tuple[Any, ParamTraceState, StepOutput]:
        q = step_quantities(net, params, state, x, target, weight, loss_fn, posts, sigs, spike_cost)
        if adjust is not None:
            q = adjust(params, state, q, ts.extra)
        E, G, grads = dict(ts.E), dict(ts.G), dict(ts.grads)
        for p in projs:
            W = params[p.name]
            e, g, contrib = update_param_traces(p, q, W, ts.E[p.name], ts.G.get(p.name), kappa)
            E[p.name] = e
            if g is not None:
                G[p.name] = g
            grads[p.name] = grads[p.name] + contrib.astype(W.dtype)
        return q.new_state, ParamTraceState(E, G, grads, ts.extra), StepOutput(q.output, q.loss)

    def gradients(params: Mapping[str, jax.Array], ts: ParamTraceState) -> dict[str, jax.Array]:
        return {k: jnp.sum(g, axis=0) for k, g in ts.grads.items()}

    def reset_gradients(ts: ParamTraceState) -> ParamTraceState:
        return ts._replace(grads=jax.tree_util.tree_map(jnp.zeros_like, ts.grads))

    def reset_traces(params: Any, state: Any, ts: ParamTraceState) -> ParamTraceState:
        zero = jax.tree_util.tree_map(jnp.zeros_like, (ts.E, ts.G))
        return ts._replace(E=zero[0], G=zero[1])

    return Tracer(algorithm.name, init, step, gradients, reset_gradients, reset_traces)


@register("ostl")
class ostl(Algorithm):
    """Online spatio-temporal learning (see the module docstring for the equations).

    Arguments:
        readout_filter: with a leaky readout, filter the hidden weights' traces with the
            readout's decay :math:`\\kappa` (exact on one population). ``False`` holds the
            readout's previous value fixed, as the paper's spatial gradient does.

    Example:
        >>> import traxon
        >>> traxon.trace.ostl().name, traxon.trace.ostl(readout_filter=False).readout_filter
        ('ostl', False)
    """

    name = "ostl"

    def __init__(self, readout_filter: bool = True) -> None:
        if not isinstance(readout_filter, bool):
            raise TypeError(f"`readout_filter` must be True or False; got {readout_filter!r}.")
        self.readout_filter = readout_filter

    def bind(self, net: Network, loss_fn: LossFn, window: int | None = None) -> Tracer:
        return bind_param_rule(self, net, loss_fn, readout_filter=self.readout_filter)
