"""Boundaries: minimum-image vectors against brute force over periodic images, wrapping, open space."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import diffmd as md

HYPOTHESIS = settings(max_examples=60, deadline=None, derandomize=True)


def brute_force_min_image(a, b, sides, reach=6):
    """Shortest b − a + n·L over all integer image shifts |n_k| ≤ reach (numpy, float64)."""
    d = np.asarray(b, np.float64) - np.asarray(a, np.float64)
    shifts = np.array(list(itertools.product(range(-reach, reach + 1), repeat=len(sides))), np.float64)
    candidates = d[None, :] + shifts * np.asarray(sides, np.float64)[None, :]
    lengths = np.linalg.norm(candidates, axis=1)
    return candidates[np.argmin(lengths)], lengths.min()


coordinate = st.floats(-2.0, 3.0, allow_nan=False, allow_infinity=False)


@st.composite
def box_and_points(draw, cubic):
    n_dims = draw(st.sampled_from([2, 3]))
    if cubic:
        side = draw(st.floats(0.3, 5.0))
        sides = np.full(n_dims, side)
    else:
        sides = np.array([draw(st.floats(0.3, 5.0)) for _ in range(n_dims)])
    # points anywhere in [-2L, 3L): up to a few box lengths outside the primary cell
    a = np.array([draw(coordinate) for _ in range(n_dims)]) * sides
    b = np.array([draw(coordinate) for _ in range(n_dims)]) * sides
    return sides, a, b


def _check_min_image(boundary, sides, a, b):
    v = np.asarray(boundary.vector(jnp.asarray(a), jnp.asarray(b)))
    best, best_len = brute_force_min_image(a, b, sides)
    # same length as the shortest image (ties at exactly half a box may pick either image)
    assert np.linalg.norm(v) == pytest.approx(best_len, rel=1e-12, abs=1e-12)
    # and it is an image of b − a: the difference is an integer number of box lengths
    n = (v - (b - a)) / sides
    np.testing.assert_allclose(n, np.round(n), atol=1e-9)
    # every component lies within half a box
    assert np.all(np.abs(v) <= sides / 2 * (1 + 1e-12))


@HYPOTHESIS
@given(box_and_points(cubic=False))
def test_rectangular_vector_is_minimum_image(data):
    sides, a, b = data
    _check_min_image(md.RectangularBoundary(jnp.asarray(sides)), sides, a, b)


@HYPOTHESIS
@given(box_and_points(cubic=True))
def test_cubic_vector_is_minimum_image(data):
    sides, a, b = data
    boundary = md.CubicBoundary(float(sides[0]), n_dims=len(sides))
    assert boundary.n_dims == len(sides)
    np.testing.assert_array_equal(np.asarray(boundary.sides), sides)
    _check_min_image(boundary, sides, a, b)


@pytest.mark.parametrize("n_dims", [2, 3])
def test_vector_batched_matches_brute_force(n_dims):
    """Broadcast (N, 1, D) against (1, N, D): every pair equals the brute-force shortest image,
    and `md.vector` (the reference's free function) agrees with the method."""
    rng = np.random.default_rng(n_dims)
    sides = np.array([2.0, 3.5, 1.7][:n_dims])
    boundary = md.RectangularBoundary(sides)
    x = rng.uniform(-1.0, 2.0, (12, n_dims)) * sides
    v = np.asarray(boundary.vector(jnp.asarray(x)[:, None], jnp.asarray(x)[None, :]))
    v_free = np.asarray(md.vector(jnp.asarray(x)[:, None], jnp.asarray(x)[None, :], boundary))
    np.testing.assert_array_equal(v, v_free)
    assert v.shape == (12, 12, n_dims)
    for i in range(12):
        for j in range(12):
            best, best_len = brute_force_min_image(x[i], x[j], sides)
            np.testing.assert_allclose(v[i, j], best, atol=1e-12)
    # antisymmetric
    np.testing.assert_allclose(v, -np.swapaxes(v, 0, 1), atol=1e-12)


def test_vector_keeps_coordinate_dtype():
    """float32 coordinates with a float64 box give float32 vectors (no silent promotion)."""
    boundary = md.CubicBoundary(3.0)
    assert boundary.sides.dtype == jnp.float64
    a = jnp.zeros(3, jnp.float32)
    b = jnp.array([2.9, 0.1, -1.6], jnp.float32)
    v = boundary.vector(a, b)
    assert v.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(v), [-0.1, 0.1, 1.4], atol=1e-6)
    assert boundary.wrap(b).dtype == jnp.float32


@HYPOTHESIS
@given(box_and_points(cubic=False), st.sampled_from([0.0, 1e-300, -1e-300, 1e-17, -1e-17, -1e-9, 1.0, -1.0]))
def test_wrap_into_primary_cell(data, nudge):
    """wrap(x) lies in [0, L) along every axis and is an image of x (differs by whole boxes).

    The nudges put points within rounding of a cell face: x = −1e-17 must not come back as L."""
    sides, a, _ = data
    boundary = md.RectangularBoundary(sides)
    x = a + nudge * sides
    for point in (x, np.full_like(x, nudge), sides * np.round(x / sides) + nudge):
        w = np.asarray(boundary.wrap(jnp.asarray(point)))
        assert np.all(w >= 0.0), (point, w)
        assert np.all(w < sides), (point, w)
        n = (w - point) / sides
        np.testing.assert_allclose(n, np.round(n), atol=1e-9)


def test_wrap_float32_edge():
    """A float32 coordinate a hair below zero wraps to something strictly below L (not L)."""
    boundary = md.CubicBoundary(3.0)
    x = jnp.array([-1e-9, -3e-8, 2.9999999], jnp.float32)
    w = boundary.wrap(x)
    assert w.dtype == jnp.float32
    assert np.all(np.asarray(w) >= 0) and np.all(np.asarray(w) < np.float32(3.0))


def test_wrap_batched_and_vector_consistent():
    rng = np.random.default_rng(0)
    sides = np.array([1.5, 2.5])
    boundary = md.RectangularBoundary(sides)
    x = jnp.asarray(rng.uniform(-10, 10, (50, 2)))
    y = jnp.asarray(rng.uniform(-10, 10, (50, 2)))
    w = boundary.wrap(x)
    assert w.shape == x.shape
    assert np.all((np.asarray(w) >= 0) & (np.asarray(w) < sides))
    # wrapping does not change minimum-image vectors
    np.testing.assert_allclose(boundary.vector(w, boundary.wrap(y)), boundary.vector(x, y), atol=1e-12)


@pytest.mark.parametrize("n_dims", [2, 3])
def test_no_boundary(n_dims):
    boundary = md.NoBoundary(n_dims=n_dims)
    rng = np.random.default_rng(1)
    a = jnp.asarray(rng.uniform(-100, 100, (5, n_dims)))
    b = jnp.asarray(rng.uniform(-100, 100, (5, n_dims)))
    np.testing.assert_array_equal(boundary.vector(a, b), b - a)  # no images at all
    np.testing.assert_array_equal(boundary.wrap(a), a)
    assert boundary.n_dims == n_dims
    assert not boundary.periodic and md.CubicBoundary(1.0).periodic
    assert np.isinf(boundary.volume)
    far = boundary.vector(jnp.zeros(n_dims), jnp.full(n_dims, 1e6))
    np.testing.assert_array_equal(far, np.full(n_dims, 1e6))


def test_volume_and_box_gradient():
    """The box is a differentiable leaf: d|v|²/dL of a minimum-image vector is analytic."""
    boundary = md.RectangularBoundary(jnp.array([2.0, 3.0, 4.0]))
    assert float(boundary.volume) == pytest.approx(24.0)
    a = jnp.array([0.1, 0.2, 0.3])
    b = jnp.array([1.9, 0.4, 3.9])  # wraps along x and z: v = (−0.2, 0.2, −0.4)

    def sq(sides):
        v = md.RectangularBoundary(sides).vector(a, b)
        return jnp.sum(v * v)

    g = jax.grad(sq)(boundary.sides)
    # v_k = d_k − L_k n_k  →  d|v|²/dL_k = −2 v_k n_k with n = (1, 0, 1)
    np.testing.assert_allclose(g, [-2 * -0.2 * 1, 0.0, -2 * -0.4 * 1], atol=1e-12)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: md.RectangularBoundary([1.0, -2.0, 3.0]), "positive"),
        (lambda: md.RectangularBoundary([1.0, np.nan]), "finite"),
        (lambda: md.RectangularBoundary([1.0, 2.0, 3.0, 4.0]), "shape"),
        (lambda: md.CubicBoundary(2.0, n_dims=4), "n_dims"),
        (lambda: md.NoBoundary(n_dims=1), "n_dims"),
        (lambda: md.CubicBoundary([1.0, 2.0]), "scalar"),
    ],
)
def test_bad_boundaries(make, message):
    with pytest.raises(ValueError, match=message):
        make()
