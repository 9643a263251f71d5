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

from traxon.core.network import Network
from traxon.trace._param_traces import ParamTraces
from traxon.trace.base import Algorithm, LossFn, StepData, StepOutput, register

__all__ = ["DRTRLState", "d_rtrl"]


class DRTRLState(NamedTuple):
    """State of :func:`d_rtrl`.

    Attributes:
        E: ``{weight: (E_1, ..., E_S)}`` eligibility traces, one ``(B, *W.shape)`` array per
            state variable of the postsynaptic population.
        G: ``{weight: {signal: (B, *W.shape)}}`` readout-filtered traces (leaky readout only).
        grads: ``{weight: W.shape}`` accumulated gradient, summed over the batch every step
            with :func:`batch_dot` (about twice as fast on CPU as keeping per-sample sums,
            which costs one more ``(B, *W.shape)`` array to read and write every step).
    """

    E: dict[str, tuple[jax.Array, ...]]
    G: dict[str, dict[str, jax.Array]]
    grads: dict[str, jax.Array]


@register("d_rtrl")
class d_rtrl(Algorithm):
    """Parameter-dimension eligibility traces (see the module docstring for the equations).

    Example:
        >>> import traxon
        >>> traxon.trace.d_rtrl().name
        'd_rtrl'
    """

    name = "d_rtrl"
    per_entry_traces = True

    def _bound(self, net: Network, loss_fn: LossFn, window: int | None) -> ParamTraces[DRTRLState]:
        return _Bound(self.name, net, loss_fn)


class _Bound(ParamTraces[DRTRLState]):
    """:class:`d_rtrl` bound to a network and a loss: the gradient summed over the batch
    every step."""

    def init(
        self, params: Mapping[str, jax.Array], state: Any, target_example: Any = None
    ) -> DRTRLState:
        E, G, _ = self.zero_traces(params, state)
        return DRTRLState(E, G, {k: jnp.zeros_like(params[k]) for k in self.names})

    def advance(
        self, params: Mapping[str, jax.Array], state: Any, ts: DRTRLState, data: StepData
    ) -> tuple[Any, DRTRLState, StepOutput]:
        q = self.quantities(params, state, data)
        E, G, grads = self.traces(params, q, ts, summed=True)
        return q.new_state, DRTRLState(E, G, grads), StepOutput(q.output, q.loss)
