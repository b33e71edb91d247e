"""Shared click options of the command-line tools: one vocabulary, one decorator per option.

The same name means the same thing in every command of ``skelmod`` and ``ikemtrain`` (the
README's glossary; ``tests/test_cli_vocabulary.py`` walks the click tree and checks it):

* ``-o/--out``: where a command writes (a file or a folder, said in its help);
* ``--modalities``: ``3`` (joint, velocity, bone), ``6`` or ``all``, or names, comma-separated;
* ``--streams``: a comma-separated list of streams;
* ``--preset`` and ``--set SECTION.KEY=VALUE`` (repeatable): the settings of a run;
* ``--device``, ``--seed``: where to run, the random seed;
* ``--compile MODE``: the training commands' ``torch.compile`` of the encoders;
* ``--workers``: the one kind of worker a command has (said in its help); the demo, which has
  two, calls the conversion's ``--convert-workers``.

Override options default to ``None``, meaning "keep the preset's value". This module imports
no torch (``ikemtrain.config`` does not), so ``skelmod`` can share it.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import click

from ikemtrain.config import (
    COMPILE_MODES,
    MODALITY_SETS,
    PRECISIONS,
    STREAMS,
    ConfigError,
    Preset,
    apply_settings,
    load_preset,
    preset_names,
)
from ikemtrain.runfolder import invocation, note_preset
from skelmod.layout import MODALITY_NAMES, LayoutError, check_modalities


def _load_preset(ctx: click.Context, param: click.Parameter, value: str) -> Preset:
    try:
        preset = load_preset(value)
    except ConfigError as e:
        raise click.BadParameter(str(e), ctx=ctx, param=param) from None
    note_preset(value)
    return preset


class RecordingGroup(click.Group):
    """A command group that records its command line (``run.json``'s ``argv``, with the
    program's name first) for the run folders its commands write."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["ikemtrain.argv"] = [self.name, *args]
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):
        with invocation(ctx.meta.get("ikemtrain.argv", [self.name])):
            return super().invoke(ctx)


def check_out_mode(resume: bool, overwrite: bool) -> None:
    """``--resume`` with ``--overwrite`` is a usage error."""
    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite exclude each other: continue the run "
                               "in --out or replace it")  # fmt: skip


overwrite_option = click.option(
    "--overwrite",
    is_flag=True,
    help="Replace a previous run of this command in the output folder (never anything else); "
    "without it the folder must be new or empty.",
)


def preset_option(default: str = "paper-ntu60"):
    """``--preset NAME|PATH`` and ``--set SECTION.KEY=VALUE`` (repeatable): the command
    receives ``preset``, the preset with every ``--set`` applied and checked like a preset's
    keys (a bad one is a usage error naming it)."""
    preset = click.option(
        "--preset",
        default=default,
        show_default=True,
        callback=_load_preset,
        help=f"Settings preset: a built-in name ({', '.join(preset_names())}) or a TOML file.",
    )
    assignments = click.option(
        "--set",
        "assignments",
        multiple=True,
        metavar="SECTION.KEY=VALUE",
        help="Change one preset setting, e.g. --set pretrain.lr=0.05 --set "
        "pretrain.schedule=cosine (repeatable; any key of [pretrain], [linear_eval], "
        "[distill], [finetune]).",
    )

    def decorate(f):
        @functools.wraps(f)
        def command(**kwargs):
            try:
                kwargs["preset"] = apply_settings(
                    kwargs["preset"], kwargs.pop("assignments"), "--set"
                )
            except ConfigError as e:
                raise click.BadParameter(str(e), param_hint="'--set'") from None
            return f(**kwargs)

        return preset(assignments(command))

    return decorate


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


def _modalities(ctx: click.Context, param: click.Parameter, value: str | None):
    """``3``, ``6``, ``all`` or comma-separated names -> names in canonical order (None: not
    given)."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        if int(text) not in MODALITY_SETS:
            raise click.BadParameter(
                f"expected 3, 6, all or names of {', '.join(MODALITY_NAMES)}, got {value!r}"
            )
        return MODALITY_SETS[int(text)]
    try:
        return check_modalities(text)
    except LayoutError as e:
        raise click.BadParameter(f"{e}; or 3 (joint, velocity, bone) or 6") from None


MODALITIES_HELP = (
    "Modalities: 3 (joint, velocity, bone), 6 or all, or a comma-separated list of "
    + ", ".join(MODALITY_NAMES)
)


def modalities_option(default: str | None = None, help: str = MODALITIES_HELP):
    """``--modalities``: the value the command receives is a tuple of names (or None)."""
    suffix = " [default: the preset's]." if default is None else "."
    return click.option(
        "--modalities",
        default=default,
        show_default=default is not None,
        callback=_modalities,
        metavar="3|6|all|NAMES",
        help=help + suffix,
    )


def _streams(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return None
    streams = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in streams if v not in STREAMS]
    if unknown or not streams:
        raise click.BadParameter(
            f"unknown stream {', '.join(map(repr, unknown)) or repr(value)}; expected a "
            f"comma-separated list of {', '.join(STREAMS)}"
        )
    return list(dict.fromkeys(streams))


def streams_option(default: str | None, help: str):
    """``--streams S1,S2,...``: the command receives a list of stream names (or None)."""
    return click.option(
        "--streams",
        default=default,
        show_default=default is not None,
        callback=_streams,
        metavar="S1,S2,...",
        help=help,
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


def workers_option(help: str, minimum: int = 0, default_text: str = "the preset's"):
    """``--workers N``: the one kind of worker of a command, said in ``help``; not given
    (``None``) means ``default_text``."""
    return click.option(
        "--workers",
        type=click.IntRange(min=minimum),
        default=None,
        help=f"{help} [default: {default_text}].",
    )


def seed_option(default: int | None = None):
    """``--seed N`` (>= 0); without a default, the preset's seed."""
    return click.option(
        "--seed",
        type=click.IntRange(min=0),
        default=default,
        show_default=default is not None,
        help="Random seed" + (" [default: the preset's]." if default is None else "."),
    )


compile_option = preset_override(
    "--compile",
    "compile_mode",
    type=click.Choice(COMPILE_MODES),
    help="Compile each encoder with this torch.compile mode: none (eager), default, "
    "reduce-overhead (CUDA graphs, GPU only) or max-autotune; the first step compiles (a minute "
    "or more on a CPU) and compiled encoders run one at a time (docs/training.md)",
)
precision_option = preset_override(
    "--precision",
    type=click.Choice(PRECISIONS),
    help="fp32, or bf16: the encoders under bfloat16 autocast (heads and losses stay fp32)",
)
stream_threads_option = preset_override(
    "--stream-threads",
    type=click.IntRange(min=0),
    help="Run the modality encoders side by side on N threads (0: one per core on a CPU run "
    "without dropout or --compile, else 1)",
)
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
    options = (epochs_option, batch_size_option, lr_option, device_option, seed_option())
    options += (workers_option("DataLoader worker processes"),) if workers else ()

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


def out_option(help: str, file: bool = False, required: bool = True):
    """``-o/--out PATH``: where the command writes, a folder (or, with ``file``, a file)."""
    return click.option(
        "-o",
        "--out",
        required=required,
        type=click.Path(file_okay=file, dir_okay=not file, path_type=Path),
        help=help,
    )


def out_argument_or_option(help: str):
    """An output folder given as a positional argument (today's spelling, kept) or as
    ``-o/--out``; the command receives ``out``."""
    argument = click.argument(
        "out_arg", required=False, metavar="[OUT]", type=click.Path(file_okay=False, path_type=Path)
    )
    option = out_option(help + " (Or as the positional argument.)", required=False)

    def decorate(f):
        @functools.wraps(f)
        def command(**kwargs):
            positional, out = kwargs.pop("out_arg"), kwargs.pop("out")
            if positional is not None and out is not None and positional != out:
                raise click.UsageError(f"two output folders given: {positional} and -o {out}")
            if positional is None and out is None:
                raise click.UsageError("give the output folder: -o/--out DIR")
            kwargs["out"] = out if out is not None else positional
            return f(**kwargs)

        return argument(option(command))

    return decorate


run_out_option = out_option("Run folder: checkpoint.pt (every epoch) and metrics.jsonl.")
eval_out_option = out_option("Folder for results.json.")

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
    help="With --random-init: estimate BatchNorm statistics on NAME-train (no labels) first. "
    "Without it the untrained features are ~1e-8: at chance for an unstandardised probe, but "
    "with the standardised probe (the CPU presets) often the stronger random baseline; "
    "report a gain over the stronger of the two.",
)


def check_encoder_choice(checkpoint, random_init: bool, modalities) -> None:
    """Usage errors of ``--checkpoint`` / ``--random-init`` / ``--modalities``."""
    if (checkpoint is None) == (not random_init):
        raise click.UsageError("give exactly one of --checkpoint RUN or --random-init")
    if checkpoint is not None and modalities is not None:
        raise click.UsageError("--modalities goes with --random-init; a checkpoint knows its own")
