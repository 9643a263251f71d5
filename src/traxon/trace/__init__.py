"""The tracer: per-neuron eligibility traces by forward-mode JVPs, and the reference rules.

Algorithms are configured objects, selectable by name through :func:`get_algorithm`, and
bound to a network and a loss with ``.bind(net, loss_fn)`` to give a pure ``(init, step)``
:class:`Tracer`.
"""

from traxon.trace._quantities import StepQuantities, step_quantities
from traxon.trace.base import ALGORITHMS, Algorithm, StepOutput, Tracer, get_algorithm
from traxon.trace.bptt import bptt, bptt_gradient
from traxon.trace.d_rtrl import d_rtrl
from traxon.trace.es_d_rtrl import es_d_rtrl, state_decays
from traxon.trace.rtrl import rtrl

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "StepOutput",
    "StepQuantities",
    "Tracer",
    "bptt",
    "bptt_gradient",
    "d_rtrl",
    "es_d_rtrl",
    "get_algorithm",
    "rtrl",
    "state_decays",
    "step_quantities",
]
