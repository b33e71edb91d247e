"""Shared click options of the command-line tools (one decorator per option, reused by commands).

Override options default to ``None``, meaning "keep the preset's value".
"""

from __future__ import annotations

import functools
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


def preset_override(*names: str, help: str, **kwargs):
    """An option that replaces one preset setting; not given (``None``) keeps the preset's."""
    return click.option(*names, default=None, help=f"{help} [default: the preset's].", **kwargs)


modalities_option = preset_override(
    "--modalities",
    type=click.Choice(["3", "6"]),
    help="3 (joint, velocity, bone: the 3s baseline) or 6 modalities",
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

workers_option = preset_override(
    "--workers", type=click.IntRange(min=0), help="DataLoader worker processes"
)
seed_option = preset_override("--seed", type=click.IntRange(min=0), help="Random seed")
epochs_option = preset_override("--epochs", type=click.IntRange(min=1), help="Epochs")
batch_size_option = preset_override("--batch-size", type=click.IntRange(min=1), help="Batch size")
lr_option = preset_override(
    "--lr", type=click.FloatRange(min=0, min_open=True), help="Base learning rate"
)


def _gathered_overrides(workers: bool):
    """``--epochs``, ``--batch-size``, ``--lr``, ``--device``, ``--seed`` (and ``--workers``).

    The command receives ``device`` and, as one dict ``overrides``, the values of the others
    for ``Settings.replace`` (``None`` keeps the preset's value).
    """
    names = ("epochs", "batch_size", "lr", "seed") + (("workers",) if workers else ())
    options = (epochs_option, batch_size_option, lr_option, device_option, seed_option)
    options += (workers_option,) if workers else ()

    def decorate(f):
        @functools.wraps(f)
        def command(**kwargs):
            kwargs["overrides"] = {name: kwargs.pop(name) for name in names}
            return f(**kwargs)

        for option in reversed(options):
            command = option(command)
        return command

    return decorate


#: The evaluation protocols' overrides: ``--epochs``, ``--batch-size``, ``--lr``, ``--device``,
#: ``--seed``.
overrides = _gathered_overrides(workers=False)
#: The training runs' overrides: those of :data:`overrides` and ``--workers``.
run_overrides = _gathered_overrides(workers=True)


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
