"""Surrogate spike functions: Heaviside forward, documented pseudo-derivative backward."""

from __future__ import annotations

import math

import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from traxon.core import SURROGATES, Surrogate, surrogate

KINDS = ("sigmoid", "fast_sigmoid", "triangle", "gaussian")
X = np.array([-3.0, -1.2, -0.7, -0.25, -1e-3, 0.0, 1e-3, 0.3, 0.8, 1.5, 4.0], np.float32)


def psi_reference(kind: str, x: np.ndarray, width: float, scale: float) -> np.ndarray:
    """The module docstring's table, written out independently in float64."""
    x = np.asarray(x, np.float64)
    if kind == "sigmoid":
        sig = 1.0 / (1.0 + np.exp(-x / width))
        return 4.0 * scale * sig * (1.0 - sig)
    if kind == "fast_sigmoid":
        return scale / (1.0 + np.abs(x) / width) ** 2
    if kind == "triangle":
        return scale * np.maximum(0.0, 1.0 - np.abs(x) / width)
    if kind == "gaussian":
        return scale * np.exp(-(x**2) / (2.0 * width**2))
    raise AssertionError(kind)


def test_registry_lists_the_four_documented_kinds():
    assert sorted(SURROGATES) == sorted(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_forward_is_heaviside_with_one_at_zero(kind):
    f = Surrogate(kind, width=0.5, scale=2.0)
    out = f(jnp.asarray(X))
    np.testing.assert_array_equal(np.asarray(out), (X >= 0).astype(np.float32))
    assert out.dtype == jnp.float32
    # Exactly at threshold counts as a spike.
    assert float(f(jnp.float32(0.0))) == 1.0
    assert float(f(jnp.float32(-1e-7))) == 0.0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("width", "scale"), [(1.0, 1.0), (0.5, 0.3), (2.0, 1.7)])
def test_pseudo_derivative_matches_formula_under_grad_jvp_vjp_vmap(kind, width, scale):
    f = Surrogate(kind, width=width, scale=scale)
    x = jnp.asarray(X)
    want = psi_reference(kind, X, width, scale)
    tol = {"rtol": 2e-6, "atol": 1e-7}

    # jax.grad of a scalar function, vectorised with vmap.
    g = jax.vmap(jax.grad(lambda xi: f(xi)))(x)
    np.testing.assert_allclose(np.asarray(g), want, **tol)
    # grad of a sum over an array (the diagonal Jacobian).
    g_sum = jax.grad(lambda xx: jnp.sum(f(xx)))(x)
    np.testing.assert_allclose(np.asarray(g_sum), want, **tol)
    # Forward mode: psi(x) * tangent, with the primal still the step.
    tangent = jnp.linspace(-2.0, 3.0, x.size, dtype=jnp.float32)
    primal, jvp = jax.jvp(f, (x,), (tangent,))
    np.testing.assert_array_equal(np.asarray(primal), (X >= 0).astype(np.float32))
    np.testing.assert_allclose(np.asarray(jvp), want * np.asarray(tangent), **tol)
    # Reverse mode with a non-trivial cotangent.
    cot = jnp.linspace(1.5, -0.5, x.size, dtype=jnp.float32)
    _, vjp_fn = jax.vjp(f, x)
    np.testing.assert_allclose(np.asarray(vjp_fn(cot)[0]), want * np.asarray(cot), **tol)
    # The exposed derivative agrees, and psi(0) is the scale.
    np.testing.assert_allclose(np.asarray(f.derivative(x)), want, **tol)
    assert math.isclose(float(f.derivative(jnp.float32(0.0))), scale, rel_tol=1e-6)


def test_known_values_of_each_kind():
    # Hand-computed points (width=0.5, scale=2): distance 0.25 is half a width.
    x = jnp.float32(0.25)
    grads = {k: float(jax.grad(Surrogate(k, width=0.5, scale=2.0))(x)) for k in KINDS}
    sig = 1.0 / (1.0 + math.exp(-0.5))
    assert math.isclose(grads["sigmoid"], 8.0 * sig * (1.0 - sig), rel_tol=1e-6)
    assert math.isclose(grads["fast_sigmoid"], 2.0 / 1.5**2, rel_tol=1e-6)
    assert math.isclose(grads["triangle"], 1.0, rel_tol=1e-6)
    assert math.isclose(grads["gaussian"], 2.0 * math.exp(-0.125), rel_tol=1e-6)
    # The triangle has compact support; the others do not.
    assert float(jax.grad(Surrogate("triangle", width=0.5))(jnp.float32(0.6))) == 0.0
    assert float(jax.grad(Surrogate("gaussian", width=0.5))(jnp.float32(0.6))) > 0.0


def test_grad_under_jit_and_batched_vmap():
    f = Surrogate("fast_sigmoid", width=0.3, scale=1.0)
    x = jnp.asarray(np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4))
    g = jax.jit(jax.vmap(jax.grad(lambda row: jnp.sum(f(row) * jnp.arange(1.0, 5.0)))))(x)
    want = psi_reference("fast_sigmoid", np.asarray(x), 0.3, 1.0) * np.arange(1.0, 5.0)[None]
    np.testing.assert_allclose(np.asarray(g), want, rtol=2e-6)


def test_float64_forward_and_backward(x64):
    f = Surrogate("gaussian", width=0.7, scale=0.9)
    x = jnp.asarray(X, jnp.float64)
    assert f(x).dtype == jnp.float64
    g = jax.grad(lambda xx: jnp.sum(f(xx)))(x)
    assert g.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(g), psi_reference("gaussian", X, 0.7, 0.9), rtol=1e-12)


def test_width_and_scale_are_not_differentiated():
    x = jnp.float32(0.2)
    d_width = jax.grad(lambda w: Surrogate("sigmoid", width=w)(x))(0.5)
    d_scale = jax.grad(lambda s: Surrogate("sigmoid", scale=s)(x))(0.5)
    assert float(d_width) == 0.0
    assert float(d_scale) == 0.0


def test_surrogate_builder_and_pass_through():
    f = surrogate("gaussian", width=0.5)
    assert isinstance(f, Surrogate) and f.kind == "gaussian" and f.width == 0.5
    assert surrogate(f) is f
    g = surrogate(f, scale=3.0)
    assert g.kind == "gaussian" and g.width == 0.5 and g.scale == 3.0
    assert surrogate().kind == "triangle"
    # Quantities without a unit are plain numbers.
    assert Surrogate("triangle", width=np.float32(0.25)).width == 0.25


def test_surrogate_is_a_pytree_with_static_kind():
    f = Surrogate("triangle", width=0.5, scale=0.3)
    leaves, treedef = jax.tree_util.tree_flatten(f)
    assert leaves == [0.5, 0.3]
    rebuilt = jax.tree_util.tree_unflatten(treedef, leaves)
    assert rebuilt.kind == "triangle"
    out = jax.jit(lambda s, x: s(x))(f, jnp.array([-0.1, 0.1]))
    np.testing.assert_array_equal(np.asarray(out), [0.0, 1.0])


@pytest.mark.parametrize(
    ("build", "exc", "match"),
    [
        (lambda: Surrogate("relu"), ValueError, r"`kind` must be one of .*'relu'"),
        (lambda: surrogate("Sigmoid"), ValueError, r"`kind` must be one of"),
        (lambda: surrogate(3), TypeError, r"`surrogate` must be a name or a Surrogate"),
        (lambda: Surrogate("triangle", width=0.0), ValueError, r"`width` must be positive"),
        (lambda: Surrogate("triangle", width=-1.0), ValueError, r"`width` must be positive"),
        (lambda: Surrogate("triangle", scale=0.0), ValueError, r"`scale` must be positive"),
        (lambda: Surrogate("triangle", scale=float("nan")), ValueError, r"`scale`"),
        (
            lambda: Surrogate("triangle", width=1.0 * u.mV),
            TypeError,
            r"`width` must be a unitless number",
        ),
        (lambda: Surrogate("triangle", width=None), TypeError, r"`width` must be a number"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(build, exc, match):
    with pytest.raises(exc, match=match):
        build()
