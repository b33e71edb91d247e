"""``skelmod``: raw skeletons (NTU, N-UCLA, imported arrays) to an HDF5 cache of modalities.

Each command parses options, calls the library and turns its errors into clear messages.
Exit codes: 0 success, 1 partial failure (some files rejected) or a failed run, 2 usage errors.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from pathlib import Path

import click

from ikemtrain.progress import Progress as SharedProgress
from skelmod import layout
from skelmod.cache import CacheReader, cache_report, hdf5_write_failed
from skelmod.errors import SkelmodError
from skelmod.options import BODY_RULES, MAX_TARGET_FRAMES, YAW_MODES

from .errors import with_option
from .options import modalities_option, out_argument_or_option, seed_option, workers_option

#: The option of each library parameter that a :class:`SkelmodError` names (``e.param``).
_FLAGS = {
    "frames": "--frames",
    "bodies": "--bodies",
    "yaw": "--yaw",
    "modalities": "--modalities",
    "dataset": "--dataset",
    "overwrite": "--overwrite",
    "resume": "--resume",
    "classes": "--classes",
    "per_class": "--per-class",
}


class Progress:
    """Progress on stderr (``ikemtrain.progress``: a bar with rate and ETA on a terminal, a
    plain line every tenth of the work elsewhere), driven by ``progress(done, total)``
    callbacks.

    It is created on the first call, when the total is known; ``quiet`` disables it.
    """

    def __init__(self, label: str, quiet: bool = False, unit: str = "file"):
        self.label, self.quiet, self.unit, self.bar = label, quiet, unit, None

    def __call__(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.bar is None:
            self.bar = SharedProgress(self.label, total, unit=self.unit)
        self.bar.update(done - self.bar.done)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


def _fail(message: str) -> None:
    """Exit 1 with ``Error: message``; at once if HDF5 failed a write (it would crash at exit)."""
    if hdf5_write_failed():
        click.echo(f"Error: {message}", err=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    raise click.ClickException(message)


def _message(e: SkelmodError) -> str:
    return with_option(e, _FLAGS)


@contextlib.contextmanager
def _user_errors():
    """Show skelmod's own errors as one line and exit 1; anything else is a bug and keeps
    its traceback."""
    try:
        yield
    except SkelmodError as e:
        _fail(_message(e))


def _options(**kwargs):
    """``ConvertOptions`` from the command's options; a rejected value is a usage error."""
    from skelmod.convert import ConvertError, ConvertOptions, parse_modalities

    try:
        return ConvertOptions(modalities=parse_modalities(kwargs.pop("modalities")), **kwargs)
    except ConvertError as e:
        hint = f"'{_FLAGS[e.param]}'" if e.param in _FLAGS else None
        raise click.BadParameter(str(e), param_hint=hint) from None


def _normalise_options(f):
    """``--frames``, ``--yaw`` and ``--no-centre`` (normalisation), shared by convert and
    import."""
    f = click.option(
        "--no-centre",
        is_flag=True,
        help="Do not centre each body on the layout's centre joint (NTU joint 21).",
    )(f)
    f = click.option(
        "--yaw",
        type=click.Choice(YAW_MODES),
        default="sequence",
        show_default=True,
        help="Yaw alignment: one sign per sequence (reference), per frame, or none.",
    )(f)
    return click.option(
        "--frames",
        type=click.IntRange(min=2, max=MAX_TARGET_FRAMES),
        default=layout.T_TARGET,
        show_default=True,
        help="Frames per sample after the linear resize.",
    )(f)


def _feature_options(keep: bool = False):
    """``--unit-axis/--raw-axis`` and ``--bones``; with ``keep`` they default to the cache's."""
    default = " [default: the cache's]" if keep else ""

    def decorate(f):
        f = click.option(
            "--unit-axis/--raw-axis",
            default=None if keep else False,
            show_default=not keep,
            help="Rotation-axis modality as the unit axis of the paper's eq. 4 instead of the "
            "reference's raw cross product." + default,
        )(f)
        return click.option(
            "--bones",
            type=click.Choice(layout.BONE_CONVENTIONS),
            default=None if keep else "6v",
            show_default=not keep,
            help="Bone parents: 6-view with the torso normal in the centre joint's slot (NTU "
            "joint 21; reference) or the 3-view/graph convention." + default,
        )(f)

    return decorate


_BODIES_OPTION = click.option(
    "--bodies",
    type=click.Choice(BODY_RULES),
    default="reference",
    show_default=True,
    help="Body selection: listing order (reference), motion energy, or denoising.",
)


def _conversion_options(bodies: bool = False):
    """What a conversion computes, shared by convert and import: ``--bodies`` (with
    ``bodies``), ``--frames``, ``--yaw``, ``--no-centre``, ``--modalities`` and
    ``--unit-axis/--raw-axis``, ``--bones``. The command receives them as one ``options``, a
    ``ConvertOptions`` (a rejected value is a usage error)."""
    names = ("frames", "yaw", "no_centre", "modalities", "unit_axis", "bones")
    names += ("bodies",) if bodies else ()

    def decorate(f):
        @functools.wraps(f)
        def command(**kwargs):
            values = {name: kwargs.pop(name) for name in names}
            values["centre"] = not values.pop("no_centre")
            kwargs["options"] = _options(**values)
            return f(**kwargs)

        command = _normalise_options(modalities_option("joint")(_feature_options()(command)))
        return _BODIES_OPTION(command) if bodies else command

    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ikem-toolkit")
def main() -> None:
    """Turn raw skeletons (NTU RGB+D .skeleton, N-UCLA .json, or arrays of any Kinect-style
    data set) into an HDF5 cache of six modalities."""


def _cache_out(f):
    """``-o/--out`` and ``--overwrite`` of the commands that write a cache (convert, import):
    one output rule, :func:`skelmod.convert.check_output`."""
    f = click.option("--overwrite", is_flag=True, help="Replace an existing cache at -o.")(f)
    return click.option(
        "-o",
        "--out",
        required=True,
        type=click.Path(dir_okay=False),
        help="Cache file to write (atomically); never an input, a directory or a non-cache file.",
    )(f)


@contextlib.contextmanager
def _cache_out_errors():
    """``out`` refused by the output rule (convert, import, synth): a usage error about
    ``-o`` (exit 2)."""
    from skelmod.convert import OutputError

    try:
        yield
    except OutputError as e:
        raise click.BadParameter(_message(e), param_hint="'-o' / '--out'") from None


@main.command()
@click.argument("raw_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_cache_out
@click.option(
    "--dataset",
    type=click.Choice([*layout.BENCHMARKS, "auto"]),
    default="auto",
    show_default=True,
    help="Benchmarks, class count and file format: NTU .skeleton files (ntu60, ntu120) or "
    "N-UCLA all_sqe .json files (nucla); auto reads the names.",
)
@click.option(
    "--missing-list",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Official list of samples with missing skeletons; those files are skipped.",
)
@workers_option(
    "Processes converting files",
    minimum=1,
    default_text="all cores; this process alone for under 256 files",
)
@_conversion_options(bodies=True)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue a killed conversion from the same folder with the same options: keeps the "
    "samples whose file is unchanged, converts the rest.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def convert(raw_dir, out, overwrite, dataset, missing_list, workers, options, resume, quiet):
    """Convert a directory of raw .skeleton files into one cache.

    Example: skelmod convert nturgb+d_skeletons/ -o ntu60.h5 --missing-list
    NTU_RGBD_samples_with_missing_skeletons.txt --modalities all

    Exit code 0 when every file converted, 1 when some were rejected (each is named with its
    reason in the summary) or the run failed, 2 for usage errors.
    """
    import skelmod.convert
    from skelmod.convert import ConvertError, convert

    skelmod.convert.LEAN_START = True  # this process is the command's own (skelmod._worker)
    try:
        with _cache_out_errors(), Progress("converting", quiet) as progress:
            report = convert(
                raw_dir,
                out,
                options=options,
                dataset=dataset,
                missing_list=missing_list,
                workers=workers,
                resume=resume,
                overwrite=overwrite,
                progress=progress,
            )
    except SkelmodError as e:
        if isinstance(e, ConvertError) and e.report is not None:
            click.echo(e.report.summary())
        _fail(_message(e))
    click.echo(report.summary())
    sys.exit(0 if report.ok else 1)


@main.command("import")
@click.argument("arrays", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_cache_out
@click.option(
    "--layout",
    "layout_name",
    required=True,
    type=click.Choice(list(layout.LAYOUTS)),
    help="Joint layout of the arrays (V joints in its order).",
)
@_conversion_options()
@click.option("--quiet", is_flag=True, help="No progress bar.")
def import_(arrays, out, overwrite, layout_name, options, quiet):
    """Convert an .npz of concatenated sequences (any Kinect-style data set) into a cache.

    Example: skelmod import utkinect.npz --layout kinect-v1-20 -o utkinect.h5

    ARRAYS holds joints (ΣT, V, 3) or (ΣT, M, V, 3), offsets (N+1,), label (N,), optional
    subject, view, name (N,) and boolean train_<split> masks (N,) that define <split>-train and
    <split>-val (the format is documented in skelmod.importer and the README). Exit code 0 when
    every sequence converted, 1 when some were rejected or the arrays are malformed, 2 for
    usage errors.
    """
    from skelmod.importer import import_arrays

    with (
        _user_errors(),
        _cache_out_errors(),
        Progress("importing", quiet, unit="sequence") as progress,
    ):
        report = import_arrays(
            arrays,
            out,
            layout_name=layout_name,
            options=options,
            progress=progress,
            overwrite=overwrite,
        )
    click.echo(report.summary())
    sys.exit(0 if report.ok else 1)


@main.command()
@click.argument("cache", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def info(cache, as_json):
    """Describe a cache: samples per split and class, frame counts, options, schema.

    Example: skelmod info ntu60.h5
    """
    with _user_errors():
        report = cache_report(CacheReader(cache))
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"{cache}: skelmod cache, schema v{report['schema_version']}, {report['dataset']}")
    click.echo(
        f"layout {report['layout']} ({report['joints']} joints, {report['bodies']} "
        f"{'body' if report['bodies'] == 1 else 'bodies'}), {report['num_class']} classes, "
        "modality options " + json.dumps(report["modality_options"], sort_keys=True)
    )
    click.echo(
        f"samples {report['samples']}, frames {report['frames']}, "
        f"modalities {', '.join(report['modalities'])}"
    )
    click.echo("splits: " + ", ".join(f"{k} {v}" for k, v in report["splits"].items()))
    click.echo("samples per class (label: count):")
    items = list(report["classes"].items())
    for i in range(0, len(items), 10):
        click.echo("  " + "  ".join(f"{k:>3}: {v:<5}" for k, v in items[i : i + 10]))
    click.echo("header frame counts:")
    hist = report["frame_count_histogram"]
    peak = max(hist["counts"]) if hist["counts"] else 1
    for lo, hi, c in zip(hist["edges"][:-1], hist["edges"][1:], hist["counts"], strict=True):
        click.echo(f"  {lo:>4}-{hi:<4} {c:>6} " + "#" * round(40 * c / peak))
    click.echo("options: " + json.dumps(report["options"], sort_keys=True))


@main.command()
@click.argument("cache", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@modalities_option("all")
@_feature_options(keep=True)
def features(cache, modalities, unit_axis, bones):
    """Add or recompute modalities in an existing cache, atomically.

    Example: skelmod features ntu60.h5 --modalities velocity,bone
    """
    from skelmod.convert import parse_modalities
    from skelmod.features import add_features

    with _user_errors(), Progress("computing", unit="sample") as progress:
        names = parse_modalities(modalities)
        add_features(cache, names, unit_axis=unit_axis, bones=bones, progress=progress)
    click.echo(f"{cache}: modalities now {', '.join(CacheReader(cache).modalities)}")


@main.command()
@out_argument_or_option("Folder for the .skeleton files.")
@click.option(
    "--classes",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Number of action classes (the first K of skelmod.synth.ACTIONS).",
)
@click.option(
    "--per-class",
    type=click.IntRange(min=1),
    default=40,
    show_default=True,
    help="Samples per class.",
)
@seed_option(0)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Write into a non-empty folder, replacing files of the same name (without it the "
    "folder must be new or empty).",
)
def synth(out, classes, per_class, seed, overwrite):
    """Write synthetic NTU-format .skeleton files (built-in data for demos and tests).

    Example: skelmod synth -o data/synth --classes 10 --per-class 40 --seed 0
    """
    from skelmod.synth import generate

    try:
        with _user_errors(), _cache_out_errors(), Progress("generating") as progress:
            paths = generate(out, classes, per_class, seed, progress=progress, overwrite=overwrite)
    except OSError as e:  # the folder cannot be written: the user's environment, not a bug
        where = e.filename or out
        raise click.ClickException(f"{where}: cannot write ({e.strerror})") from None
    click.echo(f"wrote {len(paths)} files to {out}")


if __name__ == "__main__":
    main()
