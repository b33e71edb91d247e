"""Stand-in for ``skelmod.pool.work_block`` whose worker dies converting chosen files.

A test puts :func:`work_block` in place with ``monkeypatch.setattr(pool, "work_block",
work_block)``; the pool pickles it by reference, so each worker imports this module
(``tests/`` is on ``sys.path`` under pytest and workers inherit it). In the worker it swaps
``pool.work`` for one that SIGKILLs the process on the files named in ``POISON`` beside
them: ``"NAME,NAME always"`` kills every time, ``"NAME once"`` only the first time.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from skelmod import pool

_real_work = pool.work


def _poisoned(path: Path) -> bool:
    rule = path.parent / "POISON"
    if not rule.exists():
        return False
    names, _, mode = rule.read_text().partition(" ")
    if path.stem not in names.split(","):
        return False
    mark = path.parent / f"{path.stem}.killed"  # not a .skeleton file: the scan ignores it
    if mode.strip() == "once" and mark.exists():
        return False
    mark.touch()
    return True


def _work(args):
    if _poisoned(Path(args[0])):
        os.kill(os.getpid(), signal.SIGKILL)
    return _real_work(args)


def work_block(args):
    pool.work = _work  # in this worker process only
    return pool.work_block(args)
