r"""D-RTRL: diagonal real-time recurrent learning with parameter-dimension traces.

For a weight :math:`W` (entries :math:`w_p`) into population :math:`P` through channel
:math:`c`, each entry keeps an eligibility trace :math:`E_p \in \mathbb{R}^{S}` (the
sensitivity of its postsynaptic neuron's state to it):

.. math::
    E_{t,p} = D_t[\mathrm{post}(p)]\; E_{t-1,p} + F^c_t[\mathrm{post}(p)]\;
              \frac{\partial u_{\mathrm{post}(p)}}{\partial w_p}(z_t)

    \nabla_{w_p} \mathrel{+}= \sum_b \sum_s \delta_t[b, \mathrm{post}(p), s]\; E_{t,p}[b, s]

With a leaky readout (:math:`y_t = \kappa y_{t-1} + \dots`, :math:`\kappa > 0`) the weights
upstream of the readout instead filter their output-contracted trace with :math:`\kappa`,
so that the readout's memory does not lose their credit:

.. math::
    \bar G_{t,p} = \kappa\, \bar G_{t-1,p} + \sum_s g_t[\mathrm{post}(p), s]\, E_{t,p}[s],
    \qquad \nabla_{w_p} \mathrel{+}= \sum_b \lambda_t[b, \mathrm{post}(p)]\; \bar G_{t,p}[b]

(one :math:`\bar G` per output signal of :math:`P` read within the step; :math:`g` is
:math:`\partial \mathrm{sig}/\partial h`, :math:`\lambda = \partial l_t / \partial \mathrm{sig}_t`).

* Memory: :math:`O(B \cdot |W| \cdot S)` per weight (:math:`B \cdot I \cdot N \cdot S` dense).
* Compute per step: :math:`O(B \cdot |W| \cdot S^2)`.
* Exact (equal to BPTT) for one population with no recurrent weights, whatever the neuron
  model and the reads inside its step, with an instantaneous or a leaky readout. With
  recurrent or multi-population paths through time it drops the cross-neuron terms.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from traxon.core.network import READOUT, Network
from traxon.trace._quantities import step_quantities
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

__all__ = ["DRTRLState", "d_rtrl"]


class DRTRLState(NamedTuple):
    """State of :func:`d_rtrl`.

    Attributes:
        E: ``{weight: (B, *W.shape, S)}`` eligibility traces.
        G: ``{weight: {signal: (B, *W.shape)}}`` readout-filtered traces (leaky readout only).
        grads: ``{weight: W.shape}`` accumulated gradient.
    """

    E: dict[str, jax.Array]
    G: dict[str, dict[str, jax.Array]]
    grads: dict[str, jax.Array]


def _matvec(D: jax.Array, E: jax.Array) -> jax.Array:
    """Per-entry ``D @ E`` over the last axis (``D`` ``(..., S, S)``, ``E`` ``(..., S)``)."""
    S = E.shape[-1]
    out = D[..., :, 0] * E[..., 0:1]
    for r in range(1, S):
        out = out + D[..., :, r] * E[..., r : r + 1]
    return out


@register("d_rtrl")
class d_rtrl(Algorithm):  # noqa: N801 -- algorithm factories are lowercase, like optax's
    """Parameter-dimension eligibility traces (see the module docstring for the equations).

    Example:
        >>> import traxon
        >>> traxon.trace.d_rtrl().name
        'd_rtrl'
    """

    name = "d_rtrl"

    def bind(self, net: Network, loss_fn: LossFn, window: int | None = None) -> Tracer:
        check_network(net, self)
        projs = trainable(net)
        posts = post_populations(net)
        sigs = learning_signals(net)
        kappa = readout_decay(net)
        filtered = {
            p.name: sigs.get(p.target, ())
            for p in projs
            if kappa > 0 and p.target != READOUT
        }

        def init(params: Mapping[str, jax.Array], state: Any, target_example: Any = None) -> DRTRLState:
            batch = net.batch_size(state)
            E = {}
            G = {}
            for p in projs:
                S = len(net.populations[p.target].traced)
                shape = (batch, *params[p.name].shape)
                E[p.name] = jnp.zeros((*shape, S), params[p.name].dtype)
                if p.name in filtered:
                    G[p.name] = {s: jnp.zeros(shape, params[p.name].dtype) for s in filtered[p.name]}
            grads = {p.name: jnp.zeros_like(params[p.name]) for p in projs}
            return DRTRLState(E, G, grads)

        def step(
            params: Mapping[str, jax.Array],
            state: Any,
            ts: DRTRLState,
            x: Mapping[str, jax.Array],
            target: Any,
            weight: jax.Array,
        ) -> tuple[Any, DRTRLState, StepOutput]:
            q = step_quantities(net, params, state, x, target, weight, loss_fn, posts, sigs)
            E, G, grads = dict(ts.E), {k: dict(v) for k, v in ts.G.items()}, dict(ts.grads)
            for p in projs:
                W = params[p.name]
                op = p.op
                D = op.to_params(q.D[p.target])
                F = op.to_params(q.F[p.target][p.channel])
                pre = op.pre_factor(W, q.z[p.name])
                e = _matvec(D, ts.E[p.name]) + F * pre[..., None]
                E[p.name] = e
                if p.name in filtered:
                    contrib = jnp.zeros_like(W)
                    for s in filtered[p.name]:
                        gs = jnp.sum(op.to_params(q.g[p.target][s]) * e, axis=-1)
                        gbar = kappa * ts.G[p.name][s] + gs
                        G[p.name][s] = gbar
                        contrib = contrib + jnp.sum(op.to_params(q.lam[p.target][s]) * gbar, 0)
                else:
                    contrib = jnp.sum(op.to_params(q.delta[p.target]) * e, axis=(0, -1))
                grads[p.name] = grads[p.name] + contrib.astype(W.dtype)
            return q.new_state, DRTRLState(E, G, grads), StepOutput(q.output, q.loss)

        def gradients(params: Mapping[str, jax.Array], ts: DRTRLState) -> dict[str, jax.Array]:
            return dict(ts.grads)

        def reset_gradients(ts: DRTRLState) -> DRTRLState:
            return ts._replace(grads=jax.tree_util.tree_map(jnp.zeros_like, ts.grads))

        def reset_traces(params: Any, state: Any, ts: DRTRLState) -> DRTRLState:
            zero = jax.tree_util.tree_map(jnp.zeros_like, (ts.E, ts.G))
            return ts._replace(E=zero[0], G=zero[1])

        return Tracer(self.name, init, step, gradients, reset_gradients, reset_traces)
