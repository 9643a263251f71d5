"""traxon: linear-memory online learning for spiking neural networks in JAX."""

from traxon._checks import TraxonWarning
from traxon.core import (
    LIF,
    Network,
    Population,
    Projection,
    Readout,
)

__version__ = "0.1.0"
