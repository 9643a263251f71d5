"""Strict test settings shared by the whole suite.

* JAX rank promotion raises (no silent broadcasting of mismatched ranks).
* float64 only where a test asks for it, through the ``x64`` fixture.
* warnings from traxon itself are errors (``filterwarnings`` in pyproject.toml).
* brainevent runs on its pure-JAX CPU backend when numba is absent.
* XLA compiles with its cheaper backend passes (the suite is dominated by compile time).
"""

from __future__ import annotations

import os

# Four CPU devices for the multi-device tests; and since the suite spends most of its time
# compiling small programs, XLA's cheaper backend passes (results are unaffected, and an
# XLA_FLAGS that sets its own optimisation level is respected).
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    _flags += " --xla_force_host_platform_device_count=4"
if "xla_backend_optimization_level" not in _flags:
    _flags += " --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ["XLA_FLAGS"] = _flags.strip()

from pathlib import Path  # noqa: E402

import jax  # noqa: E402  (after XLA_FLAGS: read when jax initialises)
import pytest  # noqa: E402

from tests.helpers import float64  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def x64():
    """Enable float64 for one test (exactness claims are tested in double precision)."""
    with float64():
        yield


@pytest.fixture(scope="session")
def subprocess_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment of the scripts the tests run (examples, docs, benchmarks): this process's
    XLA_FLAGS (set above), one compilation cache for the session, the source tree first on
    the path, a non-interactive matplotlib."""
    cache = tmp_path_factory.getbasetemp() / "jax_cache"
    cache.mkdir(exist_ok=True)
    env = dict(os.environ)
    env["JAX_COMPILATION_CACHE_DIR"] = str(cache)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    env["MPLBACKEND"] = "Agg"
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    return env
