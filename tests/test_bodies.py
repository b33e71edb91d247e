"""skelmod.bodies: the reference rule is read_xyz; tracking rules on real and synthetic files."""

from __future__ import annotations

import numpy as np
import pytest
from naive_reader import naive_read_xyz  # tests/ is on sys.path under pytest

from skelmod.bodies import (
    BODY_RULES,
    DROP_REASONS,
    SelectionStats,
    motion_energy,
    select_bodies,
)
from skelmod.ntu import RawSkeleton, read_skeleton

NOISE_BODY_FILES = ("A024", "A026", "A027", "A029")  # S001C001P001R001: an extra noise body


def make_raw(frames, name="synthetic") -> RawSkeleton:
    """A RawSkeleton from ``frames``: per frame a list of ``(body_id, xyz (25, 3))``."""
    body_frame, body_ids, xyz = [], [], []
    for t, bodies in enumerate(frames):
        for body_id, x in bodies:
            body_frame.append(t)
            body_ids.append(body_id)
            xyz.append(x)
    B = len(body_ids)
    joints = np.zeros((B, 25, 12))
    if B:
        joints[..., :3] = np.asarray(xyz)
    return RawSkeleton(
        name=name,
        frame_count=len(frames),
        bodies_per_frame=np.array([len(b) for b in frames], dtype=np.int32),
        body_frame=np.array(body_frame, dtype=np.int32),
        body_ids=np.array(body_ids, dtype=np.int64),
        body_info=np.zeros((B, 9)),
        joints=joints,
    )


def person(rng, F, x0=0.0, motion=0.01, width=0.4, height=1.6):
    """``(F, 25, 3)`` of a standing person (taller than wide) at x0, 3 m away, moving a bit."""
    base = np.stack(
        (
            rng.uniform(-width / 2, width / 2, 25),
            rng.uniform(-height / 2, height / 2, 25),
            rng.uniform(-0.1, 0.1, 25),
        ),
        axis=1,
    )
    base[0, :2] = (-width / 2, -height / 2)  # make the spans exactly width x height
    base[1, :2] = (width / 2, height / 2)
    walk = np.cumsum(rng.normal(0, motion, size=(F, 1, 3)), axis=0)
    return base[None] + walk + np.array([x0, 0.0, 3.0])


def naive_track_select(raw, max_bodies=2):
    """Plain twin of the "energy" rule: tracks by bodyID, energy = sum of per-joint variances."""
    tracks = {}
    for r in range(len(raw.body_ids)):
        tracks.setdefault(int(raw.body_ids[r]), []).append(r)
    energy = {}
    for body_id, rows in tracks.items():
        x = raw.xyz[rows]
        total = 0.0
        for v in range(25):
            for c in range(3):
                total += float(np.var(x[:, v, c]))
        energy[body_id] = total
    order = sorted(tracks, key=lambda b: -energy[b])  # ties: first appearance (dict order)
    D = np.zeros((3, raw.frame_count, 25, max_bodies))
    for slot, body_id in enumerate(order[:max_bodies]):
        for r in tracks[body_id]:
            D[:, raw.body_frame[r], :, slot] = raw.xyz[r].T
    return D


# --- real files ------------------------------------------------------------------------------


def test_reference_rule_is_read_xyz_on_real_files(ntu_real_files):
    for path in ntu_real_files:
        raw = read_skeleton(path)
        D, stats = select_bodies(raw)
        assert D.dtype == np.float64 and D.shape == (3, raw.frame_count, 25, 2)
        np.testing.assert_array_equal(D, naive_read_xyz(path), err_msg=path.name)
        assert stats.dropped == {"listing_order": 0}
        assert stats.bodies_seen == stats.bodies_kept == len(np.unique(raw.body_ids))


def test_energy_rule_matches_its_plain_twin_on_real_files(ntu_real_files):
    for path in ntu_real_files:
        raw = read_skeleton(path)
        for max_bodies in (1, 2):
            D, stats = select_bodies(raw, "energy", max_bodies=max_bodies)
            np.testing.assert_array_equal(D, naive_track_select(raw, max_bodies), path.name)
            n_tracks = len(np.unique(raw.body_ids))
            assert stats.dropped["capacity"] == max(n_tracks - max_bodies, 0)
            assert stats.bodies_kept == min(n_tracks, max_bodies)


@pytest.fixture(scope="module")
def noise_files(ntu_real_files):
    files = [p for p in ntu_real_files if p.stem.endswith(NOISE_BODY_FILES)]
    assert len(files) == len(NOISE_BODY_FILES)
    return files


def _spread_noisy_id(raw):
    """The bodyID whose frames are mostly wider than tall (x-span > 0.8 y-span)."""
    noisy = []
    for body_id in np.unique(raw.body_ids):
        x = raw.xyz[raw.body_ids == body_id]
        span = x.max(axis=1) - x.min(axis=1)
        if np.mean(span[:, 0] > 0.8 * span[:, 1]) > 0.5:
            noisy.append(int(body_id))
    return noisy


def test_denoise_drops_the_noise_body_of_real_files(noise_files):
    for path in noise_files:
        raw = read_skeleton(path)
        noisy = _spread_noisy_id(raw)
        assert len(noisy) == 1, path.name
        D_ref, s_ref = select_bodies(raw, "reference")
        assert s_ref.bodies_kept == 2  # the reference keeps the noise body in its listed slot
        D, stats = select_bodies(raw, "denoise")
        assert stats.dropped["spread"] == 1 and stats.bodies_kept == 1, path.name
        assert sum(stats.dropped.values()) == 1 and stats.fallbacks == 0
        assert np.all(D[..., 1] == 0)
        actor = raw.body_ids != noisy[0]
        np.testing.assert_array_equal(D[..., 0], raw.xyz[actor].transpose(2, 0, 1))
        # energy alone keeps both tracks when there are only two for two slots
        _, s_energy = select_bodies(raw, "energy")
        assert s_energy.dropped["capacity"] == 0 and s_energy.bodies_kept == 2


def test_denoise_keeps_every_real_actor(ntu_real_files):
    for path in ntu_real_files:
        if path.stem.endswith(NOISE_BODY_FILES):
            continue
        raw = read_skeleton(path)
        D, stats = select_bodies(raw, "denoise")
        assert sum(stats.dropped.values()) == 0, (path.name, stats)
        np.testing.assert_array_equal(D, select_bodies(raw, "energy")[0])


# --- synthetic files -------------------------------------------------------------------------


def test_tracking_follows_body_ids_when_the_listing_order_swaps():
    rng = np.random.default_rng(0)
    F = 30
    a = person(rng, F, x0=-1.0, motion=0.03)  # more energy than b
    b = person(rng, F, x0=1.0, motion=0.005)
    frames = [
        [(7, a[t]), (9, b[t])] if t % 3 else [(9, b[t]), (7, a[t])] for t in range(F)
    ]  # every third frame lists b first
    raw = make_raw(frames)
    D_ref, _ = select_bodies(raw, "reference")
    swapped = np.arange(F) % 3 == 0
    np.testing.assert_array_equal(D_ref[..., 0][:, swapped], b[swapped].transpose(2, 0, 1))
    np.testing.assert_array_equal(D_ref[..., 0][:, ~swapped], a[~swapped].transpose(2, 0, 1))
    for rule in ("energy", "denoise"):
        D, stats = select_bodies(raw, rule)
        np.testing.assert_array_equal(D[..., 0], a.transpose(2, 0, 1))
        np.testing.assert_array_equal(D[..., 1], b.transpose(2, 0, 1))
        assert stats.bodies_seen == stats.bodies_kept == 2
        assert sum(stats.dropped.values()) == 0


def test_third_bodies_and_empty_frames():
    rng = np.random.default_rng(1)
    F = 20
    a = person(rng, F, motion=0.002)
    b = person(rng, F, x0=1.0, motion=0.05)
    c = person(rng, F, x0=-1.0, motion=0.02)
    frames = [[(1, a[t]), (2, b[t]), (3, c[t])] for t in range(F)]
    frames[4] = []  # nobody tracked
    raw = make_raw(frames)
    D, stats = select_bodies(raw, "reference")
    assert stats.dropped == {"listing_order": F - 1} and stats.bodies_kept == 2
    assert stats.bodies_seen == 3
    assert np.all(D[:, 4] == 0)
    np.testing.assert_array_equal(D, naive_track_select_reference(frames))
    D, stats = select_bodies(raw, "energy")
    assert stats.dropped["capacity"] == 1 and stats.bodies_kept == 2
    keep = np.arange(F) != 4
    np.testing.assert_array_equal(D[..., 0][:, keep], b[keep].transpose(2, 0, 1))  # most energy
    np.testing.assert_array_equal(D[..., 1][:, keep], c[keep].transpose(2, 0, 1))
    assert np.all(D[:, 4] == 0)
    assert motion_energy(b) > motion_energy(c) > motion_energy(a)


def naive_track_select_reference(frames, max_bodies=2):
    """read_xyz on the synthetic frame list: slot = listing order."""
    D = np.zeros((3, len(frames), 25, max_bodies))
    for t, bodies in enumerate(frames):
        for m, (_, x) in enumerate(bodies):
            if m < max_bodies:
                D[:, t, :, m] = x.T
    return D


def test_denoise_drops_short_wide_and_jittery_tracks():
    rng = np.random.default_rng(2)
    F = 40
    actor = person(rng, F)
    short = person(rng, 5, x0=1.0, motion=0.05)  # 5 frames < 11
    wide = person(rng, F, x0=-1.0, width=1.6, height=0.5, motion=0.05)  # lying / smeared
    jumpy = person(rng, F, x0=2.0, motion=0.3)  # 0.3 m per frame
    frames = [[(1, actor[t]), (3, wide[t]), (4, jumpy[t])] for t in range(F)]
    for t in range(5):
        frames[10 + t].append((2, short[t]))
    raw = make_raw(frames)
    D, stats = select_bodies(raw, "denoise")
    assert stats.dropped == {
        "duplicate_id": 0,
        "length": 1,
        "spread": 1,
        "jitter": 1,
        "capacity": 0,
    }
    assert stats.bodies_seen == 4 and stats.bodies_kept == 1 and stats.fallbacks == 0
    np.testing.assert_array_equal(D[..., 0], actor.transpose(2, 0, 1))
    assert np.all(D[..., 1] == 0)
    # thresholds are keyword options
    _, loose = select_bodies(raw, "denoise", min_frames=3, max_jitter=1.0, max_spread_ratio=5.0)
    assert sum(loose.dropped.values()) == 2 and loose.dropped["capacity"] == 2
    # the energy rule keeps the two most energetic tracks whatever they look like
    D, _ = select_bodies(raw, "energy")
    np.testing.assert_array_equal(D[:, :, :, 0], jumpy.transpose(2, 0, 1))


def test_denoise_keeps_the_longest_track_when_all_look_like_noise():
    rng = np.random.default_rng(3)
    a = person(rng, 8)
    b = person(rng, 6, x0=1.0)
    frames = [[(5, a[t])] + ([(6, b[t])] if t < 6 else []) for t in range(8)]
    D, stats = select_bodies(make_raw(frames), "denoise")
    assert stats.fallbacks == 1 and stats.bodies_kept == 1
    assert stats.dropped["length"] == 1  # b; a is kept anyway
    np.testing.assert_array_equal(D[..., 0], a.transpose(2, 0, 1))


def test_duplicate_body_id_in_one_frame_keeps_the_first_listing():
    rng = np.random.default_rng(4)
    a = person(rng, 12)
    ghost = person(rng, 1, x0=3.0)[0]
    frames = [[(1, a[t])] for t in range(12)]
    frames[6].append((1, ghost))
    D, stats = select_bodies(make_raw(frames), "energy")
    assert stats.dropped["duplicate_id"] == 1
    np.testing.assert_array_equal(D[..., 0], a.transpose(2, 0, 1))


def test_empty_file_and_stats_sum():
    raw = make_raw([[], [], []])
    for rule in BODY_RULES:
        D, stats = select_bodies(raw, rule)
        assert D.shape == (3, 3, 25, 2) and not D.any()
        assert stats.bodies_seen == stats.bodies_kept == 0
        assert set(stats.dropped) == set(DROP_REASONS[rule])
    total = SelectionStats(2, 1, {"spread": 1}, 0) + SelectionStats(3, 2, {"spread": 2, "x": 1}, 1)
    assert total == SelectionStats(5, 3, {"spread": 3, "x": 1}, 1)


def test_bad_arguments_are_named():
    raw = make_raw([[]])
    with pytest.raises(ValueError, match="unknown body rule 'tallest'"):
        select_bodies(raw, "tallest")
    with pytest.raises(ValueError, match="only apply to rule 'denoise'"):
        select_bodies(raw, "energy", min_frames=3)
    with pytest.raises(ValueError, match=r"unknown denoise thresholds \['min_len'\]"):
        select_bodies(raw, "denoise", min_len=3)
    with pytest.raises(ValueError, match="max_bodies must be >= 1"):
        select_bodies(raw, max_bodies=0)
