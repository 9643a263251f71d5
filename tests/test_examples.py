"""Every example script runs with ``--quick``; every notebook executes with ``TRAXON_QUICK=1``.

The scripts run in a subprocess and the notebooks in a ``python3`` Jupyter kernel (nbclient
resolves it to the interpreter running the tests when ipykernel is installed there, as the
``test`` extra does). Both inherit settings that only make XLA compile faster
(``--xla_backend_optimization_level=0``) and a compilation cache shared within the test
session: these runs are dominated by compilation, not by the few steps they compute.
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

import pytest

from tests.helpers import run_checked

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
NOTEBOOKS = sorted((ROOT / "examples" / "notebooks").glob("*.ipynb"))
# Scripts and notebooks that need an optional extra: skipped when it is not installed.
NEEDS = {"brainpy_state_online": "brainpy.state", "worm": "cect"}


def needs_extra(path: Path) -> None:
    module = NEEDS.get(path.stem)
    if module is not None:
        pytest.importorskip(module)


@pytest.fixture(scope="session")
def quick_env(subprocess_env: dict[str, str]) -> dict[str, str]:
    """Environment of the example runs (tests/conftest.py) with the quick settings."""
    return {**subprocess_env, "TRAXON_QUICK": "1"}


def test_examples_are_found() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"quickstart.py", "evidence_accumulation.py", "spiking_digits.py"} <= names
    assert {p.name for p in NOTEBOOKS} >= {
        "quickstart.ipynb",
        "algorithms_vs_bptt.ipynb",
        "brainpy_state_online.ipynb",
    }
    readme = (ROOT / "examples" / "README.md").read_text()
    for path in NOTEBOOKS:
        assert f"notebooks/{path.name}" in readme, f"{path.name} is not in examples/README.md"


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.stem)
def test_example_has_docstring_quick_flag_and_readme_entry(script: Path) -> None:
    source = script.read_text()
    docstring = ast.get_docstring(ast.parse(source))
    assert docstring and len(docstring.splitlines()) > 2, f"{script.name} needs a docstring"
    assert '"--quick"' in source, f"{script.name} needs a --quick flag"
    assert script.name in (ROOT / "examples" / "README.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_quick(script: Path, tmp_path: Path, quick_env: dict[str, str]) -> None:
    needs_extra(script)
    proc = run_checked([script, "--quick"], cwd=tmp_path, env=quick_env)
    # Each says what it shows: test accuracy (classification) or test loss (regression).
    assert "accuracy" in proc.stdout or "test loss" in proc.stdout, proc.stdout[-2000:]


@pytest.mark.slow
def test_whole_brain_example_across_devices(tmp_path: Path, quick_env: dict[str, str]) -> None:
    """The example's device-parallel path (4 CPU devices from tests/conftest.py: the batch
    over 2, the neurons and connection weights over 2)."""
    if "xla_force_host_platform_device_count=4" not in quick_env.get("XLA_FLAGS", ""):
        pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=4")
    script = ROOT / "examples" / "whole_brain.py"
    proc = run_checked([script, "--quick", "--neuron-shards", "2"], cwd=tmp_path, env=quick_env)
    assert "4 devices: 2 split the batch of 4, 2 the neurons" in proc.stdout, proc.stdout
    assert "test loss" in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes_quick(
    path: Path, tmp_path: Path, quick_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    needs_extra(path)
    for key, value in quick_env.items():  # the kernel inherits the test's environment
        if key != "MPLBACKEND" and os.environ.get(key) != value:
            monkeypatch.setenv(key, value)
    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell("import sys\nprint(sys.executable)"))
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=300,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    executable = nb.cells[0].outputs[0]["text"].strip()
    assert Path(executable).resolve() == Path(sys.executable).resolve(), executable


def test_notebooks_are_stored_without_outputs_and_match_their_generator(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    build = ROOT / "examples" / "notebooks" / "build.py"
    run_checked([build, "--out", tmp_path], timeout=120)
    for path in NOTEBOOKS:
        fresh = tmp_path / path.name
        assert fresh.exists(), f"{path.name} is not produced by build.py"
        assert fresh.read_text() == path.read_text(), (
            f"{path.name} differs from build.py: run `python examples/notebooks/build.py`"
        )
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, path.name
        assert any("TRAXON_QUICK" in c.source for c in nb.cells), path.name
