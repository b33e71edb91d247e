"""Run length in steps and the queue-size rule (issue 19, point 3): what one preset does on a
small and on a large training split."""

import pytest
import torch
from test_data import make_cache

from ikemtrain.config import PretrainConfig, load_preset
from ikemtrain.engine.loop import pretrain, resolve_queue_size, resolve_run_length

SHAPE = PretrainConfig(epochs=8, cross_epoch=5, steps=(7,), warmup_epochs=1, batch_size=32)


@pytest.mark.parametrize(
    ("n_train", "epochs", "cross", "steps", "warmup", "monitor"),
    [(291, 89, 56, (78,), 11, 11), (1020, 26, 16, (23,), 3, 3), (40320, 2, 1, (2,), 0, 1)],
)
def test_total_steps_stretch_the_schedule_to_the_split(
    n_train, epochs, cross, steps, warmup, monitor
):
    cfg = resolve_run_length(SHAPE.replace(total_steps=800), n_train)
    assert (cfg.epochs, cfg.cross_epoch, cfg.steps, cfg.warmup_epochs, cfg.monitor_every) == (
        epochs, cross, steps, warmup, monitor,
    )  # fmt: skip
    off = resolve_run_length(SHAPE.replace(total_steps=800, monitor_every=0), n_train)
    assert off.monitor_every == 0  # a monitor switched off stays off
    per_epoch = n_train // 32
    assert cfg.epochs * per_epoch >= 800  # at least the steps asked for
    assert (cfg.epochs - 1) * per_epoch < 800 or cfg.epochs == 2  # and no epoch more


def test_total_steps_zero_keeps_the_epochs():
    assert resolve_run_length(SHAPE, 291) == SHAPE


def test_a_tiny_run_keeps_both_stages():
    cfg = resolve_run_length(SHAPE.replace(total_steps=2), 1000)  # one epoch would hold both
    assert cfg.epochs == 2 and cfg.cross_epoch == 1
    only_stage_1 = SHAPE.replace(cross_epoch=8, total_steps=2)
    assert resolve_run_length(only_stage_1, 1000).epochs == 1


@pytest.mark.parametrize(("n_train", "auto"), [(291, 128), (1020, 256), (320, 128), (40, 4)])
def test_auto_queue_is_half_an_epoch_beyond_the_batch(n_train, auto):
    cfg = resolve_queue_size(SHAPE.replace(queue_size=0), n_train, None)
    assert cfg.queue_size == auto
    assert 2 * cfg.queue_size <= n_train - 32 < 4 * cfg.queue_size


def test_a_queue_that_outlives_an_epoch_is_named_in_a_warning():
    lines = []
    cfg = resolve_queue_size(SHAPE.replace(queue_size=512), 291, lines.append)
    assert cfg.queue_size == 512  # an explicit size is the user's
    assert len(lines) == 1 and lines[0].startswith("warning: queue_size 512 is more than")
    assert "291 training samples - batch 32 = 259" in lines[0] and "gives 128" in lines[0]
    lines.clear()
    resolve_queue_size(SHAPE.replace(queue_size=256), 291, lines.append)
    assert lines == []


def test_pretrain_resolves_and_records_both(tmp_path):
    cache = make_cache(tmp_path / "c.h5", n=48, t=24)  # 24 xsub-train samples
    cfg = PretrainConfig(
        modalities=("joint", "velocity"), epochs=4, cross_epoch=2, steps=(3,), batch_size=4,
        queue_size=0, total_steps=12, hidden_channels=4, hidden_dim=16, feature_dim=8,
        workers=0, split="xsub", dropout=0.0, monitor_every=0,
    )  # fmt: skip
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = pretrain(cfg, cache, tmp_path / "run", device="cpu", echo=None,
                          tensorboard=False)  # fmt: skip
    finally:
        torch.set_num_threads(old)
    saved = torch.load(result["checkpoint"], weights_only=True)
    assert saved["config"]["epochs"] == 2 and saved["config"]["queue_size"] == 8
    assert saved["model"]["branches.joint.queue.bank"].shape == (8, 8)
    assert result["metrics"]["iterations"] * saved["epoch"] == 12


def test_the_cpu_preset_is_the_documented_starting_point():
    cfg = load_preset("cpu").pretrain
    assert cfg.queue_size == 0 and cfg.total_steps > 0 and cfg.precision == "bf16"
