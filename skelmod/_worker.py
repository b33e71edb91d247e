"""Start-up of a process that converts (a ``skelmod convert`` worker, or the command itself
with one worker): numba initialised once, without SciPy.

Numba imports ``scipy.linalg`` when it first builds its typing context, only to offer BLAS to
``np.dot`` and ``np.linalg`` in compiled code, which skelmod's kernels never use; that import
is about a third of a worker's start-up (0.17 of 0.6 s measured, issue 22). :func:`start` hides
SciPy from that one import (numba then records that it has no BLAS) and builds the context, so
the compiled kernels load from numba's cache at once. Only processes that skelmod owns call
it: in a library user's process numba is left as it is. Importing this module in a forkserver
(the pool's preload) starts numba there, once; every worker forked from it inherits it.
"""

from __future__ import annotations

import importlib.abc
import sys

_started = False


class _HideScipy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "scipy" or name.startswith("scipy."):
            raise ImportError(f"{name} is not needed to convert skeletons")
        return None


def start() -> None:
    """Import numba and build its CPU typing context; without SciPy when it is not loaded yet."""
    global _started
    if _started:
        return
    hide = "numba" not in sys.modules and "scipy" not in sys.modules
    finder = _HideScipy()
    if hide:
        sys.meta_path.insert(0, finder)
    try:
        from numba.core.registry import cpu_target

        cpu_target.target_context.refresh()
    finally:
        if hide:
            sys.meta_path.remove(finder)
    _started = True


start()

from . import pipeline  # noqa: E402, F401 - the compiled pipeline, loaded after numba started
