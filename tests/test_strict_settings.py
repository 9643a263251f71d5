"""The strict settings of ``conftest.py`` and ``pyproject.toml`` are in force.

Rank promotion raises, float64 is off unless a test asks for it (``x64``), traxon's own
warnings are errors, markers are declared, and the slowest tests are reported.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import pytest

import traxon
from traxon._checks import warn


def test_rank_promotion_raises():
    assert jax.config.jax_numpy_rank_promotion == "raise"
    with pytest.raises(ValueError, match="rank_promotion"):
        jnp.ones((2, 3)) + jnp.ones(3)
    with pytest.raises(ValueError, match="rank_promotion"):
        jax.jit(lambda a, b: a * b)(jnp.ones((2, 3)), jnp.ones(3))


def test_float32_by_default():
    """Also catches a test that turned x64 on and left it on (in this worker)."""
    assert not jax.config.read("jax_enable_x64")
    assert jnp.zeros(()).dtype == jnp.float32


def test_x64_fixture_enables_float64(x64):
    assert jax.config.read("jax_enable_x64")
    assert jnp.zeros(()).dtype == jnp.float64


def test_traxon_warnings_are_errors():
    with pytest.raises(traxon.TraxonWarning, match="demo"):
        warn("demo")
    with pytest.raises(traxon.TraxonWarning):
        warnings.warn("direct", traxon.TraxonWarning, stacklevel=1)


def test_other_warnings_stay_warnings():
    with pytest.warns(UserWarning, match="plain"):
        warnings.warn("plain", UserWarning, stacklevel=1)


def test_markers_are_strict_and_durations_are_reported(pytestconfig):
    assert pytestconfig.getoption("strict_markers")
    markers = " ".join(pytestconfig.getini("markers"))
    assert "slow:" in markers
    assert pytestconfig.getoption("durations") is not None
    assert "error::traxon.TraxonWarning" in pytestconfig.getini("filterwarnings")
