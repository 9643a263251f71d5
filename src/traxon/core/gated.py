r"""Gated recurrent cells: populations whose inputs arrive on named gates.

A gated cell is a :class:`~traxon.core.Neuron` with one input channel per gate instead of
a summed current. Each :class:`~traxon.core.Projection` into it names the gate it feeds
with ``port=`` (``Projection("x", "h", Dense(), port="z")``); the weight ops stay linear
in their inputs and all projections onto the same gate are summed, so the gate's input
``u_g`` is indexed by the cell's units. The transition is element-wise in ``(h, u_g ...)``
-- unit ``i``'s new state depends only on its own state and its own gate inputs -- which is
the model contract: the tracer's Jacobian blocks get one column ``F_g`` per gate, and
nothing else changes. A gate no projection feeds receives zero. Biases are
:class:`~traxon.core.Bias` projections onto a gate (``Projection("x", "h", Bias(),
port="z")``). A recurrent weight is a ``delay=1`` projection of the cell onto itself.

The cell's output (what the readout and other populations read) is its hidden state
``h``, a graded signal. Cells are discrete-time: ``dt`` does not enter their update.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from traxon.core import GRU, Bias, Dense, Network, Population, Projection, Readout
    >>> net = Network(
    ...     3,
    ...     {"h": Population(GRU(), 8)},
    ...     [Projection("x", "h", Dense(), port=g, name=f"x->{g}") for g in ("z", "r", "hx")]
    ...     + [Projection("h", "h", Dense(), port=g, delay=1, name=f"h->{g}")
    ...        for g in ("z", "r", "hh")]
    ...     + [Projection("x", "h", Bias(), port="z", name="b_z")],
    ...     readout=Readout("h", 2),
    ... )
    >>> params, state = net.init(jax.random.PRNGKey(0), batch_size=4)
    >>> net.simulate(params, state, jnp.ones((5, 4, 3))).outputs.shape
    (5, 4, 2)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from traxon._module import static
from traxon.core.neurons import _ACTIVATIONS, _check_activation, _OneVariable

__all__ = ["GRU", "GatedCell", "MinGRU"]

State = dict[str, jax.Array]


class GatedCell(_OneVariable):
    """Base class of gated cells: a neuron whose inputs are named gates.

    A subclass defines ``gates`` (the port names, in order), ``state_names`` and
    ``update_gates(state, inputs, dt)``, where ``inputs`` maps every gate to its summed input
    ``(B, N)`` (zeros for a gate no projection feeds). The transition must be element-wise
    over units. Its output is the first state variable (the hidden state ``h``).

    Example:
        >>> from traxon.core import GRU, GatedCell
        >>> isinstance(GRU(), GatedCell), GRU().gates
        (True, ('z', 'r', 'hx', 'hh'))
    """

    _variable = "h"

    @property
    def gates(self) -> tuple[str, ...]:
        raise NotImplementedError

    def update_gates(self, state: State, inputs: Mapping[str, jax.Array], dt: float) -> State:
        raise NotImplementedError

    def update(self, state: State, current: Any, jump: Any, dt: float) -> State:
        raise TypeError(
            f"{type(self).__name__} reads its inputs by gate, not as one current: call "
            f"update_gates(state, inputs, dt) with inputs for the gates {list(self.gates)} "
            "(in a Network, give each projection onto it `port=` one of them)."
        )

    def decays(self, dt: float) -> dict[str, float]:
        # The decay of h at zero update-gate input, sigma(0) = 1/2: a starting point for
        # es_d_rtrl(decay="auto"); the true decay (the update gate) changes every step.
        return {"h": 0.5}


class GRU(GatedCell):
    r"""Gated recurrent unit, with the reset gate applied after the recurrent weight op.

    .. math::
        z_t = \sigma(u^z_t), \qquad r_t = \sigma(u^r_t)

        \tilde h_t = \tanh\big(u^{hx}_t + r_t \odot u^{hh}_t\big)

        h_t = (1 - z_t) \odot \tilde h_t + z_t \odot h_{t-1}

    where :math:`u^g_t` is the summed input of gate ``g`` (port ``"z"``, ``"r"``, ``"hx"``,
    ``"hh"``). Feeding ``hx`` from the input and ``hh`` from the cell itself (``delay=1``) is
    the GRU of cuDNN and PyTorch (``W_{hn} h`` and its bias scaled by ``r``); every weight op
    stays linear and the transition is element-wise in :math:`(h, u^z, u^r, u^{hx}, u^{hh})`.

    Example:
        >>> import jax.numpy as jnp
        >>> from traxon.core import GRU
        >>> cell = GRU()
        >>> s = cell.init((1, 2), jnp.float32)
        >>> u = {"z": jnp.zeros((1, 2)), "r": jnp.zeros((1, 2)),
        ...      "hx": jnp.array([[0.0, 1.0]]), "hh": jnp.zeros((1, 2))}
        >>> [round(v, 4) for v in cell.update_gates(s, u, dt=1.0)["h"][0].tolist()]
        [0.0, 0.3808]
    """

    @property
    def gates(self) -> tuple[str, ...]:
        return ("z", "r", "hx", "hh")

    def update_gates(self, state: State, inputs: Mapping[str, jax.Array], dt: float) -> State:
        z = jax.nn.sigmoid(inputs["z"])
        r = jax.nn.sigmoid(inputs["r"])
        cand = jnp.tanh(inputs["hx"] + r * inputs["hh"])
        return {"h": (1.0 - z) * cand + z * state["h"]}


class MinGRU(GatedCell):
    r"""Minimal gated cell with a linear recurrence (minGRU, Feng et al. 2024).

    .. math::
        z_t = \sigma(u^z_t), \qquad
        h_t = (1 - z_t) \odot h_{t-1} + z_t \odot f(u^{hx}_t)

    with ports ``"z"`` (the update gate) and ``"hx"`` (the candidate). :math:`h_t` is linear
    in :math:`h_{t-1}` -- a diagonal linear recurrence :math:`h_t = a_t \odot h_{t-1} + b_t`
    whose decay :math:`a_t = 1 - z_t` is gated. With gates fed only from the inputs (no
    projection from the cell onto itself) the only recurrence is this element-wise one, and
    ``d_rtrl`` is exact.

    Arguments:
        activation: the candidate's nonlinearity :math:`f`: ``"identity"`` (default, the
            minGRU), ``"tanh"``, ``"sigmoid"``, ``"softplus"`` or ``"relu"``.

    Example:
        >>> import jax.numpy as jnp
        >>> from traxon.core import MinGRU
        >>> cell = MinGRU()
        >>> s = {"h": jnp.ones((1, 2))}
        >>> u = {"z": jnp.array([[0.0, 50.0]]), "hx": jnp.array([[3.0, 3.0]])}
        >>> [round(v, 3) for v in cell.update_gates(s, u, dt=1.0)["h"][0].tolist()]
        [2.0, 3.0]
    """

    activation: str = static(default="identity")

    def __post_init__(self) -> None:
        _check_activation(self.activation)

    @property
    def gates(self) -> tuple[str, ...]:
        return ("z", "hx")

    def update_gates(self, state: State, inputs: Mapping[str, jax.Array], dt: float) -> State:
        z = jax.nn.sigmoid(inputs["z"])
        cand = _ACTIVATIONS[self.activation](inputs["hx"])
        return {"h": (1.0 - z) * state["h"] + z * cand}
