"""Raw skeleton directory -> one HDF5 cache (knows nothing of click).

Datasets (:data:`SOURCES`): NTU RGB+D 60/120 ``.skeleton`` files (``ntu25`` layout) and N-UCLA
``all_sqe`` ``.json`` files (``kinect-v1-20``, read by :mod:`skelmod.nucla`). This module holds
the file walk and runs the conversion: per file, a worker process of :mod:`skelmod.pool` runs
the pipeline of :mod:`skelmod.pipeline` (read, select bodies, normalise, modalities), which
``skelmod import`` shares. The main process streams the results, in sorted file order, into a
:class:`~skelmod.cache.CacheWriter`, so memory stays flat and the cache is only renamed into
place when complete. A file that fails is recorded with its reason and never stops the others;
so is a file whose worker process dies (it is retried once, alone, before it is reported).

``--resume`` is verified: every converted sample carries its source file's name, size and
mtime, so a resumed run keeps exactly the samples whose file is unchanged, removes the others
and converts the rest (see :meth:`skelmod.cache.CacheWriter.resume`).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import pool
from .cache import CacheError, CacheWriter, is_cache
from .names import detect_dataset, parse_sample_name, read_missing_list
from .options import (
    MAX_TARGET_FRAMES,
    SOURCES,
    SUFFIX,
    ConvertError,
    ConvertOptions,
    parse_modalities,
)
from .report import ConvertReport, sample_counts

__all__ = [
    "MAX_TARGET_FRAMES",
    "SOURCES",
    "ConvertError",
    "ConvertOptions",
    "ConvertReport",
    "OutputError",
    "check_output",
    "convert",
    "list_inputs",
    "parse_modalities",
    "scan_inputs",
]

#: Below this many files to convert, ``workers=None`` converts in this process.
SMALL_RUN = 256
#: Set by the command line, which owns its process: a conversion in this process starts numba
#: without SciPy (:mod:`skelmod._worker`). Left False for library callers, whose numba keeps
#: its BLAS.
LEAN_START = False

#: Names of the compiled pipeline offered here too, imported on first use: the main process
#: of a conversion with worker processes never loads numba (start-up, issue 22).
_LAZY = {"convert_file", "process_sample"}


def __getattr__(name: str):
    if name in _LAZY:
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class OutputError(ConvertError):
    """``out`` names something convert must not write: a directory, an input file, a file that
    is not a cache, or an existing cache without ``overwrite`` (a usage error); also a
    non-empty folder for :func:`skelmod.synth.generate`."""


@dataclass
class Inputs:
    """What a raw folder holds: ``files`` (sorted regular raw files, e.g. ``*.skeleton``, with
    their ``os.stat`` in ``stats`` by file name), ``skipped`` (names on the missing list),
    ``rejected`` (entries with the raw suffix that are not readable regular files, with the
    reason) and ``subfolders`` (not searched, reported in a notice)."""

    files: list[Path] = field(default_factory=list)
    stats: dict[str, os.stat_result] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    subfolders: list[str] = field(default_factory=list)


def _entry_problem(path: Path) -> tuple[str | None, os.stat_result | None]:
    """Why ``path`` is not a readable regular file (``None`` if it is), and its stat."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return ("a broken symbolic link" if path.is_symlink() else "vanished while listing"), None
    except OSError as e:
        return f"cannot be examined ({e.strerror})", None
    if stat.S_ISDIR(st.st_mode):
        return "a directory, not a file", None
    if stat.S_ISFIFO(st.st_mode):
        return "a FIFO (named pipe), not a regular file", None
    if not stat.S_ISREG(st.st_mode):
        return "a device or socket, not a regular file", None
    if not os.access(path, os.R_OK):
        return "not readable (permission denied)", None
    return None, st


def scan_inputs(
    raw_dir: str | os.PathLike, missing: Iterable[str] = (), suffix: str = SUFFIX
) -> Inputs:
    """Everything ``raw_dir`` holds that a conversion must convert, skip or report: entries
    named ``*suffix`` and subfolders."""
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise ConvertError(f"{raw_dir}: not a directory")
    try:
        entries = sorted(os.scandir(raw_dir), key=lambda e: e.name)
    except OSError as e:
        raise ConvertError(f"{raw_dir}: cannot list the folder ({e.strerror})") from None
    missing = set(missing)
    found = Inputs()
    for entry in entries:
        path = Path(entry.path)
        if not entry.name.endswith(suffix):
            if path.is_dir():
                found.subfolders.append(entry.name)
            continue
        stem = entry.name[: -len(suffix)]
        if stem in missing:
            found.skipped.append(stem)
            continue
        problem, st = _entry_problem(path)
        if problem is not None:
            found.rejected.append((stem, f"{path}: {problem}"))
        else:
            found.files.append(path)
            found.stats[entry.name] = st
    return found


def list_inputs(
    raw_dir: str | os.PathLike, missing: Iterable[str] = (), suffix: str = SUFFIX
) -> tuple[list[Path], list[str]]:
    """Sorted ``suffix`` files of ``raw_dir`` and the names skipped by the missing list."""
    found = scan_inputs(raw_dir, missing, suffix)
    return found.files, found.skipped


def check_output(out: str | os.PathLike, inputs: Iterable[Path], overwrite: bool = False) -> Path:
    """Refuse an ``out`` that is a directory (or ends in a slash), one of ``inputs``, an
    existing file that is not a skelmod cache, or an existing cache unless ``overwrite``.

    Raises:
        OutputError: naming ``out`` and what to do instead.
    """
    text = os.fspath(out)
    path = Path(text)
    if text.endswith(("/", os.sep)) or path.is_dir():
        raise OutputError(
            f"{text}: is a directory; out names the cache file to write, e.g. {path / 'cache.h5'}",
            param="out",
        )
    if not path.exists():
        return path
    for p in inputs:
        if os.path.samefile(path, p):
            raise OutputError(f"{path}: is one of the input files; choose another out", param="out")
    if not is_cache(path):
        raise OutputError(
            f"{path}: exists and is not a skelmod cache; refusing to overwrite it (choose "
            "another out, or remove the file)",
            param="out",
        )
    if not overwrite:
        raise OutputError(
            f"{path}: a cache already exists; set overwrite to replace it", param="overwrite"
        )
    return path


def _read_missing(path: str | os.PathLike) -> frozenset[str]:
    try:
        return read_missing_list(path)
    except UnicodeDecodeError as e:
        raise ConvertError(
            f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})"
        ) from None
    except OSError as e:
        raise ConvertError(f"{path}: cannot read the missing-sample list ({e.strerror})") from None
    except ValueError as e:
        raise ConvertError(str(e)) from None


def convert(
    raw_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    options: ConvertOptions | None = None,
    dataset: str = "auto",
    missing_list: str | os.PathLike | None = None,
    workers: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    block: int = 256,
) -> ConvertReport:
    """Convert every raw file of ``raw_dir`` (:data:`SOURCES`) into the cache ``out``.

    Args:
        dataset: "ntu60", "ntu120", "nucla" or "auto" (NTU from the sample names in range; a
            folder of ``.json`` files and no ``.skeleton`` is N-UCLA).
        missing_list: an official missing-sample list; those files are skipped.
        workers: processes (default: all cores, or this process alone for fewer than
            :data:`SMALL_RUN` files); 1 runs in this process.
        resume: continue the partial file of a killed run from the same folder with the same
            options: samples whose file is unchanged are kept, the others removed and
            reported, the rest converted (a clean run when there is no partial file).
        overwrite: replace an existing cache at ``out`` (never anything else).
        progress: called as ``progress(done, total)`` after each file.
        block: samples per write of the cache (each write is a resume point).

    Returns:
        The :class:`ConvertReport`; ``report.ok`` is False when some files were rejected.

    Raises:
        OutputError: ``out`` is a directory, an input, not a cache, or a cache and not
            ``overwrite``. ConvertError: bad arguments, no input files, no file converted,
            a refused resume, another process writing ``out``, or a failed write.
    """
    options = options or ConvertOptions()
    start = time.perf_counter()
    missing = _read_missing(missing_list) if missing_list else frozenset()
    if dataset not in (*SOURCES, "auto"):
        raise ConvertError(
            f"dataset must be one of {', '.join(SOURCES)} or auto, got {dataset!r}",
            param="dataset",
        )
    if dataset == "auto" and not list_inputs(raw_dir, (), SUFFIX)[0]:
        if list_inputs(raw_dir, (), SOURCES["nucla"][0])[0]:
            dataset = "nucla"
    suffix, layout_name, bodies = SOURCES.get(dataset, SOURCES["ntu60"])
    inputs = scan_inputs(raw_dir, missing, suffix)
    files = inputs.files
    if not files and not inputs.rejected:
        raise ConvertError(f"{raw_dir}: no {suffix} files to convert")
    check_output(out, files, overwrite)
    if dataset == "auto":
        ids = []
        for p in files:
            try:
                ids.append(parse_sample_name(p.name))
            except ValueError:
                pass  # reported per file below
        dataset = detect_dataset(ids)

    report = ConvertReport(
        out=None, dataset=dataset, total=len(files) + len(inputs.rejected),
        skipped_missing=inputs.skipped, rejected=list(inputs.rejected),
        subfolders=inputs.subfolders,
    )  # fmt: skip
    writer_args = dict(
        dataset=dataset, t=options.frames, options=options.to_json(),
        modalities=options.modalities, block=block, source_dir=str(Path(raw_dir).resolve()),
        layout=layout_name, bodies=bodies, modality_options=options.modality_options.to_json(),
    )  # fmt: skip

    def unchanged(record: dict[str, Any]) -> bool:
        st = inputs.stats.get(record["source"])
        if st is None:
            report.removed.append((Path(record["source"]).stem, "its file is gone"))
            return False
        if (st.st_size, st.st_mtime_ns) != (record["size"], record["mtime_ns"]):
            report.removed.append((Path(record["source"]).stem, "its file changed"))
            return False
        return True

    try:
        resumed = CacheWriter.resume(out, **writer_args, keep=unchanged) if resume else None
        if resumed is not None:
            writer, found = resumed
            report.resume_note = found.note
            for record in found.sources:
                report.count(json.loads(record["extra"]))
            report.resumed_from = report.converted
        else:
            writer = CacheWriter(out, **writer_args)
    except CacheError as e:
        raise ConvertError(str(e)) from None
    kept = {r["source"] for r in resumed[1].sources} if resumed is not None else set()
    todo = [str(p) for p in files if p.name not in kept]
    if workers is None and len(todo) < SMALL_RUN:
        workers = 1  # a pool's start-up (numba in a fresh process) costs more than it saves
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    done = len(inputs.rejected) + report.resumed_from
    shard_dir, results = None, None
    for stale in writer.path.parent.glob(f".{writer.path.name}.shards-*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed run; we hold the lock
    try:
        if workers == 1:
            if LEAN_START:
                import skelmod._worker  # noqa: F401
            results = (pool.work((p, options, dataset)) for p in todo)
        else:
            shard_dir = Path(
                tempfile.mkdtemp(prefix=f".{writer.path.name}.shards-", dir=writer.path.parent)
            )
            results = pool.run_pool(todo, options, dataset, workers, shard_dir)
        for path, (name, result, error) in zip(todo, results, strict=True):
            done += 1
            if error is not None:
                report.rejected.append((name, error))
            else:
                st = inputs.stats[Path(path).name]
                counts = sample_counts(result)
                source = {"source": Path(path).name, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                          "extra": json.dumps(counts, sort_keys=True)}  # fmt: skip
                writer.append(result["arrays"], result["meta"], source)
                report.count(counts)
            writer.maybe_flush()
            if progress is not None:
                progress(done, report.total)
        if report.converted == 0:
            writer.abort()
            shown = "; ".join(f"{n}: {r}" for n, r in report.rejected[:3])
            raise ConvertError(
                f"{raw_dir}: none of the {report.total} files converted (first: {shown})",
                report,
            )
        report.bodies_dropped = dict(sorted(report.bodies_dropped.items()))
        report.seconds = time.perf_counter() - start
        summary = {
            "converted": report.converted,
            "skipped_missing": len(report.skipped_missing),
            "rejected": report.rejected,
            "bodies_dropped": report.bodies_dropped,
        }
        report.out = writer.commit({"summary": summary}, sort=True)
    except CacheError as e:
        writer.close()
        raise ConvertError(str(e), report) from None
    except BaseException:
        # The partial file keeps the last consistent resume point written by maybe_flush.
        writer.close()
        raise
    finally:
        if results is not None:
            results.close()  # stops the pool, if any
        if shard_dir is not None:
            shutil.rmtree(shard_dir, ignore_errors=True)
    return report


class _CallableModule(types.ModuleType):
    """This module, callable as :func:`convert`.

    ``skelmod.convert`` names both this module and the package's top-level :func:`convert`;
    once anything imports the module, Python's import system sets the package attribute to
    the module, so ``skelmod.convert(raw_dir, out)`` must work on the module too.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> ConvertReport:
        return convert(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
