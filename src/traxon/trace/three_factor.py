r"""A three-factor rule: reward-modulated eligibility (pre x post x modulator).

Each synapse's eligibility is the product of a presynaptic trace and a postsynaptic factor
(ES-D-RTRL's rank-one form), and a global third factor -- a modulator per sample, e.g. a
reward prediction error -- decides the sign and size of the change:

.. math::
    \bar x_t = \alpha\, \bar x_{t-1} + (1 - \alpha)\, z_t, \qquad
    \epsilon_t = D_t\, \epsilon_{t-1} + F^c_t, \qquad
    \rho_t = \sum_s g^{\mathrm{spike}}_t[\cdot, s]\; \epsilon_t[\cdot, s]

    e_t[j, i] = \bar x_t[j]\; \rho_t[i]
    \qquad\text{(pre x post: a presynaptic trace times the postsynaptic
    pseudo-derivative of the filtered input sensitivity)}

    m_t = \mathrm{modulator}(y_t, \mathrm{target}_t, l_t), \qquad
    M_t = m_t - b_{t-1}, \qquad b_t = \beta\, b_{t-1} + (1 - \beta)\, m_t

    \Delta W \propto \sum_b w_{t,b}\, M_{t,b}\; e_t[b]

The default modulator is the reward :math:`m_t = -l_t` (negative loss), and :math:`b` is a
running baseline per sample (started at the first reward, updated where the loss weight
:math:`w_{t,b} > 0`; ``baseline=None`` uses :math:`M_t = m_t`). ``gradients`` returns
:math:`-\sum_t \sum_b w_{t,b} M_{t,b}\, e_t[b]`, so that an optimiser *descending* it
*increases* the modulator. :math:`\alpha` is the postsynaptic membrane's decay
(``decay="auto"``) or a given float.

**It is a reward-modulated rule, not a gradient.** The expected update
:math:`\mathbb{E}[M e]` is the covariance of the modulator with each synapse's eligibility:
synapses whose activity coincides with better-than-average reward are strengthened. It
follows the gradient only where a synapse's learning signal has the sign of the global
modulator; it never uses the readout weights to assign credit, and it matches BPTT only by
accident. Its measured cosine with the BPTT gradient is near zero.

**The readout** is trained by its exact (supervised) gradient:
:math:`\nabla W_{out} \mathrel{+}= \mathrm{outer}(\hat x_t, \partial (w_t l_t) / \partial y_t)`
with :math:`\hat x_t = \kappa \hat x_{t-1} + z_t` (exact for a leaky readout of decay
:math:`\kappa`). **Spike costs** (a rate regulariser) add their local term
:math:`\mathrm{outer}(\bar x_t, c_t \odot \rho_t)`, unmodulated.

* Memory: :math:`O(B \cdot (I + N \cdot S))` -- linear in the neurons.
* Compute per step: :math:`O(B \cdot N \cdot S^2)` plus one outer product
  :math:`O(B \cdot I \cdot N)` per weight (one GEMM) and one step's VJP (readout error).
* Exact: never (except the readout's own weights).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from traxon.core.network import READOUT, Network, state_dtype
from traxon.trace._quantities import state_decays
from traxon.trace.base import Algorithm, LossFn, SignalRule, StepData, StepOutput, register

__all__ = ["ThreeFactorState", "three_factor"]

Modulator = Callable[[jax.Array, Any, jax.Array], jax.Array]


def negative_loss(output: jax.Array, target: Any, loss: jax.Array) -> jax.Array:
    """The default modulator: the reward :math:`-l_t` per sample.

    Example:
        >>> import jax.numpy as jnp
        >>> from traxon.trace.three_factor import negative_loss
        >>> negative_loss(None, None, jnp.array([0.5, 2.0]))
        Array([-0.5, -2. ], dtype=float32)
    """
    return -loss


class ThreeFactorState(NamedTuple):
    """State of :class:`three_factor`.

    Attributes:
        pre: ``{source/signal/decay: (B, I)}`` presynaptic traces of the hidden weights.
        post: ``{population/channel: (B, N, S)}`` postsynaptic sensitivity traces.
        pre_k: ``{source/signal: (B, I)}`` readout-filtered presynaptic traces.
        baseline: ``(B,)`` running average of the modulator per sample.
        seen: ``(B,)`` whether the baseline has been started.
        grads: ``{weight: W.shape}`` accumulated update (its negative, for a descent).

    Example:
        >>> from traxon.trace.three_factor import ThreeFactorState
        >>> ThreeFactorState._fields
        ('pre', 'post', 'pre_k', 'baseline', 'seen', 'grads')
    """

    pre: dict[str, jax.Array]
    post: dict[str, jax.Array]
    pre_k: dict[str, jax.Array]
    baseline: jax.Array
    seen: jax.Array
    grads: dict[str, jax.Array]


@register("three_factor")
class three_factor(Algorithm):
    r"""A reward-modulated three-factor rule (see the module docstring).

    Arguments:
        modulator: ``(output (B, n_out), target, loss (B,)) -> (B,)``, the third factor
            (larger is better); ``None`` for the reward :math:`-l_t`.
        baseline: decay :math:`\beta \in [0, 1)` of the running baseline subtracted from the
            modulator, or ``None`` for no baseline.
        decay: ``"auto"`` (the postsynaptic membrane's decay) or a float in [0, 1] for the
            presynaptic traces.

    Example:
        >>> import traxon
        >>> rule = traxon.trace.three_factor(modulator=lambda y, t, l: -l, baseline=0.9)
        >>> rule.baseline, rule.decay
        (0.9, 'auto')
    """

    name = "three_factor"

    def __init__(
        self,
        modulator: Modulator | None = None,
        baseline: float | None = 0.99,
        decay: str | float = "auto",
    ) -> None:
        if modulator is not None and not callable(modulator):
            raise TypeError(
                f"`modulator` must be a function (output, target, loss) -> (B,); got {modulator!r}."
            )
        if baseline is not None and not (isinstance(baseline, (int, float)) and 0 <= baseline < 1):
            raise ValueError(f"`baseline` must be None or a float in [0, 1); got {baseline!r}.")
        if decay != "auto" and not (
            isinstance(decay, (int, float)) and not isinstance(decay, bool) and 0 <= decay <= 1
        ):
            raise ValueError(f"`decay` must be 'auto' or a float in [0, 1]; got {decay!r}.")
        self.modulator = modulator
        self.baseline = None if baseline is None else float(baseline)
        self.decay = decay if decay == "auto" else float(decay)

    def _bound(
        self, net: Network, loss_fn: LossFn, window: int | None
    ) -> SignalRule[ThreeFactorState]:
        return _Bound(net, loss_fn, self.modulator or negative_loss, self.baseline, self.decay)


class _Bound(SignalRule[ThreeFactorState]):
    """:class:`three_factor` bound to a network and a loss: the tracer's functions."""

    trace_fields = ("pre", "post", "pre_k")  # the baseline is kept

    def __init__(
        self,
        net: Network,
        loss_fn: LossFn,
        modulator: Modulator,
        baseline: float | None,
        decay: str | float,
    ) -> None:
        super().__init__(net, loss_fn)
        self.modulator, self.beta = modulator, baseline
        self.hidden = hidden = tuple(p for p in self.projs if p.target != READOUT)
        self.readout = readout = tuple(p for p in self.projs if p.target == READOUT)
        # Only the spikes' learning signal (the readout error) and the hidden populations'
        # blocks are used.
        self.posts = {k: v for k, v in self.posts.items() if k != READOUT}
        self.sigs = {**dict.fromkeys(self.posts, ("spike",)), READOUT: ("spike",)}
        alphas = {
            p.name: float(state_decays(net, net.populations[p.target])[0])
            if decay == "auto"
            else float(decay)
            for p in hidden
        }
        self.pre_keys = {p.name: f"{p.source}/{p.signal}/{alphas[p.name]!r}" for p in hidden}
        self.pre_src = {self.pre_keys[p.name]: (p.source, p.signal, alphas[p.name]) for p in hidden}
        self.k_keys = {p.name: f"{p.source}/{p.signal}" for p in readout}
        self.sizes = {
            **net.inputs,
            **{k: v.size for k, v in net.populations.items()},
            "__one__": 1,
        }

    def init(
        self, params: Mapping[str, jax.Array], state: Any, target_example: Any = None
    ) -> ThreeFactorState:
        net, sizes = self.net, self.sizes
        batch = net.batch_size(state)
        dtype = state_dtype(state)
        pre = {k: jnp.zeros((batch, sizes[src]), dtype) for k, (src, _, _) in self.pre_src.items()}
        post = {
            f"{t}/{c}": jnp.zeros(
                (batch, net.populations[t].size, len(net.populations[t].traced)), dtype
            )
            for t, chans in self.posts.items()
            for c in chans
        }
        pre_k = {
            self.k_keys[p.name]: jnp.zeros((batch, sizes[p.source]), dtype) for p in self.readout
        }
        return ThreeFactorState(
            pre,
            post,
            pre_k,
            jnp.zeros((batch,), dtype),
            jnp.zeros((batch,), bool),
            {p.name: jnp.zeros_like(params[p.name]) for p in self.projs},
        )

    def _third_factor(
        self, q: Any, ts: ThreeFactorState, target: Any, w: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """The third factor ``-w (m - baseline)`` of this step, and the new running baseline
        and ``seen`` flags (the baseline counts only the steps with a loss)."""
        m = jnp.asarray(self.modulator(q.output, target, q.loss)).astype(w.dtype)
        if m.shape != ts.baseline.shape:
            raise ValueError(
                f"the modulator must return one value per sample, shape "
                f"{ts.baseline.shape}; got {m.shape}."
            )
        counted = w > 0
        beta = self.beta
        if beta is None:
            return -(w * m), ts.baseline, ts.seen
        M = jnp.where(ts.seen, m - ts.baseline, jnp.zeros_like(m))
        running = jnp.where(ts.seen, beta * ts.baseline + (1.0 - beta) * m, m)
        baseline = jnp.where(counted, running, ts.baseline)
        return -(w * M), baseline, ts.seen | counted  # descent on -M raises the modulator

    def _traces(
        self, q: Any, ts: ThreeFactorState, z_of: Mapping[tuple[str, str], jax.Array]
    ) -> tuple[dict, dict, dict, dict]:
        """The new presynaptic, postsynaptic and readout traces, and the postsynaptic
        eligibility ``rho`` per population channel."""
        pre = {
            k: a * ts.pre[k] + (1.0 - a) * z_of[(src, sig)]
            for k, (src, sig, a) in self.pre_src.items()
        }
        post, rho = {}, {}
        for t, chans in self.posts.items():
            D = q.D[t]
            for c in chans:
                e = ts.post[f"{t}/{c}"]
                S = e.shape[-1]
                new = sum(D[..., :, r] * e[..., r : r + 1] for r in range(S)) + q.F[t][c]
                post[f"{t}/{c}"] = new
                rho[f"{t}/{c}"] = jnp.sum(q.g[t]["spike"] * new, axis=-1)
        pre_k = {
            self.k_keys[p.name]: self.kappa * ts.pre_k[self.k_keys[p.name]]
            + z_of[(p.source, p.signal)]
            for p in self.readout
        }
        return pre, post, pre_k, rho

    def advance(
        self, params: Mapping[str, jax.Array], state: Any, ts: ThreeFactorState, data: StepData
    ) -> tuple[Any, ThreeFactorState, StepOutput]:
        q = self.quantities(params, state, data)
        dtype = ts.baseline.dtype
        third, baseline, seen = self._third_factor(q, ts, data.target, data.weight.astype(dtype))
        z_of = {(p.source, p.signal): q.z[p.name].astype(dtype) for p in self.projs}
        pre, post, pre_k, rho = self._traces(q, ts, z_of)
        grads = dict(ts.grads)
        error = q.lam[READOUT]["spike"]  # w_t * dl_t/dy_t
        for p in self.readout:
            W = params[p.name]
            grads[p.name] = grads[p.name] + p.op.outer(W, pre_k[self.k_keys[p.name]], error)
        for p in self.hidden:
            W = params[p.name]
            r = rho[f"{p.target}/{p.channel}"]
            post_factor = third[:, None] * r
            if p.target in q.cost:
                post_factor = post_factor + q.cost[p.target] * r
            grads[p.name] = grads[p.name] + p.op.outer(W, pre[self.pre_keys[p.name]], post_factor)
        new_ts = ThreeFactorState(pre, post, pre_k, baseline, seen, grads)
        return q.new_state, new_ts, StepOutput(q.output, q.loss)
