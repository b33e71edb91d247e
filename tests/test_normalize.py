"""skelmod.normalize against hand-computed cases, plain twins and the reference pipeline
(docs/method.md, "Data and normalisation")."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from naive_pipeline import naive_normalize, naive_process  # tests/ is on sys.path under pytest

from skelmod.bodies import select_bodies
from skelmod.layout import LEFT_SHOULDER, RIGHT_SHOULDER, SPINE_BASE, SPINE_SHOULDER
from skelmod.normalize import (
    EmptySequenceError,
    align_yaw,
    centre_bodies,
    normalize_sample,
    resize_linear,
    valid_length,
    yaw_angles,
)
from skelmod.ntu import read_skeleton


def _body_like(rng, T, M=2, present=None):
    """Random ``(3, T, 25, M)`` float64 sample shaped like a person at ~3 m from the camera.

    ``present``: optional ``(T, M)`` bool mask; absent (frame, body) pairs are all-zero.
    """
    D = rng.normal(0.0, 0.3, size=(3, T, 25, M))
    D[2] += 3.0
    D += np.cumsum(rng.normal(0.0, 0.02, size=(3, T, 1, M)), axis=1)  # drifting person
    if present is not None:
        D *= present[None, :, None, :]
    return D


def _twin_resize(D, L, t_target):
    """cv2-free plain twin of the resize, one output value at a time."""
    C, _, V, M = D.shape
    out = np.zeros((C, t_target, V, M))
    for tp in range(t_target):
        u = min(max((tp + 0.5) * L / t_target - 0.5, 0.0), L - 1.0)
        i = math.floor(u)
        a = u - i
        j = min(i + 1, L - 1)
        for c in range(C):
            for v in range(V):
                for m in range(M):
                    out[c, tp, v, m] = (1 - a) * D[c, i, v, m] + a * D[c, j, v, m]
    return out


# --- valid length ----------------------------------------------------------------------------


def test_valid_length_counts_nonzero_frames_of_body0_joint1():
    rng = np.random.default_rng(0)
    D = _body_like(rng, 12)
    D[:, 3] = 0.0  # an empty frame in the middle
    D[:, 9:] = 0.0  # zero padding
    D[:, 5, SPINE_BASE, 0] = 0.0  # joint 1 missing while other joints are there
    D[:, 10, :, 1] = 1.0  # body 1 alone does not count
    # frames 0..8 minus frames 3 and 5: a count, not the last valid index (the valid-length count)
    assert valid_length(D) == 7
    assert valid_length(np.zeros((3, 300, 25, 2))) == 0


# --- centring --------------------------------------------------------------------------------


def test_centring_zeroes_joint21_and_keeps_absent_frames_zero():
    rng = np.random.default_rng(1)
    present = rng.random((40, 2)) > 0.3
    D = _body_like(rng, 40, present=present)
    X = centre_bodies(D)
    assert np.all(X[:, :, SPINE_SHOULDER] == 0)
    absent = ~present
    assert np.all(X[:, absent.nonzero()[0], :, absent.nonzero()[1]] == 0)
    np.testing.assert_array_equal(X[:, :, 3], D[:, :, 3] - D[:, :, SPINE_SHOULDER])
    assert centre_bodies(D.astype(np.float32)).dtype == np.float32  # the reference's dtype


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    shift=st.lists(st.floats(-5, 5, allow_nan=False), min_size=3, max_size=3),
)
def test_centring_removes_any_per_frame_per_body_translation(seed, shift):
    rng = np.random.default_rng(seed)
    D = _body_like(rng, 20)
    offsets = rng.normal(0, 1, size=(3, 20, 1, 2)) + np.reshape(shift, (3, 1, 1, 1))
    np.testing.assert_allclose(centre_bodies(D + offsets), centre_bodies(D), atol=1e-12)


# --- resize ----------------------------------------------------------------------------------


@pytest.mark.parametrize("L", [1, 2, 7, 25, 49, 50, 51, 103, 300])
def test_resize_matches_the_plain_twin(L):
    rng = np.random.default_rng(L)
    D = _body_like(rng, 300)
    np.testing.assert_allclose(resize_linear(D, L, 50), _twin_resize(D, L, 50), atol=1e-12)


def test_resize_hand_computed_cases():
    rng = np.random.default_rng(2)
    D = _body_like(rng, 300)
    # L = 1: a constant sequence equal to the only frame
    X = resize_linear(D, 1)
    assert X.shape == (3, 50, 25, 2)
    np.testing.assert_array_equal(X, np.broadcast_to(D[:, :1], X.shape))
    # L = 50: the identity (u = t' exactly)
    np.testing.assert_array_equal(resize_linear(D, 50), D[:, :50])
    # L = 300: u = 6 t' + 2.5, the mean of frames 6t'+2 and 6t'+3 (no anti-aliasing)
    expect = 0.5 * D[:, 2:300:6] + 0.5 * D[:, 3:300:6]
    np.testing.assert_allclose(resize_linear(D, 300), expect, atol=1e-12)
    # L = 25 < 50: u = t'/2 - 1/4, clipped to [0, 24]
    X = resize_linear(D, 25)
    np.testing.assert_array_equal(X[:, 0], D[:, 0])
    np.testing.assert_allclose(X[:, 1], 0.75 * D[:, 0] + 0.25 * D[:, 1], atol=1e-12)
    np.testing.assert_allclose(X[:, 2], 0.25 * D[:, 0] + 0.75 * D[:, 1], atol=1e-12)
    np.testing.assert_array_equal(X[:, 49], D[:, 24])


def test_resize_reads_only_the_first_L_frames():
    rng = np.random.default_rng(3)
    D = _body_like(rng, 80)
    E = D.copy()
    E[:, 60:] = 1e6
    np.testing.assert_array_equal(resize_linear(D, 60), resize_linear(E, 60))


@settings(max_examples=60, deadline=None)
@given(
    L=st.integers(1, 300),
    t_target=st.integers(1, 120),
    a=st.floats(-3, 3, allow_nan=False),
    b=st.floats(-0.1, 0.1, allow_nan=False),
)
def test_resize_of_a_linear_ramp_is_the_ramp_at_u(L, t_target, a, b):
    t = np.arange(L, dtype=np.float64)
    D = np.broadcast_to((a + b * t)[None, :, None, None], (3, L, 25, 2))
    u = np.clip((np.arange(t_target) + 0.5) * L / t_target - 0.5, 0, L - 1)
    expect = np.broadcast_to((a + b * u)[None, :, None, None], (3, t_target, 25, 2))
    np.testing.assert_allclose(resize_linear(D, L, t_target), expect, atol=1e-12)


def test_resize_rejects_bad_input():
    D = np.zeros((3, 10, 25, 2))
    for bad in (0, 11):
        with pytest.raises(ValueError, match="L must lie in"):
            resize_linear(D, bad)
    with pytest.raises(ValueError, match="shape"):
        resize_linear(np.zeros((3, 10, 24, 2)), 5)
    with pytest.raises(ValueError, match="t_target"):
        resize_linear(D, 5, 0)


# --- yaw -------------------------------------------------------------------------------------


def _with_shoulders(v, T=None, M=1):
    """A sample whose shoulder vector (joint 9 - joint 5) is ``v`` ``(T, 3)`` for body 0."""
    v = np.asarray(v, dtype=np.float64)
    T = v.shape[0]
    X = np.zeros((3, T, 25, M))
    X[:, :, RIGHT_SHOULDER, 0] = 0.5 * v.T
    X[:, :, LEFT_SHOULDER, 0] = -0.5 * v.T
    X[1, :, :, 0] += np.linspace(-0.8, 0.8, 25)  # y is left alone
    return X


def _shoulder_angle(X):
    v = X[:, :, RIGHT_SHOULDER, 0] - X[:, :, LEFT_SHOULDER, 0]
    return np.arctan2(v[2], v[0])


def _random_shoulders(rng, T, z_sign):
    """Shoulder vectors of length 0.2-0.45 m at yaw angles 0.3..2.8 rad from +x (away from the
    1e-4 bias of the yaw alignment, which tilts near-aligned vectors by up to ~0.03 rad)."""
    phi = rng.uniform(0.3, 2.8, size=T) * z_sign
    r = rng.uniform(0.2, 0.45, size=T)
    return np.stack((r * np.cos(phi), rng.normal(0, 0.05, T), r * np.sin(phi)), axis=1)


@pytest.mark.parametrize("z_sign", [np.ones(30), -np.ones(30)])
def test_sequence_yaw_maps_same_sign_frames_to_plus_x(z_sign):
    rng = np.random.default_rng(4)
    X = _with_shoulders(_random_shoulders(rng, 30, z_sign))
    Y = align_yaw(X, "sequence")
    np.testing.assert_allclose(_shoulder_angle(Y), 0.0, atol=2e-3)
    np.testing.assert_array_equal(Y[1], X[1])  # rotation about the vertical axis
    np.testing.assert_allclose(np.hypot(Y[0], Y[2]), np.hypot(X[0], X[2]), atol=1e-12)


def test_sequence_yaw_sends_opposite_sign_frames_to_twice_psi():
    # The example of docs/method.md, "Data and normalisation": v = (1, 0, -0.5) in a sequence
    # whose sum of v_z is >= 0 becomes (0.67, 0, -0.90), at angle 2 psi from +x.
    X = _with_shoulders([[1.0, 0.0, -0.5], [1.0, 0.0, 1.0]])
    Y = align_yaw(X, "sequence")
    v = Y[:, 0, RIGHT_SHOULDER, 0] - Y[:, 0, LEFT_SHOULDER, 0]
    np.testing.assert_allclose(v[[0, 2]], [0.67, -0.90], atol=6e-3)
    psi = math.atan2(0.5, 1.0)
    np.testing.assert_allclose(_shoulder_angle(Y)[0], -2 * psi, atol=2e-4)
    np.testing.assert_allclose(_shoulder_angle(Y)[1], 0.0, atol=2e-4)
    # With the per-frame sign (fixing the yaw sign bug) both frames face +x.
    np.testing.assert_allclose(_shoulder_angle(align_yaw(X, "frame")), 0.0, atol=2e-4)


def test_frame_yaw_maps_every_frame_to_plus_x():
    rng = np.random.default_rng(5)
    signs = np.where(rng.random(40) < 0.5, -1.0, 1.0)
    X = _with_shoulders(_random_shoulders(rng, 40, signs))
    np.testing.assert_allclose(_shoulder_angle(align_yaw(X, "frame")), 0.0, atol=2e-3)
    assert np.abs(_shoulder_angle(align_yaw(X, "sequence"))).max() > 0.5  # the yaw sign bug shows


def test_yaw_treats_every_body_and_keeps_absent_bodies_zero():
    rng = np.random.default_rng(6)
    X = _body_like(rng, 30, M=3)
    X[..., 2] = 0.0
    for yaw in ("sequence", "frame"):
        Y = align_yaw(X, yaw)
        assert np.all(Y[..., 2] == 0)
        theta = yaw_angles(X, yaw)
        assert theta.shape == (30, 3)
        for m in range(2):  # not just range(2) by accident: bodies are independent
            np.testing.assert_allclose(Y[..., m : m + 1], align_yaw(X[..., m : m + 1], yaw))
    np.testing.assert_array_equal(align_yaw(X, "none"), X)
    with pytest.raises(ValueError, match="yaw"):
        align_yaw(X, "sideways")


# --- the whole sample ------------------------------------------------------------------------


def test_empty_sequence_raises():
    D = np.zeros((3, 300, 25, 2))
    D[:, 10:20, :, 1] = 1.0  # only body 1 is there
    with pytest.raises(EmptySequenceError, match="L = 0"):
        normalize_sample(D)
    assert issubclass(EmptySequenceError, ValueError)


def test_normalize_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        normalize_sample(np.zeros((3, 10, 25)))
    with pytest.raises(TypeError, match="float"):
        normalize_sample(np.zeros((3, 10, 25, 2), dtype=np.int64))
    D = np.ones((3, 10, 25, 2))
    D[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        normalize_sample(D)
    with pytest.raises(ValueError, match="yaw"):
        normalize_sample(np.ones((3, 10, 25, 2)), yaw="left")


@pytest.mark.parametrize("seed", range(6))
def test_normalize_matches_the_reference_twin_on_adversarial_samples(seed):
    # Gaps in body 0, a body 1 that comes and goes, lengths from 1 to 300.
    rng = np.random.default_rng(seed)
    F = int(rng.choice([1, 2, 13, 50, 77, 300]))
    present = rng.random((F, 2)) < [0.9, 0.5]
    present[0, 0] = True
    D = _body_like(rng, F, present=present)
    row = np.zeros((3, 300, 25, 2), dtype=np.float32)
    row[:, :F] = D
    expect, L = naive_normalize(row)
    X, L2 = normalize_sample(D)
    assert L2 == L and X.dtype == np.float32 and X.shape == (3, 50, 25, 2)
    np.testing.assert_allclose(X, expect, atol=1e-5, rtol=0)
    # zero padding after the last frame changes nothing
    np.testing.assert_array_equal(normalize_sample(row)[0], X)


def test_options_centre_false_and_yaw_none():
    rng = np.random.default_rng(7)
    D = _body_like(rng, 64)
    X, L = normalize_sample(D, t_target=32, centre=False, yaw="none")
    assert X.shape == (3, 32, 25, 2) and L == 64
    np.testing.assert_allclose(X, resize_linear(D, 64, 32), atol=1e-6)
    Xc, _ = normalize_sample(D, centre=True, yaw="none")
    assert np.all(Xc[:, :, SPINE_SHOULDER] == 0)
    assert np.abs(normalize_sample(D, centre=False)[0][:, :, SPINE_SHOULDER]).min() > 0


def test_real_files_match_the_reference_pipeline(ntu_real_files):
    assert ntu_real_files
    worst = 0.0
    for path in ntu_real_files:
        expect, L, frame_count = naive_process(path)
        raw = read_skeleton(path)
        D, _ = select_bodies(raw)
        X, L2 = normalize_sample(D)
        assert (L2, raw.frame_count) == (L, frame_count), path.name
        np.testing.assert_allclose(X, expect, atol=1e-5, rtol=0, err_msg=path.name)
        worst = max(worst, float(np.abs(X - expect).max()))
    # the float32 roundings of the reference are mirrored, so only float32 rounding is left
    assert worst < 1e-6


@pytest.mark.nojit
def test_kernels_give_the_same_result_as_plain_python(tmp_path):
    """The private kernels run as plain Python under NUMBA_DISABLE_JIT=1 (for coverage); both
    ways must give the same numbers up to a float32 ulp or two (numpy's float32 arccos and the
    libm one numba calls may differ in the last bit)."""
    rng = np.random.default_rng(8)
    present = rng.random((90, 2)) < [0.95, 0.6]
    present[0, 0] = True
    D = _body_like(rng, 90, present=present)
    np.save(tmp_path / "d.npy", D)
    code = textwrap.dedent(
        f"""
        import numpy as np
        from skelmod.normalize import normalize_sample
        D = np.load({str(tmp_path / "d.npy")!r})
        for yaw in ("sequence", "frame"):
            np.save({str(tmp_path)!r} + f"/x_{{yaw}}.npy", normalize_sample(D, yaw=yaw)[0])
        """
    )
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=tmp_path)
    for yaw in ("sequence", "frame"):
        plain = np.load(tmp_path / f"x_{yaw}.npy")
        np.testing.assert_allclose(normalize_sample(D, yaw=yaw)[0], plain, atol=5e-7, rtol=0)
