"""skelmod.modalities against its naive twin (tests/naive_modalities.py), properties, errors.

Tests whose name contains ``small`` also run with ``NUMBA_DISABLE_JIT=1``
(tests/test_nojit.py), so keep their inputs small.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from naive_modalities import (
    naive_angular_velocity,
    naive_joint_angle,
    naive_modalities,
    topology,
)

from skelmod import layout
from skelmod import modalities as mod

DERIVED = ("velocity", "acceleration", "bone", "rotation_axis", "angular_velocity")
OPTIONS = [("6v", False), ("6v", True), ("3v", False), ("3v", True)]


def assert_twin(ours: np.ndarray, ref: np.ndarray, rtol: float = 1e-6) -> None:
    """Agree to ``rtol`` relative to each element, or to the array's scale near zero."""
    assert ours.shape == ref.shape
    assert np.all(np.isfinite(ours))
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=1e-9 * scale + 1e-300)


def check_against_twin(
    X, frame_count, t_target=50, bones="6v", unit_axis=False, rtol=1e-6, layout="ntu25"
):
    """Every modality and the angles of a batch ``X`` vs the twin, sample by sample."""
    out = mod.compute_modalities(
        X, frame_count, t_target, bones=bones, unit_axis=unit_axis, layout=layout
    )
    theta = mod.joint_angles(X, bones=bones, layout=layout)
    assert list(out) == list(mod.MODALITIES)
    fc = np.broadcast_to(frame_count, (X.shape[0],))
    for n in range(X.shape[0]):
        x64 = X[n].astype(np.float64)
        ref = naive_modalities(x64, fc[n], t_target, bones, unit_axis, layout)
        for name in mod.MODALITIES:
            assert out[name].dtype == X.dtype, name
            assert_twin(out[name][n], ref[name].astype(X.dtype), rtol)
        assert_twin(theta[n], naive_joint_angle(x64, bones, layout).astype(X.dtype), rtol)


# --- data ------------------------------------------------------------------------------------


def real_samples(paths, t: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Raw frames 0..t-1 of each file, each body centred on its joint 21, float64."""
    from naive_reader import naive_read_xyz

    xs, fcs = [], []
    for p in paths:
        D = naive_read_xyz(p)
        fcs.append(D.shape[1])
        D = D[:, :t]
        X = np.zeros((3, t, layout.V, layout.M))
        X[:, : D.shape[1]] = D - D[:, :, layout.SPINE_SHOULDER : layout.SPINE_SHOULDER + 1]
        xs.append(X)
    return np.stack(xs), np.array(fcs)


@pytest.fixture(scope="module")
def real_batch(ntu_real_files):
    # a one-body, a two-body (mutual action) and a different setup's sample
    names = ("A001", "A050", "S017C003P020R002A054")
    paths = [next(p for p in ntu_real_files if k in p.name) for k in names]
    return real_samples(paths)


def random_batch(seed: int, n=3, t=50, m=2, scale=1.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3, t, layout.V, m)) * scale


def adversarial_batch() -> np.ndarray:
    """Zero bones, collinear bones, an absent body, a constant sequence, a frozen joint."""
    rng = np.random.default_rng(7)
    T = 6
    X = np.zeros((6, 3, T, layout.V, 2))
    # 0: all joints at the origin (every bone 0, torso degenerate); body 1 absent
    # 1: all joints on one line through the origin (every pair of bones collinear)
    direction = np.array([0.3, -1.2, 0.7])
    X[1] = (direction[:, None, None, None] * np.arange(layout.V)[None, None, :, None]) * np.ones(
        (1, T, 1, 2)
    )
    # 2: constant random pose; 3: moving pose whose joints 3, 5 coincide with their parents
    X[2] = rng.normal(size=(3, 1, layout.V, 2))
    X[3] = rng.normal(size=(3, T, layout.V, 2))
    X[3, :, :, 2] = X[3, :, :, 20]
    X[3, :, :, 4] = X[3, :, :, 20]
    # 4: one body present in some frames only (appearing / disappearing)
    X[4, :, 2:4, :, 0] = rng.normal(size=(3, 2, layout.V))
    # 5: bones with all-negative components against a zero partner bone (atan2(0, -0.0) = pi)
    X[5] = -np.abs(rng.normal(size=(3, T, layout.V, 2))) * np.arange(layout.V)[:, None]
    X[5, :, :, 20] = 0.0
    X[5, :, :, 2] = 0.0
    return X


# --- twin comparisons ------------------------------------------------------------------------


@pytest.mark.parametrize(("bones", "unit_axis"), OPTIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_real_samples_match_twin(real_batch, bones, unit_axis, dtype):
    X, fc = real_batch
    check_against_twin(X.astype(dtype), fc, bones=bones, unit_axis=unit_axis)


@pytest.mark.parametrize(("bones", "unit_axis"), OPTIONS)
def test_random_sequences_match_twin(bones, unit_axis):
    check_against_twin(
        random_batch(1, n=3), np.array([50, 37, 300]), bones=bones, unit_axis=unit_axis
    )


@pytest.mark.parametrize(("bones", "unit_axis"), OPTIONS)
def test_kinect_v1_sequences_match_twin(bones, unit_axis):
    X = random_batch(2, n=3, t=12)[:, :, :, :20, :1]  # 20 joints, one body (N-UCLA)
    X[2, :, 3:6] = 0.0  # zero bones and a degenerate torso
    check_against_twin(X, np.array([50, 9, 120]), bones=bones, unit_axis=unit_axis,
                       layout="kinect-v1-20")  # fmt: skip
    with pytest.raises(ValueError, match="V=20 joints of layout kinect-v1-20"):
        mod.compute_modalities(random_batch(1, n=1), 50, layout="kinect-v1-20")


@pytest.mark.parametrize(("t", "m"), [(1, 2), (2, 1), (3, 3), (7, 2)])
def test_small_shapes_match_twin(t, m):
    check_against_twin(random_batch(t * 10 + m, n=2, t=t, m=m), 64, t_target=50)


@pytest.mark.parametrize(("bones", "unit_axis"), OPTIONS)
def test_small_adversarial_match_twin_and_are_finite(bones, unit_axis):
    check_against_twin(adversarial_batch(), 40, bones=bones, unit_axis=unit_axis)


def test_small_float32_matches_twin():
    check_against_twin(random_batch(3, n=2, t=4).astype(np.float32), np.array([10, 80]))


@pytest.mark.parametrize(
    ("dtype", "scale"),
    [(np.float64, 1e60), (np.float64, 1e-30), (np.float32, 1e15), (np.float32, 1e-8)],
)
def test_huge_and_small_magnitudes_match_twin(dtype, scale):
    X = random_batch(5, n=2, t=5, scale=scale)
    X[1] = adversarial_batch()[3, :, :5] * scale
    check_against_twin(X.astype(dtype), np.array([120, 60]))


def test_overflowing_squares_still_give_unit_axes_and_angles():
    # |R|^2 ~ 1e400 overflows float64: norms are rescaled, directions and angles stay right
    X = random_batch(9, n=1, t=4)
    big = mod.compute_modalities(X * 1e100, 50, modalities=["angular_velocity"], unit_axis=True)
    ref = mod.compute_modalities(X, 50, modalities=["angular_velocity"], unit_axis=True)
    np.testing.assert_allclose(big["angular_velocity"], ref["angular_velocity"], atol=1e-12)
    np.testing.assert_allclose(
        mod.rotation_axes(X * 1e100, unit_axis=True),
        mod.rotation_axes(X, unit_axis=True),
        atol=1e-12,
    )
    np.testing.assert_allclose(mod.joint_angles(X * 1e100), mod.joint_angles(X), atol=1e-12)
    np.testing.assert_allclose(
        mod.bones(X * 1e100)[:, :, :, 20], mod.bones(X)[:, :, :, 20], atol=1e-12
    )


def test_small_axis_tol_matches_twin():
    X = adversarial_batch()
    X[2] = random_batch(11, n=1, t=6)[0]
    # head bone along the neck bone, off by 1e-8: |R| is above 1e-12 but below 1e-6 |B_4| |B_3|
    noise = 1e-8 * np.random.default_rng(12).normal(size=X[2, :, :, 3].shape)
    X[2, :, :, 3] = X[2, :, :, 2] + 2 * (X[2, :, :, 2] - X[2, :, :, 20]) + noise
    ours = mod.angular_velocity(X, 30, axis_tol=1e-6)
    for n in range(X.shape[0]):
        assert_twin(ours[n], naive_angular_velocity(X[n], 30, axis_tol=1e-6))
    rhat = mod.rotation_axes(X, unit_axis=True, axis_tol=1e-6)
    assert np.all(rhat[2, :, :, 3] == 0)  # the default would give a unit vector there
    assert np.allclose(np.linalg.norm(mod.rotation_axes(X, unit_axis=True)[2, :, :, 3], axis=0), 1)


# --- API -------------------------------------------------------------------------------------


def test_small_single_functions_equal_compute_modalities():
    X = random_batch(2, n=2, t=5)
    fc = np.array([90, 45])
    out = mod.compute_modalities(X, fc, t_target=50, bones="3v")
    np.testing.assert_array_equal(out["velocity"], mod.velocity(X, fc))
    np.testing.assert_array_equal(out["acceleration"], mod.acceleration(X, fc))
    np.testing.assert_array_equal(out["bone"], mod.bones(X, bones="3v"))
    np.testing.assert_array_equal(out["rotation_axis"], mod.rotation_axes(X, bones="3v"))
    np.testing.assert_array_equal(out["angular_velocity"], mod.angular_velocity(X, fc, bones="3v"))
    np.testing.assert_array_equal(out["joint"], X)
    assert out["joint"] is not X
    assert mod.joint_angles(X).shape == (2, 1, 5, 25, 2)
    assert mod.joint_angles(X[0]).shape == (1, 5, 25, 2)


def test_small_single_sample_equals_batch_row_and_subset_selection():
    X = random_batch(4, n=3, t=4).astype(np.float32)
    fc = np.array([100, 50, 75])
    batch = mod.compute_modalities(X, fc)
    one = mod.compute_modalities(X[1], 50, modalities=["bone", "velocity"])
    assert list(one) == ["velocity", "bone"]  # MODALITIES order
    for name in one:
        assert one[name].shape == X[1].shape and one[name].dtype == np.float32
        np.testing.assert_array_equal(one[name], batch[name][1])
    assert list(mod.compute_modalities(X, fc, modalities="rotation_axis")) == ["rotation_axis"]


def test_scalar_frame_count_applies_to_every_sample_and_t_target_is_the_numerator():
    X = random_batch(6, n=2, t=5)
    a = mod.velocity(X, 25)
    np.testing.assert_array_equal(a, mod.velocity(X, np.array([25, 25])))
    np.testing.assert_allclose(mod.velocity(X, 25, t_target=100), 2 * a, rtol=1e-15)
    np.testing.assert_allclose(mod.acceleration(X, 100), mod.acceleration(X, 50) / 4, rtol=1e-12)
    # t_target need not equal the array's T
    np.testing.assert_allclose(a[:, :, :-1], 2 * (X[:, :, 1:] - X[:, :, :-1]), rtol=1e-15)


def test_non_contiguous_read_only_and_empty_inputs():
    X = random_batch(8, n=2, t=5, m=3)
    view = X[:, :, :, :, ::-1]
    np.testing.assert_array_equal(mod.bones(view), mod.bones(view.copy()))
    X.setflags(write=False)
    assert mod.angular_velocity(X, 40).shape == X.shape
    assert mod.compute_modalities(np.zeros((0, 3, 50, 25, 2), np.float32), np.zeros(0))[
        "angular_velocity"
    ].shape == (0, 3, 50, 25, 2)


def test_registry():
    assert mod.MODALITIES == (
        "joint", "velocity", "acceleration", "bone", "rotation_axis", "angular_velocity",
    )  # fmt: skip


# --- semantics pinned by hand ----------------------------------------------------------------


def test_small_torso_normal_and_3v_axes():
    X = np.zeros((3, 1, 25, 1))
    X[:, 0, 1, 0] = [0, -1, 0]  # joint 2 below joint 21 (origin)
    X[:, 0, 8, 0] = [-1, 0, 0]  # joint 9 (right shoulder)
    X[:, 0, 4, 0] = [1, 0, 0]  # joint 5 (left shoulder)
    B = mod.bones(X)
    # (X2 - X9) x (X5 - X9) = (1, -1, 0) x (2, 0, 0) = (0, 0, 2) -> unit z
    np.testing.assert_array_equal(B[:, 0, 20, 0], [0, 0, 1])
    np.testing.assert_array_equal(mod.bones(X, bones="3v")[:, 0, 20, 0], [0, 0, 0])
    # under 3v the bones hanging off joint 21 have a zero partner: no axis, theta 0
    R = mod.rotation_axes(X, bones="3v")
    assert np.all(R[:, 0, [1, 2, 4, 8, 20], 0] == 0)
    # 6v: R_2 = B_2 x n = (0, -1, 0) x (0, 0, 1) = (-1, 0, 0), theta_2 = pi/2
    np.testing.assert_array_equal(mod.rotation_axes(X)[:, 0, 1, 0], [-1, 0, 0])
    assert mod.joint_angles(X)[0, 0, 1, 0] == pytest.approx(np.pi / 2)


def test_small_zero_vectors_normalise_to_zero_like_f_normalize():
    X = np.zeros((3, 2, 25, 2))
    out = mod.compute_modalities(X, 10, unit_axis=True)
    for name in mod.MODALITIES:
        assert np.all(out[name] == 0), name
    assert np.all(mod.joint_angles(X) == 0)


# --- properties ------------------------------------------------------------------------------

seeds = st.integers(0, 2**32 - 1)


@settings(max_examples=25, deadline=None)
@given(seeds, st.lists(st.floats(-10, 10), min_size=3, max_size=3), st.sampled_from(["6v", "3v"]))
def test_bones_axes_angles_invariant_to_translation(seed, shift, bones):
    X = random_batch(seed, n=1, t=3)
    Y = X + np.array(shift)[None, :, None, None, None]
    np.testing.assert_allclose(mod.bones(Y, bones), mod.bones(X, bones), atol=1e-12)
    np.testing.assert_allclose(
        mod.rotation_axes(Y, bones=bones), mod.rotation_axes(X, bones=bones), atol=1e-11
    )
    np.testing.assert_allclose(mod.joint_angles(Y, bones), mod.joint_angles(X, bones), atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(seeds, st.integers(1, 6), st.integers(1, 300), st.booleans())
def test_constant_sequence_has_zero_velocity_acceleration_and_angular_velocity(seed, t, fc, f32):
    pose = random_batch(seed, n=2, t=1)
    X = np.repeat(pose, t, axis=2).astype(np.float32 if f32 else np.float64)
    out = mod.compute_modalities(X, fc, modalities=["velocity", "acceleration", "angular_velocity"])
    for name, a in out.items():
        assert np.all(a == 0), name


@settings(max_examples=25, deadline=None)
@given(seeds, st.integers(1, 300), st.integers(3, 8))
def test_linear_motion_has_constant_velocity_and_zero_acceleration(seed, fc, t):
    rng = np.random.default_rng(seed)
    X0, u = rng.normal(size=(2, 3, 1, 25, 2))
    X = X0 + u * np.arange(t)[None, :, None, None]
    s = 50 / fc
    np.testing.assert_allclose(
        mod.velocity(X, fc)[:, :-1], np.broadcast_to(s * u, (3, t - 1, 25, 2)), atol=1e-12 * s
    )
    np.testing.assert_allclose(mod.acceleration(X, fc), 0, atol=1e-11 * s * s)


@settings(max_examples=30, deadline=None)
@given(
    seeds,
    st.sampled_from([3, 15, 19]),  # 0-based leaves: head, left foot, right foot
    st.floats(-0.25, 0.25).filter(lambda w: abs(w) > 1e-3),
    st.integers(10, 300),
    st.sampled_from(["6v", "3v"]),
)
def test_rigid_rotation_of_a_bone_gives_omega_along_the_axis(seed, i, rate, fc, bones):
    """Rotate bone i about a fixed axis a through its joint p(i), in the plane of its partner
    bone: theta_i grows by ``rate`` per frame, so Omega_i = -s * rate * a (R = B_i x B_q)."""
    rng = np.random.default_rng(seed)
    T = 6
    pose = rng.normal(size=(3, 25))
    parents = topology(bones)[0]  # written by hand in the twin
    p = parents[i]
    bq = pose[:, p] - pose[:, parents[p]]  # the partner bone: q(i) = p(i) for these leaves
    e1 = bq / np.linalg.norm(bq)
    a = np.cross(e1, rng.normal(size=3))
    a /= np.linalg.norm(a)
    e2 = np.cross(a, e1)
    phi = 1.5 + rate * np.arange(T)  # stays inside (0, pi)
    X = np.repeat(pose[:, None, :, None], T, axis=1)
    X[:, :, i, 0] = pose[:, p, None] + 0.7 * (np.cos(phi) * e1[:, None] + np.sin(phi) * e2[:, None])
    omega = mod.angular_velocity(X, fc, bones=bones)
    s = 50 / fc
    expected = -s * rate * a
    np.testing.assert_allclose(
        omega[:, :-1, i, 0], np.repeat(expected[:, None], T - 1, 1), atol=1e-9
    )
    assert np.all(omega[:, -1] == 0)
    others = np.delete(omega, i, axis=2)
    assert np.all(others == 0)  # nothing else moves


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("joints", "match"),
    [
        (np.zeros((3, 5, 25)), "one sample"),
        (np.zeros((1, 1, 3, 5, 25, 2)), "one sample"),
        (np.zeros((2, 5, 25, 2)), "C=3"),
        (np.zeros((3, 5, 24, 2)), "V=25"),
        (np.zeros((2, 3, 0, 25, 2)), "at least one frame"),
        (np.zeros((3, 5, 25, 0)), "one body"),
        (np.zeros((3, 5, 25, 2), np.int64), "float32 or float64"),
        (np.zeros((3, 5, 25, 2), np.complex128), "float32 or float64"),
        (np.zeros((3, 5, 25, 2), bool), "float32 or float64"),
    ],
)
def test_small_bad_joints_are_clear_errors(joints, match):
    with pytest.raises(ValueError, match=match):
        mod.compute_modalities(joints, 50)
    with pytest.raises(ValueError, match=match):
        mod.bones(joints)


@pytest.mark.parametrize(
    ("frame_count", "match"),
    [
        (np.nan, "finite"),
        (np.inf, "finite"),
        (0, "positive"),
        (-3, "positive"),
        (np.array([50, 0]), "positive"),
        (np.array([50, 60, 70]), r"\(2,\) array"),
        (np.array([[50, 60]]), r"\(2,\) array"),
        ("50", "frame_count"),
        (True, "frame_count"),
        (1 + 2j, "frame_count"),
    ],
)
def test_bad_frame_counts_are_clear_errors(frame_count, match):
    with pytest.raises(ValueError, match=match):
        mod.compute_modalities(np.zeros((2, 3, 5, 25, 2)), frame_count)


def test_other_bad_arguments_are_clear_errors():
    X = np.zeros((3, 5, 25, 2))
    with pytest.raises(ValueError, match="an int for one sample"):
        mod.velocity(X, np.array([50]))
    with pytest.raises(ValueError, match="t_target"):
        mod.velocity(X, 50, t_target=0)
    with pytest.raises(ValueError, match="t_target"):
        mod.velocity(X, 50, t_target=float("nan"))
    with pytest.raises(ValueError, match="unknown modalities speed; expected a comma"):
        mod.compute_modalities(X, 50, modalities=["joint", "speed"])
    with pytest.raises(ValueError, match="'6v', '3v'"):
        mod.compute_modalities(X, 50, bones="4v")
    with pytest.raises(ValueError, match="axis_tol"):
        mod.angular_velocity(X, 50, axis_tol=-1)
    with pytest.raises(ValueError, match="threads"):
        mod.compute_modalities(X, 50, threads=0)


def test_threaded_blocks_equal_one_pass(monkeypatch):
    X = random_batch(13, n=11, t=4)
    fc = np.arange(20, 31)
    one = mod.compute_modalities(X, fc, threads=1)
    monkeypatch.setattr(mod, "_MIN_SAMPLES_PER_THREAD", 2)
    threaded = mod.compute_modalities(X, fc, threads=3)
    for name in mod.MODALITIES:
        np.testing.assert_array_equal(threaded[name], one[name])


def test_caller_given_buffers_receive_the_same_results() -> None:
    """``out=``: the caller's arrays are written in place and returned, for a batch and for
    one sample; what was in them before does not leak into the result."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 3, 20, 25, 2)).astype(np.float32)
    fc = rng.integers(20, 120, size=40)
    names = ["joint", "velocity", "bone", "angular_velocity"]
    fresh = mod.compute_modalities(X, fc, modalities=names)
    out = {m: np.full_like(X, np.nan) for m in names}
    got = mod.compute_modalities(X, fc, modalities=names, out=out, threads=2)
    for m in names:
        assert got[m] is out[m]
        np.testing.assert_array_equal(got[m], fresh[m])
    one = {"bone": np.full_like(X[0], 7.0)}
    got = mod.compute_modalities(X[0], fc[0], modalities=["bone", "velocity"], out=one)
    assert got["bone"] is one["bone"]
    np.testing.assert_array_equal(got["bone"], fresh["bone"][0])


@pytest.mark.parametrize(
    ("out", "match"),
    [
        ({"bone": np.zeros((4, 3, 10, 25, 2), np.float64)}, "shape and dtype of joints"),
        ({"bone": np.zeros((4, 3, 10, 25, 3), np.float32)}, "shape and dtype of joints"),
        ({"bone": np.zeros((2, 4, 3, 10, 25), np.float32).transpose(1, 2, 3, 4, 0)}, "C-contig"),
        ({"bone": np.zeros((4, 3, 10, 25, 2), np.float32)[:, :, :, :, ::-1]}, "C-contiguous"),
        ({"velocity": np.zeros((4, 3, 10, 25, 2), np.float32)}, "not among the modalities"),
        ({"bone": [0.0]}, "must be a numpy array"),
    ],
)
def test_bad_output_buffers_are_clear_errors(out, match) -> None:
    X = np.zeros((4, 3, 10, 25, 2), np.float32)
    with pytest.raises(ValueError, match=match):
        mod.compute_modalities(X, 10, modalities=["bone"], out=out)


def _resident_pages(a: np.ndarray) -> np.ndarray:
    """Which pages of ``a`` (page-aligned) are in memory, by ``mincore``."""
    import ctypes
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    pages = -(-a.nbytes // mmap.PAGESIZE)
    vec = (ctypes.c_ubyte * pages)()
    ret = libc.mincore(ctypes.c_void_p(a.ctypes.data), ctypes.c_size_t(a.nbytes), vec)
    assert ret == 0, ctypes.get_errno()
    return np.frombuffer(vec, np.uint8) & 1


def test_prefault_makes_whole_pages_of_the_rows_present_and_leaves_them_zero() -> None:
    """A thread populates its rows of a fresh output before the kernel writes them; rows that
    share a page with a neighbour's block are left to fault in, so threads never overlap."""
    if mod._madvise is None:
        pytest.skip("no madvise here (not Linux)")
    import mmap

    a = mod._fresh((1024, 3 * mmap.PAGESIZE // 8 + 5), np.float32)  # rows: 1.5 pages + 20 B
    assert a.nbytes >= mod._OWN_MAP_BYTES  # a map of its own, page-aligned, untouched
    assert not _resident_pages(a).any()
    mod._prefault([a], 10, 20)
    if mod._madvise is None:
        pytest.skip("MADV_POPULATE_WRITE unsupported by this kernel (before Linux 5.14)")
    resident = _resident_pages(a)
    row = a.strides[0]
    first = -(-(a.ctypes.data + 10 * row) // mmap.PAGESIZE) - a.ctypes.data // mmap.PAGESIZE
    last = (a.ctypes.data + 20 * row) // mmap.PAGESIZE - a.ctypes.data // mmap.PAGESIZE
    assert resident[first:last].all() and last - first > 10
    assert not resident[: first - 1].any() and not resident[last + 1 :].any()
    assert not a.any()  # populated, still zero


@pytest.mark.parametrize("madvise", ["bulk", "absent", "failing"])
def test_first_call_results_do_not_depend_on_how_pages_fault_in(monkeypatch, madvise) -> None:
    """Outputs large enough for their own maps, threaded: pre-faulted in bulk, faulted in by
    the kernel, or after a failing madvise (an old kernel) the results are the same."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(300, 3, 50, 25, 2)).astype(np.float32)  # 9 MB an output
    fc = rng.integers(20, 120, size=300)
    monkeypatch.setattr(mod, "_MIN_SAMPLES_PER_THREAD", 2)
    expected = mod.compute_modalities(X, fc, threads=1, out={m: np.empty_like(X) for m in
                                                             mod.MODALITIES})  # fmt: skip
    calls = []
    if madvise == "absent":
        monkeypatch.setattr(mod, "_madvise", None)
    elif madvise == "failing":
        monkeypatch.setattr(mod, "_madvise", lambda *a: calls.append(a) or -1)
    got = mod.compute_modalities(X, fc, threads=3)
    for name in mod.MODALITIES:
        np.testing.assert_array_equal(got[name], expected[name])
    if madvise == "failing":
        assert len(calls) == 1 and mod._madvise is None  # tried once, then pages fault in
