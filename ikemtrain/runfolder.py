"""One rule for every folder a command writes: *new*, *resume* or *overwrite*, one writer at a
time, and a ``run.json`` that says what made it.

:func:`open_run_folder` is called by every command that writes a folder (``pretrain``,
``distill``, ``finetune``, ``linear-eval``, ``knn-eval``, ``demo``, ``report``), before it
writes anything:

* **new** (the default): the folder is absent or empty. A folder that holds anything is refused
  and left untouched (:class:`~ikemtrain.errors.OutputExistsError`; a training folder of the
  same kind that holds a checkpoint: :class:`~ikemtrain.errors.CheckpointExistsError`, which
  suggests resuming).
* **resume**: the folder holds a run of the same kind (its ``run.json``, or for a folder made
  before ``run.json`` existed, its checkpoint; the caller checks the checkpoint itself).
  ``run.json`` is only touched once the caller has validated what it resumes from
  (:meth:`RunFolder.resumed`), so a refused resume leaves every file as it was.
* **overwrite**: the folder is empty or holds a run of the same kind, which is removed (its
  entries are first moved into one hidden folder, then deleted). Anything else, a folder of
  another kind or one that is not a run folder, is refused even then: nothing but a run of the
  same command is ever deleted.

The folder is locked for the whole run: an exclusive ``flock`` on ``OUT/run.lock``
(:class:`skelmod.cache.OutputLock`, as a cache writer's), taken before the folder is checked, so
a second process writing the same folder fails at once in one line
(:class:`~skelmod.cache.OutputBusyError`) instead of interleaving two runs.

``run.json`` (:data:`RUN_JSON`) holds ``kind``, ``argv`` (the full ``ikemtrain`` command
line, rendered by ``ikemtrain report`` with :func:`shlex.join`; None for a call of the Python
API, whose process command line is ``process_argv``), ``package_version``, ``git_commit`` (when the
package sits in a git checkout), ``preset`` (the name or file given), ``settings`` (the resolved
settings), ``cache`` (``path``, ``size`` and ``blake2b`` of its bytes), ``started``, ``ended``
and ``status`` (``running``, ``finished`` or ``failed``), and ``resumed``: one entry per
resumption (``argv``, ``started``, ``ended``, ``status``).

A new run that fails before writing any result leaves nothing behind (its ``run.json`` and, if
it created it, the folder are removed), so the same command can be run again into it.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from skelmod.cache import OutputBusyError, OutputLock

from .errors import CheckpointError, CheckpointExistsError, OutputError, OutputExistsError

__all__ = [
    "LOCK_NAME",
    "MODES",
    "RUN_JSON",
    "RunFolder",
    "folder_kind",
    "invocation",
    "note_preset",
    "open_run_folder",
    "read_run_json",
]

RUN_JSON = "run.json"
LOCK_NAME = "run.lock"
MODES = ("new", "resume", "overwrite")
#: The kinds that train and checkpoint (``resume`` applies to them only).
TRAINING_KINDS = ("pretrain", "distill", "finetune")
#: What ``run.json`` says it is.
FORMAT = "ikemtrain-run"
_TRASH_PREFIX = ".overwritten-"
_CHECKPOINT = "checkpoint.pt"

#: The command line and preset of the current command (set by the command-line front end;
#: a library call records ``sys.argv``).
_INVOCATION: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "ikemtrain_invocation", default=None
)


@contextlib.contextmanager
def invocation(argv: list[str], preset: str | None = None) -> Iterator[dict[str, Any]]:
    """Record ``argv`` (and, once known, ``preset``) as the command that runs inside (the
    command-line front end does this; :mod:`cli.options`)."""
    token = _INVOCATION.set({"argv": [str(a) for a in argv], "preset": preset})
    try:
        yield _INVOCATION.get()
    finally:
        _INVOCATION.reset(token)


def note_preset(preset: str) -> None:
    """Record the preset (name or file, as given) of the command that runs (if recorded)."""
    found = _INVOCATION.get()
    if found is not None:
        found["preset"] = str(preset)


def _current() -> dict[str, Any]:
    """The recorded command line; a library call has none (``argv`` None)."""
    found = _INVOCATION.get()
    return found if found is not None else {"argv": None, "preset": None}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _git_commit() -> str | None:
    """The commit of the checkout this package runs from, if any (never an error)."""
    here = Path(__file__).resolve().parent.parent
    if not (here / ".git").exists():
        return None
    try:
        done = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and len(commit) == 40 else None


def file_digest(path: str | os.PathLike) -> dict[str, Any]:
    """``{"path", "size", "blake2b"}`` of a file's bytes (read in 1 MiB blocks)."""
    path = Path(path)
    h = hashlib.blake2b(digest_size=32)
    size = 0
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
            size += len(block)
    return {"path": str(path), "size": size, "blake2b": h.hexdigest()}


def read_run_json(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The ``run.json`` of ``folder`` as a dict; None where there is none.

    Raises OutputError naming the file where it is not a JSON object of this format.
    """
    path = Path(folder) / RUN_JSON
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise OutputError(f"{path}: not a readable run record ({type(e).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise OutputError(f"{path}: not an {FORMAT} run record")
    if not isinstance(data.get("kind"), str):
        raise OutputError(f"{path}: 'kind' must be a string, found {data.get('kind')!r}")
    return data


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != LOCK_NAME)


def folder_kind(folder: str | os.PathLike) -> str | None:
    """What wrote ``folder``: its ``run.json``'s kind, or for a folder written before
    ``run.json``, what its files say (``results.json``'s protocol, ``summary.json``: demo,
    ``report.md``: report, ``checkpoint.pt``: ``"training"``); None if none of these."""
    folder = Path(folder)
    record = read_run_json(folder)
    if record is not None:
        return record["kind"]
    results = folder / "results.json"
    if results.is_file():
        try:
            protocol = json.loads(results.read_text()).get("protocol", "linear-eval")
        except (OSError, ValueError, AttributeError, UnicodeDecodeError):
            return None
        return {"knn": "knn-eval"}.get(protocol, protocol) if isinstance(protocol, str) else None
    if (folder / _CHECKPOINT).is_file():
        return "training"
    if (folder / "summary.json").is_file():
        return "demo"
    if (folder / "report.md").is_file():
        return "report"
    return None


def _same_kind(found: str | None, kind: str) -> bool:
    # a checkpoint folder of before run.json: the caller checks the checkpoint's own kind
    return found == kind or (found == "training" and kind in TRAINING_KINDS)


def _describe(found: str | None) -> str:
    if found is None:
        return "files that are not an ikemtrain run"
    if found == "training":
        return f"a training run ({_CHECKPOINT})"
    return f"a {found} run"


class RunFolder:
    """An output folder held by this process (see the module docstring); use
    :func:`open_run_folder`. ``path``: the folder; ``record``: its ``run.json`` as written."""

    def __init__(self, path: Path, kind: str, mode: str, lock: OutputLock, created: bool):
        self.path, self.kind, self.mode = path, kind, mode
        self._lock, self._created = lock, created
        self.record: dict[str, Any] = {}
        self._resume_entry: dict[str, Any] | None = None

    def _write(self) -> None:
        path = self.path / RUN_JSON
        fd, tmp = tempfile.mkstemp(prefix=RUN_JSON + ".", suffix=".tmp", dir=self.path)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(self.record, indent=2) + "\n")
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def resumed(self) -> None:
        """Record this resumption in ``run.json``: call once what it resumes from is valid."""
        if self.mode != "resume" or self._resume_entry is not None:
            return
        inv = _current()
        self._resume_entry = {"argv": inv["argv"], "started": _now(), "ended": None}
        self._resume_entry["status"] = "running"
        self.record.setdefault("resumed", []).append(self._resume_entry)
        self._write()

    def close(self, ok: bool) -> None:
        """Record the end (``finished`` or ``failed``) and release the lock.

        A new run that failed and wrote nothing but ``run.json`` is removed (and its folder,
        if this run created it); a resume that failed before :meth:`resumed` touches nothing.
        """
        try:
            if self.mode == "resume" and self._resume_entry is None:
                return
            if not ok and self.mode != "resume" and _entries(self.path) == [RUN_JSON]:
                (self.path / RUN_JSON).unlink()
                if self._created:
                    self._lock.release()
                    with contextlib.suppress(OSError):
                        self.path.rmdir()
                return
            entry = self._resume_entry if self._resume_entry is not None else self.record
            entry["ended"] = _now()
            entry["status"] = "finished" if ok else "failed"
            with contextlib.suppress(OSError):  # e.g. disk full: the run's own error matters
                self._write()
        finally:
            self._lock.release()

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(exc_type is None)


def _check_folder(out: Path, kind: str, mode: str) -> str | None:
    """Refuse ``out`` for ``mode`` (module docstring); returns the kind found (None: empty)."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder; give a folder for the output")
    if not out.exists() or not _entries(out):
        if mode == "resume":
            raise CheckpointError(f"no checkpoint at {out / _CHECKPOINT} to resume", param="resume")
        return None
    try:
        found = folder_kind(out)
    except OutputError:
        found = None
    if mode == "new":
        if _same_kind(found, kind) and (out / _CHECKPOINT).exists():
            raise CheckpointExistsError(
                f"{out / _CHECKPOINT} exists; resume to continue that run, overwrite to "
                "replace it, or choose another out_dir",
                param="resume",
            )
        same = _same_kind(found, kind)
        raise OutputExistsError(
            f"{out} is not empty: it holds {_describe(found)}; give a new folder"
            + ("; set overwrite to replace it" if same else ""),
            param="overwrite" if same else None,
        )
    if not _same_kind(found, kind):
        what = "resume" if mode == "resume" else "overwrite"
        raise OutputExistsError(
            f"{out}: holds {_describe(found)}, not a {kind} run; refusing to {what} it (give "
            "another folder)"
        )
    return found


def _lock(out: Path) -> OutputLock:
    return OutputLock(out, lock=out / LOCK_NAME).acquire()


def _busy(out: Path) -> None:
    """Refuse at once, touching nothing, if another process holds ``out``'s lock."""
    lock = out / LOCK_NAME
    if lock.is_file():
        _lock(out).release()  # raises OutputBusyError while another process holds it


def open_run_folder(
    out: str | os.PathLike,
    kind: str,
    mode: str = "new",
    *,
    settings: Mapping[str, Any] | None = None,
    cache: str | os.PathLike | None = None,
    inputs: Mapping[str, Any] | None = None,
) -> RunFolder:
    """Open ``out`` for a ``kind`` run in ``mode`` (``"new"``, ``"resume"``, ``"overwrite"``),
    holding its lock until :meth:`RunFolder.close` (or the end of a ``with`` block).

    Args:
        settings: the resolved settings, recorded in ``run.json``.
        cache: the input cache; its path, size and content hash are recorded.
        inputs: other inputs worth recording (e.g. the teacher run), plain data.

    Raises:
        OutputExistsError: ``out`` holds something ``mode`` may not use (nothing touched).
        CheckpointExistsError: a new run where a run of the same kind has a checkpoint.
        OutputBusyError: another process holds ``out``'s lock (nothing touched).
        OutputError: ``out`` cannot be created or written.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    out = Path(out)
    if out.is_dir():
        _busy(out)
    _check_folder(out, kind, mode)  # before touching anything
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = _lock(out)
    except OutputBusyError:
        raise
    except (OSError, ValueError) as e:  # skelmod's CacheWriteError is an OSError too
        reason = getattr(e, "strerror", None) or type(e).__name__
        raise OutputError(f"{out}: cannot write the output folder ({reason})") from None
    try:
        _check_folder(out, kind, mode)  # again, now that no other writer can change it
        folder = RunFolder(out, kind, mode, lock, created)
        if mode == "resume":
            folder.record = read_run_json(out) or _record(kind, settings, cache, inputs)
            return folder
        if mode == "overwrite":
            _clear(out)
        folder.record = _record(kind, settings, cache, inputs)
        folder._write()
    except OSError as e:
        lock.release()
        if isinstance(e, OutputError):
            raise
        raise OutputError(
            f"{out}: cannot write the output folder ({e.strerror or type(e).__name__})"
        ) from None
    except BaseException:
        lock.release()
        raise
    return folder


def _record(
    kind: str,
    settings: Mapping[str, Any] | None,
    cache: str | os.PathLike | None,
    inputs: Mapping[str, Any] | None,
) -> dict[str, Any]:
    from . import __version__

    inv = _current()
    return {
        "format": FORMAT,
        "version": 1,
        "kind": kind,
        "argv": inv["argv"],
        "process_argv": list(sys.argv),
        "package_version": __version__,
        "git_commit": _git_commit(),
        "preset": inv.get("preset"),
        "settings": dict(settings) if settings is not None else None,
        "cache": file_digest(cache) if cache is not None else None,
        "inputs": dict(inputs) if inputs else {},
        "started": _now(),
        "ended": None,
        "status": "running",
    }


def _clear(out: Path) -> None:
    """Remove everything in ``out`` but the lock: moved into one hidden folder first (each a
    rename), so that the old run is gone from view at once, then deleted."""
    trash = Path(tempfile.mkdtemp(prefix=_TRASH_PREFIX, dir=out))
    for name in _entries(out):
        if out / name != trash:
            os.replace(out / name, trash / name)
    shutil.rmtree(trash)
