"""A synthetic data set: many samples per class, named and spread over the NTU benchmarks,
each reproducible from ``(seed, label, index)`` alone."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from skelmod.errors import SkelmodError

from .actions import ACTIONS
from .sample import synthesize_sample
from .writer import write_skeleton


def sample_rng(seed: int, label: int, index: int) -> np.random.Generator:
    """The generator of sample ``index`` of class ``label``: independent of how many are made."""
    return np.random.default_rng(np.random.SeedSequence([seed, label, index]))


def _name_table(
    seed: int, label: int, setups: tuple[int, ...], subjects: tuple[int, ...]
) -> np.ndarray:
    """A fixed shuffle of all (setup, subject, replication) triples of one class."""
    grid = np.array(
        [(s, p, r) for s in setups for p in subjects for r in (1, 2)], dtype=np.int64
    ).reshape(-1, 3)
    rng = np.random.default_rng(np.random.SeedSequence([seed, label, 1_000_037]))
    return grid[rng.permutation(len(grid))]


def generate(
    out_dir: str | Path,
    classes: int,
    per_class: int,
    seed: int,
    *,
    subjects: Iterable[int] = tuple(range(1, 41)),
    cameras: int = 3,
    setups: Iterable[int] = tuple(range(1, 18)),
    crlf: bool = False,
    progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write ``classes * per_class`` files ``SsssCcccPpppRrrrAaaa.skeleton`` into ``out_dir``.

    Classes are the first ``classes`` entries of :data:`ACTIONS` (action id = label + 1).
    Sample ``i`` of a class uses camera ``i % cameras + 1`` and the ``i // cameras``-th entry
    of a seeded shuffle of (setup, subject, replication), so names are unique and subjects and
    cameras are spread over the xsub/xview train and val sets (default subjects 1..40 and
    setups 1..17 are NTU-60's). ``progress(done, total)`` is called after each file.
    Returns the paths written, class by class.

    ``out_dir`` must be absent or empty, so generated files never replace or mix with anyone's
    recordings (their names are NTU's); ``overwrite`` writes into a non-empty folder anyway,
    replacing files of the same name and leaving the others.
    """
    if not 1 <= classes <= len(ACTIONS):
        raise SkelmodError(
            f"classes must be in 1..{len(ACTIONS)} (the action programs), got {classes}",
            param="classes",
        )
    if per_class < 1:
        raise SkelmodError(f"per_class must be at least 1, got {per_class}", param="per_class")
    if not 1 <= cameras <= 3:
        raise SkelmodError(f"cameras must be 1, 2 or 3, got {cameras}", param="cameras")
    subjects, setups = tuple(sorted(set(subjects))), tuple(sorted(set(setups)))
    for what, ids in (("subjects", subjects), ("setups", setups)):
        if not ids or ids[0] < 1 or ids[-1] > 999:
            raise SkelmodError(
                f"{what} must be a non-empty set of ids in 1..999, got {ids}", param=what
            )
    capacity = cameras * 2 * len(subjects) * len(setups)
    if per_class > capacity:
        raise SkelmodError(
            f"per_class {per_class} exceeds the {capacity} distinct names that {cameras} cameras, "
            f"2 replications, {len(subjects)} subjects and {len(setups)} setups allow",
            param="per_class",
        )
    out = Path(out_dir)
    if out.is_dir() and not overwrite and any(out.iterdir()):
        from skelmod.convert import OutputError  # convert's output rule, a usage error

        raise OutputError(
            f"{out} is not empty; give a new folder, or set overwrite to write into it "
            "(files of the same name are replaced)",
            param="overwrite",
        )
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    total = classes * per_class
    for label in range(classes):
        table = _name_table(seed, label, setups, subjects)
        for i in range(per_class):
            setup, subject, replication = (int(v) for v in table[i // cameras])
            sample = synthesize_sample(
                label,
                sample_rng(seed, label, i),
                setup=setup,
                camera=i % cameras + 1,
                subject=subject,
                replication=replication,
                world_seed=seed,
            )
            path = out / f"{sample.name}.skeleton"
            write_skeleton(path, sample, crlf=crlf)
            paths.append(path)
            if progress is not None:
                progress(len(paths), total)
    return paths
