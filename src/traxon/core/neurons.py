r"""Neuron models: element-wise state transitions with a spike (or value) output.

Every neuron is an immutable pytree module with

* ``state_names`` -- the differentiable state variables (traced by the learning rules),
* ``aux_names`` -- bookkeeping variables with no gradient (refractory timers),
* ``init(shape, dtype)`` -- resting state,
* ``output(state)`` -- the signal other populations read (spikes, or the value of a
  non-spiking integrator); a pure function of the state,
* ``update(state, current, jump, dt)`` -- one step. The spike of the *previous* state resets
  the membrane first, then the membrane integrates ``current`` over ``dt`` by the exact
  exponential (or Euler, for Izhikevich) step, then ``jump`` (a delta-synapse input) is added.
* ``decays(dt)`` -- the per-step decay factor of each state variable, used to pick
  presynaptic trace decays automatically.

Times are in ms, voltages in mV (plain floats); brainunit Quantities are converted.
Neuron ``i``'s new state depends only on neuron ``i``'s old state and inputs: that is the
element-wise transition the tracer relies on.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from traxon._checks import TraxonWarning, check_in, check_positive, is_concrete, to_float
from traxon._module import Module, static
from traxon.core.surrogates import Surrogate, surrogate

__all__ = ["ALIF", "LIF", "Graded", "Izhikevich", "LeakyIntegrator", "Neuron"]

State = dict[str, jax.Array]


def _leak(dt: float, tau: Any) -> Any:
    return jnp.exp(-dt / jnp.asarray(tau)) if not isinstance(tau, float) else math.exp(-dt / tau)


class Neuron(Module):
    """Base class of neuron models (see the module docstring for the interface)."""

    @property
    def state_names(self) -> tuple[str, ...]:
        raise NotImplementedError

    @property
    def aux_names(self) -> tuple[str, ...]:
        return ()

    @property
    def spiking(self) -> bool:
        return True

    def init(self, shape: tuple[int, ...], dtype: Any) -> State:
        raise NotImplementedError

    def output(self, state: State) -> jax.Array:
        raise NotImplementedError

    def update(self, state: State, current: Any, jump: Any, dt: float) -> State:
        raise NotImplementedError

    def decays(self, dt: float) -> dict[str, float]:
        raise NotImplementedError


class _OneVariable(Neuron):
    """A non-spiking neuron with one state variable (named by ``_variable``) that starts at
    zero and is its output (:class:`Graded` reads it through a nonlinearity)."""

    _variable: ClassVar[str] = ""

    @property
    def spiking(self) -> bool:
        return False

    @property
    def state_names(self) -> tuple[str, ...]:
        return (self._variable,)

    def init(self, shape: tuple[int, ...], dtype: Any) -> State:
        return {self._variable: jnp.zeros(shape, dtype)}

    def output(self, state: State) -> jax.Array:
        return state[self._variable]


def _reset(
    v: jax.Array, spike: jax.Array, v_th: Any, v_reset: Any, mode: str, detach: bool
) -> jax.Array:
    if detach:
        spike = jax.lax.stop_gradient(spike)
    if mode == "soft":
        return v - (v_th - v_reset) * spike
    return v * (1.0 - spike) + v_reset * spike


def _refractory(
    ref: jax.Array, spike: jax.Array, held: jax.Array, free: jax.Array, tau_ref: float, dt: float
) -> tuple[jax.Array, jax.Array]:
    """Refractory bookkeeping: ``(V, ref)`` with ``V`` held at ``held`` while the timer runs.

    The membrane is held for ``ceil(tau_ref / dt)`` whole steps after a spike: the timer
    starts on the step grid and is compared with half a step, so float32 round-off in
    ``ref - dt`` adds no extra step.
    """
    n_ref = math.ceil(tau_ref / float(dt) - 1e-9)
    ref = jnp.where(
        jax.lax.stop_gradient(spike) > 0, n_ref * dt, jnp.maximum(ref - dt, 0.0)
    ).astype(held.dtype)
    return jnp.where(ref > 0.5 * dt, held, free), ref


# The membrane LIF and ALIF share (ALIF adds its adaptation on top).


def _check_membrane(neuron: LIF | ALIF) -> None:
    """The checks LIF and ALIF share (after their time constants'), and their surrogate."""
    _check_threshold(neuron.V_th, neuron.V_reset)
    _warn_zero_resistance(neuron)
    if neuron.reset not in ("soft", "hard"):
        raise ValueError(f"`reset` must be 'soft' or 'hard'; got {neuron.reset!r}.")
    object.__setattr__(neuron, "spike_fn", surrogate(neuron.spike_fn or "triangle"))


def _with_timer(neuron: LIF | ALIF, state: State, shape: tuple[int, ...], dtype: Any) -> State:
    """``state`` with the refractory timer (at zero) when the neuron has a refractory period."""
    if neuron.tau_ref > 0:
        state["ref"] = jnp.zeros(shape, dtype)
    return state


def _membrane_step(
    neuron: LIF | ALIF, state: State, current: Any, jump: Any, dt: float
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(spike, held, V)``: the previous state's spike, the membrane after its reset (where
    a refractory neuron is held) and the membrane after integrating ``current`` over ``dt``
    by the exact exponential step, plus ``jump``."""
    spike = neuron.output(state)
    v = _reset(state["V"], spike, neuron.V_th, neuron.V_reset, neuron.reset, neuron.detach_reset)
    alpha = _leak(dt, neuron.tau)
    rest = neuron.V_rest
    return spike, v, rest + (v - rest) * alpha + neuron.R * current * (1.0 - alpha) + jump


def _hold(
    neuron: LIF | ALIF, state: State, new: State, spike: jax.Array, held: jax.Array, dt: float
) -> State:
    """``new`` with the membrane held at ``held`` while the refractory timer runs (and the
    timer's new value), when the neuron has a refractory period."""
    if neuron.tau_ref > 0:
        new["V"], new["ref"] = _refractory(state["ref"], spike, held, new["V"], neuron.tau_ref, dt)
    return new


class LIF(Neuron):
    r"""Leaky integrate-and-fire neuron.

    .. math::
        V' = V_{t-1} - (V_{th} - V_{reset})\, s_{t-1}
        \quad\text{(soft; hard: } V' = V_{reset}\text{)}

        V_t = V_{rest} + (V' - V_{rest})\,\alpha + R\,I_t\,(1-\alpha) + J_t,
        \qquad \alpha = e^{-\Delta t/\tau}

        s_t = H\big((V_t - V_{th}) / (V_{th} - V_{reset})\big)

    Arguments:
        tau: membrane time constant (ms, > 0).
        V_th, V_reset, V_rest: threshold, reset and resting potentials (mV), ``V_th > V_reset``.
        R: membrane resistance (input current scale).
        reset: ``"soft"`` (subtract) or ``"hard"`` (set to ``V_reset``).
        detach_reset: stop the gradient through the reset (as in e-prop).
        tau_ref: refractory period (ms, >= 0); during it the membrane is held at reset.
        spike_fn: a :class:`~traxon.core.Surrogate` or its name.

    Example:
        >>> import jax.numpy as jnp
        >>> from traxon.core import LIF
        >>> lif = LIF(tau=10.0)
        >>> s = lif.init((1, 3), jnp.float32)
        >>> s = lif.update(s, current=jnp.array([[0.0, 1.0, 2.0]]), jump=0.0, dt=1.0)
        >>> [round(v, 3) for v in s["V"][0].tolist()]  # R I (1 - exp(-dt / tau)) from rest
        [0.0, 0.095, 0.19]
    """

    tau: Any = 20.0
    V_th: Any = 1.0
    V_reset: Any = 0.0
    V_rest: Any = 0.0
    R: Any = 1.0
    reset: str = static(default="soft")
    detach_reset: bool = static(default=False)
    tau_ref: float = static(default=0.0)
    spike_fn: Surrogate = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        _convert(self, tau="ms", V_th="mV", V_reset="mV", V_rest="mV", R=None)
        object.__setattr__(self, "tau_ref", float(to_float(self.tau_ref, "ms", "tau_ref")))
        check_positive(self.tau, "tau")
        check_positive(self.tau_ref, "tau_ref", allow_zero=True)
        _check_membrane(self)

    @property
    def state_names(self) -> tuple[str, ...]:
        return ("V",)

    @property
    def aux_names(self) -> tuple[str, ...]:
        return ("ref",) if self.tau_ref > 0 else ()

    def init(self, shape: tuple[int, ...], dtype: Any) -> State:
        return _with_timer(self, {"V": jnp.full(shape, self.V_rest, dtype)}, shape, dtype)

    def output(self, state: State) -> jax.Array:
        return self.spike_fn((state["V"] - self.V_th) / (self.V_th - self.V_reset))

    def update(self, state: State, current: Any, jump: Any, dt: float) -> State:
        spike, held, v_new = _membrane_step(self, state, current, jump, dt)
        return _hold(self, state, {"V": v_new}, spike, held, dt)

    def decays(self, dt: float) -> dict[str, float]:
        return {"V": _mean_decay(dt, self.tau)}


class ALIF(Neuron):
    r"""Adaptive LIF: the threshold rises by ``beta * a`` after each spike, ``a`` decays slowly.

    .. math::
        a_t = \rho\,(a_{t-1} + s_{t-1}),\qquad \rho = e^{-\Delta t/\tau_a}

        s_t = H\big((V_t - V_{th} - \beta a_t) / (V_{th} - V_{reset})\big)

    and ``V`` as in :class:`LIF` (soft reset by ``V_th - V_reset``).

    Arguments:
        tau: membrane time constant (ms). tau_a: adaptation time constant (ms), typically
        ~2,000 ms for working-memory tasks. beta: threshold increment per unit of ``a`` (mV).
        tau_ref: refractory period (ms); the membrane is held at reset while ``a`` decays.
        Other arguments as in :class:`LIF`.

    Example:
        >>> import jax.numpy as jnp
        >>> from traxon.core import ALIF
        >>> alif = ALIF(tau=20.0, tau_a=2000.0, beta=1.8)
        >>> sorted(alif.init((2, 4), jnp.float32))
        ['V', 'a']
    """

    tau: Any = 20.0
    tau_a: Any = 2000.0
    beta: Any = 1.8
    V_th: Any = 1.0
    V_reset: Any = 0.0
    V_rest: Any = 0.0
    R: Any = 1.0
    reset: str = static(default="soft")
    detach_reset: bool = static(default=False)
    tau_ref: float = static(default=0.0)
    spike_fn: Surrogate = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        _convert(
            self, tau="ms", tau_a="ms", beta="mV", V_th="mV", V_reset="mV", V_rest="mV", R=None
        )
        object.__setattr__(self, "tau_ref", float(to_float(self.tau_ref, "ms", "tau_ref")))
        check_positive(self.tau_ref, "tau_ref", allow_zero=True)
        check_positive(self.tau, "tau")
        check_positive(self.tau_a, "tau_a")
        check_positive(self.beta, "beta", allow_zero=True)
        _check_membrane(self)

    @property
    def state_names(self) -> tuple[str, ...]:
        return ("V", "a")

    @property
    def aux_names(self) -> tuple[str, ...]:
        return ("ref",) if self.tau_ref > 0 else ()

    def init(self, shape: tuple[int, ...], dtype: Any) -> State:
        state = {"V": jnp.full(shape, self.V_rest, dtype), "a": jnp.zeros(shape, dtype)}
        return _with_timer(self, state, shape, dtype)

    def output(self, state: State) -> jax.Array:
        threshold = self.V_th + self.beta * state["a"]
        return self.spike_fn((state["V"] - threshold) / (self.V_th - self.V_reset))

    def update(self, state: State, current: Any, jump: Any, dt: float) -> State:
        spike, held, v_new = _membrane_step(self, state, current, jump, dt)
        # The adaptation keeps its gradient even with `detach_reset` (as in e-prop).
        new = {"V": v_new, "a": (state["a"] + spike) * _leak(dt, self.tau_a)}
        return _hold(self, state, new, spike, held, dt)

    def decays(self, dt: float) -> dict[str, float]:
        return {"V": _mean_decay(dt, self.tau), "a": _mean_decay(dt, self.tau_a)}


class Izhikevich(Neuron):
    r"""Izhikevich (2003) two-variable neuron, forward-Euler integrated.

    .. math::
        v' = v(1-s) + c\,s,\qquad u' = u + d\,s \quad (s = s_{t-1})

        v_t = v' + \Delta t\,(0.04 v'^2 + 5 v' + 140 - u' + I_t) + J_t

        u_t = u' + \Delta t\, a\,(b\,v' - u')

        s_t = H\big((v_t - v_{th}) / (v_{th} - c)\big)

    Arguments:
        a, b, c, d: the model's parameters (defaults: regular spiking, 0.02, 0.2, -65, 8).
        V_th: spike cut-off (mV, default 30). spike_fn: surrogate.

    Example:
        >>> import jax.numpy as jnp
        >>> from traxon.core import Izhikevich
        >>> izh = Izhikevich()
        >>> izh.init((1, 2), jnp.float32)["v"]
        Array([[-65., -65.]], dtype=float32)
    """

    a: Any = 0.02
    b: Any = 0.2
    c: Any = -65.0
    d: Any = 8.0
    V_th: Any = 30.0
    detach_reset: bool = static(default=False)
    spike_fn: Surrogate = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        _convert(self, a=None, b=None, c="mV", d=None, V_th="mV")
        check_positive(self.a, "a")
        _check_threshold(self.V_th, self.c, reset_name="c")
        object.__setattr__(self, "spike_fn", surrogate(self.spike_fn or "fast_sigmoid"))

    @property
    def state_names(self) -> tuple[str, ...]:
        return ("v", "u")

    def init(self, shape: tuple[int, ...], dtype: Any) -> State:
        v = jnp.full(shape, self.c, dtype)
        return {"v": v, "u": self.b * v}

    def output(self, state: State) -> jax.Array:
        return self.spike_fn((state["v"] - self.V_th) / (self.V_th - self.c))

    def update(self, state: State, current: Any, jump: Any, dt: float) -> State:
        spike = self.output(state)
        if self.detach_reset:
            spike = jax.lax.stop_gradient(spike)
        v = state["v"] * (1.0 - spike) + self.c * spike
        w = state["u"] + self.d * spike
        dv = 0.04 * v * v + 5.0 * v + 140.0 - w + current
        du = self.a * (self.b * v - w)
        return {"v": v + dt * dv + jump, "u": w + dt * du}

    def decays(self, dt: float) -> dict[str, float]:
        # Linearised around rest (v = c): dv/dv = 0.08 c + 5, du/du = -a.
        slope_v = min(float(np.mean(0.08 * np.asarray(self.c, np.float64) + 5.0)), -1e-3)
        return {"v": math.exp(dt * slope_v), "u": _mean_decay(dt, 1.0 / np.asarray(self.a))}


class LeakyIntegrator(_OneVariable):
    r"""Non-spiking leaky integrator, the usual readout: :math:`r_t = \kappa r_{t-1} + I_t`.

    Its output is its value ``r``. Give either ``tau`` (ms; :math:`\kappa = e^{-\Delta t/\tau}`)
    or ``kappa`` directly; ``kappa=0`` is an instantaneous (memoryless) readout.

    Example:
        >>> import jax.numpy as jnp
        >>> from traxon.core import LeakyIntegrator
        >>> li = LeakyIntegrator(kappa=0.5)
        >>> s = li.update({"r": jnp.ones((1, 2))}, current=1.0, jump=0.0, dt=1.0)
        >>> s["r"]
        Array([[1.5, 1.5]], dtype=float32)
    """

    _variable = "r"

    tau: Any = None
    kappa: Any = None

    def __post_init__(self) -> None:
        if (self.tau is None) == (self.kappa is None):
            raise ValueError(
                "LeakyIntegrator needs exactly one of `tau` (ms) or `kappa` (decay per step); "
                f"got tau={self.tau!r}, kappa={self.kappa!r}."
            )
        if self.tau is not None:
            _convert(self, tau="ms")
            check_positive(self.tau, "tau")
        else:
            _convert(self, kappa=None)
            check_in(self.kappa, "kappa", 0.0, 1.0)

    def decay(self, dt: float) -> Any:
        return _leak(dt, self.tau) if self.tau is not None else self.kappa

    def update(self, state: State, current: Any, jump: Any, dt: float) -> State:
        return {"r": self.decay(dt) * state["r"] + current + jump}

    def decays(self, dt: float) -> dict[str, float]:
        if self.tau is not None:
            return {"r": _mean_decay(dt, self.tau)}
        return {"r": float(np.mean(np.asarray(self.kappa, np.float64)))}


_ACTIVATIONS: dict[str, Any] = {
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "softplus": jax.nn.softplus,
    "relu": jax.nn.relu,
    "identity": lambda v: v,
}


def _check_activation(activation: str) -> None:
    if activation not in _ACTIVATIONS:
        raise ValueError(f"`activation` must be one of {sorted(_ACTIVATIONS)}; got {activation!r}.")


class Graded(_OneVariable):
    r"""Non-spiking graded (rate) neuron: a leaky membrane read through a nonlinearity.

    .. math::
        \tau \frac{dV}{dt} = -V + R\,I
        \;\Rightarrow\;
        V_t = V_{t-1}\,\alpha + R\,I_t\,(1-\alpha) + J_t,\qquad \alpha = e^{-\Delta t/\tau}

        r_t = f(V_t)

    integrated by the exact exponential step, as :class:`LIF` but with no threshold and no
    reset. Its output (what projections and the readout read by default) is the rate
    :math:`r_t = f(V_t)`; a projection with ``signal="V"`` reads the membrane itself.
    Its only state variable ``V`` decays at the fixed rate :math:`\alpha`, so the
    ``es_d_rtrl`` factorisation is exact on one graded population (``decay="auto"``).

    Arguments:
        tau: membrane time constant (ms, > 0), one value or one per neuron.
        R: input resistance (input current scale).
        activation: the nonlinearity :math:`f`: ``"tanh"``, ``"sigmoid"``, ``"softplus"``,
            ``"relu"`` (rectified, :math:`\max(V, 0)`) or ``"identity"``.

    Example:
        >>> import jax.numpy as jnp
        >>> from traxon.core import Graded
        >>> g = Graded(tau=10.0, activation="tanh")
        >>> s = g.update(g.init((1, 2), jnp.float32), current=jnp.array([[0.0, 20.0]]),
        ...              jump=0.0, dt=1.0)
        >>> [round(v, 3) for v in g.output(s)[0].tolist()]  # tanh(R I (1 - exp(-dt / tau)))
        [0.0, 0.957]
    """

    _variable = "V"

    tau: Any = 10.0
    R: Any = 1.0
    activation: str = static(default="tanh")

    def __post_init__(self) -> None:
        _convert(self, tau="ms", R=None)
        check_positive(self.tau, "tau")
        _check_activation(self.activation)

    def output(self, state: State) -> jax.Array:
        return _ACTIVATIONS[self.activation](state["V"])

    def update(self, state: State, current: Any, jump: Any, dt: float) -> State:
        alpha = _leak(dt, self.tau)
        return {"V": state["V"] * alpha + self.R * current * (1.0 - alpha) + jump}

    def decays(self, dt: float) -> dict[str, float]:
        return {"V": _mean_decay(dt, self.tau)}


def _mean_decay(dt: float, tau: Any) -> float:
    """Decay per step in float64 (the mean, for heterogeneous time constants)."""
    return float(np.mean(np.exp(-dt / np.asarray(tau, dtype=np.float64))))


def _convert(module: Module, **units: Any) -> None:
    for name, unit in units.items():
        value = getattr(module, name)
        _check_numeric(value, name)
        object.__setattr__(module, name, to_float(value, unit, name))


def _check_numeric(value: Any, name: str) -> None:
    """Raise ``TypeError`` naming the parameter unless ``value`` is a number or an array of
    real numbers (strings, booleans and objects would fail later, inside JAX)."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"`{name}` must be a number (or one per neuron); got the string {value!r}.")
    dtype = getattr(value, "dtype", None)
    if dtype is None and isinstance(value, (list, tuple)):
        try:
            dtype = np.asarray(value).dtype
        except ValueError as err:  # ragged nesting
            raise TypeError(
                f"`{name}` must be a number or a flat list of numbers; got {value!r}."
            ) from err
    if dtype is not None and np.dtype(dtype).kind not in "iuf":
        raise TypeError(
            f"`{name}` must be a number or an array of real numbers; got dtype {np.dtype(dtype)}."
        )


def _warn_zero_resistance(neuron: LIF | ALIF) -> None:
    r = neuron.R
    if not is_concrete(r):
        return
    zero = np.asarray(r) == 0
    if not np.any(zero):
        return
    who = "`R` = 0" if zero.ndim == 0 else f"`R` = 0 for {int(zero.sum())} of its neurons"
    warnings.warn(
        f"{type(neuron).__name__} has {who}: the membrane ignores its input current, so no "
        "gradient reaches the weights onto it (only Delta-synapse jumps still act). Give R > 0.",
        TraxonWarning,
        stacklevel=5,  # the caller of LIF(...): here, _check_membrane, __post_init__, __init__
    )


def _check_threshold(v_th: Any, v_reset: Any, reset_name: str = "V_reset") -> None:
    check_positive(jnp.asarray(v_th) - jnp.asarray(v_reset), f"V_th - {reset_name}")
