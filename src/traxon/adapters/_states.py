"""The module's brainstate states: where they live, their batch axis, their start values.

The adapter never copies a module's states: it finds them (:func:`shortest_paths`, by
object identity), reads the values a sequence starts from (:func:`initial_values`, what
the module's own ``reset_state`` sets), gives batched states another batch size while a
step is traced (:class:`BatchedStates`) and turns the module's reset into a pure function
of a PRNG key (:class:`DrawnReset`), so that random initial values are drawn anew for
every sequence. Every function leaves the module as it found it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from traxon.adapters._values import (
    brainstate,
    is_quantity,
    is_random_state,
    leaves,
    mantissa,
    unit_of,
)

__all__ = [
    "BatchedStates",
    "DrawnReset",
    "Slot",
    "as_key_like",
    "batch_of",
    "initial_values",
    "reattach",
    "shortest_paths",
]

#: Where a module refers to a state: ``(module, attribute, dict key or None)``.
Slot = tuple[Any, str, Any]


def shortest_paths(module: Any) -> tuple[dict[int, str], dict[int, list[Slot]]]:
    """The shortest attribute path to every state of ``module``, by ``id`` of the state
    (modules may be reachable along several paths; the shortest reads best, e.g.
    ``neu.V`` rather than ``inp.post.V``), and every :data:`Slot` that refers to each
    state, the one on the shortest path first.

    Example:
        >>> import brainstate as bs, jax.numpy as jnp
        >>> layer = bs.nn.Linear(2, 3)
        >>> paths, _ = shortest_paths(layer)
        >>> sorted(paths.values())
        ['weight']
    """
    bs = brainstate()
    best: dict[int, str] = {}
    slots: dict[int, list[Slot]] = {}
    seen = {id(module)}
    queue: list[tuple[tuple[str, ...], Any]] = [((), module)]
    while queue:
        path, obj = queue.pop(0)
        for attr, value in sorted(vars(obj).items(), key=lambda kv: str(kv[0])):
            children = value.items() if isinstance(value, dict) else [(attr, value)]
            for key, child in children:
                label = str(key)
                if "<class" in label:  # brainpy's descriptor keys: keep them short
                    label = f"{attr}{len(best)}"
                full = (*path, attr) if key == attr else (*path, attr, label)
                if isinstance(child, bs.State):
                    best.setdefault(id(child), ".".join(full))
                    where = key if isinstance(value, dict) else None
                    slots.setdefault(id(child), []).append((obj, attr, where))
                elif isinstance(child, bs.nn.Module) and id(child) not in seen:
                    seen.add(id(child))
                    queue.append((full, child))
    for path, state in module.states().items():
        best.setdefault(id(state), ".".join(str(p) for p in path))
    return best, slots


def batch_of(states: Any) -> int:
    """The batch size of the first batched ``HiddenState`` among ``states`` (a brainstate
    state dict); raises when none has a batch axis.

    Example:
        >>> import brainstate as bs, jax.numpy as jnp
        >>> batch_of({"v": bs.HiddenState(jnp.zeros((4, 3)))})
        4
    """
    bs = brainstate()
    for s in states.values():
        if isinstance(s, bs.HiddenState):
            shape = jnp.shape(mantissa(leaves(s.value)[0]))
            if len(shape) >= 2:
                return int(shape[0])
    raise ValueError(
        "no batched hidden state found: initialise the module with "
        "brainstate.nn.init_all_states(module, batch_size=B) before adapting it."
    )


def reattach(states: Any, slots: Mapping[int, Sequence[Slot]]) -> None:
    """Put every state of ``states`` back into the slots it was found in (a reset that
    replaced the State objects re-pointed the module to new ones)."""
    for s in states.values():
        for owner, attr, key in slots.get(id(s), ()):
            if key is None:
                if getattr(owner, attr, None) is not s:
                    setattr(owner, attr, s)
            else:
                getattr(owner, attr)[key] = s


def initial_values(
    module: Any, states: Any, batch: int, slots: Mapping[int, Sequence[Slot]]
) -> dict[int, list[jax.Array]]:
    """Every state's leaves (mantissas) at the start of a sequence, by ``id`` of the state:
    what the module's own ``reset_state`` sets at ``batch`` (not what it holds now, which
    may be the end of an earlier run).

    The module is reset, read and given its current values back, so this changes nothing.
    A ``reset_state`` that makes new State objects instead of writing to them is read by
    path, and the original objects are put back where they were (``slots``). A reset that
    fails, or gives a leaf another shape or dtype, falls back to the current values.
    """
    bs = brainstate()

    def read(s: Any) -> list[jax.Array]:
        return [jnp.asarray(mantissa(v)) for v in leaves(s.value)]

    current = {id(s): read(s) for s in states.values()}
    saved = {id(s): s.value for s in states.values()}
    try:
        bs.nn.reset_all_states(module, batch)
        # Read by path: a reset may have made new State objects (e.g. it calls
        # init_state); the original objects are then put back where they were.
        after = module.states()
        fresh = {id(s): read(after[p]) for p, s in states.items() if p in after}
        if {id(s) for s in after.values()} != set(saved):
            reattach(states, slots)
    except Exception:  # a module whose reset_state needs other arguments
        fresh = current
        reattach(states, slots)
    finally:
        for s in states.values():
            s.value = saved[id(s)]
    start = {}
    for key, values in current.items():
        new = fresh.get(key, values)
        same = len(new) == len(values) and all(
            a.shape == b.shape and a.dtype == b.dtype for a, b in zip(new, values, strict=True)
        )
        start[key] = new if same else values
    return start


class BatchedStates:
    """A context in which every state of ``states`` has a leading axis of ``batch``
    (zeros, units kept); the values are restored on exit. Used to trace the module's step
    or reset at a batch size other than the one its states hold."""

    def __init__(self, states: Sequence[Any], batch: int) -> None:
        self.states, self.batch = list(states), batch
        self.saved: list[tuple[Any, Any]] = []

    def __enter__(self) -> None:
        for s in self.states:
            value = s.value
            self.saved.append((s, value))

            def resize(v: Any) -> Any:
                m = jnp.asarray(mantissa(v))
                new = jnp.zeros((self.batch, *m.shape[1:]), m.dtype)
                unit = unit_of(v)
                return new * unit if unit is not None else new

            s.value = jax.tree_util.tree_map(resize, value, is_leaf=is_quantity)

    def __exit__(self, *exc: Any) -> None:
        for s, value in reversed(self.saved):
            s.value = value


class DrawnReset:
    """The module's own ``reset_state`` at one batch size, as a pure function of a PRNG key.

    ``brainstate.nn.reset_all_states(module, batch)`` is traced once (with the module's
    values restored afterwards); calling the result with a key evaluates that trace with
    every brainstate ``RandomState`` it reads set from the key, so random initial values
    (``V_initializer=braintools.init.Uniform(...)``) are drawn anew, one draw per sample,
    exactly as the module's reset draws them. ``draws`` tells whether the reset reads a
    random state at all. Calling it returns ``{(id(state), leaf index): mantissa}`` for
    every state the reset reads or writes.

    Arguments:
        module: the brainstate module.
        batched: its states that carry a batch axis.
        environment: the ``brainstate.environ`` settings captured when attaching.
        slots: where the module refers to each state (:func:`shortest_paths`); a reset
            that makes new State objects is undone and then draws nothing.
        batch: the batch size.
    """

    def __init__(
        self,
        module: Any,
        batched: Sequence[Any],
        environment: Mapping[str, Any],
        slots: Mapping[int, Sequence[Slot]],
        batch: int,
    ) -> None:
        bs = brainstate()

        def reset() -> None:
            bs.nn.reset_all_states(module, batch)

        before = module.states()
        with (
            jax.ensure_compile_time_eval(),
            BatchedStates(batched, batch),
            bs.environ.context(**environment),
        ):
            sf = bs.transform.StatefulFunction(reset, return_only_write=False)
            sf.make_jaxpr()
            self.states = list(sf.get_states())
            self.closed = sf.get_jaxpr()
            inputs = [jax.tree_util.tree_leaves(s.value) for s in self.states]
        if {id(s) for s in module.states().values()} != {id(s) for s in before.values()}:
            reattach(before, slots)  # a reset that makes new State objects: not drawn
            self.states, inputs = [], []
        self.inputs = inputs
        self.draws = any(is_random_state(s) for s in self.states)

    def __call__(self, key: jax.Array) -> dict[tuple[int, int], jax.Array]:
        """The values the module's reset sets when its random states start from ``key``."""
        import jax.extend.core as jex

        args: list[Any] = []
        for n, (s, values) in enumerate(zip(self.states, self.inputs, strict=True)):
            if is_random_state(s):
                values = [as_key_like(jax.random.fold_in(key, n), values[0])]
            args.extend(values)
        outs = jex.jaxpr_as_fun(self.closed)(*args)
        outs = outs[len(outs) - len(args) :]  # the states' new values follow the output
        drawn: dict[tuple[int, int], jax.Array] = {}
        cursor = 0
        for s, values in zip(self.states, self.inputs, strict=True):
            for i in range(len(values)):
                drawn[(id(s), i)] = outs[cursor]
                cursor += 1
        return drawn


def as_key_like(key: jax.Array, like: Any) -> jax.Array:
    """``key`` (a raw ``uint32[2]`` key or a typed one) in the form of ``like``, the value of
    a brainstate ``RandomState`` (a typed key of some implementation, or raw key data).

    Example:
        >>> k = as_key_like(jax.random.PRNGKey(0), jax.random.key(1))
        >>> jax.dtypes.issubdtype(k.dtype, jax.dtypes.prng_key)
        True
    """
    raw = jax.random.key_data(key) if _is_typed_key(key) else key
    if not _is_typed_key(like):
        shape, dtype = jnp.shape(like), jnp.asarray(like).dtype
        return raw if raw.shape == shape else jax.random.bits(key, shape, dtype)
    impl = jax.random.key_impl(like)
    data_shape = jax.random.key_data(like).shape
    if raw.shape != data_shape:
        raw = jax.random.bits(jax.random.wrap_key_data(raw), data_shape, jnp.uint32)
    return jax.random.wrap_key_data(raw, impl=impl)


def _is_typed_key(a: Any) -> bool:
    """Whether ``a`` is a typed PRNG key array (``jax.random.key``), not raw key data."""
    return bool(jax.dtypes.issubdtype(jnp.asarray(a).dtype, jax.dtypes.prng_key))
