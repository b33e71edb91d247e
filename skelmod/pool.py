"""The process pool of ``skelmod convert``: files converted by worker processes, in order,
with the arrays passed back through ``.npy`` shards, and workers that die survived.

Each worker runs :func:`skelmod.pipeline.convert_file` on blocks of files. A worker that dies
(OOM killer, a signal) breaks the pool: the files it held are retried once, each alone in a
fresh worker, and reported as failed if that worker dies too; the run never hangs.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np

from .options import ConvertOptions

Result = tuple[str, dict[str, Any] | None, str | None]

#: Per input file (index into the run's list): the pid of the worker converting it, 0 before,
#: -1 after. Set in each worker by :func:`_init_worker`; tells which files a dead worker held.
_BUSY: Any = None


def _init_worker(busy) -> None:
    global _BUSY
    _BUSY = busy


def work(args: tuple[str, ConvertOptions, str | None]) -> Result:
    path, options, dataset = args
    name = Path(path).stem
    from .pipeline import convert_file  # loaded once per worker process

    try:
        return name, convert_file(path, options, dataset), None
    except (ValueError, OSError) as e:  # format, name and empty-sequence errors are ValueErrors
        return name, None, str(e)
    except Exception as e:  # noqa: BLE001 - one odd file must never stop the others
        return name, None, f"internal error {type(e).__name__}: {e}"


def work_block(
    args: tuple[list[int], list[str], ConvertOptions, str | None, str],
) -> list[Result]:
    """Convert a block of files in a worker; the arrays go to the ``.npy`` shard ``args[4]``.

    Only names, metadata and errors travel back through the pipe: on some machines a pipe
    costs as much per sample as converting it, which stopped workers from scaling.
    """
    indices, paths, options, dataset, shard = args
    results = []
    for i, p in zip(indices, paths, strict=True):
        _BUSY[i] = os.getpid()
        results.append(work((p, options, dataset)))
        _BUSY[i] = -1
    converted = [r for _, r, _ in results if r is not None]
    if converted:
        stacked = np.stack(
            [np.stack([r["arrays"][m] for m in options.modalities]) for r in converted]
        )
        np.save(shard, stacked)
        for r in converted:
            del r["arrays"]
    return results


def _died(path: str, why: str) -> Result:
    return Path(path).stem, None, f"{path}: worker died while converting it ({why})"


def run_pool(
    todo: list[str], options: ConvertOptions, dataset: str, workers: int, shard_dir: Path
) -> Iterator[Result]:
    """``(name, result, error)`` per file, in order, converted by a pool of processes.

    A worker that dies (OOM killer, a signal) breaks the pool. The files it was converting
    are then retried once, each alone in a fresh worker, and reported as failed if that
    worker dies too; the other unfinished files go to a fresh pool. The run never hangs.
    """
    ctx = _pool_context()
    busy = ctx.Array("q", len(todo), lock=False)
    block = max(1, min(16, len(todo) // (4 * workers)))
    shards = itertools.count()
    # Units of work in file order: (indices, alone). "alone" units hold one suspect file.
    queue: deque[tuple[list[int], bool]] = deque(
        (list(range(i, min(i + block, len(todo)))), False) for i in range(0, len(todo), block)
    )
    fruitless = 0
    while queue:
        alone = queue[0][1]
        batch = [queue.popleft()[0]] if alone else []
        while not alone and queue and not queue[0][1]:
            batch.append(queue.popleft()[0])
        done = 0
        jobs = []
        for idx in batch:
            for i in idx:
                busy[i] = 0
            jobs.append((idx, [todo[i] for i in idx], options, dataset,
                         str(shard_dir / f"{next(shards)}.npy")))  # fmt: skip
        pool = ProcessPoolExecutor(
            1 if alone else workers, mp_context=ctx, initializer=_init_worker, initargs=(busy,)
        )
        try:
            window = 2 * workers
            futures = deque(pool.submit(work_block, j) for j in jobs[:window])
            for k, job in enumerate(jobs):
                results = futures.popleft().result()
                if k + window < len(jobs):
                    futures.append(pool.submit(work_block, jobs[k + window]))
                yield from _unpack(results, job[4], options)
                done += 1
        except BrokenProcessPool:
            rest = [i for idx in batch[done:] for i in idx]
            if alone:
                yield _died(todo[rest[0]], "again when retried alone; out of memory? killed?")
                continue
            suspects = {i for i in rest if busy[i] > 0}
            fruitless = 0 if suspects else fruitless + 1
            if fruitless >= 3:  # workers die before converting anything: give up on the rest
                for i in rest + [i for idx, _ in queue for i in idx]:
                    yield _died(todo[i], "workers kept dying before converting anything")
                return
            queue.extendleft(reversed(_requeue(rest, suspects, block)))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _requeue(rest: list[int], suspects: set[int], block: int) -> list[tuple[list[int], bool]]:
    """Units for the files left after a pool broke, in order; suspects alone."""
    units: list[tuple[list[int], bool]] = []
    for i in rest:
        if i in suspects:
            units.append(([i], True))
        elif units and not units[-1][1] and len(units[-1][0]) < block:
            units[-1][0].append(i)
        else:
            units.append(([i], False))
    return units


def _unpack(results: list[Result], shard: str, options: ConvertOptions) -> Iterator[Result]:
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
    # The server imports skelmod once; each worker forked from it starts at once (a pool is
    # started again after a worker dies).
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["skelmod._worker", __name__])
    return ctx
