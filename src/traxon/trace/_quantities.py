r"""The per-step quantities of the model contract, all by forward- and reverse-mode products.

For every population :math:`P` with :math:`N` neurons and :math:`S` traced state variables:

* ``D[P]`` ``(B, N, S, S)`` -- per-neuron blocks of :math:`\partial h_t / \partial h_{t-1}` with
  the weight-op outputs ``u`` held fixed (``D[b, i, s, r] = dh_t[i, s] / dh_{t-1}[i, r]``);
* ``F[P][c]`` ``(B, N, S)`` -- :math:`\partial h_t / \partial u_c` for each input channel ``c``;
* ``lam[P][sig]`` ``(B, N)`` -- :math:`\partial l_t / \partial \mathrm{sig}_t`: the learning
  signal at each of this step's output signals, propagated within the step through the
  downstream populations and the readout (one VJP of zero perturbations);
* ``g[P][sig]`` ``(B, N, S)`` -- :math:`\partial \mathrm{sig}_t / \partial h_t` per neuron
  (a signal is the output ``"spike"``, an AlignPre trace, or a state variable that a
  projection reads with ``signal=``, whose row is one-hot);
* ``cost[P]`` ``(B, N)`` -- optional linear costs on this step's spikes (e.g. a firing-rate
  regulariser): their learning signal at the spikes, separate from the readout's;
* ``delta[P]`` ``(B, N, S)`` -- :math:`\partial l_t / \partial h_t = \sum_{sig} lam \cdot g
  + cost \cdot g_{spike}`.

Reads between state variables of the same neuron happen inside the transition and are
therefore inside ``D`` and ``F``, never counted twice. Nothing here is larger than
``B x N x S x S``; no ``N x N`` Jacobian is formed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from traxon.core.network import READOUT, Network, PopulationPlan, state_dtype

__all__ = [
    "StepQuantities",
    "check_elementwise",
    "loss_reach",
    "signal_support",
    "stack",
    "step_quantities",
    "unstack",
]

LossFn = Callable[[jax.Array, Any], jax.Array]


def stack(plan: PopulationPlan, state: Mapping[str, jax.Array]) -> jax.Array:
    """The traced variables of one population as ``(B, N, S)``."""
    return jnp.stack([state[k] for k in plan.traced], axis=-1)


def unstack(
    plan: PopulationPlan, h: jax.Array, aux: Mapping[str, jax.Array]
) -> dict[str, jax.Array]:
    out = {k: h[..., i] for i, k in enumerate(plan.traced)}
    out.update(aux)
    return out


def _aux(plan: PopulationPlan, state: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    return {k: state[k] for k in plan.aux}


class StepQuantities(NamedTuple):
    """Everything one step gives the learning rules (see the module docstring)."""

    new_state: Any
    output: jax.Array
    loss: jax.Array  # (B,) per-sample loss of this step
    z: dict[str, jax.Array]
    D: dict[str, jax.Array]
    F: dict[str, dict[str, jax.Array]]
    lam: dict[str, dict[str, jax.Array]]
    g: dict[str, dict[str, jax.Array]]
    cost: dict[str, jax.Array]
    delta: dict[str, jax.Array]


def within_step_signals(net: Network) -> dict[str, tuple[str, ...]]:
    """Signals of each population read at the same step (by ``delay=0`` projections):
    ``"spike"``, AlignPre trace ids and state variables (``Projection(signal="V")``)."""
    used: dict[str, set[str]] = {k: set() for k in net.populations}
    for p in net.projections:
        if not p.delay and p.source in net.populations:
            used[p.source].add(p.signal)
    used[READOUT].add("spike")
    return {k: tuple(sorted(v)) for k, v in used.items()}


def loss_reach(net: Network, within_step_only: bool) -> set[str]:
    """Populations whose state can influence the loss.

    ``within_step_only``: only through ``delay=0`` projections (what learning signals of the
    online rules reach); otherwise through any projection (BPTT, RTRL).
    """
    reached = {READOUT}
    changed = True
    while changed:
        changed = False
        for p in net.projections:
            if p.source in net.populations and p.target in reached and p.source not in reached:
                if within_step_only and p.delay:
                    continue
                reached.add(p.source)
                changed = True
    return reached


def check_elementwise(net: Network, plan: PopulationPlan, dtype: Any = jnp.float32) -> None:
    """Raise if a population's transition couples different neurons.

    Perturbs neuron 0 of a random state and checks that no other neuron responds, both
    through the state and through the inputs. Element-wise transitions are what make the
    per-neuron Jacobian blocks exact.
    """
    if plan.size < 2:
        return
    key = jax.random.PRNGKey(0)
    state = plan.init(1, dtype)
    state = {
        k: v + 0.1 * jax.random.normal(jax.random.fold_in(key, i), v.shape, dtype)
        for i, (k, v) in enumerate(state.items())
    }
    u = {ch.id: 0.1 * jnp.ones((1, plan.size), dtype) for ch in plan.channels}
    h = stack(plan, state)
    aux = _aux(plan, state)

    def f(hh: jax.Array, uu: Mapping[str, jax.Array]) -> jax.Array:
        return stack(plan, plan.transition(unstack(plan, hh, aux), uu, net.dt))

    th = jnp.zeros_like(h).at[:, 0, :].set(1.0)
    tu = {k: jnp.zeros_like(v).at[:, 0].set(1.0) for k, v in u.items()}
    _, out = jax.jvp(f, (h, u), (th, tu))
    leak = np.asarray(jnp.abs(out[:, 1:, :]).max()) if plan.size > 1 else 0.0
    if leak > 0:
        raise ValueError(
            f"population `{plan.name}` ({type(plan.neuron).__name__}): its transition couples "
            "different neurons (perturbing neuron 0 changed others), so per-neuron traces are "
            "not exact. Express the coupling as a projection (a weight op), or train this "
            "network with algorithm='bptt' or 'rtrl'."
        )


def _blocks(
    net: Network,
    plan: PopulationPlan,
    state: Mapping[str, jax.Array],
    u: Mapping[str, jax.Array],
    channels: tuple[str, ...],
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``D`` and ``F`` of one population by one linearisation and S + C JVPs.

    Each JVP gets its own one-hot tangent (a broadcast constant that XLA fuses into the
    linearised ops) rather than one vmapped JVP over a stacked ``(S + C, B, N, S)`` tangent
    array, which XLA materialised every step (docs/decisions.md, ES-D-RTRL)."""
    h = stack(plan, state)
    aux = _aux(plan, state)

    def f(hh: jax.Array, uu: Mapping[str, jax.Array]) -> jax.Array:
        return stack(plan, plan.transition(unstack(plan, hh, aux), uu, net.dt))

    _, f_jvp = jax.linearize(f, h, dict(u))
    S = h.shape[-1]
    eye = jnp.eye(S, dtype=h.dtype)
    zero_u = {k: jnp.zeros_like(v) for k, v in u.items()}
    cols = [f_jvp(jnp.broadcast_to(eye[r], h.shape), zero_u) for r in range(S)]
    D = jnp.stack(cols, axis=-1)  # (B, N, S_out, S_in)
    zero_h = jnp.zeros_like(h)
    F = {
        c: f_jvp(zero_h, {k: jnp.ones_like(v) if k == c else zero_u[k] for k, v in u.items()})
        for c in channels
    }
    return D, F


def signal_jacobian(
    plan: PopulationPlan, state: Mapping[str, jax.Array], signals: tuple[str, ...]
) -> dict[str, jax.Array]:
    """``d sig / d h`` per neuron, ``(B, N, S)`` for each requested signal."""
    h = stack(plan, state)
    aux = _aux(plan, state)

    def sig(hh: jax.Array) -> dict[str, jax.Array]:
        out = plan.signals(unstack(plan, hh, aux))
        return {k: out[k] for k in signals}

    S = h.shape[-1]
    eye = jnp.eye(S, dtype=h.dtype)
    tangents = jnp.broadcast_to(eye[:, None, None, :], (S, *h.shape))
    cols = jax.vmap(lambda t: jax.jvp(sig, (h,), (t,))[1])(tangents)
    return {k: jnp.moveaxis(v, 0, -1) for k, v in cols.items()}


def signal_support(
    plan: PopulationPlan, signals: tuple[str, ...], dtype: Any = jnp.float32
) -> np.ndarray:
    """Which traced variables the given signals can depend on, as a boolean ``(S,)`` mask.

    A structural (data-flow) analysis of ``plan.signals`` traced to a jaxpr: variable ``s``
    is ``False`` only when no requested signal is computed from it, so ``g[..., s]`` (see
    :func:`signal_jacobian`) is exactly zero in every state. Every primitive is assumed to
    make each of its outputs depend on all of its inputs, which can only keep variables,
    never drop one that matters.

    Example:
        >>> from traxon.core import LIF, Dense, Expon, Network, Population, Projection
        >>> net = Network(2, {"h": Population(LIF(), 3)},
        ...               [Projection("x", "h", Dense(), synapse=Expon(5.0))])
        >>> plan = net.populations["h"]
        >>> plan.traced, signal_support(plan, ("spike",)).tolist()  # spikes read V only
        (('V', 'in0.g'), [True, False])
    """
    traced, aux = plan.traced, plan.aux
    aval = jax.ShapeDtypeStruct((1, plan.size), dtype)

    def sig(hs: tuple[jax.Array, ...], ax: tuple[jax.Array, ...]) -> list[jax.Array]:
        out = plan.signals(
            {**dict(zip(traced, hs, strict=True)), **dict(zip(aux, ax, strict=True))}
        )
        return [out[k] for k in signals]

    closed = jax.make_jaxpr(sig)(tuple(aval for _ in traced), tuple(aval for _ in aux))
    jaxpr = closed.jaxpr
    deps: dict[int, frozenset[int]] = {
        id(v): frozenset({i}) for i, v in enumerate(jaxpr.invars[: len(traced)])
    }
    for eqn in jaxpr.eqns:
        d = frozenset().union(*(deps.get(id(v), frozenset()) for v in eqn.invars))
        for v in eqn.outvars:
            deps[id(v)] = d
    used = frozenset().union(*(deps.get(id(v), frozenset()) for v in jaxpr.outvars))
    return np.asarray([i in used for i in range(len(traced))], dtype=bool)


def step_quantities(
    net: Network,
    params: Mapping[str, jax.Array],
    state: Mapping[str, Any],
    x: Mapping[str, jax.Array],
    target: Any,
    weight: jax.Array,
    loss_fn: LossFn,
    blocks_for: Mapping[str, tuple[str, ...]],
    signals_for: Mapping[str, tuple[str, ...]],
    spike_cost: Mapping[str, jax.Array] | None = None,
) -> StepQuantities:
    r"""Run one step and compute ``D``, ``F``, ``lam``, ``g``, ``cost`` and ``delta``.

    Arguments:
        blocks_for: ``{population: channels}`` whose ``D`` and ``F`` are needed.
        signals_for: ``{population: signals}`` whose learning signals are needed.
        weight: ``(B,)`` weight of each sample's loss (mask / normalisation).
        spike_cost: ``{population: (B, N)}`` coefficients ``c`` of extra objective terms
            :math:`\sum_{b,i} c_{b,i} s_{t,b,i}` on this step's spikes (``None``: none).
    """
    batch = weight.shape[0]
    dtype = state_dtype(state)
    perturb = {
        p: {s: jnp.zeros((batch, net.populations[p].size), dtype) for s in sigs}
        for p, sigs in signals_for.items()
    }

    def run(pert: Any) -> tuple[jax.Array, Any]:
        new_state, internals = net.forward(params, state, x, perturb=pert)
        y = net.output(internals["signals"])
        loss = loss_fn(y, target)
        return loss, (new_state, internals, y, loss)

    _, vjp_fn, (new_state, internals, y, loss) = jax.vjp(run, perturb, has_aux=True)
    (lam,) = vjp_fn(weight.astype(dtype))

    D: dict[str, jax.Array] = {}
    F: dict[str, dict[str, jax.Array]] = {}
    for p, channels in blocks_for.items():
        D[p], F[p] = _blocks(net, net.populations[p], state[p], internals["u"][p], channels)

    g: dict[str, dict[str, jax.Array]] = {}
    cost: dict[str, jax.Array] = {}
    delta: dict[str, jax.Array] = {}
    for p, sigs in signals_for.items():
        plan = net.populations[p]
        g[p] = signal_jacobian(plan, new_state[p], sigs)
        d = sum(lam[p][s][..., None] * g[p][s] for s in sigs)
        if spike_cost is not None and p in spike_cost:
            cost[p] = spike_cost[p].astype(dtype)
            d = d + cost[p][..., None] * g[p]["spike"]
        delta[p] = d
    return StepQuantities(
        new_state=new_state,
        output=y,
        loss=loss,
        z=internals["z"],
        D=D,
        F=F,
        lam=lam,
        g=g,
        cost=cost,
        delta=delta,
    )


def state_decays(net: Network, plan: PopulationPlan) -> np.ndarray:
    """Per-step decay of every traced variable of a population, in trace order."""
    values: dict[str, float] = dict(plan.neuron.decays(net.dt))
    for ch in plan.channels:
        if ch.kind == "synapse":
            for k, v in ch.synapse.decays(net.dt).items():  # type: ignore[union-attr]
                values[f"{ch.id}.{k}"] = v
    for tr in plan.pre_traces:
        for k, v in tr.synapse.decays(net.dt).items():
            values[f"{tr.id}.{k}"] = v
    return np.asarray([values[k] for k in plan.traced], dtype=np.float64)


def flat_state(net: Network) -> tuple[Any, Any]:
    """``(split, merge)``: the traced state of every population as one ``(B, H)`` array.

    ``split(state) -> (B, H)``; ``merge(h, like) -> state`` puts ``h`` back into a copy of
    ``like`` (whose untraced variables are kept).

    Example:
        >>> import jax
        >>> from traxon.core import LIF, Dense, Network, Population, Projection, Readout
        >>> from traxon.trace._quantities import flat_state
        >>> net = Network(3, {"h": Population(LIF(), 4)}, [Projection("x", "h", Dense())],
        ...               readout=Readout("h", 2))
        >>> split, merge = flat_state(net)
        >>> split(net.init_state(5)).shape  # 4 membranes and 2 readout values
        (5, 6)
    """
    pops = tuple(net.populations)

    def split(state: Any) -> jax.Array:
        parts = []
        for k in pops:
            h = stack(net.populations[k], state[k])
            parts.append(h.reshape(h.shape[0], -1))
        return jnp.concatenate(parts, axis=-1)

    def merge(h: jax.Array, like: Any) -> Any:
        out = {k: dict(v) for k, v in like.items()}
        offset = 0
        for k in pops:
            plan = net.populations[k]
            n = plan.size * len(plan.traced)
            block = h[..., offset : offset + n].reshape((*h.shape[:-1], plan.size, -1))
            offset += n
            out[k] = unstack(plan, block, {a: like[k][a] for a in plan.aux})
        return out

    return split, merge


def sample_step(
    net: Network,
    flat: tuple[Any, Any],
    params: Mapping[str, jax.Array],
    unravel: Callable[[jax.Array], Mapping[str, jax.Array]],
    st: Any,
    xb: Any,
) -> tuple[Callable[[jax.Array, jax.Array], tuple[jax.Array, Any]], jax.Array]:
    """One sample's network step as a function of its flat state and the flat weights.

    ``flat`` is :func:`flat_state`'s ``(split, merge)``; ``st`` and ``xb`` are one sample's
    state and input (no batch axis). Returns ``(f, h0)``: ``f(h, theta) -> (h_new, new)``
    steps from the flat state ``h`` ``(H,)`` with the trainable weights ``unravel(theta)``
    (``new``: the whole new state, a batch of one); ``h0`` is the sample's flat state.
    """
    split, merge = flat
    st1 = jax.tree_util.tree_map(lambda a: a[None], st)
    x1 = jax.tree_util.tree_map(lambda a: a[None], xb)

    def f(h: jax.Array, theta: jax.Array) -> tuple[jax.Array, Any]:
        new, _ = net.forward({**params, **unravel(theta)}, merge(h[None], st1), x1)
        return split(new)[0], new

    return f, split(st1)[0]


def sample_objective(
    net: Network,
    loss_fn: Callable[[jax.Array, Any], jax.Array],
    merge: Callable[[jax.Array, Any], Any],
    new: Any,
    target: Any,
    weight: jax.Array,
    costs: Mapping[str, jax.Array],
) -> Callable[[jax.Array], tuple[jax.Array, tuple[jax.Array, jax.Array]]]:
    """One sample's weighted loss (plus spike costs) as a function of its flat state.

    ``new`` is the sample's state after the step (a batch of one); ``target``, ``weight``
    and ``costs`` (``{population: (N,)}``) are the sample's. Returns
    ``objective(h) -> (weight * loss + spike costs, (output, loss))`` for ``h`` ``(H,)``: its
    gradient is the learning signal on the flat state.
    """

    def objective(h: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        sig = net.signals(merge(h[None], new))
        y = net.output(sig)
        loss = loss_fn(y, jax.tree_util.tree_map(lambda a: a[None], target))
        extra = sum(
            (jnp.sum(c * sig[k]["spike"][0]) for k, c in costs.items()),
            start=jnp.zeros((), loss.dtype),
        )
        return weight * loss[0] + extra, (y[0], loss[0])

    return objective
