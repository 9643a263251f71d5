"""Bytes a compiled step moves, read from its optimised HLO: a model, not a counter.

Each top-level instruction of one iteration of the outermost loop (one step of a scan over
time) is charged the bytes of its operands and of its result; fused computations count as
one instruction (what a fusion reads and writes, not what it computes inside), nested loops
are charged one iteration, a conditional its costliest branch, and tuples, parameters,
bitcasts and constants nothing. On a step that is bound by memory traffic this is what a
perfect cache would still have to move; the measured time over these bytes is the bandwidth
the step reached (``benchmarks/whole_brain.py`` prints both, so the distance to the
roofline is read off, not guessed).

    >>> import jax, jax.numpy as jnp
    >>> f = jax.jit(lambda w, xs: jax.lax.scan(lambda c, x: (c + w * x, None), w, xs)[0])
    >>> text = f.lower(jnp.ones(1000), jnp.ones((5, 1000))).compile().as_text()
    >>> step_bytes(text)  # read w, c, x[t]; write c (4,000 bytes each)
    16024
"""

from __future__ import annotations

import math
import re

_ITEM = {
    "pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
    "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16,
}  # fmt: skip
_ARRAY = re.compile(r"\b(" + "|".join(_ITEM) + r")\[([0-9,]*)\]")
_HEADER = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) \(.*\) -> .* \{$")
_LINE = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (.+?) ([a-z][\w\-]*)\((.*)$")
_FREE = {"get-tuple-element", "tuple", "parameter", "bitcast", "constant", "after-all"}


def _bytes(shape: str) -> int:
    """Bytes of every array in an HLO shape string (tuples summed)."""
    return sum(
        _ITEM[dtype] * math.prod(int(d) for d in dims.split(",") if d)
        for dtype, dims in _ARRAY.findall(shape)
    )


def _computations(text: str) -> tuple[dict[str, list[tuple[str, str, str, str]]], str]:
    """``{name: [(instruction, shape, opcode, rest of line)]}`` and the entry's name."""
    comps: dict[str, list[tuple[str, str, str, str]]] = {}
    entry, current = "", None
    for line in text.splitlines():
        head = _HEADER.match(line)
        if head:
            current = head.group(1)
            comps[current] = []
            entry = current if line.startswith("ENTRY") else entry
        elif line.startswith("}"):
            current = None
        elif current is not None:
            m = _LINE.match(line)
            if m:
                comps[current].append(m.groups())  # type: ignore[arg-type]
    return comps, entry


def _called(rest: str, key: str) -> list[str]:
    m = re.search(key + r"=\{([^}]*)\}", rest) or re.search(key + r"=%?([\w.\-]+)", rest)
    return [c.strip().lstrip("%") for c in m.group(1).split(",")] if m else []


def _operands(rest: str) -> list[str]:
    """The operand names of an instruction, from the text after its opcode's ``(``."""
    return re.findall(r"%([\w.\-]+)", rest.split("), ")[0])


def _sliced(comps: dict, fused: str) -> dict[int, int]:
    """Parameters of fused computation ``fused`` that are read only through
    ``dynamic-slice`` (a scan reading its step's input): ``{index: bytes of the slices}``."""
    body = comps.get(fused, [])
    uses = [(op, shape, _operands(rest)) for _, shape, op, rest in body]
    read: dict[int, int] = {}
    for inst, _, op, rest in body:
        if op != "parameter":
            continue
        mine = [(use, shape, args) for use, shape, args in uses if inst in args]
        if mine and all(use == "dynamic-slice" and args[0] == inst for use, _, args in mine):
            read[int(rest.split(")")[0])] = sum(_bytes(shape) for _, shape, _ in mine)
    return read


def _charge(comps: dict, name: str) -> int:
    """Bytes of one pass over computation ``name`` (loops one iteration each)."""
    shapes = {inst: shape for inst, shape, _, _ in comps[name]}
    total = 0
    for _, shape, op, rest in comps[name]:
        if op == "while":
            total += _charge(comps, _called(rest, "body")[0])
        elif op == "conditional":
            branches = _called(rest, "branch_computations") or (
                _called(rest, "true_computation") + _called(rest, "false_computation")
            )
            total += max(_charge(comps, b) for b in branches)
        elif op == "call":
            total += _charge(comps, _called(rest, "to_apply")[0])
        elif op not in _FREE:
            operands = _operands(rest)
            sliced = _sliced(comps, _called(rest, "calls")[0]) if op == "fusion" else {}
            total += _bytes(shape) + sum(
                sliced.get(i, _bytes(shapes.get(a, ""))) for i, a in enumerate(operands)
            )
    return total


def step_bytes(hlo_text: str) -> int:
    """Bytes moved by one iteration of the outermost loop of optimised HLO ``hlo_text``
    (``compiled.as_text()``); the whole program when it has no loop."""
    comps, entry = _computations(hlo_text)
    body = _outer_loop(comps, entry)
    return _charge(comps, body if body is not None else entry)


def _outer_loop(comps: dict, name: str) -> str | None:
    """The body of the first loop of computation ``name``, looking inside the computations
    it calls (newer XLA wraps the loop in a ``call``); ``None`` without one."""
    for _, _, op, rest in comps[name]:
        if op == "while":
            return _called(rest, "body")[0]
        if op == "call":
            body = _outer_loop(comps, _called(rest, "to_apply")[0])
            if body is not None:
                return body
    return None
