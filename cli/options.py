"""Shared click options of the command-line tools (one decorator per option, reused by commands).

Override options default to ``None``, meaning "keep the preset's value".
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from ikemtrain.config import STREAMS, ConfigError, Preset, load_preset, preset_names


def _load_preset(ctx: click.Context, param: click.Parameter, value: str) -> Preset:
    try:
        return load_preset(value)
    except ConfigError as e:
        raise click.BadParameter(str(e), ctx=ctx, param=param) from None


def preset_option(default: str = "paper-ntu60"):
    """``--preset NAME|PATH``: a built-in preset or a TOML file; the value is a ``Preset``."""
    return click.option(
        "--preset",
        default=default,
        show_default=True,
        callback=_load_preset,
        help=f"Settings preset: a built-in name ({', '.join(preset_names())}) or a TOML file.",
    )


split_option = click.option(
    "--split",
    required=True,
    metavar="NAME",
    help="Benchmark, e.g. xsub or xview (ntu60), xsub or xset (ntu120), xview (nucla), or an "
    "imported cache's split: trains on NAME-train and evaluates on NAME-val.",
)

modalities_option = click.option(
    "--modalities",
    type=click.Choice(["3", "6"]),
    default=None,
    help="3 (joint, velocity, bone: the 3s baseline) or 6 modalities [default: the preset's].",
)

streams_option = click.option(
    "--streams",
    type=click.Choice(list(STREAMS)),
    default="6s",
    show_default=True,
    help="One modality, or a fusion of jointly trained heads on averaged logits (3s, 6s).",
)


def _check_device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value.strip().lower()):
        raise click.BadParameter(f"expected auto, cpu, cuda or cuda:N, got {value!r}")
    return value.strip().lower()


device_option = click.option(
    "--device",
    default="auto",
    callback=_check_device,
    show_default=True,
    metavar="auto|cpu|cuda|cuda:N",
    help="Where to run; auto picks CUDA when available.",
)

workers_option = click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="DataLoader worker processes [default: the preset's].",
)

seed_option = click.option(
    "--seed", type=click.IntRange(min=0), default=None, help="Random seed [default: the preset's]."
)

epochs_option = click.option(
    "--epochs", type=click.IntRange(min=1), default=None, help="Epochs [default: the preset's]."
)

batch_size_option = click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Batch size [default: the preset's].",
)

lr_option = click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Base learning rate [default: the preset's].",
)


def overrides(f):
    """``--epochs``, ``--batch-size``, ``--lr``, ``--device``, ``--seed``."""
    for option in reversed(
        (epochs_option, batch_size_option, lr_option, device_option, seed_option)
    ):
        f = option(f)
    return f


run_out_option = click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Run folder: checkpoint.pt (every epoch) and metrics.jsonl.",
)

eval_out_option = click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for results.json.",
)

resume_option = click.option(
    "--resume", is_flag=True, help="Continue the run in --out from its checkpoint."
)


def checkpoint_option(help: str):
    """``--checkpoint RUN``: the run whose encoders a protocol starts from."""
    return click.option(
        "--checkpoint", type=click.Path(exists=True, path_type=Path), default=None, help=help
    )


def random_init_option(help: str):
    """``--random-init``: untrained encoders of the preset's width instead of a checkpoint."""
    return click.option("--random-init", is_flag=True, help=help)


bn_recalibration_option = click.option(
    "--bn-recalibration/--no-bn-recalibration",
    default=True,
    show_default=True,
    help="With --random-init: estimate BatchNorm statistics on NAME-train (no labels) first; "
    "without it the untrained features are ~1e-8 and the baseline sits at chance.",
)


def check_encoder_choice(checkpoint, random_init: bool, modalities) -> None:
    """Usage errors of ``--checkpoint`` / ``--random-init`` / ``--modalities``."""
    if (checkpoint is None) == (not random_init):
        raise click.UsageError("give exactly one of --checkpoint RUN or --random-init")
    if checkpoint is not None and modalities is not None:
        raise click.UsageError("--modalities goes with --random-init; a checkpoint knows its own")
