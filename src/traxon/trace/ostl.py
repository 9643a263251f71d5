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

The machinery it shares with e-prop and SnAp-1 (per-weight traces updated as in D-RTRL,
a rule that only adjusts the step's quantities) lives in :mod:`traxon.trace._param_traces`.
"""

from __future__ import annotations

from traxon.core.network import Network
from traxon.trace._param_traces import ParamTraceRule, ParamTraceState
from traxon.trace.base import Algorithm, LossFn, register

__all__ = ["ParamTraceState", "ostl"]


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

    def _bound(self, net: Network, loss_fn: LossFn, window: int | None) -> ParamTraceRule:
        return ParamTraceRule(self.name, net, loss_fn, readout_filter=self.readout_filter)
