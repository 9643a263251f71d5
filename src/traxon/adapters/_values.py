"""Values held by brainstate states: Quantities, leaves, units and the kind of a state.

A state's value is a pytree (``Linear``'s ``{"weight": ..., "bias": ...}``) whose leaves may
be brainunit Quantities. The adapter works on the mantissas of its leaves and keeps each
leaf's unit to restore it when it writes a value back. brainstate and brainunit are
imported when first needed, so importing :mod:`traxon` does not import them.
"""

from __future__ import annotations

from typing import Any, Literal

import jax

__all__ = ["brainstate", "is_quantity", "leaf_keys", "leaves", "mantissa", "state_kind", "unit_of"]

#: What a state is to the adapter: a weight (``ParamState``), a neuron state that is traced
#: (``HiddenState``) or any other state it carries along (``"aux"``, e.g. a random state).
StateKind = Literal["param", "hidden", "aux"]


def brainstate() -> Any:
    """The ``brainstate`` package (imported on first use).

    Example:
        >>> brainstate().nn.Module.__name__
        'Module'
    """
    import brainstate as bs

    return bs


def is_quantity(v: Any) -> bool:
    """Whether ``v`` is a brainunit Quantity.

    Example:
        >>> import brainunit as u
        >>> is_quantity(1.0 * u.mV), is_quantity(1.0)
        (True, False)
    """
    import brainunit as u

    return isinstance(v, u.Quantity)


def leaves(value: Any) -> list[Any]:
    """The leaves of a state's value, each Quantity kept whole.

    Example:
        >>> import brainunit as u
        >>> [str(v) for v in leaves({"b": 2.0 * u.mV, "a": 1.0})]
        ['1.0', '2. mV']
    """
    return jax.tree_util.tree_leaves(value, is_leaf=is_quantity)


def leaf_keys(value: Any) -> list[str]:
    """The path of every leaf of a state's value (``jax.tree_util.keystr``), in the order
    of :func:`leaves`.

    Example:
        >>> leaf_keys({"weight": 1.0, "bias": 0.0})
        ["['bias']", "['weight']"]
    """
    return [
        jax.tree_util.keystr(p)
        for p, _ in jax.tree_util.tree_flatten_with_path(value, is_leaf=is_quantity)[0]
    ]


def mantissa(v: Any) -> Any:
    """``v`` without its unit (``v`` itself when it is not a Quantity).

    Example:
        >>> import brainunit as u
        >>> float(mantissa(3.0 * u.mV))
        3.0
    """
    import brainunit as u

    return u.get_mantissa(v) if isinstance(v, u.Quantity) else v


def unit_of(v: Any) -> Any:
    """The unit of a Quantity, or ``None`` for a plain array or a unitless Quantity.

    Example:
        >>> import brainunit as u
        >>> unit_of(3.0 * u.mV) == u.mV, unit_of(3.0)
        (True, None)
    """
    import brainunit as u

    if isinstance(v, u.Quantity) and not u.get_unit(v).is_unitless:
        return u.get_unit(v)
    return None


def state_kind(state: Any) -> StateKind:
    """What ``state`` is to the adapter (see :data:`StateKind`).

    Example:
        >>> import jax.numpy as jnp
        >>> state_kind(brainstate().ParamState(jnp.zeros(2)))
        'param'
    """
    bs = brainstate()
    if isinstance(state, bs.ParamState):
        return "param"
    if isinstance(state, bs.HiddenState):
        return "hidden"
    return "aux"


def is_random_state(state: Any) -> bool:
    """Whether ``state`` is a brainstate random state (the module's own or the global one).

    Example:
        >>> is_random_state(brainstate().random.DEFAULT)
        True
    """
    return isinstance(state, brainstate().random.RandomState)
