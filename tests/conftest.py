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
