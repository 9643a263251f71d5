"""Gradient fidelity, memory and speed of the learning rules, side by side.

:func:`compare` runs the chosen algorithms and BPTT (``jax.grad`` through the unrolled
network, :func:`traxon.trace.bptt_gradient`) on the same weights and data and reports, for
every trainable weight, how close each algorithm's gradient is to BPTT's, with the bytes of
its tracer state and its time per step. The result is a :class:`FidelityTable`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from traxon.core.network import Network
from traxon.learn.losses import Loss, get_loss
from traxon.trace import ALGORITHMS, Algorithm, bptt_gradient, get_algorithm

__all__ = ["FidelityTable", "compare"]

COLUMNS = (
    ("algorithm", "algorithm"),
    ("weight", "weight"),
    ("cosine", "cosine"),
    ("norm_ratio", "norm ratio"),
    ("rel_error", "rel. error"),
    ("memory_bytes", "trace memory"),
    ("step_seconds", "time / step"),
)


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover - the loop always returns


def _seconds(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def _cell(key: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if key == "memory_bytes":
        return _bytes(float(value))
    if key == "step_seconds":
        return _seconds(float(value))
    if key == "rel_error":
        return f"{float(value):.2e}"
    return f"{float(value):.4f}" if key == "cosine" else f"{float(value):.3f}"


@dataclasses.dataclass
class FidelityTable:
    """What :func:`compare` measured: one row per algorithm and trainable weight.

    Attributes:
        rows: dicts with ``algorithm``, ``weight``, ``cosine``, ``norm_ratio`` (:math:`\\lVert
            g \\rVert / \\lVert g_{BPTT} \\rVert`), ``rel_error`` (:math:`\\lVert g - g_{BPTT}
            \\rVert / \\lVert g_{BPTT} \\rVert`), ``memory_bytes`` (the tracer state) and
            ``step_seconds`` (time per step after compilation, gradient read included; the
            fastest of three runs).
        info: the setting: steps, batch, dtype, the BPTT reference's time per step.

    Example:
        >>> from traxon.diagnostics import FidelityTable
        >>> table = FidelityTable([{"algorithm": "d_rtrl", "weight": "x->h", "cosine": 0.99,
        ...     "norm_ratio": 1.01, "rel_error": 0.02, "memory_bytes": 2048,
        ...     "step_seconds": 2e-4}])
        >>> print(table.to_markdown().splitlines()[2])
        | d_rtrl | x->h | 0.9900 | 1.010 | 2.00e-02 | 2.0 KiB | 200 µs |
    """

    rows: list[dict[str, Any]]
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def algorithms(self) -> list[str]:
        """The algorithms in the table, in order.

        Example:
            >>> from traxon.diagnostics import FidelityTable
            >>> FidelityTable([{"algorithm": "a"}, {"algorithm": "b"}, {"algorithm": "a"}]
            ...               ).algorithms()
            ['a', 'b']
        """
        return list(dict.fromkeys(r["algorithm"] for r in self.rows))

    def metric(self, name: str = "cosine") -> dict[str, dict[str, float]]:
        """``{algorithm: {weight: value}}`` of one column (e.g. ``"cosine"``).

        Example:
            >>> from traxon.diagnostics import FidelityTable
            >>> FidelityTable([{"algorithm": "a", "weight": "w", "cosine": 0.5}]).metric()
            {'a': {'w': 0.5}}
        """
        out: dict[str, dict[str, float]] = {}
        for r in self.rows:
            out.setdefault(r["algorithm"], {})[r["weight"]] = float(r[name])
        return out

    def to_markdown(self) -> str:
        """A Markdown table, one row per algorithm and weight (see the class example)."""
        head = "| " + " | ".join(label for _, label in COLUMNS) + " |"
        rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
        body = ["| " + " | ".join(_cell(k, r[k]) for k, _ in COLUMNS) + " |" for r in self.rows]
        return "\n".join([head, rule, *body])

    def plot(self, ax: Any = None, metric: str = "cosine") -> Any:
        """Bars of ``metric`` per algorithm and weight (:func:`traxon.plot.fidelity_bars`).

        Example:
            >>> from traxon.diagnostics import FidelityTable
            >>> table = FidelityTable([{"algorithm": "a", "weight": "w", "cosine": 0.9}])
            >>> fig = table.plot()
        """
        from traxon.plot import fidelity_bars

        return fidelity_bars(self.metric(metric), metric=metric, ax=ax)


def _label(algorithm: str | Algorithm, taken: set[str]) -> str:
    name = algorithm if isinstance(algorithm, str) else repr(algorithm)
    if isinstance(algorithm, Algorithm) and algorithm.name not in taken:
        name = algorithm.name
    taken.add(name)
    return name


def _as_vector(tree: Mapping[str, Any], names: Sequence[str]) -> dict[str, np.ndarray]:
    return {k: np.asarray(tree[k], np.float64).ravel() for k in names}


def _timed(fn: Callable[..., Any], *args: Any, repeats: int = 3) -> tuple[Any, float]:
    """Compile, run once, then the fastest of ``repeats`` timed runs (seconds)."""
    compiled = jax.jit(fn).lower(*args).compile()
    out = jax.block_until_ready(compiled(*args))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        best = min(best, time.perf_counter() - start)
    return out, best


def compare(
    net_or_learner: Any,
    xs: Any,
    ys: Any,
    algorithms: Sequence[str | Algorithm] | None = None,
    masks: Any = None,
    params: Mapping[str, jax.Array] | None = None,
    seed: int = 0,
    loss: str | Loss | Callable[..., jax.Array] = "cross_entropy",
) -> FidelityTable:
    """Run learning rules and BPTT on the same data; compare their gradients.

    The gradient compared is that of one sequence from the resting state, averaged over the
    batch and summed over time (the learner's defaults):
    :math:`\\sum_t \\sum_b m_{t,b}\\, l_t^{(b)} / B`.

    Arguments:
        net_or_learner: a :class:`traxon.Network`, or an
            :class:`~traxon.learn.OnlineLearner` (its network, current weights and loss).
        xs: inputs ``(T, B, n_in)`` (or ``{input: array}``).
        ys: targets with leading ``(T, B)``.
        algorithms: names or :class:`~traxon.trace.Algorithm` objects; ``None`` for every
            registered algorithm.
        masks: ``(T, B)`` loss masks (``None``: every step counts).
        params: the weights (default: the learner's, or fresh ones from ``seed``).
        seed: seed of fresh weights.
        loss: ``"cross_entropy"``, ``"mse"``, a :class:`~traxon.learn.Loss` or a callable
            (ignored for a learner, which has its own).

    Returns:
        A :class:`FidelityTable`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from traxon.core import LIF, Dense, Network, Population, Projection, Readout
        >>> from traxon.diagnostics import compare
        >>> net = Network(3, {"h": Population(LIF(), 4)}, [Projection("x", "h", Dense(8.0))],
        ...               readout=Readout("h", 2))
        >>> xs = (jax.random.uniform(jax.random.PRNGKey(1), (6, 2, 3)) < 0.5).astype(float)
        >>> table = compare(net, xs, jnp.zeros((6, 2), jnp.int32), algorithms=["d_rtrl"])
        >>> [(r["weight"], round(r["cosine"], 3)) for r in table.rows]
        [('x->h', 1.0), ('h->readout', 1.0), ('readout.bias', 1.0)]
    """
    from traxon.learn.learner import OnlineLearner

    if isinstance(net_or_learner, OnlineLearner):
        learner = net_or_learner
        net = learner.net
        loss_obj = learner.loss
        if params is None:
            try:
                params = learner.params
            except RuntimeError:
                params = net.init_params(jax.random.PRNGKey(seed), learner.dtype)
    elif isinstance(net_or_learner, Network):
        net = net_or_learner
        loss_obj = get_loss(loss)
    else:
        raise TypeError(
            "`net_or_learner` must be a traxon Network or an OnlineLearner; got "
            f"{type(net_or_learner).__name__}."
        )
    if params is None:
        params = net.init_params(jax.random.PRNGKey(seed))
    net.check_params(params)
    params = {k: jnp.asarray(v) for k, v in params.items()}
    dtype = next(iter(params.values())).dtype
    xs = {k: v.astype(dtype) for k, v in net.as_inputs(xs, leading=1).items()}
    T, B = next(iter(xs.values())).shape[:2]
    ys = jnp.asarray(ys)
    if ys.shape[:2] != (T, B):
        raise ValueError(f"`ys` must have leading shape (T, B) = {(T, B)}; got {ys.shape}.")
    masks = jnp.ones((T, B), dtype) if masks is None else jnp.asarray(masks, dtype)
    if masks.shape != (T, B):
        raise ValueError(f"`masks` must have shape (T, B) = {(T, B)}; got {masks.shape}.")
    weights = masks / B
    state = net.init_state(B, dtype)
    names = [p.name for p in net.projections if p.trainable]
    if algorithms is None:
        algorithms = sorted(ALGORITHMS)
    elif isinstance(algorithms, (str, Algorithm)):
        algorithms = [algorithms]
    taken: set[str] = set()
    chosen = [(_label(a, taken), get_algorithm(a)) for a in algorithms]  # checked before work

    def reference(p: Any) -> Any:
        return bptt_gradient(net, loss_obj.fn, p, state, xs, ys, weights)[0]

    ref, ref_seconds = _timed(reference, params)
    ref_vec = _as_vector(ref, names)

    rows: list[dict[str, Any]] = []
    for label, algorithm in chosen:
        tracer = algorithm.bind(net, loss_obj.fn, window=T)
        init = lambda p, s, tracer=tracer: tracer.init(p, s, target_example=ys[0])  # noqa: E731
        tstate = init(params, state)
        shapes = jax.eval_shape(init, params, state)
        memory = sum(
            int(np.prod(a.shape)) * jnp.dtype(a.dtype).itemsize
            for a in jax.tree_util.tree_leaves(shapes)
        )

        def run(p: Any, s: Any, t: Any, tracer: Any = tracer) -> Any:
            def body(carry: Any, inp: Any) -> tuple[Any, None]:
                st, tst = carry
                st, tst, _ = tracer.step(p, st, tst, *inp)
                return (st, tst), None

            (_, t), _ = jax.lax.scan(body, (s, t), (xs, ys, weights))
            return tracer.gradients(p, t)

        grads, seconds = _timed(run, params, state, tstate)
        got = _as_vector(grads, names)
        for k in names:
            g, r = got[k], ref_vec[k]
            nr = float(np.linalg.norm(r))
            ng = float(np.linalg.norm(g))
            rows.append(
                {
                    "algorithm": label,
                    "weight": k,
                    "cosine": float(g @ r / max(ng * nr, 1e-300)),
                    "norm_ratio": ng / max(nr, 1e-300),
                    "rel_error": float(np.linalg.norm(g - r)) / max(nr, 1e-300),
                    "memory_bytes": memory,
                    "step_seconds": seconds / T,
                }
            )
    info = {
        "steps": int(T),
        "batch": int(B),
        "dtype": str(jnp.dtype(dtype)),
        "bptt_step_seconds": ref_seconds / T,
    }
    return FidelityTable(rows, info)
