"""The baseline rule (ikemtrain.baseline): a gain is over the stronger random row."""

import pytest

from ikemtrain.baseline import random_baseline


@pytest.mark.parametrize(
    ("fair", "raw", "row", "gain"),
    [
        (57.97, 67.89, "raw_bn", 8.83),
        (62.50, 58.75, "bn_estimated", 14.0),
        (60.0, 60.0, "raw_bn", 16.5),
    ],
)
def test_the_gain_is_over_the_stronger_random_row(fair, raw, row, gain):
    pre = {67.89: 76.72, 58.75: 76.50, 60.0: 76.50}[raw]
    got = random_baseline(pre, fair, raw)
    assert got["strongest_row"] == row
    assert got["strongest"] == max(fair, raw)
    assert got["gain"] == pytest.approx(gain, abs=1e-9)
    assert got["gain"] <= pre - fair and got["gain"] <= pre - raw  # never over the weaker one
