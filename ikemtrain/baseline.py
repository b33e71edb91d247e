"""The one rule for a gain from pre-training: over the *strongest* random encoder.

A random encoder is evaluated by the same probe twice: with BatchNorm statistics re-estimated on
the training split (``bn_estimated``) and with the raw statistics of its initialisation
(``raw_bn``, the literal linear-evaluation protocol). Which is stronger depends on the probe:
without standardisation the raw features (~1e-8) sit at chance; with the standardised probe
of the CPU presets the raw network is a random-feature machine and often the stronger one
(``benchmarks/RESULTS.md``). A reported gain is ``pre-trained - max(raw_bn, bn_estimated)``
for the same stream, protocol and seed, with both random rows shown beside it; kNN alike.
"""

from __future__ import annotations

from typing import Any

__all__ = ["random_baseline"]


def random_baseline(pretrained: float, bn_estimated: float, raw_bn: float) -> dict[str, Any]:
    """``{"pretrained", "bn_estimated", "raw_bn", "strongest", "strongest_row", "gain"}`` for
    one stream's top-1 (percent): ``gain`` is over the stronger of the two random rows
    (``strongest_row`` names it: ``"raw_bn"`` or ``"bn_estimated"``)."""
    row = "raw_bn" if raw_bn >= bn_estimated else "bn_estimated"
    strongest = max(raw_bn, bn_estimated)
    return {
        "pretrained": pretrained,
        "bn_estimated": bn_estimated,
        "raw_bn": raw_bn,
        "strongest": strongest,
        "strongest_row": row,
        "gain": pretrained - strongest,
    }
