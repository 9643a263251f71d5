"""A flat, analysable view of a jaxpr, and an evaluator with hooks.

The adapter turns someone else's step function into the model contract by reading its
jaxpr: which equations apply weights, which state variables interact element-wise, which
values flow from one population to another. This module provides the two tools for that:

* :func:`flatten` inlines nested ``jit``/call equations into one list of :class:`Node`
  objects over integer value ids (custom-derivative calls stay opaque, so surrogate spike
  functions keep their pseudo-derivatives);
* :class:`Graph` answers dependency questions and :meth:`Graph.evaluate` computes chosen
  values with some values *overridden* (held at given arrays) and some *perturbed* (a delta
  added where they are produced, seen by every later use).

Only public JAX APIs are used (``jax.make_jaxpr``, ``jax.extend.core``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.extend.core as jex
import jax.numpy as jnp

__all__ = ["Graph", "Lit", "Node", "flatten"]

# Call-like primitives whose body is inlined (they change nothing but staging).
_INLINE = {"pjit", "jit", "closed_call", "core_call", "remat", "checkpoint", "named_call"}


@dataclasses.dataclass(frozen=True)
class Lit:
    """A literal operand."""

    value: Any


@dataclasses.dataclass
class Node:
    """One primitive application: ``outs = primitive.bind(*ins, **params)``."""

    index: int
    primitive: Any
    params: dict[str, Any]
    ins: tuple[int | Lit, ...]
    outs: tuple[int, ...]
    multiple: bool

    @property
    def name(self) -> str:
        """The equation's primitive's name (``dot_general``, ``mul``, ...)."""
        return str(self.primitive.name)

    def input_ids(self) -> list[int]:
        """The ids of the equation's variable inputs (literals left out)."""
        return [a for a in self.ins if isinstance(a, int)]

    def apply(self, *args: Any) -> list[Any]:
        """Evaluate the equation on ``args``; a list of its outputs."""
        bound = self.primitive.get_bind_params(self.params)
        if isinstance(bound, tuple):  # older JAX: (subfuns, params)
            subfuns, bind_params = bound
            out = self.primitive.bind(*subfuns, *args, **bind_params)
        else:
            out = self.primitive.bind(*args, **bound)
        return list(out) if self.multiple else [out]


def _body(params: Mapping[str, Any]) -> Any:
    """The inner jaxpr of a call-like equation's ``params``, if it has one."""
    for key in ("jaxpr", "call_jaxpr"):
        if key in params:
            return params[key]
    return None


def flatten(
    closed: Any,
    opaque: Callable[[Any], bool] | None = None,
    expand: Callable[[Any], Any] | None = None,
) -> tuple[list[Node], list[int | Lit], list[int | Lit], dict[int, Any], dict[int, Any]]:
    """Inline a ``ClosedJaxpr`` into nodes (a call equation for which ``opaque(eqn)`` is true
    stays one node; an equation for which ``expand(eqn)`` gives a ``ClosedJaxpr`` of the
    same inputs and outputs is replaced by that jaxpr's equations).

    Returns:
        ``(nodes, inputs, outputs, consts, avals)``: the nodes in execution order, the atoms
        of the jaxpr's inputs and outputs, the values of constant ids and every id's
        abstract value (shape and dtype).
    """
    nodes: list[Node] = []
    consts: dict[int, Any] = {}
    avals: dict[int, Any] = {}
    counter = [0]

    def new_id(aval: Any = None) -> int:
        counter[0] += 1
        avals[counter[0]] = aval
        return counter[0]

    def walk(jaxpr: Any, const_vals: Sequence[Any], ins: Sequence[int | Lit]) -> list[int | Lit]:
        env: dict[Any, int | Lit] = {}
        for var, atom in zip(jaxpr.invars, ins, strict=True):
            env[var] = atom
        for var, val in zip(jaxpr.constvars, const_vals, strict=True):
            i = new_id(var.aval)
            consts[i] = val
            env[var] = i

        def read(a: Any) -> int | Lit:
            if isinstance(a, jex.Literal):
                return Lit(a.val)
            return env[a]

        for eqn in jaxpr.eqns:
            args = [read(a) for a in eqn.invars]
            body = _body(eqn.params)
            if body is None and expand is not None:
                body = expand(eqn)
                if body is not None:
                    outs = walk(body.jaxpr, body.consts, args)
                    for var, atom in zip(eqn.outvars, outs, strict=True):
                        env[var] = atom
                    continue
            if (
                eqn.primitive.name in _INLINE
                and body is not None
                and not (opaque is not None and opaque(eqn))
            ):
                inner = body.jaxpr if hasattr(body, "jaxpr") else body
                inner_consts = body.consts if hasattr(body, "consts") else ()
                outs = walk(inner, inner_consts, args)
                for var, atom in zip(eqn.outvars, outs, strict=True):
                    env[var] = atom
                continue
            out_ids = tuple(new_id(v.aval) for v in eqn.outvars)
            for var, i in zip(eqn.outvars, out_ids, strict=True):
                env[var] = i
            nodes.append(
                Node(
                    len(nodes),
                    eqn.primitive,
                    dict(eqn.params),
                    tuple(args),
                    out_ids,
                    bool(eqn.primitive.multiple_results),
                )
            )
        return [read(v) for v in jaxpr.outvars]

    inputs: list[int | Lit] = [new_id(v.aval) for v in closed.jaxpr.invars]
    outputs = walk(closed.jaxpr, closed.consts, inputs)
    return nodes, inputs, outputs, consts, avals


def _reach(starts: Iterable[int], step: Callable[[int], Iterable[int]], stop: set[int]) -> set[int]:
    """Every id reached from ``starts`` (inclusive) by following ``step``, not looking past
    ``stop`` ids (a depth-first walk; each id is expanded once)."""
    seen: set[int] = set()
    todo = list(starts)
    while todo:
        i = todo.pop()
        if i in seen:
            continue
        seen.add(i)
        if i not in stop:
            todo.extend(step(i))
    return seen


class Graph:
    """Dependency queries and hooked evaluation over flattened nodes."""

    def __init__(
        self,
        nodes: list[Node],
        inputs: Sequence[int | Lit],
        outputs: Sequence[int | Lit],
        consts: Mapping[int, Any],
        avals: Mapping[int, Any] | None = None,
    ) -> None:
        self.avals = dict(avals or {})
        self.nodes = nodes
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.consts = dict(consts)
        self.producer: dict[int, Node] = {}
        self.users: dict[int, list[Node]] = {}
        for node in nodes:
            for o in node.outs:
                self.producer[o] = node
            for i in node.input_ids():
                self.users.setdefault(i, []).append(node)

    # ------------------------------------------------------------------------------
    def ancestors(self, targets: Iterable[int], stop: set[int] = frozenset()) -> set[int]:  # type: ignore[assignment]
        """All ids the targets depend on (inclusive), not looking past ``stop`` ids."""

        def inputs(i: int) -> Iterable[int]:
            node = self.producer.get(i)
            return node.input_ids() if node is not None else ()

        return _reach(targets, inputs, stop)

    def descendants(self, sources: Iterable[int], stop: set[int] = frozenset()) -> set[int]:  # type: ignore[assignment]
        """All ids depending on the sources (inclusive), not looking past ``stop`` ids."""
        return _reach(
            sources, lambda i: [o for node in self.users.get(i, ()) for o in node.outs], stop
        )

    # ------------------------------------------------------------------------------
    def evaluate(
        self,
        values: Mapping[int, Any],
        targets: Sequence[int | Lit],
        overrides: Mapping[int, Any] | None = None,
        perturb: Mapping[int, Any] | None = None,
        record: Iterable[int] = (),
    ) -> tuple[list[Any], dict[int, Any]]:
        """Compute ``targets`` from known ``values``.

        Arguments:
            values: ``{id: array}`` of inputs (and anything else known).
            targets: ids (or literals) to return.
            overrides: ``{id: array}``: these values are used instead of computing them.
            perturb: ``{id: array}``: added to these values where they are produced; a
                callable instead of an array is called with the values known by then
                (``{id: value}``) and its result added.
            record: ids whose values are also returned.

        Returns:
            ``(target values, {recorded id: value})``.
        """
        overrides = dict(overrides or {})
        perturb = dict(perturb or {})
        env: dict[int, Any] = {**self.consts, **values, **overrides}
        for i, d in perturb.items():
            if i in env:
                env[i] = env[i] + (d(env) if callable(d) else d)
        want = [t for t in targets if isinstance(t, int)] + list(record)
        needed = self.ancestors(want, stop=set(env))
        for node in self.nodes:
            if not any(o in needed for o in node.outs):
                continue
            if all(o in env for o in node.outs if o in needed):
                continue
            args = []
            for a in node.ins:
                if isinstance(a, Lit):
                    args.append(a.value)
                elif a in env:
                    args.append(env[a])
                else:
                    raise KeyError(f"value {a} needed by {node.name} is unknown")
            outs = node.apply(*args)
            for o, v in zip(node.outs, outs, strict=True):
                if o in overrides:
                    continue
                if o in perturb:
                    d = perturb[o]
                    v = v + (d(env) if callable(d) else d)
                env[o] = v
        result = [t.value if isinstance(t, Lit) else env[t] for t in targets]
        return result, {i: env[i] for i in record}

    def shape(self, i: int | Lit) -> tuple[int, ...]:
        """The shape of value ``i`` (a variable id or a literal)."""
        if isinstance(i, Lit):
            return tuple(jnp.shape(i.value))
        return tuple(self.avals[i].shape)

    def dtype(self, i: int) -> Any:
        """The dtype of variable ``i``."""
        return self.avals[i].dtype


def make_graph(fun: Any, *args: Any) -> tuple[Graph, Any]:
    """Trace ``fun(*args)`` and flatten it; returns the graph and the output tree structure."""
    closed, shapes = jax.make_jaxpr(fun, return_shape=True)(*args)
    return Graph(*flatten(closed)), jax.tree_util.tree_structure(shapes)
