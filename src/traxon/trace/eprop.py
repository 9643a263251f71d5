r"""e-prop: eligibility propagation (Bellec et al. 2020, Nature Communications).

Each synapse keeps an *eligibility vector* that follows its influence through the
postsynaptic neuron's own dynamics -- D-RTRL's per-weight trace :math:`E` -- and its
*eligibility trace* is that vector contracted with the neuron's pseudo-derivative
:math:`g = \partial s_t / \partial h_t`. A *learning signal* :math:`L_t` from the readout
error closes the loop:

.. math::
    E_{t,p} = D_t[\mathrm{post}(p)]\, E_{t-1,p} + F^c_t[\mathrm{post}(p)]\,
              \frac{\partial u_{\mathrm{post}(p)}}{\partial w_p}(z_t),
    \qquad e_{t,p} = \sum_s g_t[\mathrm{post}(p), s]\, E_{t,p}[s]

    \bar e_{t,p} = \kappa\, \bar e_{t-1,p} + e_{t,p}
    \quad\text{(only for weights upstream of a leaky readout)},
    \qquad \nabla_{w_p} \mathrel{+}= \sum_b L_t[b, \mathrm{post}(p)]\; \bar e_{t,p}[b]

with the learning signal, from :math:`\partial l_t / \partial y_t` (the readout error
weighted by the loss weight :math:`w_t`):

* ``feedback="symmetric"``: :math:`L_t = W_{out}^\top\, \partial l_t / \partial y_t`, the
  exact within-step signal :math:`\lambda_t` (through the downstream populations too);
* ``feedback="random"``: :math:`L^P_t = B_P\, \partial l_t / \partial y_t` for every
  population :math:`P` with trainable inputs, with a fixed random matrix :math:`B_P` of the
  shape of a readout weight from :math:`P` (:math:`N_P \times n_{out}`), drawn once from
  ``seed`` with entries :math:`\mathcal{N}(0, \mathrm{gain}^2 / N_P)` -- the distribution
  of the initial readout weights (``Readout(gain=...)``), so the random signal has the
  scale of the symmetric one at initialisation. It reaches every population directly
  (broadcast alignment); other within-step routes are not used.

Spike costs (a rate regulariser) add their exact local term
:math:`c_t \odot e_{t,p}` (never filtered: they act on this step's spikes).

**The readout's own weights** get their exact gradient: the readout is linear with
:math:`D = \kappa`, :math:`F = 1`, so its trace is exact and its learning signal is
:math:`\partial l_t / \partial y_t` itself. :math:`\kappa` enters only where the readout's
memory carries a hidden spike's credit: the filter on the hidden weights' traces. It is
neither applied to the readout's own traces a second time nor used to rescale their
gradient.

* Memory: :math:`O(B \cdot |W| \cdot S)` per weight (:math:`B \cdot I \cdot N \cdot S` dense),
  plus :math:`N_P \cdot n_{out}` per population for random feedback.
* Compute per step: :math:`O(B \cdot |W| \cdot S^2)` and one step's VJP.
* Exact (symmetric feedback): one population with no recurrent weights, instantaneous or
  leaky readout -- in particular the e-prop case of one LIF population with
  ``detach_reset=True``. With recurrent weights it drops the terms that cross between
  neurons. With symmetric feedback the rule computes the same gradient as
  :func:`~traxon.trace.d_rtrl`. Random feedback is never a gradient; it trains because the
  forward weights come to align with :math:`B` (feedback alignment).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from traxon.core.network import READOUT, Network, state_dtype
from traxon.trace._param_traces import ParamTraceRule
from traxon.trace._quantities import StepQuantities
from traxon.trace.base import Algorithm, LossFn, learning_signals, register

__all__ = ["eprop"]


@register("eprop")
class eprop(Algorithm):
    """e-prop with symmetric or random feedback (see the module docstring).

    Arguments:
        feedback: ``"symmetric"`` (the readout weights carry the error back) or ``"random"``
            (a fixed random matrix per population, drawn from ``seed``).
        seed: seed of the random feedback matrices.

    Example:
        >>> import traxon
        >>> traxon.trace.eprop(feedback="random", seed=3).feedback
        'random'
    """

    name = "eprop"

    def __init__(self, feedback: str = "symmetric", seed: int = 0) -> None:
        if feedback not in ("symmetric", "random"):
            raise ValueError(f"`feedback` must be 'symmetric' or 'random'; got {feedback!r}.")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"`seed` must be an integer; got {seed!r}.")
        self.feedback = feedback
        self.seed = seed

    def _bound(self, net: Network, loss_fn: LossFn, window: int | None) -> ParamTraceRule:
        if self.feedback == "symmetric":
            return ParamTraceRule(self.name, net, loss_fn)
        hidden = tuple(p for p in learning_signals(net) if p != READOUT)
        gain = float(net.readout.gain) if net.readout is not None else 1.0
        seed = self.seed

        def init_extra(params: Mapping[str, jax.Array], state: Any) -> dict[str, Any]:
            dtype = state_dtype(state)
            n_out = net.populations[READOUT].size
            key = jax.random.PRNGKey(seed)
            out = {}
            for i, p in enumerate(hidden):
                n = net.populations[p].size
                draw = jax.random.normal(jax.random.fold_in(key, i), (n, n_out), dtype)
                out[p] = draw * jnp.asarray(gain / n**0.5, dtype)
            return {"feedback": out}

        def adjust(
            params: Mapping[str, jax.Array], state: Any, q: StepQuantities, extra: Any
        ) -> StepQuantities:
            error = q.lam[READOUT]["spike"]  # w_t * dl_t/dy_t, (B, n_out)
            lam = dict(q.lam)
            delta = dict(q.delta)
            for p in hidden:
                signal = error @ extra["feedback"][p].T  # (B, N_P)
                lam[p] = {
                    s: signal if s == "spike" else jnp.zeros_like(v) for s, v in lam[p].items()
                }
                d = signal[..., None] * q.g[p]["spike"]
                if p in q.cost:
                    d = d + q.cost[p][..., None] * q.g[p]["spike"]
                delta[p] = d
            return q._replace(lam=lam, delta=delta)

        return ParamTraceRule(
            self.name,
            net,
            loss_fn,
            signals={READOUT: ("spike",), **dict.fromkeys(hidden, ("spike",))},
            init_extra=init_extra,
            adjust=adjust,
        )
