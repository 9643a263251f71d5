r"""Synapse kinetics, usable aligned to the postsynaptic or to the presynaptic neurons.

A synapse model is a linear filter with a few state variables per neuron. Where it sits
is chosen by the projection (:class:`~traxon.core.Projection`):

* **AlignPost** (``align="post"``): one state per *postsynaptic* neuron receives the
  weighted input :math:`u = W z`; the neuron reads the synapse's output as a current. All
  projections into a population that use the same synapse (same kinetics and reversal
  potential) share one state per neuron.
* **AlignPre** (``align="pre"``): one state per *presynaptic* neuron filters that neuron's
  spikes; the projection then sends :math:`W \cdot g_{pre}` to the target as a current.

For a linear synapse with the same time constant both give the same postsynaptic current.

Every model has ``init``, ``update(state, inp, dt)`` (the input arrives this step and is
read this step), ``output(state)`` and ``decays(dt)``. :class:`Delta` has no state: aligned
post, its input jumps the membrane potential directly.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from traxon._checks import check_positive, to_float
from traxon._module import Module

__all__ = ["Alpha", "Delta", "DualExpon", "Expon", "Synapse"]

State = dict[str, jax.Array]


def _decay(dt: float, tau: float) -> float:
    return math.exp(-dt / tau)


def _tau(module: Module, name: str) -> None:
    value = to_float(getattr(module, name), "ms", name)
    if not isinstance(value, float):
        raise TypeError(f"`{name}` must be a scalar time constant (ms); got {value!r}.")
    check_positive(value, name)
    object.__setattr__(module, name, value)


class Synapse(Module):
    """Base class of synapse models (see the module docstring for the interface)."""

    @property
    def state_names(self) -> tuple[str, ...]:
        raise NotImplementedError

    def init(self, shape: tuple[int, ...], dtype: Any) -> State:
        return {k: jnp.zeros(shape, dtype) for k in self.state_names}

    def update(self, state: State, inp: Any, dt: float) -> State:
        raise NotImplementedError

    def output(self, state: State) -> jax.Array:
        raise NotImplementedError

    def decays(self, dt: float) -> dict[str, float]:
        raise NotImplementedError

    def key(self) -> tuple:
        """Identity of the kinetics: projections with equal keys share one state."""
        values = tuple(getattr(self, f) for f in self.__dataclass_fields__)
        return (type(self).__name__, *values)


class Delta(Synapse):
    """No kinetics: aligned post, the weighted input jumps the membrane potential this step.

    Example:
        >>> from traxon.core import Delta
        >>> Delta().state_names
        ()
    """

    @property
    def state_names(self) -> tuple[str, ...]:
        return ()

    def update(self, state: State, inp: Any, dt: float) -> State:
        return {}

    def output(self, state: State) -> jax.Array:
        raise TypeError("Delta has no state; its input is applied directly.")

    def decays(self, dt: float) -> dict[str, float]:
        return {}


class Expon(Synapse):
    r"""Exponential synapse: :math:`g_t = e^{-\Delta t/\tau} g_{t-1} + x_t`, output :math:`g_t`.

    Example:
        >>> import jax.numpy as jnp
        >>> from traxon.core import Expon
        >>> syn = Expon(tau=10.0)
        >>> s = syn.update(syn.init((1,), jnp.float32), 1.0, dt=1.0)
        >>> syn.update(s, 0.0, dt=1.0)["g"].round(4)
        Array([0.9048], dtype=float32)
    """

    tau: float = 5.0

    def __post_init__(self) -> None:
        _tau(self, "tau")

    @property
    def state_names(self) -> tuple[str, ...]:
        return ("g",)

    def update(self, state: State, inp: Any, dt: float) -> State:
        return {"g": _decay(dt, self.tau) * state["g"] + inp}

    def output(self, state: State) -> jax.Array:
        return state["g"]

    def decays(self, dt: float) -> dict[str, float]:
        return {"g": _decay(dt, self.tau)}


class Alpha(Synapse):
    r"""Alpha synapse: an input impulse gives :math:`g(t) = x\,(t/\tau)\,e^{1 - t/\tau}`.

    Exact two-variable discretisation (``h`` rises, ``g`` is the output):

    .. math::
        h_t = e^{-\Delta t/\tau} h_{t-1} + \frac{e}{\tau} x_t,\qquad
        g_t = e^{-\Delta t/\tau}\,(g_{t-1} + \Delta t\, h_{t-1})

    so the response to one impulse peaks at :math:`t = \tau` with value :math:`x`.

    Example:
        >>> from traxon.core import Alpha
        >>> Alpha(tau=5.0).state_names
        ('h', 'g')
    """

    tau: float = 5.0

    def __post_init__(self) -> None:
        _tau(self, "tau")

    @property
    def state_names(self) -> tuple[str, ...]:
        return ("h", "g")

    def update(self, state: State, inp: Any, dt: float) -> State:
        a = _decay(dt, self.tau)
        return {
            "h": a * state["h"] + (math.e / self.tau) * inp,
            "g": a * (state["g"] + dt * state["h"]),
        }

    def output(self, state: State) -> jax.Array:
        return state["g"]

    def decays(self, dt: float) -> dict[str, float]:
        a = _decay(dt, self.tau)
        return {"h": a, "g": a}


class DualExpon(Synapse):
    r"""Difference of exponentials with rise time ``tau_rise`` and decay time ``tau_decay``.

    .. math::
        r_t = e^{-\Delta t/\tau_r} r_{t-1} + x_t,\quad d_t = e^{-\Delta t/\tau_d} d_{t-1} + x_t,
        \quad g_t = A\,(d_t - r_t)

    with ``A`` chosen so that the continuous-time response to one impulse peaks at ``x``.

    Example:
        >>> from traxon.core import DualExpon
        >>> syn = DualExpon(tau_rise=1.0, tau_decay=10.0)
        >>> round(syn.peak_time(), 3)
        2.558
    """

    tau_rise: float = 1.0
    tau_decay: float = 10.0

    def __post_init__(self) -> None:
        _tau(self, "tau_rise")
        _tau(self, "tau_decay")
        if not self.tau_decay > self.tau_rise:
            raise ValueError(
                "`tau_decay` must be larger than `tau_rise`; got "
                f"tau_rise={self.tau_rise}, tau_decay={self.tau_decay}."
            )

    def peak_time(self) -> float:
        """Time (ms) of the continuous-time impulse response's peak."""
        r, d = self.tau_rise, self.tau_decay
        return r * d / (d - r) * math.log(d / r)

    def _norm(self) -> float:
        t = self.peak_time()
        return 1.0 / (math.exp(-t / self.tau_decay) - math.exp(-t / self.tau_rise))

    @property
    def state_names(self) -> tuple[str, ...]:
        return ("rise", "decay")

    def update(self, state: State, inp: Any, dt: float) -> State:
        return {
            "rise": _decay(dt, self.tau_rise) * state["rise"] + inp,
            "decay": _decay(dt, self.tau_decay) * state["decay"] + inp,
        }

    def output(self, state: State) -> jax.Array:
        return self._norm() * (state["decay"] - state["rise"])

    def decays(self, dt: float) -> dict[str, float]:
        return {"rise": _decay(dt, self.tau_rise), "decay": _decay(dt, self.tau_decay)}
