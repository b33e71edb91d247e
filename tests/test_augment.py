"""ikemtrain.augment against its plain twins (tests/naive_augment.py) and the contract of
docs/method.md, "Augmentations"."""

from __future__ import annotations

import naive_augment as naive
import numpy as np
import pytest

from ikemtrain import augment

#: Every pre-training config uses crop ratio 6 and shear amplitude 0.5 (no rotation)
CROP, SHEAR = 6, 0.5


def _sample(rng: np.random.Generator, t: int = 50, m: int = 2) -> np.ndarray:
    x = rng.standard_normal((3, t, 25, m)).astype(np.float32)
    x[:, :, :, 1] = 0.0  # an absent second body
    return x


@pytest.mark.parametrize("t", [50, 12, 7, 5])
@pytest.mark.parametrize("ratio", [6, 2, 3])
def test_temporal_crop_matches_naive(t: int, ratio: int) -> None:
    x = _sample(np.random.default_rng(t * 10 + ratio), t)
    for seed in range(20):
        fast = augment.temporal_crop(x, np.random.default_rng(seed), ratio)
        slow = naive.temporal_crop(x, np.random.default_rng(seed), ratio)
        np.testing.assert_array_equal(fast, slow)
        assert fast.dtype == x.dtype


def test_crop_covers_every_start_and_shift() -> None:
    x = np.arange(50, dtype=np.float32)[None, :, None, None] * np.ones((3, 1, 25, 2), np.float32)
    firsts = set()
    rng = np.random.default_rng(0)
    for _ in range(2000):
        firsts.add(float(augment.temporal_crop(x, rng, CROP)[0, 0, 0, 0]))
    # P = 8: start 0..16 -> first frame x_7, ..., x_0, x_0, x_1, ..., x_8
    assert firsts == set(range(9))
    # start 0 is a shift of -8 frames: x_7 .. x_0 then x_0 .. x_41
    expected = list(range(7, -1, -1)) + list(range(42))
    np.testing.assert_array_equal(augment.crop_indices(50, 6, 0), expected)
    np.testing.assert_array_equal(augment.crop_indices(50, 6, 16)[-8:], list(range(49, 41, -1)))
    np.testing.assert_array_equal(augment.crop_indices(50, 6, 8), np.arange(50))


def test_crop_start_out_of_range_is_an_error() -> None:
    with pytest.raises(ValueError, match="crop start"):
        augment.crop_indices(50, 6, 17)


@pytest.mark.parametrize("amplitude", [0.5, 0.1, 2.0])
def test_shear_matches_naive(amplitude: float) -> None:
    x = _sample(np.random.default_rng(1), t=6).astype(np.float64)
    for seed in range(5):
        fast = augment.shear(x, np.random.default_rng(seed), amplitude)
        slow = naive.shear(x, np.random.default_rng(seed), amplitude)
        np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-12)


def test_shear_matrix_layout_and_range() -> None:
    rng = np.random.default_rng(3)
    draws = np.random.default_rng(3).uniform(-0.5, 0.5, size=6)
    s = augment.shear_matrix(rng, 0.5)
    a0, a1, a2, b0, b1, b2 = draws
    np.testing.assert_array_equal(s, [[1, a0, b0], [a1, 1, b1], [a2, b2, 1]])
    many = np.stack([augment.shear_matrix(rng, 0.5) for _ in range(500)])
    off = many[:, ~np.eye(3, dtype=bool)]
    assert off.min() >= -0.5 and off.max() < 0.5 and off.std() > 0.2
    np.testing.assert_array_equal(many[:, np.eye(3, dtype=bool)], 1.0)


def test_shear_keeps_zeros_and_float32() -> None:
    x = _sample(np.random.default_rng(2))
    y = augment.shear(x, np.random.default_rng(0), SHEAR)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert not y[..., 1].any()
    assert not np.allclose(y[..., 0], x[..., 0])


def test_disabled_augmentations_draw_nothing() -> None:
    x = _sample(np.random.default_rng(4))
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(augment.augment(x, rng, 0, 0.0, 0.0), x)
    assert rng.integers(1 << 30) == np.random.default_rng(0).integers(1 << 30)


def test_augment_is_crop_then_shear() -> None:
    x = _sample(np.random.default_rng(5))
    a = augment.augment(x, np.random.default_rng(9), CROP, SHEAR, 0.0)
    rng = np.random.default_rng(9)
    b = naive.shear(naive.temporal_crop(x, rng, CROP), rng, SHEAR)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_bad_shapes_are_named() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"temporal_crop: expected a sample of shape"):
        augment.temporal_crop(np.zeros((2, 50, 25, 2), np.float32), rng, CROP)
    with pytest.raises(ValueError, match="floating-point"):
        augment.shear(np.zeros((3, 50, 25, 2), np.int32), rng, SHEAR)


@pytest.mark.parametrize("degrees", [45.0, 10.0, 180.0])
def test_rotate_matches_naive(degrees: float) -> None:
    x = _sample(np.random.default_rng(6), t=6).astype(np.float64)
    for seed in range(5):
        fast = augment.rotate(x, np.random.default_rng(seed), degrees)
        slow = naive.rotate(x, np.random.default_rng(seed), degrees)
        np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-12)


def test_rotate_is_rigid_about_the_vertical_axis_within_the_bound() -> None:
    x = _sample(np.random.default_rng(7))
    rng = np.random.default_rng(0)
    angles = []
    for _ in range(200):
        r = augment.rotation_matrix(rng, 45.0)
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
        np.testing.assert_array_equal(r[1], [0.0, 1.0, 0.0])
        angles.append(np.degrees(np.arctan2(r[0, 2], r[0, 0])))
    assert -45.0 <= min(angles) < -35.0 and 35.0 < max(angles) <= 45.0
    y = augment.rotate(x, np.random.default_rng(1), 45.0)
    assert y.dtype == np.float32 and not y[..., 1].any()  # an absent body stays zero
    np.testing.assert_array_equal(y[1], x[1])  # heights unchanged
    # distances between joints (bone lengths) are kept
    d = lambda a: np.linalg.norm(a[:, :, 3] - a[:, :, 2], axis=0)  # noqa: E731
    np.testing.assert_allclose(d(y), d(x), rtol=1e-5)
    assert not np.allclose(y[0], x[0])


def test_augment_rotates_last_and_only_when_asked() -> None:
    x = _sample(np.random.default_rng(8))
    a = augment.augment(x, np.random.default_rng(9), CROP, SHEAR, 30.0)
    rng = np.random.default_rng(9)
    b = naive.rotate(naive.shear(naive.temporal_crop(x, rng, CROP), rng, SHEAR), rng, 30.0)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # rotation 0 (the reference) draws nothing more: the same stream as crop then shear
    rng0, rng1 = np.random.default_rng(9), np.random.default_rng(9)
    plain = augment.shear(augment.temporal_crop(x, rng1, CROP), rng1, SHEAR)
    np.testing.assert_array_equal(augment.augment(x, rng0, CROP, SHEAR, 0.0), plain)
    assert rng0.integers(1 << 30) == rng1.integers(1 << 30)
