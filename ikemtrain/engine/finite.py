"""What to say when a training loss turns NaN or infinite (issue 8 point 7).

A non-finite loss has two usual causes: bad data (a NaN, an inf or an absurd coordinate in one
sample, which a learning rate cannot fix) and a divergent optimisation. The message names the
batch (cache rows), the modalities whose loss broke, the samples whose inputs are not finite
or the largest input value, and the check to run, so the user knows which one it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from skelmod.cache import CacheReader

from ..errors import NonFiniteLossError

__all__ = ["batch_rows", "check_finite_features", "non_finite_loss"]

#: Rows listed in full before the message shortens the batch.
_SHOWN_ROWS = 32


def batch_rows(keys: Sequence, indices: np.ndarray, step: int, batch: int) -> np.ndarray:
    """Cache rows of batch ``step``: ``keys`` are the sampler's ``(epoch, i)`` keys of the
    epoch in order, ``indices`` the dataset's positions -> cache rows (``drop_last`` batches)."""
    keys = keys[step * batch : (step + 1) * batch]
    return np.asarray([indices[k[1] if isinstance(k, tuple) else k] for k in keys], np.int64)


def _rows_text(rows: np.ndarray) -> str:
    shown = ", ".join(str(r) for r in rows[:_SHOWN_ROWS])
    more = len(rows) - _SHOWN_ROWS
    return shown + (f", ... ({more} more)" if more > 0 else "")


def _data_check(reader: CacheReader) -> str:
    return (
        f"check those samples of {reader.path}, or re-create the cache with `skelmod convert` "
        "(it rejects non-finite samples)"
    )


def check_finite_features(
    features: Mapping[str, torch.Tensor], rows: np.ndarray, reader: CacheReader, split: str
) -> None:
    """Raise NonFiniteLossError naming the samples whose frozen-encoder features
    (``dict[modality, (n, D)]``, row ``i`` from cache row ``rows[i]``) are not finite, before
    linear heads train on them (their loss would only say NaN)."""
    for m, x in features.items():
        bad = torch.nonzero(~torch.isfinite(x).all(1)).flatten().cpu().numpy()
        if bad.size:
            names = ", ".join(str(reader.meta["name"][r]) for r in rows[bad[:_SHOWN_ROWS]])
            raise NonFiniteLossError(
                f"{reader.path}: {m} features of {split} are not finite for {bad.size} "
                f"sample(s) at cache rows {_rows_text(rows[bad])} ({names}); " + _data_check(reader)
            )


def non_finite_loss(
    losses: Mapping[str, torch.Tensor],
    views: Sequence[Mapping[str, torch.Tensor]],
    rows: np.ndarray,
    reader: CacheReader,
    epoch: int,
    step: int,
    lr: float,
) -> NonFiniteLossError:
    """The one-line error for a non-finite loss in batch ``step`` of ``epoch``.

    Args:
        losses: the model's output (``"loss"`` and the per-modality ``"loss/<m>"``).
        views: the batch inputs, each ``dict[modality, (B, 3, T, 25, 2)]`` (both views).
        rows: the cache rows of the batch, in batch order (:func:`batch_rows`).
        reader: the cache, for the sample names and the check to suggest.
    """
    broken = [
        f"{k.removeprefix('loss/')} {float(v.detach()):g}"
        for k, v in losses.items()
        if k.startswith("loss/") and v.numel() == 1 and not torch.isfinite(v)
    ]
    names = reader.meta["name"]
    bad: dict[int, set[str]] = {}
    peak, peak_at = 0.0, None
    for view in views:
        for m, x in view.items():
            flat = x.detach().flatten(1).float().cpu()
            for i in torch.nonzero(~torch.isfinite(flat).all(1)).flatten().tolist():
                bad.setdefault(i, set()).add(m)
            finite = torch.where(torch.isfinite(flat), flat.abs(), torch.zeros_like(flat))
            value, i = finite.max(1).values.max(0)
            if float(value) > peak:
                peak, peak_at = float(value), (int(i), m)
    parts = [
        f"epoch {epoch}, batch {step + 1}: the training loss is {float(losses['loss'].detach()):g}"
        + (f" ({', '.join(broken)})" if broken else ""),
        f"batch of {len(rows)} samples at cache rows {_rows_text(rows)}",
    ]
    if bad:
        listed = "; ".join(
            f"row {rows[i]} ({names[rows[i]]}): {', '.join(sorted(ms))}"
            for i, ms in sorted(bad.items())
        )
        parts.append(f"inputs not finite: {listed}")
    elif peak_at is not None:  # all finite: a huge value may still overflow the network
        i, m = peak_at
        parts.append(f"largest |input| {peak:.3g} in {m} of row {rows[i]} ({names[rows[i]]})")
    parts.append(
        f"{_data_check(reader)}; if the data are sound, lower the learning rate (now {lr:g})"
    )
    return NonFiniteLossError("; ".join(parts))
