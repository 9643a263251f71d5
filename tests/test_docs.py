"""The documentation: builds without warnings, its code runs, its generated parts are current.

* the Sphinx build runs with warnings as errors, in a subprocess;
* every ```` ```python ```` block of a page runs (the blocks of a page in order, in one
  fresh interpreter); a block right after ``<!-- test: skip -->`` is only shown, and the
  getting-started quickstart is checked to be the code of ``examples/quickstart.py``
  (which ``tests/test_examples.py`` runs);
* ``docs/errors.md`` is what ``docs/make_errors.py`` writes today (every message on it is
  triggered for real);
* every figure a page shows exists and is drawn by ``docs/make_figures.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import pytest

from tests.helpers import run_checked

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BLOCK = re.compile(r"(<!-- test: skip -->\n+)?^```python\n(.*?)^```", re.S | re.M)
PAGES = sorted(p.name for p in DOCS.glob("*.md"))
# Pages written by scripts: errors.md (its snippets raise; make_errors.py checks them), the
# benchmark pages (no code of their own).
GENERATED = {"errors.md", "benchmarks.md", "algorithms_generated.md"}


@pytest.fixture(scope="session")
def docs_env(subprocess_env: dict[str, str]) -> dict[str, str]:
    """Environment of the subprocesses (tests/conftest.py; its compilation cache is shared
    with tests/test_examples.py)."""
    return subprocess_env


def fragments() -> set[str]:
    """Markdown files that pages include (``{include}``) rather than pages of their own."""
    out: set[str] = set()
    for page in PAGES:
        out |= set(re.findall(r"```\{include\} (\S+)", (DOCS / page).read_text()))
    return out


def assert_on_page(page: str, needles: Iterable[str]) -> None:
    """Each of ``needles`` stands on the page."""
    text = (DOCS / page).read_text()
    for needle in needles:
        assert needle in text, f"{page}: {needle!r}"


def blocks(page: str) -> list[tuple[bool, str]]:
    """``(skipped, code)`` of every python block of a page."""
    text = (DOCS / page).read_text()
    return [(bool(skip), code) for skip, code in BLOCK.findall(text)]


@pytest.mark.slow
def test_docs_build_without_warnings(tmp_path: Path, docs_env: dict[str, str]) -> None:
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_parser")
    sphinx = ["-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    run_checked([*sphinx, DOCS, tmp_path / "out"], timeout=600, cwd=ROOT, env=docs_env)
    for page in set(PAGES) - fragments():
        assert (tmp_path / "out" / page.replace(".md", ".html")).exists(), page


def test_toctree_lists_every_page() -> None:
    """Every page is in the toctree, or included by a page (generated fragments)."""
    index = (DOCS / "index.md").read_text()
    toctree = index.split("```{toctree}")[1].split("```")[0]
    included = fragments()
    for page in PAGES:
        if page != "index.md" and page not in included:
            assert f"\n{page[:-3]}\n" in toctree, f"{page} is not in the toctree"
    assert "\nbenchmarks\n" in toctree


def test_api_page_documents_every_public_module() -> None:
    modules = ("core", "trace", "learn", "tasks", "plot", "recipes", "adapters", "diagnostics")
    names = ["traxon", *(f"traxon.{module}" for module in modules)]
    assert_on_page("api.md", [f".. automodule:: {name}\n" for name in names])


RUN_PAGES = """\
import sys, traceback
for path in sys.argv[1:]:
    try:
        exec(compile(open(path).read(), path, "exec"), {"__name__": "__main__"})
    except BaseException:
        traceback.print_exc()
        sys.exit(f"the code of {path} failed")
"""


@pytest.mark.slow
def test_code_on_pages_runs(tmp_path: Path, docs_env: dict[str, str]) -> None:
    """The python blocks of each page, in order, in a fresh namespace (one interpreter)."""
    scripts = []
    for page in PAGES:
        code = [c for skipped, c in blocks(page) if not skipped]
        if page not in GENERATED and code:
            # "page_" keeps a page's script from shadowing a package (brainstate.md)
            scripts.append(tmp_path / f"page_{page.replace('.md', '.py')}")
            scripts[-1].write_text("\n".join(code))
    assert {p.name for p in scripts} >= {
        "page_concepts.py",
        "page_algorithms.py",
        "page_learner.py",
        "page_brainstate.py",
    }
    run_checked(["-c", RUN_PAGES, *scripts], timeout=600, cwd=tmp_path, env=docs_env)


def test_quickstart_on_the_page_is_the_example() -> None:
    """The getting-started quickstart is shown, not run: it is ``examples/quickstart.py``."""
    (code,) = [c for skipped, c in blocks("getting_started.md") if skipped and "fit(" in c]
    example = {
        line.strip() for line in (ROOT / "examples" / "quickstart.py").read_text().splitlines()
    }
    for line in code.splitlines():
        line = re.sub(r"n_batches=\d+", "n_batches=n_batches", line.strip())
        assert not line or line in example, f"not in examples/quickstart.py: {line!r}"


@pytest.mark.slow
def test_errors_page_is_current(docs_env: dict[str, str]) -> None:
    run_checked([DOCS / "make_errors.py", "--check"], cwd=ROOT, env=docs_env)


def test_errors_page_covers_the_messages_of_the_library() -> None:
    """Spot check that the page holds real messages of the main modules."""
    assert_on_page(
        "errors.md",
        (
            "must be positive and finite",
            "is not reached by any trace of",
            "cannot affect the loss",
            "couples different neurons",
            "was written for a different network or learner",
            "the loss, the gradient or the updated weights/optimiser state became NaN/Inf",
            "must be a multiple of `dt`",
            # the brainstate adapter
            "is not aligned to neurons",
            "is not aligned to neurons",
            "d_rtrl needs to know which neuron each entry of it drives",
            "is no longer part of the module",
        ),
    )


def test_tests_named_on_the_pages_exist() -> None:
    """A page that cites ``tests/test_x.py::test_name`` as evidence names a real test."""
    for page in PAGES:
        for path, name in re.findall(r"(tests/test_\w+\.py)::(\w+)", (DOCS / page).read_text()):
            source = ROOT / path
            assert source.exists(), f"{page}: {path} does not exist"
            assert re.search(rf"def {name}\b", source.read_text()), f"{page}: {path}::{name}"


def test_brainstate_page_states_the_known_limitations() -> None:
    assert_on_page(
        "brainstate.md",
        (
            "input_size=",
            "align_pre_projection",
            "CurrentProj",
            "EventFixedProb",
            "es_d_rtrl",
            "errors.md#brainstate-and-brainpy-state-modules",
        ),
    )


def test_figures_exist_and_come_from_make_figures() -> None:
    source = (DOCS / "make_figures.py").read_text()
    shown = set()
    for page in PAGES:
        shown |= set(re.findall(r"_static/(fig_[\w]+\.png)", (DOCS / page).read_text()))
    assert shown, "no figures on any page"
    for name in shown:
        assert (DOCS / "_static" / name).exists(), f"run `python docs/make_figures.py` ({name})"
        assert f'"{name}"' in source, f"{name} is not drawn by docs/make_figures.py"
