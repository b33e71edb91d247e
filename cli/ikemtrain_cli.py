"""``ikemtrain``: six-modality contrastive pre-training (MoCo, EKEM, IKEM), teacher–student
distillation, linear evaluation and the deployable student.

Each command parses options, calls ``ikemtrain.engine`` and turns library errors into clear
messages. Exit codes: 0 success, 1 a failed run (bad cache, checkpoint or setting),
2 usage errors.
"""

from __future__ import annotations

import os

# numba's and torch's OpenMP pools share the cores; spinning idle threads of one starve the
# other (several times slower on 2 cores). Must be set before either runtime starts.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import contextlib  # noqa: E402
import dataclasses  # noqa: E402
from pathlib import Path

import click  # noqa: E402

from ikemtrain import api  # noqa: E402
from ikemtrain.config import (  # noqa: E402
    DISTILL_LOSS_FORMS,
    STUDENT_INITS,
    ConfigError,
)
from ikemtrain.errors import USER_ERRORS, OutputExistsError  # noqa: E402

from .errors import with_option  # noqa: E402
from .options import (  # noqa: E402
    RecordingGroup,
    bn_recalibration_option,
    check_encoder_choice,
    check_out_mode,
    checkpoint_option,
    compile_option,
    device_option,
    eval_out_option,
    modalities_option,
    out_argument_or_option,
    out_option,
    overrides,
    overwrite_option,
    precision_option,
    preset_option,
    random_init_option,
    resume_option,
    run_out_option,
    run_overrides,
    seed_option,
    split_option,
    stream_threads_option,
    streams_option,
    workers_option,
)

#: The option of each library parameter that an error names (``e.param``).
_FLAGS = {
    "overwrite": "--overwrite",
    "resume": "--resume",
    "teacher": "--teacher",
    "classes": "--classes",
    "per_class": "--per-class",
}


def _fail(e: Exception) -> click.ClickException:
    return click.ClickException(with_option(e, _FLAGS))


@contextlib.contextmanager
def _user_errors():
    """Show ikemtrain's own errors as one line and exit 1; anything else is a bug and keeps
    its traceback."""
    try:
        yield
    except OutputExistsError as e:  # the folder given is the wrong one: a usage error
        raise click.UsageError(with_option(e, _FLAGS)) from None
    except USER_ERRORS as e:
        raise _fail(e) from None


def _settings(preset, table: str, **changes):
    """``preset`` with the options' ``changes`` to its ``table`` (``None`` keeps the preset's
    value); a rejected value is a usage error."""
    try:
        return dataclasses.replace(preset, **{table: getattr(preset, table).replace(**changes)})
    except ConfigError as e:
        raise click.UsageError(str(e)) from None


@click.group(
    "ikemtrain", cls=RecordingGroup, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(package_name="ikem-toolkit")
def main() -> None:
    """Pre-train skeleton encoders on six modalities (IKEM), distil them into a three-stream
    student, evaluate them (linear, kNN, fine-tuning) and report the results."""


@main.command()
@click.argument("cache", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@split_option
@preset_option()
@modalities_option()
@run_out_option
@resume_option
@overwrite_option
@click.option("--ekem/--no-ekem", default=None, help="Use the EKEM loss in stage 2.")
@click.option("--ikem/--no-ikem", default=None, help="Use the IKEM loss in stage 2.")
@click.option(
    "--reference-compat",
    is_flag=True,
    default=None,
    help="Replicate the reference's independent key-encoder initialisation (keys not copied "
    "from the queries), for ablations.",
)
@precision_option
@stream_threads_option
@compile_option
@run_overrides
def pretrain(
    cache,
    split,
    preset,
    modalities,
    out,
    resume,
    overwrite,
    ekem,
    ikem,
    reference_compat,
    precision,
    stream_threads,
    compile_mode,
    device,
    overrides,
):
    """Pre-train on CACHE's NAME-train split; writes a checkpoint every epoch.

    Example: ikemtrain pretrain ntu60.h5 --split xview --preset paper-ntu60 --modalities 6
    --out runs/xview6

    Stage 1 (single-modality InfoNCE) runs for cross_epoch epochs, then stage 2 (EKEM + IKEM).
    For several GPUs launch with torchrun --nproc-per-node N.
    """
    check_out_mode(resume, overwrite)
    preset = _settings(
        preset,
        "pretrain",
        split=split,
        modalities=modalities,
        ekem=ekem,
        ikem=ikem,
        reference_compat=reference_compat,
        precision=precision,
        stream_threads=stream_threads,
        compile=compile_mode,
        **overrides,
    )
    with _user_errors():
        result = api.pretrain(
            cache, out, preset=preset, resume=resume, device=device, overwrite=overwrite
        )
    click.echo(f"checkpoint: {result['checkpoint']}")


@main.command()
@click.argument("cache", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@split_option
@click.option(
    "--teacher",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Six-modality pre-training run (folder or its checkpoint.pt): the frozen teacher.",
)
@preset_option()
@run_out_option
@resume_option
@overwrite_option
@click.option(
    "--loss-form",
    type=click.Choice(DISTILL_LOSS_FORMS),
    default=None,
    help="implemented: the loss as the reference code computes it; paper: the paper's eq. 7-8 "
    "[default: the preset's].",
)
@click.option(
    "--reference-compat",
    is_flag=True,
    default=None,
    help="Replicate the reference's teacher in train mode and its Omega similarities from "
    "the bone bank, for ablations.",
)
@click.option(
    "--student-init",
    type=click.Choice(STUDENT_INITS),
    default=None,
    help="random: fresh student encoders (the paper's); teacher: start each from the "
    "teacher's encoder of its modality [default: the preset's].",
)
@precision_option
@stream_threads_option
@compile_option
@run_overrides
def distill(
    cache,
    split,
    teacher,
    preset,
    out,
    resume,
    overwrite,
    loss_form,
    reference_compat,
    student_init,
    precision,
    stream_threads,
    compile_mode,
    device,
    overrides,
):
    """Distil a six-modality teacher into a three-stream student (joint, velocity, bone).

    Example: ikemtrain distill ntu60.h5 --split xview --teacher runs/xview6
    --preset paper-ntu60 --out runs/xview-student

    Trains on CACHE's NAME-train split with the preset's [distill] settings; the teacher is
    frozen (eval mode, no gradient). Evaluate the student with
    `ikemtrain linear-eval ... --checkpoint RUN2 --streams 3s`.
    """
    check_out_mode(resume, overwrite)
    preset = _settings(
        preset,
        "distill",
        split=split,
        loss_form=loss_form,
        reference_compat=reference_compat,
        student_init=student_init,
        precision=precision,
        stream_threads=stream_threads,
        compile=compile_mode,
        **overrides,
    )
    with _user_errors():
        result = api.distill(
            cache, out, teacher=teacher, preset=preset, resume=resume, device=device,
            overwrite=overwrite,
        )  # fmt: skip
    click.echo(f"checkpoint: {result['checkpoint']}")


def _encoders(preset, checkpoint, modalities) -> api.Encoders:
    """The protocols' encoders: ``--checkpoint``'s run, or random ones of the preset
    (``check_encoder_choice`` has checked the options)."""
    with _user_errors():
        if checkpoint is not None:
            return api.Encoders.from_run(checkpoint)
        return api.Encoders.random(preset, modalities)


#: --checkpoint of the evaluation protocols.
ENCODERS_HELP = (
    "Pre-training run (its query encoders), student run of `ikemtrain distill` (its students) "
    "or fine-tuning run (its encoders), as a folder or its checkpoint.pt."
)


@main.command("linear-eval")
@click.argument("cache", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@split_option
@checkpoint_option(ENCODERS_HELP)
@random_init_option("Evaluate untrained encoders (the preset's width) instead of a checkpoint.")
@bn_recalibration_option
@click.option(
    "--standardize/--no-standardize",
    default=None,
    help="Z-score every feature on NAME-train before the classifier (a BatchNorm without "
    "affine, as the MAE / MoCo v3 probes) [default: the preset's; off in paper-ntu60].",
)
@modalities_option()
@streams_option(
    "6s",
    "Streams, comma-separated: one modality, or a fusion of jointly trained heads on averaged "
    "logits (3s, 6s); several write one folder each, OUT/<stream>.",
)
@preset_option()
@eval_out_option
@overwrite_option
@overrides
def linear_eval(
    cache,
    split,
    checkpoint,
    random_init,
    bn_recalibration,
    standardize,
    modalities,
    streams,
    preset,
    out,
    overwrite,
    device,
    overrides,
):
    """Train linear classifiers on frozen encoders; report final and best top-1 / top-5.

    Example: ikemtrain linear-eval ntu60.h5 --split xview --checkpoint runs/xview6
    --streams 6s --preset paper-ntu60 --out runs/xview6/le-6s

    Trains on NAME-train and evaluates on NAME-val (cached modalities, no augmentation).
    """
    check_encoder_choice(checkpoint, random_init, modalities)
    preset = _settings(preset, "linear_eval", standardize=standardize, **overrides)
    encoders = _encoders(preset, checkpoint, modalities)
    for stream, folder in api.stream_folders(streams, out):
        with _user_errors():
            results = api.linear_eval(
                cache, folder, encoders=encoders, streams=[stream], split=split, preset=preset,
                recalibrate_bn=bn_recalibration, overwrite=overwrite, device=device,
            )[stream]  # fmt: skip
        click.echo(_summary_line(stream, results, folder))


def _summary_line(stream: str, results: dict, out: Path) -> str:
    return (
        f"{stream}: top-1 {results['top1_final']:.2f} (best {results['top1_best']:.2f}), "
        f"top-5 {results['top5_final']:.2f} (best {results['top5_best']:.2f}) "
        f"-> {Path(out) / 'results.json'}"
    )


def _k_list(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    try:
        ks = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        ks = []
    if not ks or min(ks) < 1:
        raise click.BadParameter(f"expected positive integers separated by commas, got {value!r}")
    return ks


@main.command("knn-eval")
@click.argument("cache", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@split_option
@checkpoint_option(ENCODERS_HELP)
@random_init_option("Evaluate untrained encoders (the preset's width) instead of a checkpoint.")
@bn_recalibration_option
@modalities_option()
@streams_option(
    None,
    "Streams, comma-separated: modalities, 3s, 6s (fused: mean of the cosine "
    "similarities), student-<m> [default: every stream of the encoders].",
)
@click.option(
    "--k",
    "ks",
    default="1,5,20",
    show_default=True,
    callback=_k_list,
    help="Neighbour counts, comma-separated.",
)
@preset_option()
@eval_out_option
@overwrite_option
@device_option
@seed_option()
def knn_eval(
    cache,
    split,
    checkpoint,
    random_init,
    bn_recalibration,
    modalities,
    streams,
    ks,
    preset,
    out,
    overwrite,
    device,
    seed,
):
    """Weighted kNN on frozen features: NAME-val classified against NAME-train.

    Example: ikemtrain knn-eval ntu60.h5 --split xview --checkpoint runs/xview6
    --streams joint,3s,6s --k 1,5,20 --out runs/xview6/knn

    The weighted kNN of Wu et al. 2018: the k training samples of highest cosine similarity
    vote for their class with weight exp(cos / 0.07). Features are computed once, with the
    preset's [linear_eval] eval_batch_size; random-init encoders take its seed.
    """
    check_encoder_choice(checkpoint, random_init, modalities)
    encoders = _encoders(preset, checkpoint, modalities)
    with _user_errors():
        results = api.knn_eval(
            cache, out, encoders=encoders, streams=streams, k=ks, split=split, preset=preset,
            seed=seed, recalibrate_bn=bn_recalibration, overwrite=overwrite, device=device,
        )  # fmt: skip
    click.echo(f"-> {Path(out) / 'results.json'} ({len(results['streams'])} streams)")


@main.command()
@click.argument("cache", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@split_option
@checkpoint_option(ENCODERS_HELP + " A fine-tuning run's linear heads are trained further too.")
@random_init_option(
    "Train untrained encoders (the preset's width) instead: the supervised-from-scratch baseline."
)
@modalities_option()
@streams_option(
    "6s",
    "Streams, comma-separated: one modality, or a fusion of jointly trained encoders and heads "
    "on averaged logits (3s, 6s); several write one run folder each, OUT/<stream>.",
)
@click.option(
    "--label-fraction",
    type=click.FloatRange(0, 1, min_open=True),
    default=None,
    help="Fraction of NAME-train's labels to train on: seeded, class-balanced, at least one "
    "sample per class (0.01, 0.1: semi-supervised; 1: full fine-tuning) [default: the "
    "preset's].",
)
@preset_option()
@out_option("Run folder: checkpoint.pt (every epoch), metrics.jsonl and results.json.")
@resume_option
@overwrite_option
@run_overrides
def finetune(
    cache,
    split,
    checkpoint,
    random_init,
    modalities,
    streams,
    label_fraction,
    preset,
    out,
    resume,
    overwrite,
    device,
    overrides,
):
    """Fine-tune whole encoders with a linear classifier on a fraction of the labels.

    Example: ikemtrain finetune ntu60.h5 --split xview --checkpoint runs/xview6
    --streams 6s --label-fraction 0.1 --preset paper-ntu60 --out runs/xview6/ft-10

    Trains end to end on a seeded class-balanced subset of NAME-train (cached modalities,
    no augmentation) with the preset's [finetune] settings, evaluates on NAME-val, and
    writes final and best top-1 / top-5 to OUT/results.json. A checkpoint of another
    joint layout is refused; another class count is fine (new heads), except for a
    fine-tuning run, whose heads are kept.
    """
    check_out_mode(resume, overwrite)
    check_encoder_choice(checkpoint, random_init, modalities)
    preset = _settings(preset, "finetune", label_fraction=label_fraction, **overrides)
    encoders = _encoders(preset, checkpoint, modalities)
    for stream, folder in api.stream_folders(streams, out):
        with _user_errors():
            results = api.finetune(
                cache, folder, encoders=encoders, streams=[stream], split=split, preset=preset,
                resume=resume, device=device, overwrite=overwrite,
            )[stream]  # fmt: skip
        click.echo(_summary_line(stream, results, folder))


@main.command()
@click.argument(
    "runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@out_option("Folder for report.md, its PNG figures and confusion.csv.")
@click.option("--no-figures", is_flag=True, help="Tables only, even where matplotlib is installed.")
@overwrite_option
def report(runs, out, no_figures, overwrite):
    """Write a report of runs and results: Table 1, training curves, confusion, embedding.

    Example: ikemtrain report runs/xview6 runs/xview6-le-6s runs/xview6-knn --out runs/report

    RUNS are folders written by pretrain, distill, finetune, linear-eval or knn-eval (a
    folder holding several is searched). OUT/report.md has a table in the layout of the
    paper's Table 1 (final and best top-1), the loss and collapse signal per modality of
    each training run, the confusion matrix and a PCA embedding of the best linear
    evaluation, and for every number the command and settings behind it. Figures need
    matplotlib (installed with the train extra); without it the report has tables only.
    """
    from ikemtrain.report import NO_MATPLOTLIB, matplotlib_figure, write_report

    with _user_errors():
        path = write_report(runs, out, figures=not no_figures, overwrite=overwrite)
    click.echo(f"report: {path}")
    if not no_figures and matplotlib_figure() is None:
        click.echo(NO_MATPLOTLIB.split(";")[0])


@main.command()
@modalities_option()
@click.option(
    "--student",
    is_flag=True,
    help="Count the deployed three-stream student (encoders + linear heads) instead.",
)
@click.option(
    "--num-class",
    type=click.IntRange(min=1),
    default=60,
    show_default=True,
    help="With --student: classes of its linear heads.",
)
@preset_option()
def describe(modalities, student, num_class, preset):
    """Print the parameter count of every module of the pre-training model or the student.

    Example: ikemtrain describe --modalities 6
    (paper width: one backbone 821,380; the six-modality model 15,768,624;
    `ikemtrain describe --student --num-class 60`: 2,510,400).
    """
    if student and modalities is not None:
        raise click.UsageError("--modalities does not apply to --student")
    with _user_errors():
        rows = api.describe(preset, modalities, student=student, num_class=num_class)
    width = max(len(name) for name, _ in rows)
    click.echo(f"{'module':<{width}}  {'parameters':>12}")
    for name, count in rows:
        click.echo(f"{name:<{width}}  {count:>12,}")


@main.command()
@click.argument("run", type=click.Path(exists=True, path_type=Path))
@out_option(
    "Student file to write (tensors and plain types; torch.load(weights_only=True)).", file=True
)
@click.option(
    "--classifier",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="A linear-eval output folder of RUN's students (3s or student-*): its heads make "
    "Student.predict work. Without it the file gives features only.",
)
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
def export(run, out, classifier, overwrite):
    """Write the deployable student of a distillation RUN (weights + the config to rebuild it).

    Example: ikemtrain export runs/xview-student --classifier runs/xview-student-le
    --out student.pt

    Load it with `ikemtrain.Student.load("student.pt")`; `.features(joints, frame_count)` and
    `.predict(joints, frame_count)` take joints (N, 3, T, 25, M) and compute velocity and bone
    themselves.
    """
    with _user_errors():
        student = api.export(run, out, classifier=classifier, overwrite=overwrite)
    heads = (
        f"classifier {', '.join(student.classifier)} ({student.num_class} classes)"
        if student.classifier is not None
        else "no classifier (features only)"
    )
    click.echo(f"student {', '.join(student.modalities)}; {heads} -> {out}")


#: The table rows of ``demo``: summary key -> label.
_DEMO_LABELS = {
    "pretrained": "pretrained",
    "random_init": "random init",
    "random_init_raw_bn": "random (raw BN)",
}
#: summary row of each random-baseline kind (ikemtrain.baseline)
_BASELINE_KEYS = {"bn_estimated": "random_init", "raw_bn": "random_init_raw_bn"}


@main.command()
@out_argument_or_option("Folder for the demo's data, runs and summary.json; empty or absent.")
@click.option(
    "--classes", type=click.IntRange(min=2), default=8, show_default=True, help="Action classes."
)
@click.option(
    "--per-class",
    type=click.IntRange(min=2),
    default=60,
    show_default=True,
    help="Synthetic samples per class.",
)
@seed_option(0)
@workers_option("DataLoader worker processes of pre-training")
@click.option(
    "--convert-workers",
    type=click.IntRange(min=1),
    default=None,
    help="Processes converting the synthetic files [default: all cores].",
)
@click.option("--split", default="xview", show_default=True, help="Benchmark to train/evaluate.")
@preset_option(default="tiny")
@device_option
@overwrite_option
def demo(out, classes, per_class, seed, workers, convert_workers, split, preset, device, overwrite):
    """Run the whole pipeline on built-in synthetic data and compare with random init.

    Example: ikemtrain demo -o runs/demo  (or: ikemtrain demo runs/demo)

    synth -> skelmod convert (all six modalities) -> pretrain (six modalities) ->
    linear-eval 6s of the pre-trained encoders and of random-init encoders (with BatchNorm
    statistics estimated on the training split, and raw); prints the table and writes
    OUT/summary.json. OUT must be empty or absent (or a previous demo, with --overwrite).
    """
    from ikemtrain.demo import RESULT_KEYS, demo_preset, run_demo

    try:
        preset = demo_preset(preset, split=split, seed=seed, loader_workers=workers)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    try:
        summary = run_demo(
            out,
            preset,
            classes=classes,
            per_class=per_class,
            workers=convert_workers,
            device=device,
            echo=click.echo,
            overwrite=overwrite,
        )
    except OutputExistsError as e:
        raise click.UsageError(str(e)) from None
    except USER_ERRORS as e:
        raise _fail(e) from None

    click.echo("")
    click.echo(f"{'6s linear eval':<15} {'top-1':>7} {'best':>7} {'top-5':>7} {'best':>7}")
    for key, label in _DEMO_LABELS.items():
        click.echo(f"{label:<15} " + " ".join(f"{summary[key][k]:7.2f}" for k in RESULT_KEYS))
    base = summary["baseline"]
    click.echo(
        f"gain over the stronger random encoder "
        f"({_DEMO_LABELS[_BASELINE_KEYS[base['strongest_row']]]}): {base['gain']:+.2f} top-1"
    )
    click.echo(
        "random init: BatchNorm statistics re-estimated on the training split; raw BN: the "
        "untrained encoder's own statistics (with the standardised probe often the stronger)"
    )
    click.echo(
        f"chance: {100.0 / classes:.2f}% top-1 ({classes} classes, "
        f"{summary['val_samples']} val samples)"
    )
    click.echo(f"wall time: {summary['seconds']['total']:.0f} s")


if __name__ == "__main__":
    main()
