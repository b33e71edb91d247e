"""Body selection: which recorded bodies fill the ``M`` body slots of a sample.

A raw NTU file lists, per frame, every body the Kinect tracked
(docs/data.md, "NTU files, names and splits"). A sample holds ``max_bodies`` (M=2) body
slots. Three rules fill them (docs/method.md, "Data and normalisation"):

``"reference"`` (default)
    Exactly the authors' reader: slot m of frame t is the m-th body *listed* in frame t;
    a third or later listed body is dropped; frames without bodies stay all-zero. There is
    no tracking, so slots swap identity when the listing order changes (listing-order bodies, kept).
``"energy"``
    Bodies are tracked by ``bodyID`` across frames; the ``max_bodies`` tracks with the most
    motion energy are kept, as in the 2s-AGCN / MS-G3D preprocessing. Each kept track sits in
    one fixed slot (slot 0 = most energy) in every frame it appears in.
``"denoise"``
    Tracks that are too short-lived, too spread out or too jittery are dropped first (the
    thresholds below, after the common NTU denoising of SGN / View-Adaptive); then the
    ``max_bodies`` tracks with the most energy are kept, as for ``"energy"``.

Motion energy of a track is ``sum_{v,c} Var_t X[c, t, v]`` over the frames the track appears
in: the variance over time of each coordinate of each joint, summed over the 25 joints and
the 3 coordinates.

The output ``D`` has the layout of ``skelmod.layout``: ``(C=3, F, V=25, max_bodies)`` float64,
F = header frame count, joint index = NTU id - 1, absent bodies all-zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from skelmod.layout import C, V
from skelmod.options import BODY_RULES

if TYPE_CHECKING:
    from skelmod.ntu import RawSkeleton


#: Thresholds of the ``"denoise"`` rule, stated once. Override them by keyword in
#: :func:`select_bodies`.
#:
#: ``min_frames``
#:     a track seen in fewer frames is dropped (reason ``"length"``); SGN drops tracks of
#:     length <= 10, i.e. keeps length >= 11.
#: ``max_spread_ratio`` and ``max_noisy_fraction``
#:     a frame of a track is *noisy* when its x-span exceeds ``max_spread_ratio`` times its
#:     y-span (a lying or smeared "body": people stand taller than wide); a track whose share
#:     of noisy frames is ``>= max_noisy_fraction`` is dropped (reason ``"spread"``). Both are
#:     SGN's values (0.8 and 0.69754).
#: ``max_jitter``
#:     a track whose mean per-frame joint displacement (metres, mean over joints and over pairs
#:     of consecutive frames) exceeds it is dropped (reason ``"jitter"``). In the 46 real NTU
#:     files the actors range from 0.006 to 0.048 m/frame and the noise bodies from 0.028 to
#:     0.032, so jitter cannot tell those apart; 0.1 m/frame (3 m/s for every joint on average
#:     at 30 fps) is twice the fastest real track and only catches tracking failures that jump.
DENOISE_DEFAULTS: dict[str, float] = {
    "min_frames": 11,
    "max_spread_ratio": 0.8,
    "max_noisy_fraction": 0.69754,
    "max_jitter": 0.1,
}

#: Drop reasons each rule reports in ``SelectionStats.dropped`` (always all present, maybe 0).
#: ``"listing_order"`` counts body *records* (one body in one frame) listed at slot >= max_bodies;
#: ``"duplicate_id"`` counts records repeating a bodyID already seen in the same frame (the first
#: one is kept); every other reason counts whole tracks.
DROP_REASONS = {
    "reference": ("listing_order",),
    "energy": ("duplicate_id", "capacity"),
    "denoise": ("duplicate_id", "length", "spread", "jitter", "capacity"),
}


@dataclass
class SelectionStats:
    """What body selection saw and dropped for one sample (or, summed with ``+``, for a run).

    bodies_seen: distinct ``bodyID`` values in the file (tracks).
    bodies_kept: distinct ``bodyID`` values that fill a slot in at least one frame.
    dropped: drop reason -> count (see ``DROP_REASONS`` for the units).
    fallbacks: samples where ``"denoise"`` dropped every track and kept the longest one anyway.
    """

    bodies_seen: int = 0
    bodies_kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    fallbacks: int = 0

    def __add__(self, other: SelectionStats) -> SelectionStats:
        if not isinstance(other, SelectionStats):
            return NotImplemented
        dropped = dict(self.dropped)
        for reason, n in other.dropped.items():
            dropped[reason] = dropped.get(reason, 0) + n
        return SelectionStats(
            self.bodies_seen + other.bodies_seen,
            self.bodies_kept + other.bodies_kept,
            dropped,
            self.fallbacks + other.fallbacks,
        )


def select_bodies(
    raw: RawSkeleton, rule: str = "reference", max_bodies: int = 2, **thresholds: float
) -> tuple[np.ndarray, SelectionStats]:
    """Fill ``max_bodies`` body slots from a parsed file.

    Args:
        raw: a :class:`skelmod.ntu.RawSkeleton` (uses ``frame_count``, ``bodies_per_frame``,
            ``body_frame``, ``body_ids`` and ``xyz``).
        rule: one of :data:`BODY_RULES`.
        max_bodies: number of body slots M (2 for NTU).
        **thresholds: ``"denoise"`` only; any key of :data:`DENOISE_DEFAULTS`.

    Returns:
        ``D`` of shape ``(3, F, 25, max_bodies)`` float64 with F = ``raw.frame_count`` (for
        ``"reference"`` exactly the authors' reader), and the :class:`SelectionStats`.
    """
    if rule not in BODY_RULES:
        raise ValueError(f"unknown body rule {rule!r}; expected one of {BODY_RULES}")
    if isinstance(max_bodies, bool) or not isinstance(max_bodies, (int, np.integer)):
        raise TypeError(f"max_bodies must be an int, found {type(max_bodies).__name__}")
    if max_bodies < 1:
        raise ValueError(f"max_bodies must be >= 1, found {max_bodies}")
    if thresholds and rule != "denoise":
        raise ValueError(
            f"thresholds {sorted(thresholds)} only apply to rule 'denoise', not {rule!r}"
        )
    unknown = sorted(set(thresholds) - set(DENOISE_DEFAULTS))
    if unknown:
        raise ValueError(
            f"unknown denoise thresholds {unknown}; expected some of {sorted(DENOISE_DEFAULTS)}"
        )
    frame_count, body_frame, body_ids, xyz = _checked_arrays(raw)

    D = np.zeros((C, frame_count, V, max_bodies), dtype=np.float64)
    seen = int(np.unique(body_ids).size)
    if rule == "reference":
        return _select_reference(D, body_frame, body_ids, xyz, seen)
    return _select_tracks(D, body_frame, body_ids, xyz, seen, rule, thresholds)


def _checked_arrays(raw: RawSkeleton) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    frame_count = int(raw.frame_count)
    name = getattr(raw, "name", "<RawSkeleton>")
    body_frame = np.asarray(raw.body_frame, dtype=np.int64)
    body_ids = np.asarray(raw.body_ids)
    xyz = np.ascontiguousarray(raw.xyz, dtype=np.float64)  # a strided view of joints in ntu
    n = body_frame.shape[0]
    if body_ids.shape != (n,) or xyz.shape != (n, V, C):
        raise ValueError(
            f"{name}: inconsistent RawSkeleton arrays: body_frame {body_frame.shape}, "
            f"body_ids {body_ids.shape}, xyz {xyz.shape}; expected (B,), (B,), (B, {V}, {C})"
        )
    if n and (body_frame.min() < 0 or body_frame.max() >= frame_count):
        raise ValueError(
            f"{name}: body_frame must lie in [0, {frame_count}), "
            f"found [{body_frame.min()}, {body_frame.max()}]"
        )
    if n and np.any(np.diff(body_frame) < 0):
        raise ValueError(f"{name}: body_frame must be in file order (non-decreasing)")
    return frame_count, body_frame, body_ids, xyz


def _select_reference(D, body_frame, body_ids, xyz, seen):
    counts = np.bincount(body_frame, minlength=D.shape[1])
    first_of_frame = np.cumsum(counts) - counts
    slot = np.arange(body_frame.size) - first_of_frame[body_frame]
    keep = slot < D.shape[3]
    # Advanced indices on axes 1 and 3 around a slice: the indexed view is (n, C, V).
    D[:, body_frame[keep], :, slot[keep]] = xyz[keep].transpose(0, 2, 1)
    stats = SelectionStats(
        bodies_seen=seen,
        bodies_kept=int(np.unique(body_ids[keep]).size),
        dropped={"listing_order": int(np.count_nonzero(~keep))},
    )
    return D, stats


def _tracks(body_frame, body_ids, xyz):
    """Split records into tracks by bodyID, in order of first appearance.

    Returns a list of ``(frames (n,), xyz (n, V, C))`` and the number of duplicate records
    (a bodyID listed twice in one frame; the first listing is kept).
    """
    uniq, first, inverse = np.unique(body_ids, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    tracks = []
    duplicates = 0
    for u in order:
        rows = np.flatnonzero(inverse == u)
        frames = body_frame[rows]
        fresh = np.ones(rows.size, dtype=bool)
        fresh[1:] = frames[1:] != frames[:-1]
        duplicates += int(rows.size - np.count_nonzero(fresh))
        tracks.append((frames[fresh], xyz[rows[fresh]]))
    return tracks, duplicates


def motion_energy(track_xyz: np.ndarray) -> float:
    """Motion energy of one track ``(n, V, C)``: ``sum_{v,c} Var_t``; 0 for a single frame."""
    return float(track_xyz.var(axis=0).sum())


def _noisy_fraction(track_xyz: np.ndarray, max_spread_ratio: float) -> float:
    xy = track_xyz[:, :, :2].transpose(0, 2, 1).copy()  # (n, 2, V): reduce over contiguous V
    span = xy.max(axis=2) - xy.min(axis=2)
    return float(np.mean(span[:, 0] > max_spread_ratio * span[:, 1]))


def _jitter(frames: np.ndarray, track_xyz: np.ndarray) -> float:
    consecutive = np.diff(frames) == 1
    if not consecutive.any():
        return 0.0
    step = np.linalg.norm(np.diff(track_xyz, axis=0), axis=2).mean(axis=1)  # (n-1,)
    return float(step[consecutive].mean())


def _select_tracks(D, body_frame, body_ids, xyz, seen, rule, thresholds):
    tracks, duplicates = _tracks(body_frame, body_ids, xyz)
    dropped = dict.fromkeys(DROP_REASONS[rule], 0)
    dropped["duplicate_id"] = duplicates
    fallbacks = 0
    candidates = list(range(len(tracks)))
    if rule == "denoise" and tracks:
        th = {**DENOISE_DEFAULTS, **thresholds}
        reasons = [_denoise_reason(frames, x, th) for frames, x in tracks]
        candidates = [k for k, r in enumerate(reasons) if r is None]
        if not candidates:
            # Every track looks like noise: keep the longest (first listed on ties) so that a
            # sample is never emptied by denoising, and say so.
            longest = max(range(len(tracks)), key=lambda k: (tracks[k][0].size, -k))
            reasons[longest] = None
            candidates = [longest]
            fallbacks = 1
        for r in reasons:
            if r is not None:
                dropped[r] += 1
    energy = np.array([motion_energy(tracks[k][1]) for k in candidates])
    ranked = [candidates[i] for i in np.argsort(-energy, kind="stable")]
    kept = ranked[: D.shape[3]]
    dropped["capacity"] = len(ranked) - len(kept)
    for slot, k in enumerate(kept):
        frames, x = tracks[k]
        D[..., slot][:, frames] = x.transpose(2, 0, 1)
    stats = SelectionStats(seen, len(kept), dropped, fallbacks)
    return D, stats


def _denoise_reason(frames, track_xyz, th) -> str | None:
    if frames.size < th["min_frames"]:
        return "length"
    if _noisy_fraction(track_xyz, th["max_spread_ratio"]) >= th["max_noisy_fraction"]:
        return "spread"
    if _jitter(frames, track_xyz) > th["max_jitter"]:
        return "jitter"
    return None
