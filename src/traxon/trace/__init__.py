"""The tracer: per-neuron eligibility traces by forward-mode JVPs, and the reference rules.

Algorithms are configured objects, selectable by name through :func:`get_algorithm`, and
bound to a network and a loss with ``.bind(net, loss_fn)`` to give a pure ``(init, step)``
:class:`Tracer`.
"""

from traxon.trace._quantities import StepQuantities, state_decays, step_quantities
from traxon.trace.base import ALGORITHMS, Algorithm, StepOutput, Tracer, get_algorithm
from traxon.trace.bptt import bptt, bptt_gradient
from traxon.trace.d_rtrl import d_rtrl
from traxon.trace.dni import synthetic_gradients
from traxon.trace.eprop import eprop
from traxon.trace.es_d_rtrl import es_d_rtrl
from traxon.trace.ostl import ostl
from traxon.trace.rtrl import rtrl
from traxon.trace.snap import snap
from traxon.trace.three_factor import three_factor
from traxon.trace.uoro import uoro

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "StepOutput",
    "StepQuantities",
    "Tracer",
    "bptt",
    "bptt_gradient",
    "d_rtrl",
    "eprop",
    "es_d_rtrl",
    "get_algorithm",
    "ostl",
    "rtrl",
    "snap",
    "state_decays",
    "step_quantities",
    "synthetic_gradients",
    "three_factor",
    "uoro",
]
