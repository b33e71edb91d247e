"""The complete set of NTU RGB+D 60/120 sample names, stated as a compact table.

A name is ``SsssCcccPpppRrrrAaaa`` (setup, camera, performer/subject, replication, action).
Every (setup, subject) pair below was recorded by all three cameras, twice (replications 1
and 2), for every action of its setup's range: actions 1-60 in setups 1-17 (NTU-60, also
the first part of NTU-120) and actions 61-120 in setups 18-32 (the NTU-120 extension).
That gives 158 pairs x 360 = 56,880 names for NTU-60 and 318 pairs x 360 = 114,480 for
NTU-120, the sizes the dataset authors publish.

Source of the table: the per-sample statistics that the SGN / CTR-GCN preprocessing ships,
``data/ntu120/statistics/performer.txt`` (commit 015a8a87d) and
``data/ntu120/statistics/skes_available_name.txt`` (commit e1eef2d50) of the public
repository Uason-Chen/CTR-GCN. Those files list the 113,945 samples that have skeletons,
in sorted name order; the full name space is that list plus the 535 names of the official
``NTU_RGBD120_samples_with_missing_skeletons.txt``. The subject lists were read from
``performer.txt`` per setup and checked against it exactly: the names generated here minus
the missing list reproduce its 113,945 lines and its 321,401 characters, and a read of
``skes_available_name.txt`` at a computed offset gives the predicted names.
"""

from __future__ import annotations

#: Subjects (performer ids) recorded in each setup; sorted, 1-based.
SETUP_SUBJECTS: dict[int, tuple[int, ...]] = {
    1: (1, 2, 3, 4, 5, 6, 7, 8),
    2: (3, 7, 8, 9, 10, 11, 12, 13, 14),
    3: (1, 2, 7, 8, 15, 16, 17, 18, 19),
    4: (3, 7, 8, 20),
    5: (4, 10, 13, 15, 16, 17, 18, 21),
    6: (1, 7, 8, 15, 16, 17, 19, 22, 23, 24),
    7: (1, 7, 8, 15, 16, 17, 18, 19, 25, 26, 27, 28),
    8: (1, 7, 8, 15, 19, 25, 29, 30, 31, 32, 33, 34, 35, 36),
    9: (7, 8, 15, 16, 17, 19, 25),
    10: (7, 8, 13, 15, 16, 17, 18, 19, 21, 25),
    11: (1, 2, 7, 8, 15, 16, 17, 18, 19, 25, 27, 28, 38),
    12: (7, 8, 15, 16, 17, 18, 19, 25, 27, 28, 37),
    13: (7, 8, 15, 16, 17, 18, 19, 25, 27, 28, 37),
    14: (7, 8, 15, 17, 19, 25, 27, 37, 39),
    15: (7, 8, 15, 16, 17, 19, 25, 37),
    16: (7, 8, 19, 21, 25, 39, 40),
    17: (3, 7, 8, 9, 15, 16, 17, 20),
    18: (8, 41, 42, 43, 44, 45),
    19: (8, 41, 42, 46, 47, 48, 49, 50, 51),
    20: (8, 41, 43, 44, 52, 53, 54),
    21: (55, 56, 57, 58, 59, 60),
    22: (61, 62, 63, 64, 65, 66, 67),
    23: (55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68),
    24: (57, 60, 61, 62, 63, 64, 67),
    25: (55, 56, 58, 59, 65, 66, 68),
    26: (8, 41, 44, 49, 50, 51, 69, 70, 71, 72, 74, 75, 76, 77),
    27: (6, 8, 11, 41, 43, 44, 78, 79, 80, 81, 82, 83, 84, 85, 86),
    28: (8, 41, 42, 43, 46, 48, 70, 73, 87),
    29: (6, 8, 41, 43, 44, 48, 49, 51, 67, 74, 75, 80, 88, 89, 90),
    30: (8, 11, 41, 43, 44, 48, 67, 75, 76, 81, 85, 88, 91, 92, 93, 94, 95, 96),
    31: (6, 8, 41, 42, 43, 44, 51, 67, 82, 85, 96, 97, 98, 99, 100, 101),
    32: (8, 41, 43, 44, 67, 102, 103, 104, 105, 106),
}

CAMERAS = (1, 2, 3)
REPLICATIONS = (1, 2)
#: Last setup of each dataset; NTU-60 is setups 1-17 of NTU-120.
LAST_SETUP = {"ntu60": 17, "ntu120": 32}


def setup_actions(setup: int) -> range:
    """Action ids recorded in ``setup``: 1-60 in setups 1-17, 61-120 in setups 18-32."""
    return range(1, 61) if setup <= 17 else range(61, 121)


def all_names(dataset: str) -> list[str]:
    """Every sample name of ``dataset`` ("ntu60": 56,880, "ntu120": 114,480), sorted."""
    if dataset not in LAST_SETUP:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(LAST_SETUP)}")
    return sorted(
        f"S{s:03d}C{c:03d}P{p:03d}R{r:03d}A{a:03d}"
        for s in range(1, LAST_SETUP[dataset] + 1)
        for c in CAMERAS
        for p in SETUP_SUBJECTS[s]
        for r in REPLICATIONS
        for a in setup_actions(s)
    )
