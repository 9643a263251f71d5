"""The public API: what ``import traxon`` exports, its docstrings and their examples.

* every name in ``traxon.__all__`` exists, none is private, and ``dir(traxon)`` shows no
  public name beyond ``__all__`` and the subpackages;
* every exported function and class has a docstring with an example (``>>>``), and every
  docstring example in the package runs (doctests, one test per module);
* ``import traxon`` leaves the optional dependencies (brainpy, matplotlib) unloaded and
  works without them.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import inspect
import pkgutil
import subprocess
import sys
import types

import pytest

import traxon

EXPORTS = sorted(traxon.__all__)
SUBMODULES = sorted(
    m.name for m in pkgutil.walk_packages(traxon.__path__, "traxon.") if m.name != "traxon.__main__"
)


def test_all_is_about_twenty_public_names_that_exist():
    assert len(EXPORTS) == len(set(EXPORTS)), "duplicates in traxon.__all__"
    private = [n for n in EXPORTS if n.startswith("_") and n != "__version__"]
    assert not private, f"private names exported: {private}"
    missing = [n for n in EXPORTS if not hasattr(traxon, n)]
    assert not missing, f"in __all__ but not defined: {missing}"
    assert 15 <= len(EXPORTS) <= 31, len(EXPORTS)


def test_dir_shows_no_undeclared_public_name():
    subpackages = {
        n
        for n, v in vars(traxon).items()
        if isinstance(v, types.ModuleType) and v.__name__ == f"traxon.{n}"
    }
    public = {n for n in dir(traxon) if not n.startswith("_")}
    extra = sorted(public - set(EXPORTS) - subpackages)
    assert not extra, f"public names not in traxon.__all__: {extra}"


def test_version_is_the_package_version():
    from importlib.metadata import version

    assert traxon.__version__ == version("traxon")


@pytest.mark.parametrize("name", EXPORTS)
def test_export_has_a_docstring_with_an_example(name):
    obj = getattr(traxon, name)
    if name == "__version__":
        assert isinstance(obj, str)
        return
    doc = inspect.getdoc(obj)
    assert doc and doc.strip(), f"traxon.{name} has no docstring"
    if isinstance(obj, types.ModuleType):
        return  # subpackages: a docstring; their names carry the examples
    # A class's own docstring (not one inherited from a base class) must show its use.
    own = obj.__doc__ if inspect.isclass(obj) else doc
    assert own and ">>>" in own, f"traxon.{name}'s docstring has no example (>>>)"


@pytest.mark.parametrize("module", ["traxon", *SUBMODULES])
def test_doctests(module):
    """The examples in the docstrings run and print what they show."""
    mod = importlib.import_module(module)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS, verbose=False)
    tests = [t for t in finder.find(mod, module) if t.examples]
    for test in tests:
        test.globs = dict(test.globs)  # examples never leak into the module's namespace
        runner.run(test, out=lambda text: print(text, end=""))
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {module}"


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )


def test_import_does_not_load_brainpy_or_other_extras():
    """Optional packages are imported only when a feature needs them (pyplot by a plot)."""
    proc = run_python(
        "import sys, traxon\n"
        "optional = ('brainpy', 'matplotlib.pyplot', 'tqdm', 'sklearn', 'h5py')\n"
        "loaded = [m for m in optional if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_import_does_not_load_matplotlib():
    """Not even indirectly: brainunit would load matplotlib, so traxon never imports it (it
    only recognises Quantities once their package is loaded)."""
    proc = run_python(
        "import sys, traxon\n"
        "loaded = [m for m in ('matplotlib', 'brainunit', 'brainpy') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_import_works_without_matplotlib_and_brainpy():
    """Blocking the optional packages (as if not installed) must not break the core."""
    proc = run_python(
        "import sys\n"
        "for m in ('matplotlib', 'brainpy', 'tqdm'):\n"
        "    sys.modules[m] = None  # makes `import m` raise ImportError\n"
        "import traxon\n"
        "from traxon.core import LIF, Dense, Network, Population, Projection, Readout\n"
        "net = Network(2, {'h': Population(LIF(), 3)}, [Projection('x', 'h', Dense(2.0))],\n"
        "              readout=Readout('h', 2))\n"
        "traxon.online_learner(net, 'es_d_rtrl')\n"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
