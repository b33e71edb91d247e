"""skelmod.fused: reference body selection + normalisation in one compiled call must give,
bit for bit, what its slow twin gives (select_bodies, then normalize_sample), and the same
statistics; the reference pipeline of tests/naive_pipeline.py checks both on real files."""

from __future__ import annotations

import numpy as np
import pytest
from naive_pipeline import naive_process  # tests/ is on sys.path under pytest
from test_bodies import make_raw

from skelmod.bodies import select_bodies
from skelmod.fused import select_and_normalize
from skelmod.normalize import normalize_sample
from skelmod.ntu import read_skeleton

SETTINGS = [(50, True, "sequence"), (50, True, "frame"), (37, False, "none"), (64, True, "none")]


def twin(raw, frames, centre, yaw):
    d, stats = select_bodies(raw, "reference")
    x, length = normalize_sample(d, t_target=frames, centre=centre, yaw=yaw)
    return x, length, stats.bodies_seen, stats.bodies_kept, stats.dropped["listing_order"]


def assert_same(raw, frames, centre, yaw):
    got = select_and_normalize(raw, frames, centre, yaw)
    want = twin(raw, frames, centre, yaw)
    assert got[0].dtype == np.float32 and got[0].shape == want[0].shape
    assert got[0].tobytes() == want[0].tobytes(), raw.name
    assert got[1:] == want[1:], raw.name


@pytest.mark.parametrize(("frames", "centre", "yaw"), SETTINGS)
def test_real_files_equal_the_two_step_path_bit_for_bit(ntu_real_files, frames, centre, yaw):
    for path in ntu_real_files:
        assert_same(read_skeleton(path), frames, centre, yaw)


def test_real_files_are_the_reference_pipeline(ntu_real_files):
    for path in ntu_real_files[:8]:
        x, length, _, _, _ = select_and_normalize(read_skeleton(path))
        want, want_length, _ = naive_process(path)
        np.testing.assert_allclose(x, want, atol=1e-5, err_msg=path.name)
        assert length == want_length


@pytest.mark.parametrize(("frames", "centre", "yaw"), SETTINGS)
def test_odd_listings_equal_the_two_step_path(frames, centre, yaw):
    """Three and four bodies in a frame, swapped listing order, frames without bodies, a body
    missing in the middle (L counts frames, not the last index), one frame, repeated ids."""
    rng = np.random.default_rng(7)

    def body(scale=1.0):
        return rng.normal(scale=scale, size=(25, 3))

    cases = {
        "crowd": [[(1, body()), (2, body()), (3, body()), (4, body())] for _ in range(9)],
        "swaps": [[(1, body()), (2, body())] if t % 2 else [(2, body()), (1, body())]
                  for t in range(20)],
        "gaps": [[] if t in (0, 3, 4) else [(5, body()), (6, body(1e3))] for t in range(12)],
        "one_frame": [[(9, body())]],
        "repeated_id": [[(1, body()), (1, body()), (1, body())] for _ in range(5)],
        "late_second": [[(1, body())] if t < 6 else [(1, body()), (2, body())]
                        for t in range(15)],
    }  # fmt: skip
    for name, frames_of in cases.items():
        assert_same(make_raw(frames_of, name), frames, centre, yaw)


def test_no_valid_frame_is_left_to_the_two_step_path():
    """L = 0 (body 0's joint 1 is zero everywhere): None, so that the caller's two-step path
    raises its EmptySequenceError."""
    x = np.random.default_rng(0).normal(size=(25, 3))
    x[0] = 0.0
    raw = make_raw([[(1, x)], [], [(1, x)]], "empty")
    assert select_and_normalize(raw) is None
    with pytest.raises(ValueError, match="L = 0"):
        normalize_sample(select_bodies(raw)[0])


def test_bad_arguments_are_named():
    raw = make_raw([[(1, np.ones((25, 3)))]])
    with pytest.raises(ValueError, match="unknown yaw mode 'up'"):
        select_and_normalize(raw, yaw="up")
    with pytest.raises(ValueError, match="t_target must be an int >= 1"):
        select_and_normalize(raw, 0)
    with pytest.raises(TypeError, match="raw must be a RawSkeleton"):
        select_and_normalize(np.zeros((3, 4, 25, 2)))
