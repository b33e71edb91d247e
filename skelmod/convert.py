"""Raw skeleton directory -> one HDF5 cache (knows nothing of click).

Datasets (:data:`SOURCES`): NTU RGB+D 60/120 ``.skeleton`` files (``ntu25`` layout) and N-UCLA
``all_sqe`` ``.json`` files (``kinect-v1-20``, read by :mod:`skelmod.nucla`). Per file, in a
worker process: read (§1.1 / :func:`skelmod.nucla.read_nucla`), select bodies (``decisions.md``
2; N-UCLA has one), normalise (§2, in the file's layout), compute the requested modalities
(§4). The main process streams the results, in
sorted file order, into a :class:`~skelmod.cache.CacheWriter`, so memory stays flat and the
cache is only renamed into place when complete. A file that fails is recorded with its
reason and never stops the others.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import layout
from .bodies import BODY_RULES, select_bodies
from .cache import CacheWriter
from .modalities import compute_modalities
from .names import detect_dataset, parse_sample_name, read_missing_list
from .normalize import YAW_MODES, normalize_sample
from .ntu import read_skeleton
from .nucla import read_nucla

SUFFIX = ".skeleton"
#: Raw file suffix, joint layout and bodies per sample M of each dataset.
SOURCES = {
    "ntu60": (SUFFIX, "ntu25", layout.M),
    "ntu120": (SUFFIX, "ntu25", layout.M),
    "nucla": (".json", "kinect-v1-20", 1),
}


class ConvertError(ValueError):
    """The conversion as a whole cannot run (bad arguments, no input, nothing converted)."""


def _check_choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConvertError(f"{flag} must be one of {', '.join(choices)}, got {value!r}")


@dataclass(frozen=True)
class ConvertOptions:
    """Everything that determines the cache's content; recorded in the file as JSON.

    Defaults reproduce the reference pipeline (§1-§2, §4); each other value is a named
    departure listed in ``decisions.md`` 2-4.
    """

    frames: int = layout.T_TARGET
    bodies: str = "reference"
    body_thresholds: dict[str, float] = field(default_factory=dict)
    centre: bool = True
    yaw: str = "sequence"
    modalities: tuple[str, ...] = ("joint",)
    unit_axis: bool = False
    bones: str = "6v"

    def __post_init__(self):
        if self.frames < 2:
            raise ConvertError(f"--frames must be at least 2, got {self.frames}")
        _check_choice("--bodies", self.bodies, BODY_RULES)
        _check_choice("--yaw", self.yaw, YAW_MODES)
        try:
            self.modality_options  # noqa: B018 - validates bones and unit_axis
            # joint is always stored, and the order is canonical.
            mods = layout.check_modalities(list(dict.fromkeys(("joint", *self.modalities))))
        except layout.LayoutError as e:
            raise ConvertError(str(e)) from None
        object.__setattr__(self, "modalities", mods)

    @property
    def modality_options(self) -> layout.ModalityOptions:
        return layout.ModalityOptions(bones=self.bones, unit_axis=self.unit_axis)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["modalities"] = list(self.modalities)
        return d


def parse_modalities(spec: str | Iterable[str]) -> tuple[str, ...]:
    """``"all"`` or ``"joint,bone"`` (or an iterable of names) -> names in canonical order.

    Raises ConvertError for unknown or duplicate names (:func:`skelmod.layout.check_modalities`).
    """
    try:
        return layout.check_modalities(spec)
    except layout.LayoutError as e:
        raise ConvertError(str(e)) from None


@dataclass
class ConvertReport:
    """What a run did: counts, the files rejected with reasons, and the bodies dropped."""

    out: Path | None
    dataset: str
    total: int = 0
    converted: int = 0
    skipped_missing: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    bodies_dropped: dict[str, int] = field(default_factory=dict)
    bodies_seen: int = 0
    bodies_kept: int = 0
    denoise_fallbacks: int = 0
    resumed_from: int = 0
    seconds: float = 0.0
    unit: str = "files"  #: what was converted ("sequences" for skelmod import)

    @property
    def ok(self) -> bool:
        return not self.rejected

    def summary(self) -> str:
        lines = [
            f"converted {self.converted} of {self.total} {self.unit} ({self.dataset}) "
            f"in {self.seconds:.1f} s" + (f" -> {self.out}" if self.out else ""),
            f"skipped by the missing-sample list: {len(self.skipped_missing)}",
            f"rejected: {len(self.rejected)}",
        ]
        if self.unit != "files":  # only raw files have a missing-sample list
            del lines[1]
        lines += [f"  {name}: {reason}" for name, reason in self.rejected]
        dropped = ", ".join(f"{k} {v}" for k, v in sorted(self.bodies_dropped.items())) or "none"
        lines.append(
            f"bodies: seen {self.bodies_seen}, kept {self.bodies_kept}, dropped by rule: {dropped}"
        )
        if self.denoise_fallbacks:
            lines.append(
                f"denoise dropped every body in {self.denoise_fallbacks} samples; "
                "the longest body was kept in each"
            )
        if self.resumed_from:
            lines.append(f"resumed after {self.resumed_from} files already done")
        return "\n".join(lines)


def list_inputs(
    raw_dir: str | os.PathLike, missing: Iterable[str] = (), suffix: str = SUFFIX
) -> tuple[list[Path], list[str]]:
    """Sorted ``suffix`` files of ``raw_dir`` and the names skipped by the missing list."""
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise ConvertError(f"{raw_dir}: not a directory")
    missing = set(missing)
    files, skipped = [], []
    for p in sorted(raw_dir.iterdir()):
        if p.suffix != suffix or not p.is_file():
            continue
        (skipped.append(p.stem) if p.stem in missing else files.append(p))
    return files, skipped


def _read_ntu(path: Path, options: ConvertOptions):
    """NTU file -> selected bodies ``(3, F, 25, 2)``, metadata, dropped bodies, fallbacks."""
    sid = parse_sample_name(path.name)
    raw = read_skeleton(path)
    d, stats = select_bodies(raw, options.bodies, max_bodies=layout.M, **options.body_thresholds)
    meta = {
        "name": sid.name,
        "setup": sid.setup,
        "camera": sid.camera,
        "subject": sid.subject,
        "replication": sid.replication,
        "action": sid.action,
        "label": sid.label,
        "frame_count": raw.frame_count,
        "bodies_seen": stats.bodies_seen,
        "bodies_kept": stats.bodies_kept,
    }
    return d, meta, dict(stats.dropped), stats.fallbacks


def _read_nucla(path: Path, options: ConvertOptions):
    """N-UCLA file -> its one body ``(3, T, 20, 1)`` as it is, metadata, nothing dropped."""
    sample = read_nucla(path)
    return sample.joints, sample.meta(), {}, 0


#: Reader and joint layout of each raw file suffix.
_READERS = {
    suffix: (_read_nucla if dataset == "nucla" else _read_ntu, layout_name)
    for dataset, (suffix, layout_name, _) in SOURCES.items()
}


def convert_file(path: str | os.PathLike, options: ConvertOptions) -> dict[str, Any]:
    """Convert one raw file: ``{"arrays": {modality: (3,T,V,M) float32}, "meta": {...},
    "dropped": {rule: count}}``. The suffix selects the reader (:data:`SOURCES`: ``.skeleton``
    NTU, ``.json`` N-UCLA). Raises ``ValueError`` subclasses that name the problem."""
    path = Path(path)
    if path.suffix not in _READERS:
        raise ConvertError(f"{path}: no reader for {path.suffix!r} files")
    read, layout_name = _READERS[path.suffix]
    d, meta, dropped, fallbacks = read(path, options)
    arrays, length = process_sample(d, meta["frame_count"], options, layout_name)
    return {
        "arrays": arrays,
        "meta": {**meta, "valid_length": length},
        "dropped": dropped,
        "fallbacks": fallbacks,
    }


def process_sample(
    d: np.ndarray, frame_count: int, options: ConvertOptions, layout_name: str
) -> tuple[dict[str, np.ndarray], int]:
    """Selected bodies ``(3, F, V, M)`` -> ``({modality: (3, T, V, M) float32}, L)``: the
    normalisation of §2 and the modalities of §4 in the joint layout ``layout_name``."""
    x, length = normalize_sample(
        d, t_target=options.frames, centre=options.centre, yaw=options.yaw, layout=layout_name
    )
    arrays = compute_modalities(
        x,
        frame_count,
        t_target=options.frames,
        modalities=list(options.modalities),
        unit_axis=options.unit_axis,
        bones=options.bones,
        layout=layout_name,
    )
    return {m: np.asarray(a, dtype=np.float32) for m, a in arrays.items()}, length


def _work(args: tuple[str, ConvertOptions]) -> tuple[str, dict[str, Any] | None, str | None]:
    path, options = args
    name = Path(path).stem
    try:
        return name, convert_file(path, options), None
    except (ValueError, OSError) as e:  # format, name and empty-sequence errors are ValueErrors
        return name, None, str(e)
    except Exception as e:  # noqa: BLE001 - one odd file must never stop the others
        return name, None, f"internal error {type(e).__name__}: {e}"


def _work_block(
    args: tuple[list[str], ConvertOptions, str],
) -> list[tuple[str, dict[str, Any] | None, str | None]]:
    """Convert a block of files in a worker; the arrays go to the ``.npy`` shard ``args[2]``.

    Only names, metadata and errors travel back through the pipe: on some machines a pipe
    costs as much per sample as converting it, which stopped workers from scaling.
    """
    paths, options, shard = args
    results = [_work((p, options)) for p in paths]
    converted = [r for _, r, _ in results if r is not None]
    if converted:
        stacked = np.stack(
            [np.stack([r["arrays"][m] for m in options.modalities]) for r in converted]
        )
        np.save(shard, stacked)
        for r in converted:
            del r["arrays"]
    return results


def _pool_results(todo: list[str], options: ConvertOptions, workers: int, shard_dir: Path):
    """``(name, result, error)`` per file, in order, converted by a pool of processes."""
    block = max(1, min(16, len(todo) // (4 * workers)))
    jobs = [
        (todo[i : i + block], options, str(shard_dir / f"{i}.npy"))
        for i in range(0, len(todo), block)
    ]
    with _pool_context().Pool(workers) as pool:
        for (_, _, shard), results in zip(jobs, pool.imap(_work_block, jobs), strict=True):
            arrays = np.load(shard) if any(r is not None for _, r, _ in results) else None
            k = 0
            for name, result, error in results:
                if result is not None:
                    result["arrays"] = dict(zip(options.modalities, arrays[k], strict=True))
                    k += 1
                yield name, result, error
            if arrays is not None:
                os.remove(shard)


def _pool_context() -> mp.context.BaseContext:
    # forkserver: workers fork from a clean server, never from a parent that may already run
    # numba/OpenMP threads (fork after threads can deadlock).
    methods = mp.get_all_start_methods()
    return mp.get_context("forkserver" if "forkserver" in methods else "spawn")


def convert(
    raw_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    options: ConvertOptions | None = None,
    dataset: str = "auto",
    missing_list: str | os.PathLike | None = None,
    workers: int | None = None,
    resume: bool = False,
    progress: Callable[[int, int], None] | None = None,
    block: int = 256,
) -> ConvertReport:
    """Convert every ``.skeleton`` file of ``raw_dir`` into the cache ``out``.

    Args:
        dataset: "ntu60", "ntu120", "nucla" or "auto" (NTU from the sample names; a folder
            of ``.json`` files and no ``.skeleton`` is N-UCLA).
        missing_list: an official missing-sample list; those files are skipped.
        workers: processes (default: all cores); 1 runs in this process.
        resume: continue the partial file of a killed run with the same options (a clean
            run when there is none).
        progress: called as ``progress(done, total)`` after each file.

    Returns:
        The :class:`ConvertReport`; ``report.ok`` is False when some files were rejected.

    Raises:
        ConvertError: bad arguments, no input files, or no file converted.
    """
    options = options or ConvertOptions()
    start = time.perf_counter()
    missing = read_missing_list(missing_list) if missing_list else frozenset()
    if dataset not in (*SOURCES, "auto"):
        raise ConvertError(
            f"--dataset must be one of {', '.join(SOURCES)} or auto, got {dataset!r}"
        )
    if dataset == "auto" and not list_inputs(raw_dir, (), SUFFIX)[0]:
        if list_inputs(raw_dir, (), SOURCES["nucla"][0])[0]:
            dataset = "nucla"
    suffix, layout_name, bodies = SOURCES.get(dataset, SOURCES["ntu60"])
    files, skipped = list_inputs(raw_dir, missing, suffix)
    if not files:
        raise ConvertError(f"{raw_dir}: no {suffix} files to convert")
    if dataset == "auto":
        ids = []
        for p in files:
            try:
                ids.append(parse_sample_name(p.name))
            except ValueError:
                pass  # reported per file below
        dataset = detect_dataset(ids)

    report = ConvertReport(out=None, dataset=dataset, total=len(files), skipped_missing=skipped)
    writer_args = dict(
        dataset=dataset, t=options.frames, options=options.to_json(),
        modalities=options.modalities, block=block, layout=layout_name, bodies=bodies,
        modality_options=options.modality_options.to_json(),
    )  # fmt: skip
    resumed = CacheWriter.resume(out, **writer_args) if resume else None
    if resumed is not None:
        writer, state = resumed
        if state is not None:
            report.resumed_from = state["files_done"]
            report.rejected = [tuple(r) for r in state["rejected"]]
            report.bodies_dropped = state["bodies_dropped"]
            report.bodies_seen, report.bodies_kept = state["bodies_seen"], state["bodies_kept"]
            report.denoise_fallbacks = state["denoise_fallbacks"]
        report.converted = writer.rows
    else:
        writer = CacheWriter(out, **writer_args)

    def state(done: int) -> dict[str, Any]:
        return {
            "files_done": done,
            "rejected": report.rejected,
            "bodies_dropped": report.bodies_dropped,
            "bodies_seen": report.bodies_seen,
            "bodies_kept": report.bodies_kept,
            "denoise_fallbacks": report.denoise_fallbacks,
        }

    todo = [str(p) for p in files[report.resumed_from :]]
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    done = report.resumed_from
    shard_dir, results = None, None
    try:
        if workers == 1:
            results = (_work((p, options)) for p in todo)
        else:
            for stale in writer.path.parent.glob(f".{writer.path.name}.shards-*"):
                shutil.rmtree(stale, ignore_errors=True)  # left by a killed run
            shard_dir = Path(
                tempfile.mkdtemp(prefix=f".{writer.path.name}.shards-", dir=writer.path.parent)
            )
            results = _pool_results(todo, options, workers, shard_dir)
        for name, result, error in results:
            done += 1
            if error is not None:
                report.rejected.append((name, error))
            else:
                writer.append(result["arrays"], result["meta"])
                report.converted += 1
                report.bodies_seen += int(result["meta"]["bodies_seen"])
                report.bodies_kept += int(result["meta"]["bodies_kept"])
                report.denoise_fallbacks += int(result["fallbacks"])
                for rule, k in result["dropped"].items():
                    report.bodies_dropped[rule] = report.bodies_dropped.get(rule, 0) + int(k)
            writer.maybe_flush(state(done))
            if progress is not None:
                progress(done, report.total)
    except BaseException:
        # The partial file keeps the last consistent resume point written by maybe_flush.
        writer.close()
        raise
    finally:
        if results is not None:
            results.close()  # stops the pool, if any
        if shard_dir is not None:
            shutil.rmtree(shard_dir, ignore_errors=True)
    if report.converted == 0:
        writer.close()
        os.remove(writer.partial)
        raise ConvertError(
            f"{raw_dir}: none of the {report.total} files converted:\n"
            + "\n".join(f"  {n}: {r}" for n, r in report.rejected[:20])
        )
    report.seconds = time.perf_counter() - start
    report.out = writer.commit(
        {
            "summary": {
                "converted": report.converted,
                "skipped_missing": len(report.skipped_missing),
                "rejected": report.rejected,
                "bodies_dropped": report.bodies_dropped,
            }
        }
    )
    return report
