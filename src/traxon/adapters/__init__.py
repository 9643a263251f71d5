"""Adapters: someone else's network -> traxon's model contract.

``traxon.adapters.adapt(module, input_size)`` reads a brainstate / ``brainpy.state``
module's step; brainstate is a core dependency, brainpy an optional extra.
"""

from traxon.adapters.brainstate import AdaptedNetwork, adapt

__all__ = ["AdaptedNetwork", "adapt"]
