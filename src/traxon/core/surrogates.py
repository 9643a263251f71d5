r"""Surrogate spike functions: a Heaviside step forward, a smooth pseudo-derivative backward.

Each surrogate maps a normalised distance to threshold ``x`` (``x >= 0`` means a spike) to
``H(x)`` and defines its derivative with :func:`jax.custom_jvp`, so it works under
``jax.jvp``, ``jax.vjp``/``jax.grad`` and ``jax.vmap`` alike. All share two knobs:

* ``width`` -- how far from threshold the pseudo-derivative reaches (in units of ``x``);
* ``scale`` -- the pseudo-derivative's value at threshold, :math:`\psi(0)`.

=================  ===========================================================
name               pseudo-derivative :math:`\psi(x)`
=================  ===========================================================
``sigmoid``        :math:`4 s\,\sigma(x/w)\,(1-\sigma(x/w))`
``fast_sigmoid``   :math:`s / (1 + |x|/w)^2` (SuperSpike)
``triangle``       :math:`s \max(0, 1 - |x|/w)` (e-prop)
``gaussian``       :math:`s \exp(-x^2 / 2w^2)`
=================  ===========================================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from traxon._checks import check_positive, to_float
from traxon._module import Module, static

__all__ = ["SURROGATES", "Surrogate", "surrogate"]


def _heaviside(x: jax.Array) -> jax.Array:
    return (x >= 0).astype(x.dtype)


def _psi_sigmoid(x: jax.Array, width: Any, scale: Any) -> jax.Array:
    sig = jax.nn.sigmoid(x / width)
    return 4.0 * scale * sig * (1.0 - sig)


def _psi_fast_sigmoid(x: jax.Array, width: Any, scale: Any) -> jax.Array:
    return scale / jnp.square(1.0 + jnp.abs(x) / width)


def _psi_triangle(x: jax.Array, width: Any, scale: Any) -> jax.Array:
    return scale * jnp.maximum(0.0, 1.0 - jnp.abs(x) / width)


def _psi_gaussian(x: jax.Array, width: Any, scale: Any) -> jax.Array:
    return scale * jnp.exp(-0.5 * jnp.square(x / width))


SURROGATES: dict[str, Callable[..., jax.Array]] = {
    "sigmoid": _psi_sigmoid,
    "fast_sigmoid": _psi_fast_sigmoid,
    "triangle": _psi_triangle,
    "gaussian": _psi_gaussian,
}


def _make_spike_fn(psi: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
    @jax.custom_jvp
    def spike(x: jax.Array, width: Any, scale: Any) -> jax.Array:
        return _heaviside(x)

    @spike.defjvp
    def _spike_jvp(primals: tuple, tangents: tuple) -> tuple[jax.Array, jax.Array]:
        x, width, scale = primals
        # width and scale are hyperparameters: their tangents are ignored on purpose.
        return spike(x, width, scale), psi(x, width, scale).astype(x.dtype) * tangents[0]

    return spike


_SPIKE_FNS = {name: _make_spike_fn(psi) for name, psi in SURROGATES.items()}


class Surrogate(Module):
    """A Heaviside spike with a smooth pseudo-derivative (see the module docstring).

    Arguments:
        kind: one of ``"sigmoid"``, ``"fast_sigmoid"``, ``"triangle"``, ``"gaussian"``.
        width: reach of the pseudo-derivative around threshold (> 0).
        scale: value of the pseudo-derivative at threshold (> 0).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from traxon.core import Surrogate
        >>> f = Surrogate("triangle", width=1.0, scale=0.3)
        >>> f(jnp.array([-0.5, 0.2]))
        Array([0., 1.], dtype=float32)
        >>> jax.grad(lambda x: f(x).sum())(jnp.array([0.0, 0.5]))
        Array([0.3 , 0.15], dtype=float32)
    """

    kind: str = static(default="triangle")
    width: float = 1.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in SURROGATES:
            raise ValueError(f"`kind` must be one of {sorted(SURROGATES)}; got {self.kind!r}.")
        object.__setattr__(self, "width", to_float(self.width, None, "width"))
        object.__setattr__(self, "scale", to_float(self.scale, None, "scale"))
        check_positive(self.width, "width")
        check_positive(self.scale, "scale")

    def __call__(self, x: jax.Array) -> jax.Array:
        return _SPIKE_FNS[self.kind](x, self.width, self.scale)

    def derivative(self, x: jax.Array) -> jax.Array:
        """The pseudo-derivative :math:`\\psi(x)` itself."""
        return SURROGATES[self.kind](x, self.width, self.scale)


def surrogate(kind: str | Surrogate = "triangle", **kwargs: Any) -> Surrogate:
    """Build a surrogate by name (``surrogate("fast_sigmoid", width=0.1)``) or pass one through.

    Example:
        >>> from traxon.core import surrogate
        >>> surrogate("gaussian", width=0.5).kind
        'gaussian'
    """
    if isinstance(kind, Surrogate):
        if kwargs:
            return kind.replace(**kwargs)
        return kind
    if not isinstance(kind, str):
        raise TypeError(f"`surrogate` must be a name or a Surrogate; got {kind!r}.")
    return Surrogate(kind, **kwargs)
