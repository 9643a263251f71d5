"""The package's layering, read from its import statements (no module is imported)."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

TRACE = Path(__file__).resolve().parents[1] / "src" / "traxon" / "trace"


def _trace_imports(path: Path) -> set[str]:
    """The modules of ``traxon.trace`` that ``path`` imports (by their file stem)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[:2] == ["traxon", "trace"] and len(parts) == 3:
                out.add(parts[2])
    return out


GRAPH = {p.stem: _trace_imports(p) for p in TRACE.glob("*.py") if p.stem != "__init__"}
RULES = {name for name in GRAPH if not name.startswith("_") and name != "base"}


@cache
def _level(name: str) -> int:
    return 1 + max((_level(dep) for dep in GRAPH[name]), default=0)


def test_no_rule_imports_another_rule():
    assert len(RULES) >= 10, RULES  # the rules are found
    crossing = {name: GRAPH[name] & RULES for name in RULES if GRAPH[name] & RULES}
    assert not crossing, (
        f"rules importing other rules (move the shared part to a private module): {crossing}"
    )


def test_trace_stands_on_at_most_four_levels():
    levels = {name: _level(name) for name in GRAPH}
    assert max(levels.values()) <= 4, levels
