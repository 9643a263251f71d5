r"""ES-D-RTRL: input/output-dimension eligibility traces, memory linear in the neurons.

The parameter-dimension trace :math:`E_{t}[j, i, s]` of D-RTRL is replaced by a product of a
presynaptic trace (one per source neuron) and a postsynaptic trace (one per target neuron
and state variable). For a weight from signal :math:`z` into population :math:`P` through
channel :math:`c`, with one presynaptic decay :math:`\alpha_s` per state variable:

.. math::
    \bar x^{(\alpha)}_t = \alpha\, \bar x^{(\alpha)}_{t-1} + z_t
    \qquad\text{(per source neuron, one per distinct } \alpha)

    \epsilon_t = D_t\, \epsilon_{t-1} + F^c_t
    \qquad\text{(per target neuron, } B \times N \times S)

    E_t[j, i, s] \approx c_n(\alpha_s)\; \bar x^{(\alpha_s)}_t[j]\; \epsilon_t[i, s],
    \qquad c_n(\alpha) = \frac{1 - \alpha}{1 - \alpha^{n}}

    \nabla W \mathrel{+}= \sum_{\alpha} c_n(\alpha)\; \mathrm{outer}\Big(\bar x^{(\alpha)}_t,\;
        \sum_{s:\, \alpha_s = \alpha} \delta_t[\cdot, s] \odot \epsilon_t[\cdot, s]\Big)

where :math:`n` is the number of steps since the traces were last reset (a per-step counter
in the state, never switched off). :math:`c_n` is the bias correction that makes the product
exact when :math:`D_t = \alpha` and :math:`F_t` is constant: for one LIF population with no
reset gradient and :math:`\alpha` equal to the membrane leak, ES-D-RTRL equals BPTT (the
e-prop case). ``outer`` is the op's batch-summed outer product (one GEMM for dense weights).

**Decays.** ``decay="auto"`` gives every state variable its own leak (membrane
:math:`e^{-\Delta t/\tau_m}`, synapse :math:`e^{-\Delta t/\tau_s}`, adaptation
:math:`e^{-\Delta t/\tau_a}`, ...): the slow adaptation variable of an ALIF neuron then keeps a
slow presynaptic trace, which is where the credit of long-delay tasks lives. A float gives
one decay for every variable (one GEMM per step). The readout's own weights always use the
readout's decay :math:`\kappa`, which makes them exact. A variable that no learning signal
reads (by data flow: :func:`~traxon.trace._quantities.signal_support`), such as the
synaptic current of an LIF neuron whose spikes read only :math:`V`, has
:math:`\delta_t[\cdot, s] = 0` in every state; a decay group made only of such variables
contributes exactly zero and gets neither a presynaptic trace nor a share of the outer
product.

**Leaky readout** (:math:`\kappa > 0`): the weights upstream of the readout filter their
contracted trace with :math:`\kappa`. In rank-one form, with
:math:`w^{(\alpha)}_t = \sum_{s:\alpha_s=\alpha} g_t[\cdot,s]\,\epsilon_t[\cdot,s]`,

.. math::
    \hat a^{(\alpha)}_t = \kappa \hat a^{(\alpha)}_{t-1} + c_n(\alpha)\bar x^{(\alpha)}_t,\quad
    \hat b^{(\alpha)}_t = \kappa \hat b^{(\alpha)}_{t-1} + w^{(\alpha)}_t,\quad
    \nabla W \mathrel{+}= \frac{1-\kappa}{1-\kappa^{n}}\;
        \mathrm{outer}\big(\hat a^{(\alpha)}_t, \lambda_t \odot \hat b^{(\alpha)}_t\big)

(the filtered product approximated by the product of the filtered factors over the filter's
total weight; exact when either factor is constant over the readout's time scale).

* Memory: :math:`O(B \cdot (I\cdot A + N \cdot S))` for :math:`A` distinct decays.
* Compute per step: :math:`O(B \cdot N \cdot S^2)` for the traces plus one outer product
  :math:`O(B \cdot I \cdot N)` per decay group (the same cost as the forward matmul).
* **Deferred accumulation** (``defer``): for a dense weight the step's factors (the
  concatenated ``pre`` and ``post`` rows) are written into a buffer of ``R`` steps, and one
  GEMM with ``R`` times the rows adds them to the gradient every ``R`` steps (and when the
  gradient is read). The sum is the same; a GEMM with few rows runs far below the machine's
  peak and writes the whole ``I x N`` product each step, one with many rows does not
  (``docs/decisions.md``). The buffer holds :math:`R \cdot K \cdot (I + N)` numbers for
  ``K`` rows per step: linear in the neurons.
* Exact: the e-prop case above. Otherwise an approximation whose quality is measured
  against BPTT in the tests and in ``docs/algorithms.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from traxon.core._deferred import DeferredWeight
from traxon.core.network import READOUT, Network, state_dtype
from traxon.core.ops import CSR, Bias, Dense, ElementWise, FixedInDegree, FixedOutDegree, Sparse
from traxon.trace._param_traces import advance_param_traces, init_param_traces
from traxon.trace._quantities import signal_support, state_decays
from traxon.trace.base import Algorithm, LossFn, SignalRule, StepData, StepOutput, register

__all__ = ["ESDRTRLState", "es_d_rtrl", "state_decays"]


class ESDRTRLState(NamedTuple):
    """State of :func:`es_d_rtrl`.

    Attributes:
        pre: ``{key: (B, I)}`` presynaptic traces, one per source signal and decay.
        post: ``{population/channel: (B, N, S)}`` postsynaptic traces.
        pre_k: ``{key: (B, I)}`` readout-filtered presynaptic factors (leaky readout only).
        post_k: ``{key: (B, N)}`` readout-filtered postsynaptic factors (leaky readout only).
        count: steps since the traces were reset (int32 scalar).
        grads: ``{weight: W.shape}`` accumulated gradient of the rank-one weights.
        E, G, acc: parameter-dimension traces, filtered traces and accumulated gradients
            (``W.shape``, summed over the batch every step) of the weights listed in
            ``exact`` (as in :func:`~traxon.trace.d_rtrl`).
        buf: ``{weight: (pre (R K, I), post (R K, N))}`` the factors of the last steps of a
            deferred dense weight, not yet added to ``grads`` (see ``defer``).
        fill: ``{weight: int32}`` how many rows of that weight's buffer hold factors.
    """

    pre: dict[str, jax.Array]
    post: dict[str, jax.Array]
    pre_k: dict[str, jax.Array]
    post_k: dict[str, jax.Array]
    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count
    grads: dict[str, jax.Array]
    E: dict[str, tuple[jax.Array, ...]]
    G: dict[str, dict[str, jax.Array]]
    acc: dict[str, jax.Array]
    buf: dict[str, tuple[jax.Array, jax.Array]]
    fill: dict[str, jax.Array]


_BILINEAR = (Bias, CSR, Dense, ElementWise, FixedInDegree, FixedOutDegree, Sparse)


def _summed_outer(
    op: Any, W: jax.Array, terms: list[tuple[jax.Array, jax.Array]]
) -> tuple[jax.Array, jax.Array]:
    """``sum_k op.outer(W, pre_k, post_k)`` and its squared norm; for the built-in ops
    (batch-summed bilinear products) as one outer product over the concatenated batch: one
    GEMM for dense weights instead of one per decay group plus their sum. The norm comes
    from the factors where the op can (``op.outer_sq_norm``), else from the sum."""
    if not terms:
        return jnp.zeros_like(W), jnp.zeros((), W.dtype)
    if len(terms) == 1 or isinstance(op, _BILINEAR) or op.stacks_rows():
        pre, post = _stacked(terms)
        out = op.outer(W, pre, post)
        sq = op.outer_sq_norm(W, pre, post)
    else:
        out = op.outer(W, *terms[0])
        for a, b in terms[1:]:
            out = out + op.outer(W, a, b)
        sq = None
    return out, _sum_sq(out) if sq is None else sq


def _stacked(terms: list[tuple[jax.Array, jax.Array]]) -> tuple[jax.Array, jax.Array]:
    """The terms' factors concatenated over the batch: ``(pre, post)`` of one outer product."""
    pre = jnp.concatenate([a for a, _ in terms], axis=0)  # one term: that term
    return pre, jnp.concatenate([b for _, b in terms], axis=0)


def _fold_held(
    op: Any, W: jax.Array, grad: jax.Array, buf: tuple[jax.Array, jax.Array], fill: jax.Array
) -> jax.Array:
    """``grad`` plus the outer product of the first ``fill`` rows of ``buf`` (the rows after
    them are stale), as a conditional that leaves ``grad`` in place when none are held."""
    held_pre, held_post = buf
    held = (jnp.arange(held_pre.shape[0]) < fill)[:, None]

    def add(g: jax.Array) -> jax.Array:
        pre, post = jnp.where(held, held_pre, 0), jnp.where(held, held_post, 0)
        return g + op.outer(W, pre, post).astype(g.dtype)

    return jax.lax.cond(fill > 0, add, lambda g: g, grad)


def _deferred_add(
    op: Any,
    W: jax.Array,
    grad: jax.Array,
    buf: tuple[jax.Array, jax.Array],
    fill: jax.Array,
    pre: jax.Array,
    post: jax.Array,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array], jax.Array]:
    """Write this step's factors (``pre``, ``post``: :func:`_stacked`) after the ``fill``
    rows of ``buf``; when it is full, add its one outer product to ``grad`` (a conditional:
    the other steps leave ``grad`` in place) and start it again. A step whose rows do not
    fit in what is left (a spike cost adds terms to some steps) first folds what is held.
    Returns ``(grad, buf, fill)``."""
    rows, size = pre.shape[0], buf[0].shape[0]
    if size % rows:  # steps of this many rows may not fill it exactly
        spill = fill + rows > size
        grad = _fold_held(op, W, grad, buf, jnp.where(spill, fill, 0))
        fill = jnp.where(spill, 0, fill)
    held_pre = jax.lax.dynamic_update_slice_in_dim(buf[0], pre.astype(buf[0].dtype), fill, 0)
    held_post = jax.lax.dynamic_update_slice_in_dim(buf[1], post.astype(buf[1].dtype), fill, 0)
    fill = fill + rows
    grad, fill = jax.lax.cond(
        fill == size,
        lambda g: (g + op.outer(W, held_pre, held_post).astype(g.dtype), jnp.zeros_like(fill)),
        lambda g: (g, fill),
        grad,
    )
    return grad, (held_pre, held_post), fill


def _sum_sq(x: jax.Array) -> jax.Array:
    """``sum(x ** 2)`` as a reduction of its own. Without the barrier XLA merges ``x * x``
    with the optimiser's (Adam's second moment squares the same gradient), and its CPU
    backend then writes the shared square out instead of squaring inside the reduction:
    8 bytes per connection per step more at connectome scale (``benchmarks/_hlo_bytes.py``)."""
    x = jax.lax.optimization_barrier(x)
    return jnp.sum(x * x)


def _contract(a: jax.Array, b: jax.Array, which: tuple[int, ...]) -> jax.Array:
    """``sum_{s in which} a[..., s] b[..., s]`` over a few state variables, written out: an
    element-wise fusion rather than a reduction kernel."""
    out = None
    for s in which:
        term = a[..., s] * b[..., s]
        out = term if out is None else out + term
    assert out is not None  # every decay group selects at least one variable
    return out


def _correction(alpha: float, count: jax.Array, dtype: Any) -> jax.Array:
    """Bias correction :math:`(1 - \\alpha) / (1 - \\alpha^n)` (``1/n`` for ``alpha = 1``)."""
    n = count.astype(dtype)
    if alpha == 0.0:
        return jnp.ones((), dtype)
    if alpha == 1.0:
        return 1.0 / n
    return (1.0 - alpha) / (1.0 - jnp.asarray(alpha, dtype) ** n)


#: Rows per deferred GEMM that ``defer="auto"`` aims at, and the least weight it defers.
_DEFER_ROWS, _DEFER_MIN_SIZE = 128, 1 << 16
#: The least weight whose updates ``defer="auto"`` holds as factors when the learner
#: updates every step with plain SGD: 8 MB of float32, about where the weight leaves the
#: CPU's cache (measured: slower at N = 1024, faster from N = 2048; docs/decisions.md).
_DEFER_UPDATE_MIN_SIZE = 1 << 21


def _update_steps(defer: str | int, rows: int, n_in: int, n_out: int) -> int:
    """Steps of updates a dense weight holds as factors when the learner updates every step
    with plain SGD (``1``: none). ``"auto"``: as :func:`_defer_steps` without a window, for
    weights of at least ``_DEFER_UPDATE_MIN_SIZE`` entries; an int: that many.

    Example:
        >>> _update_steps("auto", 16, 1024, 1024), _update_steps("auto", 16, 2048, 2048)
        (1, 8)
        >>> _update_steps(4, 16, 100, 10)
        4
    """
    if rows < 1:
        return 1
    if defer != "auto":
        return max(1, int(defer))
    if n_in * n_out < _DEFER_UPDATE_MIN_SIZE:
        return 1
    return _defer_steps("auto", None, rows, n_in, n_out)


def _defer_steps(defer: str | int, window: int | None, rows: int, n_in: int, n_out: int) -> int:
    """Steps a dense weight buffers before folding them into its gradient (``1``: none).

    ``rows``: the outer-product rows one step gives (batch x terms); ``window``: the
    learner's update period, or ``None`` when unknown. ``"auto"`` aims at ``_DEFER_ROWS``
    rows per fold, at most half the weight's smaller side; with a window it takes, from
    half that many steps up to it, the count whose folds cover the window with the fewest
    rows (an update folds what is held, full or not), and the whole window when shorter.

    Example:
        >>> _defer_steps("auto", None, 16, 1024, 1024), _defer_steps("auto", 1, 16, 1024, 1024)
        (8, 1)
        >>> _defer_steps("auto", 100, 16, 1024, 1024), _defer_steps(4, None, 16, 100, 10)
        (5, 4)
    """
    if rows < 1 or window == 1:
        return 1
    if defer != "auto":
        return max(1, min(int(defer), window or int(defer)))
    if n_in * n_out < _DEFER_MIN_SIZE:
        return 1
    steps = min(_DEFER_ROWS // rows, min(n_in, n_out) // (2 * rows))
    if window is not None and steps >= 2:
        if window <= steps:
            return window
        # rows folded per window: ceil(window / r) * r; the most steps among the fewest rows
        steps = min(range((steps + 1) // 2, steps + 1), key=lambda r: (-(-window // r) * r, -r))
    return steps if steps >= 2 else 1


@register("es_d_rtrl")
class es_d_rtrl(Algorithm):
    r"""Input/output-dimension traces with linear memory (see the module docstring).

    Arguments:
        decay: ``"auto"`` (each state variable's own leak) or a float in [0, 1] used for
            every presynaptic trace.
        exact: names of weights that keep exact parameter-dimension traces (D-RTRL) instead
            of the rank-one product -- e.g. the few input weights into adaptive neurons,
            where the credit of long-delay tasks lives. Memory grows by
            :math:`B \cdot |W| \cdot S` for those weights only.
        defer: steps whose outer-product factors a dense weight buffers before one GEMM
            adds them to the gradient (the same sum, formed with more rows per GEMM; see
            the module docstring). ``"auto"``: about 128 rows per GEMM, never more than half
            the weight's smaller side, fitted to the learner's update window, and ``1`` (no
            buffer) for a learner that updates every step, for weights under 65,536 entries
            and for Dale-signed weights. An int sets the steps (``1``: off). Under
            ``jax.vmap`` the fold's conditional becomes a select that folds every step:
            pass ``defer=1`` there. With a learner that updates every step with
            :func:`traxon.learn.sgd`, the same count of steps of *updates* is held as factors in
            :meth:`~traxon.learn.OnlineLearner.run` (the weight is written every that many
            steps; the result is the same): ``"auto"`` does it for dense weights of at least
            2,097,152 entries (``traxon.core._deferred``).

    Example:
        >>> import traxon
        >>> traxon.trace.es_d_rtrl(decay=0.95).decay
        0.95
    """

    name = "es_d_rtrl"
    optional_state = ("buf", "fill")

    def __init__(
        self,
        decay: str | float = "auto",
        exact: tuple[str, ...] | list[str] = (),
        defer: str | int = "auto",
    ) -> None:
        if isinstance(exact, str):
            exact = (exact,)
        self.exact = tuple(exact)
        if defer != "auto" and (isinstance(defer, bool) or not isinstance(defer, int) or defer < 1):
            raise ValueError(f"`defer` must be 'auto' or an int >= 1 (steps); got {defer!r}.")
        self.defer = defer
        if decay != "auto":
            if isinstance(decay, bool) or not isinstance(decay, (int, float)):
                raise TypeError(f"`decay` must be 'auto' or a float in [0, 1]; got {decay!r}.")
            if not 0.0 <= float(decay) <= 1.0:
                raise ValueError(f"`decay` must lie in [0, 1]; got {decay!r}.")
            decay = float(decay)
        self.decay = decay

    def _bound(self, net: Network, loss_fn: LossFn, window: int | None) -> SignalRule[ESDRTRLState]:
        names = {p.name for p in net.projections if p.trainable}
        unknown = [k for k in self.exact if k not in names]
        if unknown:
            raise ValueError(
                f"`exact` names weights {unknown} that are not trainable weights of this "
                f"network; they are {sorted(names)}."
            )
        return _Bound(net, loss_fn, self.decay, self.exact, self.defer, window)


#: One decay group of a projection: its decay, the key of its presynaptic trace, and the
#: indices of the postsynaptic state variables that share that decay.
_Group = tuple[float, str, tuple[int, ...]]


class _Bound(SignalRule[ESDRTRLState]):
    """:class:`es_d_rtrl` bound to a network and a loss: the static layout of its traces
    (decay groups, trace keys and widths) and the tracer's functions."""

    grad_fields = ("grads", "acc", "buf", "fill")
    trace_fields = ("pre", "post", "pre_k", "post_k", "count", "E", "G")

    def __init__(
        self,
        net: Network,
        loss_fn: LossFn,
        decay: str | float,
        exact_names: tuple[str, ...],
        defer: str | int = "auto",
        window: int | None = None,
    ) -> None:
        super().__init__(net, loss_fn)
        self.defer, self.window = defer, window
        everything = self.projs
        self.exact = exact = tuple(p for p in everything if p.name in exact_names)
        self.projs = projs = tuple(p for p in everything if p.name not in exact_names)
        sigs, kappa = self.sigs, self.kappa
        self.groups: dict[str, list[_Group]] = {}
        self.pre_keys: dict[str, tuple[str, str, float]] = {}
        for p in projs:
            plan = net.populations[p.target]
            if decay == "auto" or p.target == READOUT:
                # The readout is linear with D = kappa and F = 1: its own decay is exact.
                alphas = state_decays(net, plan)
            else:
                alphas = np.full(len(plan.traced), float(decay))
            # A decay group whose variables no learning signal (nor a spike cost) reads has
            # g = delta = 0 on all of them in every state: its term is exactly zero, so it
            # gets neither a presynaptic trace nor a share of the outer product.
            reads = signal_support(plan, (*sigs.get(p.target, ()), "spike"))
            self.groups[p.name] = []
            for a in sorted(set(alphas.tolist())):
                key = f"{p.source}/{p.signal}/{a!r}"
                which = tuple(int(i) for i in np.flatnonzero((alphas == a) & reads))
                if which:
                    self.pre_keys[key] = (p.source, p.signal, a)
                    self.groups[p.name].append((a, key, which))
        self.filtered = {p.name for p in projs if kappa > 0 and p.target != READOUT}
        self.exact_filtered = {
            p.name: sigs.get(p.target, ()) for p in exact if kappa > 0 and p.target != READOUT
        }
        # Width of every presynaptic trace: the signal's width (a slice of a population's
        # spikes is narrower than the population).
        self.sizes = {key: p.n_in for p in projs for _, key, _ in self.groups[p.name]}
        # Outer-product terms of one step per weight, batch rows each: what a buffer is sized
        # for (a spike cost, given at run time, adds terms; see `_deferred_add`).
        self.terms = {
            p.name: len(self.groups[p.name])
            if p.name not in self.filtered or self.sigs.get(p.target)
            else 0
            for p in projs
        }
        # Dense weights without Dale's signs (and an adapted module's plain matmuls) are
        # the ones a deferred GEMM speeds up.
        self.deferrable = tuple(
            p for p in projs if p.op.plain_matmul(p.n_in) and self.terms[p.name]
        )

    def update_steps(self, batch: int) -> dict[str, int]:
        steps = {
            p.name: _update_steps(self.defer, batch * self.terms[p.name], p.n_in, p.n_out)
            for p in self.deferrable
        }
        return {k: v for k, v in steps.items() if v > 1}

    @staticmethod
    def _post_key(target: str, channel: str) -> str:
        return f"{target}/{channel}"

    def _k_key(self, p: Any, key: str, sig: str) -> str:
        return f"{self._post_key(p.target, p.channel)}/{key}/{sig}"

    def init(
        self, params: Mapping[str, jax.Array], state: Any, target_example: Any = None
    ) -> ESDRTRLState:
        net = self.net
        batch = net.batch_size(state)
        dtype = state_dtype(state)
        pre = {k: jnp.zeros((batch, self.sizes[k]), dtype) for k in self.pre_keys}
        post = {
            self._post_key(t, c): jnp.zeros(
                (batch, net.populations[t].size, len(net.populations[t].traced)), dtype
            )
            for t, chans in self.posts.items()
            for c in chans
        }
        pre_k: dict[str, jax.Array] = {}
        post_k: dict[str, jax.Array] = {}
        for p in self.projs:
            if p.name in self.filtered:
                for _, key, _ in self.groups[p.name]:
                    pre_k[key] = pre[key]
                    for s in self.sigs.get(p.target, ()):
                        post_k[self._k_key(p, key, s)] = jnp.zeros(
                            (batch, net.populations[p.target].size), dtype
                        )
        grads = {p.name: jnp.zeros_like(params[p.name]) for p in self.projs}
        E, G, _ = init_param_traces(net, params, self.exact, self.exact_filtered, batch)
        acc = {p.name: jnp.zeros_like(params[p.name]) for p in self.exact}
        count = jnp.zeros((), jnp.int32)
        buf, fill = {}, {}
        for p in self.deferrable:  # the factor buffers of those that defer at this batch
            rows = batch * self.terms[p.name]
            steps = _defer_steps(self.defer, self.window, rows, p.n_in, p.n_out)
            if steps > 1:
                held = steps * rows
                buf[p.name] = (jnp.zeros((held, p.n_in), dtype), jnp.zeros((held, p.n_out), dtype))
                fill[p.name] = jnp.zeros((), jnp.int32)
        return ESDRTRLState(pre, post, pre_k, post_k, count, grads, E, G, acc, buf, fill)

    def _traces(self, q: Any, ts: ESDRTRLState, dtype: Any) -> tuple[dict, dict]:
        r"""The new presynaptic traces (the signal each projection read this step, decayed
        per group) and postsynaptic traces (:math:`\epsilon \leftarrow D \epsilon + F`)."""
        z_of = {(p.source, p.signal): q.z[p.name] for p in self.projs}
        pre = {
            k: a * ts.pre[k] + z_of[(src, sig)].astype(dtype)
            for k, (src, sig, a) in self.pre_keys.items()
        }
        post = {}
        for t, chans in self.posts.items():
            D = q.D[t]
            for c in chans:
                e = ts.post[self._post_key(t, c)]
                S = e.shape[-1]
                de = sum(D[..., :, r] * e[..., r : r + 1] for r in range(S))
                post[self._post_key(t, c)] = de + q.F[t][c]
        return pre, post

    def _filtered_terms(
        self,
        p: Any,
        group: _Group,
        q: Any,
        ts: ESDRTRLState,
        pre: Mapping[str, jax.Array],
        eps: jax.Array,
        corr: jax.Array,
        norm: jax.Array,
        pre_k: dict[str, jax.Array],
        post_k: dict[str, jax.Array],
    ) -> list[tuple[jax.Array, jax.Array]]:
        """The (pre, post) pairs of one decay group of a weight whose credit reaches the
        loss through the leaky readout (traces filtered by its decay ``kappa``); updates
        ``pre_k`` and ``post_k`` in place."""
        _, key, which = group
        kappa = self.kappa
        terms: list[tuple[jax.Array, jax.Array]] = []
        a_hat = kappa * ts.pre_k[key] + corr * pre[key]
        pre_k[key] = a_hat
        post_sig: Any = None
        for s in self.sigs.get(p.target, ()):
            w = _contract(q.g[p.target][s], eps, which)
            kk = self._k_key(p, key, s)
            b_hat = kappa * ts.post_k[kk] + w
            post_k[kk] = b_hat
            term = q.lam[p.target][s] * b_hat
            post_sig = term if post_sig is None else post_sig + term
            if s == "spike" and p.target in q.cost:
                # Spike costs act on this step's spikes, not via the readout.
                terms.append((pre[key], corr * q.cost[p.target] * w))
        if post_sig is not None:
            terms.append((a_hat, norm * post_sig))
        return terms

    def advance(
        self, params: Mapping[str, jax.Array], state: Any, ts: ESDRTRLState, data: StepData
    ) -> tuple[Any, ESDRTRLState, StepOutput]:
        q = self.quantities(params, state, data)
        dtype = state_dtype(state)
        count = ts.count + 1
        pre, post = self._traces(q, ts, dtype)
        corr = {k: _correction(a, count, dtype) for k, (_, _, a) in self.pre_keys.items()}
        pre_k, post_k = dict(ts.pre_k), dict(ts.post_k)
        norm = _correction(self.kappa, count, dtype)
        grads = dict(ts.grads)
        buf, fill = dict(ts.buf), dict(ts.fill)
        grad_sq = jnp.zeros((), dtype)
        factors: dict[str, tuple[jax.Array, jax.Array]] = {}
        for p in self.projs:
            given = params[p.name]
            # A weight whose updates are held as factors: return this step's (update_steps).
            deferred = isinstance(given, DeferredWeight)
            W = given.base if isinstance(given, DeferredWeight) else given
            eps = post[self._post_key(p.target, p.channel)]
            # Pairs (pre, post) whose batch-summed outer products make this step's
            # gradient: summed in one outer product over the concatenated batch.
            terms: list[tuple[jax.Array, jax.Array]] = []
            for group in self.groups[p.name]:
                _, key, which = group
                if p.name in self.filtered:
                    terms += self._filtered_terms(
                        p, group, q, ts, pre, eps, corr[key], norm, pre_k, post_k
                    )
                else:
                    v = _contract(q.delta[p.target], eps, which)
                    terms.append((pre[key], corr[key] * v))
            rows = sum(a.shape[0] for a, _ in terms)
            if deferred or (p.name in buf and 0 < rows <= buf[p.name][0].shape[0]):
                # Kept as factors: returned (held updates) or buffered (deferred gradient).
                stacked = _stacked(terms)
                if deferred:
                    factors[p.name] = stacked
                else:
                    grads[p.name], buf[p.name], fill[p.name] = _deferred_add(
                        p.op, W, grads[p.name], buf[p.name], fill[p.name], *stacked
                    )
                sq = p.op.outer_sq_norm(W, *stacked)
                assert sq is not None  # a deferred weight is a plain matmul
                grad_sq = grad_sq + sq.astype(dtype)
                continue
            contrib, sq = _summed_outer(p.op, W, terms)
            grads[p.name] = grads[p.name] + contrib.astype(W.dtype)
            grad_sq = grad_sq + sq.astype(dtype)
        # The weights named in `exact`: parameter-dimension traces, as in D-RTRL.
        exact = (ts.E, ts.G, ts.acc)
        E, G, acc = advance_param_traces(self.exact, q, params, exact, self.kappa, summed=True)
        for k in acc:
            grad_sq = grad_sq + _sum_sq(acc[k] - ts.acc[k]).astype(dtype)
        new_ts = ESDRTRLState(pre, post, pre_k, post_k, count, grads, E, G, acc, buf, fill)
        return q.new_state, new_ts, StepOutput(q.output, q.loss, grad_sq, factors or None)

    def gradients(self, params: Mapping[str, jax.Array], ts: ESDRTRLState) -> dict:
        grads = {**ts.grads, **ts.acc}
        ops = {p.name: p.op for p in self.projs}
        for name, held in ts.buf.items():
            grads[name] = _fold_held(ops[name], params[name], grads[name], held, ts.fill[name])
        return grads
