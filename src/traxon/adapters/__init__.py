"""Adapters: someone else's network -> traxon's model contract.

``traxon.adapters.adapt(module, input_size)`` reads a brainstate / ``brainpy.state``
module's step; brainstate is a core dependency, brainpy an optional extra.
"""

from typing import Any

from traxon.adapters.brainstate import AdaptedNetwork, adapt

__all__ = ["AdaptedNetwork", "adapt", "read_model"]


def read_model(
    model: Any,
    input_size: int | None = None,
    call: Any = None,
    input_unit: Any = None,
    draw_initial_state: bool = True,
) -> AdaptedNetwork | None:
    """:func:`adapt` for a ``brainstate.nn.Module``; ``None`` for anything else (the reader
    ``traxon`` registers with the learner, so ``online_learner(module, ...)`` works)."""
    import brainstate

    if not isinstance(model, brainstate.nn.Module):
        return None
    return adapt(model, input_size, call, input_unit, draw_initial_state)
