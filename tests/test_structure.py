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


PACKAGE = TRACE.parent

#: What each package may import from traxon (besides itself and the private top-level
#: modules ``traxon._*``): core stands alone; the rules and the adapter build on core; the
#: tasks make data and know nothing of networks or learning; the learner sees the rules.
ALLOWED = {
    "core": set(),
    "trace": {"core"},
    "adapters": {"core"},
    "tasks": set(),
    "learn": {"core", "trace"},
}
#: Known exceptions, each named in an open issue; remove an entry when it is fixed.
PENDING: set[tuple[str, str]] = set()


def _package_imports(package: str) -> set[str]:
    """The traxon packages and public top-level modules that ``package`` imports."""
    out = set()
    for path in (PACKAGE / package).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                parts = node.module.split(".")
                if parts[0] == "traxon" and len(parts) > 1 and not parts[1].startswith("_"):
                    out.add(parts[1])
    return out - {package}


def test_packages_import_only_the_layers_below_them():
    crossing = {
        (package, dep)
        for package, allowed in ALLOWED.items()
        for dep in _package_imports(package)
        if dep not in allowed
    }
    assert crossing <= PENDING, f"layering exceptions: {sorted(crossing - PENDING)}"
    fixed = PENDING - crossing
    assert not fixed, f"fixed: remove {sorted(fixed)} from PENDING"
