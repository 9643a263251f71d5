r"""Synthetic gradients (DNI; Jaderberg et al. 2017, ICML) for truncated BPTT windows.

BPTT runs inside windows of ``window`` steps; the gradient that would arrive from beyond the
window's end is *predicted* by a learned linear function of the state there,
:math:`\hat g(h) = h A + c \approx \partial \mathcal{L}_{>t} / \partial h_t` (the future
loss's gradient), and injected as if it had been back-propagated:

.. math::
    \nabla\theta \mathrel{+}= \frac{\partial}{\partial \theta}\Big[\sum_{t=t_0+1}^{t_1}
        \sum_b w_{t,b}\, l^{(b)}_t \;+\; \sum_b \big\langle \mathrm{sg}\big(\hat g(h_{t_1,b})
        \big),\, h_{t_1,b} \big\rangle\Big]_{h_{t_0} \text{ fixed}}

(:math:`\mathrm{sg}` = stop-gradient; a window closes every ``window`` steps, when the
learner reads the gradient, or at the end of a sequence, where nothing is injected.)

The predictor is trained online by bootstrapping, one step at a time: the target at
:math:`h_{t-1}` is the gradient of this step's loss plus the prediction at :math:`h_t`,

.. math::
    \delta_{t-1} = \underbrace{\frac{\partial \sum_b w_{t,b} l^{(b)}_t}{\partial h_{t-1}}}_{
        \text{now}} + \underbrace{\bar g(h_t)\, \frac{\partial h_t}{\partial h_{t-1}}}_{
        \text{later}}, \qquad
    A \leftarrow A - \frac{\eta}{B} \sum_b \frac{h_{t-1,b}^\top (\hat g(h_{t-1,b}) -
        \delta_{t-1,b})}{\lVert h_{t-1,b} \rVert^2 + 1}

(normalised LMS; :math:`c` likewise). The step is taken one step late, once the next step
shows that the sequence goes on; at the end of a sequence (``reset_traces``) the target is
"now" alone, so the predictor learns that nothing follows a sequence's last state. The
bootstrap target and the injection use a *copy* :math:`\bar g` of the predictor, refreshed
at every new sequence (and every ``sync_every`` steps if given) -- a target network: it
keeps bootstrapping stable and makes the gradient of a sequence independent of how its
samples are batched. The predictor's parameters live in the tracer state. A linear
predictor can match the future gradient only on average: it is a linear function of the
state only for linear dynamics.

**Reads by the learner are window boundaries.** The gradient read mid-window includes the
synthetic gradient at the current state. A read at the very end of a sequence therefore
still adds the predicted future of the last state (which the predictor learns to be small,
from the end-of-sequence targets above).

* Memory: :math:`O(\mathrm{window} \cdot B \cdot n_{in})` for the buffered window (as BPTT's)
  plus :math:`O(H^2)` for the predictor (:math:`H` all traced state variables).
* Compute per step: one forward and one backward pass of the step (the predictor's target)
  plus :math:`O(B H^2)`; once per window, BPTT over the window (about two forward passes
  per step).
* Exact (equal to BPTT) when one window covers the whole sequence (nothing to predict) and
  equal to truncated BPTT (``bptt_gradient(truncation=window)``) while the predictor is
  zero, as it is at initialisation. Otherwise a biased estimate whose quality depends on
  how predictable the future gradient is from the state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from traxon._checks import check_positive_int
from traxon.core.network import Network, state_dtype
from traxon.trace._quantities import flat_state
from traxon.trace._window import WindowRule, bound_window, replay, step_costs, step_objective
from traxon.trace.base import Algorithm, LossFn, StepData, StepOutput, register

__all__ = ["SyntheticGradientState", "synthetic_gradients"]


class SyntheticGradientState(NamedTuple):
    """State of :class:`synthetic_gradients`.

    Attributes:
        start, last, xs, targets, weights, costs, count, grads: the window buffer, as in
            :class:`~traxon.trace.bptt.BPTTState` (``grads``: the windows already closed).
        predictor: ``{"A": (H, H), "c": (H,)}``, the synthetic-gradient model being trained.
        target: the copy of the predictor used for injection and bootstrap targets.
        steps: steps since the copy was refreshed (int32).
        pending: the last state ``h`` ``(B, H)`` and the two parts of its target, ``now``
            (the next step's loss) and ``later`` (the prediction after it), used once the
            next step (or the end of the sequence) tells whether ``later`` applies.

    Example:
        >>> from traxon.trace.dni import SyntheticGradientState
        >>> SyntheticGradientState._fields[-4:]
        ('predictor', 'target', 'steps', 'pending')
    """

    start: Any
    last: Any
    xs: Any
    targets: Any
    weights: jax.Array
    costs: dict[str, jax.Array]
    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count
    grads: dict[str, jax.Array]
    predictor: dict[str, jax.Array]
    target: dict[str, jax.Array]
    steps: jax.Array
    pending: dict[str, jax.Array]


def _predict(model: Mapping[str, jax.Array], h: jax.Array) -> jax.Array:
    return h @ model["A"] + model["c"][None]


def _train(
    model: Mapping[str, jax.Array], pending: Mapping[str, jax.Array], goes_on: bool, lr: float
) -> dict[str, jax.Array]:
    """One normalised-LMS step of the predictor towards the pending target (if any)."""
    h = pending["h"]
    target = pending["now"] + pending["later"] if goes_on else pending["now"]
    err = _predict(model, h) - target
    scale = pending["valid"].astype(h.dtype) / (jnp.sum(h * h, axis=-1, keepdims=True) + 1.0)
    rate = lr / h.shape[0]
    return {
        "A": model["A"] - rate * (h * scale).T @ err,
        "c": model["c"] - rate * jnp.sum(err * scale, axis=0),
    }


@register("synthetic_gradients")
class synthetic_gradients(Algorithm):
    """BPTT in windows plus a learned synthetic gradient at their ends (module docstring).

    Arguments:
        window: steps per BPTT window (buffered); by default the learner's update period.
        lr: learning rate of the predictor's normalised-LMS update (stable in (0, 2)).
        sync_every: also refresh the predictor's copy every this many steps (``None``: only
            at a new sequence). Refreshing within a sequence lets the batch's own predictor
            updates reach its gradient, which then depends on how samples are batched.

    Example:
        >>> import traxon
        >>> traxon.trace.synthetic_gradients(window=10).window
        10
    """

    name = "synthetic_gradients"
    online = False

    def __init__(
        self, window: int | None = None, lr: float = 0.1, sync_every: int | None = None
    ) -> None:
        window = check_positive_int(window, "window", optional=True)
        sync_every = check_positive_int(sync_every, "sync_every", optional=True)
        if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not 0 <= lr < 2:
            raise ValueError(f"`lr` must be a float in [0, 2); got {lr!r}.")
        self.window = window
        self.lr = float(lr)
        self.sync_every = sync_every

    def _bound(
        self, net: Network, loss_fn: LossFn, window: int | None
    ) -> WindowRule[SyntheticGradientState]:
        size = bound_window(
            self.window,
            window,
            "synthetic_gradients needs a `window` (steps of BPTT between synthetic "
            "gradients): pass synthetic_gradients(window=...), or let the learner set it.",
        )
        return _Bound(net, loss_fn, size, self.lr, self.sync_every)


class _Bound(WindowRule[SyntheticGradientState]):
    """:class:`synthetic_gradients` bound to a network and a loss: the tracer's functions."""

    def __init__(
        self, net: Network, loss_fn: LossFn, size: int, lr: float, sync_every: int | None
    ) -> None:
        super().__init__(net, loss_fn, size, "synthetic_gradients")
        self.lr, self.sync_every = lr, sync_every
        self.split, self.merge = flat_state(net)

    def init(
        self, params: Mapping[str, jax.Array], state: Any, target_example: Any = None
    ) -> SyntheticGradientState:
        batch = self.net.batch_size(state)
        dtype = state_dtype(state)
        H = self.split(state).shape[-1]
        model = {"A": jnp.zeros((H, H), dtype), "c": jnp.zeros((H,), dtype)}
        return SyntheticGradientState(
            **self.buffer(params, state, target_example),
            predictor=model,
            target=jax.tree_util.tree_map(jnp.copy, model),
            steps=jnp.zeros((), jnp.int32),
            pending={
                "h": jnp.zeros((batch, H), dtype),
                "now": jnp.zeros((batch, H), dtype),
                "later": jnp.zeros((batch, H), dtype),
                "valid": jnp.zeros((), bool),
            },
        )

    def window_grad(
        self, params: Mapping[str, jax.Array], ts: SyntheticGradientState, inject: bool
    ) -> dict[str, jax.Array]:
        """BPTT over the buffered steps from ``start`` (+ the synthetic gradient at the end)."""
        synthetic = jax.lax.stop_gradient(_predict(ts.target, self.split(ts.last)))
        end = ts.count - 1

        def at_end(t: jax.Array, new: Any) -> jax.Array:
            value = jnp.sum(synthetic * self.split(new))
            return jnp.where(t == end, value, jnp.zeros_like(value))

        def total(p: Mapping[str, jax.Array]) -> jax.Array:
            steps = (ts.xs, ts.targets, ts.weights, ts.costs)
            final = at_end if inject else None
            return replay(self.net, self.loss_fn, {**params, **p}, ts.start, steps, final=final)[0]

        return jax.grad(total)({k: params[k] for k in self.names})

    def _targets(
        self,
        params: Mapping[str, jax.Array],
        state: Any,
        ts: SyntheticGradientState,
        data: StepData,
        costs: Mapping[str, jax.Array],
    ) -> tuple[Any, StepOutput, dict[str, jax.Array]]:
        """This step, and the two parts of the predictor's target at the previous state:
        this step's loss (``now``) and the predicted future after this step (``later``,
        valid only if the sequence goes on, which the next step tells)."""
        split = self.split
        dtype = ts.weights.dtype
        weight = data.weight.astype(dtype)

        def run(h_prev: jax.Array) -> tuple[tuple[jax.Array, jax.Array], Any]:
            st = self.merge(h_prev, state)
            step = (data.x, data.target, weight, costs)
            new, y, loss, weighted, extra = step_objective(self.net, self.loss_fn, params, st, step)
            return (weighted + extra, split(new)), (new, y, loss)

        h_prev = split(state)
        (_, h_new), vjp, (new_state, y, loss) = jax.vjp(run, h_prev, has_aux=True)
        one = jnp.ones((), dtype)
        (now,) = vjp((one, jnp.zeros_like(h_new)))
        future = jax.lax.stop_gradient(_predict(ts.target, h_new))
        (later,) = vjp((jnp.zeros_like(one), future))
        pending = {"h": h_prev, "now": now, "later": later, "valid": jnp.ones((), bool)}
        return new_state, StepOutput(y, loss), pending

    def advance(
        self,
        params: Mapping[str, jax.Array],
        state: Any,
        ts: SyntheticGradientState,
        data: StepData,
    ) -> tuple[Any, SyntheticGradientState, StepOutput]:
        ts = jax.lax.cond(
            ts.count >= self.size, lambda t: self.closed(params, t, True), lambda t: t, ts
        )
        costs = step_costs(ts.costs, data.spike_cost)
        new_state, out, pending = self._targets(params, state, ts, data, costs)
        predictor = _train(ts.predictor, ts.pending, True, self.lr)
        steps = ts.steps + 1
        model = ts.target
        if self.sync_every is not None:
            due = steps >= self.sync_every
            model = jax.tree_util.tree_map(
                lambda new, old: jnp.where(due, new, old), predictor, ts.target
            )
            steps = jnp.where(due, jnp.zeros_like(steps), steps)
        ts = self.recorded(ts, ts.count, new_state, data, costs)
        ts = ts._replace(predictor=predictor, target=model, steps=steps, pending=pending)
        return new_state, ts, out

    def reset_traces(
        self, params: Mapping[str, jax.Array], state: Any, ts: SyntheticGradientState
    ) -> SyntheticGradientState:
        # The sequence ended: its last window closes with no future to predict.
        ts = jax.lax.cond(ts.count > 0, lambda t: self.closed(params, t, False), lambda t: t, ts)
        # ... and its last state has no future: its target is this step's loss alone.
        predictor = _train(ts.predictor, ts.pending, False, self.lr)
        return ts._replace(
            start=state,
            last=state,
            predictor=predictor,
            target=jax.tree_util.tree_map(jnp.copy, predictor),
            steps=jnp.zeros_like(ts.steps),
            pending={**ts.pending, "valid": jnp.zeros_like(ts.pending["valid"])},
        )
