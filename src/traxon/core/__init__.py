"""The pure-JAX core: neurons, synapses, weight ops, surrogates and network composition.

Everything here is a pytree or a pure function; nothing holds mutable state.
"""

from traxon.core.conv import Conv1D, Conv2D
from traxon.core.gap import GapJunction, SparseGapJunction
from traxon.core.gated import GRU, GatedCell, MinGRU
from traxon.core.network import Network, Population, Projection, Readout, SimulationResult
from traxon.core.neurons import ALIF, LIF, Graded, Izhikevich, LeakyIntegrator, Neuron
from traxon.core.ops import (
    CSR,
    Bias,
    Dense,
    ElementWise,
    FixedInDegree,
    FixedOutDegree,
    Sparse,
    WeightOp,
)
from traxon.core.surrogates import SURROGATES, Surrogate, surrogate
from traxon.core.synapses import Alpha, Delta, DualExpon, Expon, Synapse

__all__ = [
    "ALIF",
    "CSR",
    "GRU",
    "LIF",
    "SURROGATES",
    "Alpha",
    "Bias",
    "Conv1D",
    "Conv2D",
    "Delta",
    "Dense",
    "DualExpon",
    "ElementWise",
    "Expon",
    "FixedInDegree",
    "FixedOutDegree",
    "GapJunction",
    "GatedCell",
    "Graded",
    "Izhikevich",
    "LeakyIntegrator",
    "MinGRU",
    "Network",
    "Neuron",
    "Population",
    "Projection",
    "Readout",
    "SimulationResult",
    "Sparse",
    "SparseGapJunction",
    "Surrogate",
    "Synapse",
    "WeightOp",
    "surrogate",
]
