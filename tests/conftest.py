"""Strict test settings shared by the whole suite.

* JAX rank promotion raises (no silent broadcasting of mismatched ranks).
* float64 only where a test asks for it, through the ``x64`` fixture.
* warnings from traxon itself are errors (``filterwarnings`` in pyproject.toml).
* brainevent runs on its pure-JAX CPU backend when numba is absent.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import jax
import numpy as np
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def x64():
    """Enable float64 for one test (exactness claims are tested in double precision)."""
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


def tree_allclose(a, b, rtol: float = 1e-6, atol: float = 0.0) -> bool:
    """True when two pytrees have the same structure and all leaves are close."""
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    if ta != tb:
        return False
    return all(np.allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol) for x, y in zip(la, lb))


def rel_error(a, b) -> float:
    """Relative error ``|a - b| / |b|`` of two arrays."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def cosine(a, b) -> float:
    a, b = np.ravel(np.asarray(a, np.float64)), np.ravel(np.asarray(b, np.float64))
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-300))
