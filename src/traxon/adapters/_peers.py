"""Modules built with braintrace's layers: their operations in standard JAX.

braintrace's layers (``braintrace.nn.Linear``, its readouts and recurrent cells) apply their
weights through primitives of braintrace's own (``etp_mm``, ...), which carry the rules of
braintrace's compiler. traxon reads the same module by replacing each such equation with
the equations of the primitive's own implementation (``primitive.impl`` traced to a
jaxpr: ``etp_mm`` is a matmul and a bias addition), so that a network written for
braintrace attaches unmodified. braintrace is never imported: an equation is recognised by
the module its primitive's class is defined in.
"""

from __future__ import annotations

from typing import Any

import jax

__all__ = ["expand_peer_primitive"]


def expand_peer_primitive(eqn: Any) -> Any:
    """The ``ClosedJaxpr`` of ``eqn``'s primitive's implementation when the primitive is
    braintrace's, else ``None`` (the equation is kept)."""
    primitive = eqn.primitive
    if not type(primitive).__module__.startswith("braintrace."):
        return None
    impl = getattr(primitive, "impl", None)
    if impl is None:  # pragma: no cover - every braintrace primitive has one
        return None
    params = dict(eqn.params)

    def run(*args: Any) -> Any:
        return impl(*args, **params)

    specs = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in eqn.invars]
    return jax.make_jaxpr(run)(*specs)
