"""Output handling shared by every command that writes a cache: the partial file a cache is
built in (renamed into place when complete), the one-writer lock beside it, the free-space check
done before HDF5 is asked to write, and the process-wide flag set when an HDF5 write failed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
from pathlib import Path

from .schema import CacheWriteError, OutputBusyError

PARTIAL_SUFFIX = ".partial"
LOCK_SUFFIX = ".lock"

#: Kept free on the output's file system beyond what a write needs: HDF5 cannot recover from
#: a failed write (it crashes the process when the file is closed), so writes are checked first.
FREE_SPACE_MARGIN = 1 << 20


def partial_path(path: str | os.PathLike) -> Path:
    """Where the writer builds ``path`` before renaming it into place."""
    path = Path(path)
    return path.with_name(path.name + PARTIAL_SUFFIX)


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file beside ``path`` that one writer holds (``OUT.lock``)."""
    path = Path(path)
    return path.with_name(path.name + LOCK_SUFFIX)


class OutputLock:
    """An exclusive ``flock`` on ``OUT.lock``, taken before ``OUT`` or its partial file is
    created or touched; a second writer fails at once with :class:`OutputBusyError`.

    The lock file is removed on release. A writer that opened it just before that removal
    would lock a file nobody else sees, so after locking it checks the path still names the
    file it locked, and retries otherwise. ``lock`` names another lock file (a run folder's
    lock lives inside the folder).
    """

    def __init__(self, path: str | os.PathLike, lock: str | os.PathLike | None = None):
        self.target = Path(path)
        self.path = Path(lock) if lock is not None else lock_path(path)
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise CacheWriteError(
                    f"{self.target}: cannot create the lock file {self.path} ({e.strerror})"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise OutputBusyError(
                    f"{self.target}: another process is writing it (it holds {self.path}); "
                    "wait for it to finish"
                ) from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return self
            os.close(fd)

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


#: Set when HDF5 failed a write: it then crashes the process when it closes the file at exit,
#: so the command line leaves with ``os._exit`` after reporting (see :func:`hdf5_write_failed`).
_hdf5_failed = False


def mark_hdf5_failed() -> None:
    """Record that an HDF5 write failed (see :func:`hdf5_write_failed`)."""
    global _hdf5_failed
    _hdf5_failed = True


def hdf5_write_failed() -> bool:
    """Whether an HDF5 write failed in this process (the process should exit at once)."""
    return _hdf5_failed


def _free_bytes(directory: Path) -> int:
    return shutil.disk_usage(directory).free


def check_free_space(path: Path, nbytes: int) -> None:
    """Raise ``OSError(ENOSPC)`` unless ``path``'s file system has ``nbytes`` to spare."""
    free = _free_bytes(path.parent)
    if free < nbytes + FREE_SPACE_MARGIN:
        raise OSError(
            errno.ENOSPC,
            f"No space left on device: {nbytes + FREE_SPACE_MARGIN} bytes needed, {free} free",
        )


def mkdir_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CacheWriteError(f"{path}: cannot create its folder ({e.strerror or e})") from None
