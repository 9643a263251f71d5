r"""SnAp-1: the sparse n-step approximation of RTRL for n = 1 (Menick et al. 2021, ICLR).

SnAp-n keeps, for every weight, only the entries of the RTRL Jacobian
:math:`J_t = \partial h_t / \partial \theta` on the states that the weight reaches within
``n`` steps, and propagates them through the full one-step Jacobian restricted to that
pattern:

.. math::
    J_t = \big(A_t\, J_{t-1}\big) \odot M + I_t, \qquad
    A_t = \frac{\partial h_t}{\partial h_{t-1}}, \quad
    I_t = \frac{\partial h_t}{\partial \theta}\Big|_{h_{t-1}},
    \quad M = \text{pattern of } I

For a neuron-aligned weight op, entry :math:`w_p` immediately affects only the state of its
postsynaptic neuron :math:`i = \mathrm{post}(p)`, so SnAp-1 keeps :math:`E_{t,p} \in
\mathbb{R}^S` (as D-RTRL does) and needs the per-neuron diagonal blocks of the *full*
:math:`A_t`. Beyond D-RTRL's :math:`D_t` (weight-op outputs held fixed) these contain the
neuron's own self-connection: a delay-1 projection from population :math:`P` onto itself
with self-weight :math:`\omega_i` (the diagonal of the op, e.g. :math:`W_{ii}` for a dense
weight) adds

.. math::
    \hat D_t[i] = D_t[i] + \sum_{\text{self projections}} F^c_t[i]\; \omega_i\;
                  g^{\mathrm{sig}}_{t-1}[i]^\top,
    \qquad g^{\mathrm{sig}}_{t-1} = \partial \mathrm{sig}_{t-1} / \partial h_{t-1},

and the traces and the gradient follow D-RTRL with :math:`\hat D`:

.. math::
    E_{t,p} = \hat D_t[i]\, E_{t-1,p} + F^c_t[i]\,
              \frac{\partial u_i}{\partial w_p}(z_t), \qquad
    \nabla_{w_p} \mathrel{+}= \sum_b \sum_s \delta_t[b, i, s]\, E_{t,p}[b, s]

(with a leaky readout, the hidden weights' traces are filtered with :math:`\kappa` as in
D-RTRL; SnAp proper would drop the readout's memory).

* Memory: :math:`O(B \cdot |W| \cdot S)` per weight, as D-RTRL.
* Compute per step: :math:`O(B \cdot |W| \cdot S^2)` plus :math:`O(B \cdot N \cdot S)` for
  the self-connection terms.
* Exact (equal to BPTT) whenever :math:`\partial h_t / \partial h_{t-1}` is block-diagonal
  per neuron: one population with no recurrent weights (SnAp-1 = D-RTRL there), or with
  recurrence only through one-to-one self-connections (``ElementWise``, delay 1), where
  D-RTRL is not exact. Otherwise it drops the terms between different neurons, and the
  diagonal paths that pass through another population within a step.

Only ``n=1`` is implemented: SnAp-2 and beyond keep :math:`J` on the neurons reached in two
or more steps, which for dense recurrence is the full RTRL Jacobian
(use :func:`~traxon.trace.rtrl` on small networks).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from traxon._checks import check_positive_int
from traxon.core.network import Network
from traxon.core.ops import WeightOp
from traxon.trace._param_traces import ParamTraceRule
from traxon.trace._quantities import StepQuantities, signal_jacobian
from traxon.trace.base import Algorithm, LossFn, Tracer, post_populations, register

__all__ = ["self_weights", "snap"]


def self_weights(op: WeightOp, W: jax.Array, n: int) -> jax.Array:
    r"""The diagonal :math:`\partial u_i / \partial z_i` of a weight op from ``n`` neurons to
    themselves (each neuron's self-connection), ``(n,)``, without forming an ``n x n`` matrix.

    Each weight entry's contribution is :math:`w_p\, \partial u / \partial w_p` (the op is
    linear in its weights); entries whose presynaptic index equals their postsynaptic one are
    summed per neuron. An op with a ``self_weights(W, n)`` method (a gap junction, whose
    diagonal is minus each neuron's total conductance) gives it itself.

    Example:
        >>> import jax.numpy as jnp
        >>> from traxon.core import Dense
        >>> from traxon.trace.snap import self_weights
        >>> self_weights(Dense(), jnp.arange(9.0).reshape(3, 3), 3)
        Array([0., 4., 8.], dtype=float32)
    """
    own = getattr(op, "self_weights", None)
    if own is not None:  # an op whose diagonal is not one entry per neuron (gap junctions)
        return own(W, n)
    code = jnp.arange(1, n + 1, dtype=W.dtype)[None]  # neuron index + 1, (1, n)
    shape = (1, *W.shape)
    slope = jnp.broadcast_to(op.pre_factor(W, jnp.ones_like(code)), shape)  # du/dw per entry
    source = jnp.broadcast_to(op.pre_factor(W, code), shape)  # (pre index + 1) * slope

    def per_entry(x: jax.Array) -> jax.Array:
        return jnp.broadcast_to(op.to_params(x), shape)

    target = per_entry(code)
    on_diagonal = (slope != 0) & (source == target * slope)
    values = jnp.where(on_diagonal, slope * W[None], jnp.zeros_like(slope))
    _, transpose = jax.vjp(per_entry, jnp.zeros_like(code))
    (diag,) = transpose(values)
    return diag[0]


@register("snap")
class snap(Algorithm):
    """SnAp-1 (see the module docstring for the equations).

    Arguments:
        n: the order of the approximation; only ``1`` is implemented.

    Example:
        >>> import traxon
        >>> traxon.trace.snap().n
        1
    """

    name = "snap"

    def __init__(self, n: int = 1) -> None:
        n = check_positive_int(n, "n")
        if n != 1:
            raise NotImplementedError(
                f"snap(n={n}) is not implemented: only SnAp-1 is. SnAp-{n} keeps the Jacobian "
                "on every neuron a weight reaches within n steps, which for dense recurrence "
                "is full RTRL; use algorithm='rtrl' (small networks) or 'bptt' instead."
            )
        self.n = n

    def bind(self, net: Network, loss_fn: LossFn, window: int | None = None) -> Tracer:
        _self_connections(net)  # checked first: its advice is more precise than the base's
        return super().bind(net, loss_fn, window)

    def _bound(self, net: Network, loss_fn: LossFn, window: int | None) -> ParamTraceRule:
        recurrent = _self_connections(net)
        if not recurrent:
            return ParamTraceRule(self.name, net, loss_fn)
        blocks: dict[str, tuple[str, ...]] = {}
        for p in recurrent:
            blocks[p.target] = (*blocks.get(p.target, ()), p.channel)

        def adjust(
            params: Mapping[str, jax.Array], state: Any, q: StepQuantities, extra: Any
        ) -> StepQuantities:
            D = dict(q.D)
            for p in recurrent:
                plan = net.populations[p.target]
                g_prev = signal_jacobian(plan, state[p.target], (p.signal,))[p.signal]
                omega = self_weights(p.op, params[p.name], plan.size).astype(g_prev.dtype)
                F = q.F[p.target][p.channel]  # (B, N, S)
                D[p.target] = D[p.target] + (
                    F[..., :, None] * omega[None, :, None, None] * g_prev[..., None, :]
                )
            return q._replace(D=D)

        return ParamTraceRule(self.name, net, loss_fn, blocks=blocks, adjust=adjust)


def _self_connections(net: Network) -> tuple[Any, ...]:
    """The self-connections of the populations whose traces are kept (trainable or not: they
    are part of the dynamics); raises if one of them does not expose its diagonal."""
    posts = post_populations(net)
    recurrent = tuple(
        p for p in net.projections if p.delay == 1 and p.source == p.target and p.target in posts
    )
    for p in recurrent:
        if not getattr(p.op, "param_traces", True) and not hasattr(p.op, "self_weights"):
            raise ValueError(
                f"weight `{p.name}`: snap needs the self-connection of every neuron, which "
                "this weight op does not expose. Use algorithm='es_d_rtrl', 'rtrl' (small "
                "networks) or 'bptt'."
            )
    return recurrent
