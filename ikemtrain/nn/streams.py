"""Running the per-modality encoders ("streams") of one training step.

A six-modality step runs six query encoders forward and backward and six key encoders
forward. The streams share nothing until their pooled features ``f_u`` ``(N, hidden_dim)``
meet in the heads and losses, so their encoder work can run side by side:

* ``threads > 1``: the encoders of a step run on a pool of that many threads, each torch op
  on one intra-op thread (the caller sets ``torch.set_num_threads(1)``; see
  :func:`stream_threads`). Backward is split at the features: the loss is differentiated down
  to detached copies of ``f_u`` (cheap: heads and losses), then each stream's encoder
  backward runs on the pool from its ``f_u``. The chain rule is the same, so gradients equal
  those of one ``loss.backward()`` (tested in float64). Measured on 2 cores
  (``benchmarks/train_step.py``): this beats two intra-op threads, whose small convolutions
  leave one core idle between kernels.
* ``precision="bf16"``: the encoders run under ``torch.autocast`` in bfloat16 (convolutions
  and matmuls; BatchNorm and reductions stay float32) and hand float32 features to the heads,
  so the similarities, the queues and the losses stay float32. Autocast is thread-local, so it
  is entered inside each task.
* ``compile`` (a ``torch.compile`` mode, not ``"none"``): each encoder runs through
  ``torch.compile(encoder)``, made on its first call and held here, outside the model: the
  model's modules, parameters and state-dict keys stay those of the eager model (no
  ``_orig_mod.`` prefix), and the compiled code reads the same parameters, so the momentum
  update and the optimiser move what it computes with. The first step compiles (tens of
  seconds per encoder and grad mode on a CPU, and again under bf16: autocast is part of what a
  compiled graph assumes). torch.compile is not thread-safe (pytorch/pytorch#118260,
  #136833), so compiled encoders run one at a time: ``threads`` must be 1.

Sequential float32 (``threads=1``, ``precision="fp32"``) is exactly the plain per-stream loop.
Dropout draws from torch's one global generator, whose order of draws would depend on the
threads' timing: models refuse ``threads > 1`` with dropout (:func:`check_stream_threads`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any

import torch

from ikemtrain.config import COMPILE_MODES, PRECISIONS

__all__ = [
    "COMPILE_MODES",
    "PRECISIONS",
    "StreamRunner",
    "check_compile",
    "check_stream_threads",
    "stream_threads",
]

#: torch.compile's backend of compiled encoders (tests swap in a capture-only backend).
COMPILE_BACKEND: str | Callable = "inductor"
#: Why compiled encoders run on one thread (the message of every refusal).
_NOT_THREAD_SAFE = "torch.compile is not thread-safe (pytorch/pytorch#118260)"


def check_compile(mode: str, device_type: str) -> None:
    """Raise ValueError when encoders cannot be compiled with ``mode`` on ``device_type``:
    an unknown mode, a torch whose compiler does not run here (Python version, platform), no
    C++ compiler for the CPU code, no triton for the GPU code, CUDA graphs off a GPU."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"expected one of {', '.join(COMPILE_MODES)}, got {mode!r}")
    if mode == "none":
        return
    from torch._dynamo.eval_frame import check_if_inductor_supported

    try:
        check_if_inductor_supported()
    except Exception as e:  # torch says why in its own words (an unsupported Python, Windows)
        raise ValueError(f"{mode}: torch.compile does not run here ({e})") from None
    if mode == "reduce-overhead" and device_type != "cuda":
        raise ValueError(
            f"reduce-overhead records CUDA graphs, which run only on cuda, not on "
            f"{device_type} (torch would skip them and compile as 'default'): use default"
        )
    if device_type == "cpu":
        from torch._inductor.cpp_builder import get_cpp_compiler

        try:
            get_cpp_compiler()
        except Exception:
            raise ValueError(
                f"{mode}: compiling for the cpu needs a C++ compiler (g++ or clang++ on the "
                "PATH, or CXX set); none was found"
            ) from None
    elif device_type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            raise ValueError(f"{mode}: compiling for cuda needs triton, which is not installed")


def check_stream_threads(threads: int, dropout: float) -> None:
    """Raise ValueError when ``threads`` stream threads cannot give a reproducible run."""
    if int(threads) != threads or threads < 1:
        raise ValueError(f"stream threads must be a positive integer, got {threads!r}")
    if threads > 1 and dropout > 0:
        raise ValueError(
            f"{threads} stream threads need dropout 0 (got {dropout}): dropout draws from "
            "torch's one global generator, so the threads' timing would change the result; "
            "use stream_threads = 1"
        )


def stream_threads(
    setting: int,
    streams: int,
    device: torch.device,
    world_size: int,
    dropout: float,
    compiled: bool = False,
) -> int:
    """Stream threads of a run: ``setting`` when positive, else (0, auto) one per CPU core up to
    the number of ``streams`` on a single-process CPU run without dropout or ``compiled``
    encoders, and 1 otherwise (a GPU runs one stream's kernels at a time from one thread;
    DDP's gradient hooks expect one backward per step; torch.compile is not thread-safe)."""
    if setting > 1 and compiled:
        raise ValueError(
            f"stream_threads = {setting} cannot run compiled encoders: {_NOT_THREAD_SAFE}; "
            "use 0 (auto, which picks 1 with compile) or 1, or compile = none"
        )
    if setting > 0:
        if setting > 1 and (device.type != "cpu" or world_size > 1):
            raise ValueError(
                f"stream_threads = {setting} runs only on the CPU in one process; "
                f"this run uses {device.type} with {world_size} process(es): use 0 (auto) or 1"
            )
        check_stream_threads(setting, dropout)
        return setting
    if device.type != "cpu" or world_size > 1 or dropout > 0 or compiled:
        return 1
    return max(1, min(streams, torch.get_num_threads()))


class StreamRunner:
    """Runs one encoder per stream: in sequence or on ``threads`` threads, in ``precision``,
    eager or compiled with the ``torch.compile`` mode ``compile`` (``"none"``: eager;
    ``backend``: torch.compile's, None for :data:`COMPILE_BACKEND`, inductor; a mode applies
    to inductor only).

    Call :meth:`encode` for each set of encoders of a step (query encoders with gradient, key
    encoders under ``no_grad``), then :meth:`backward` on the step's loss instead of
    ``loss.backward()``. The runner holds no tensors between steps except that pending
    backward work, which :meth:`reset` (or the next :meth:`backward`) drops.
    """

    def __init__(
        self,
        threads: int = 1,
        precision: str = "fp32",
        device_type: str = "cpu",
        compile: str = "none",
        backend: str | Callable | None = None,
    ):
        if int(threads) != threads or threads < 1:
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if compile not in COMPILE_MODES:
            raise ValueError(f"compile must be one of {COMPILE_MODES}, got {compile!r}")
        if compile != "none" and threads > 1:
            raise ValueError(f"{threads} threads cannot run compiled encoders: {_NOT_THREAD_SAFE}")
        self.threads = int(threads)
        self.precision = precision
        self.device_type = device_type
        self.compile = compile
        self.backend = COMPILE_BACKEND if backend is None else backend
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        #: ``id(encoder) -> (encoder, its compiled wrapper)``; the encoder is held so that its
        #: id stays its own
        self._compiled: dict[int, tuple[torch.nn.Module, Callable]] = {}

    def __getstate__(self) -> dict[str, Any]:
        # a pool cannot be pickled or deep-copied; a copy compiles its own encoders anew
        return {**self.__dict__, "_pool": None, "_pending": [], "_compiled": {}}

    def _encoder(self, encoder: Callable[[torch.Tensor], torch.Tensor]) -> Callable:
        """``encoder``, or its compiled wrapper (made once, on its first use)."""
        if self.compile == "none" or not isinstance(encoder, torch.nn.Module):
            return encoder
        held = self._compiled.get(id(encoder))
        if held is None or held[0] is not encoder:
            # a mode is inductor's option; another backend takes none
            mode = None if self.compile == "default" or self.backend != "inductor" else self.compile
            held = (encoder, torch.compile(encoder, mode=mode, backend=self.backend))
            self._compiled[id(encoder)] = held
        return held[1]

    def _map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        if self.threads == 1 or len(items) < 2:
            return [fn(item) for item in items]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="stream")
        return list(self._pool.map(fn, items))

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device_type, dtype=torch.bfloat16)
        return nullcontext()

    def reset(self) -> None:
        """Drop pending backward work (a step whose loss was never differentiated)."""
        self._pending = []

    def close(self) -> None:
        """Stop the threads (a later call starts new ones)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown()

    def encode(
        self,
        encoders: Mapping[str, Callable[[torch.Tensor], torch.Tensor]],
        inputs: Mapping[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """``{m: encoders[m](inputs[m])}``, ``(N, hidden_dim)`` features (float32 under bf16).

        Under grad mode with threads, the returned features are detached leaves whose
        encoder backward :meth:`backward` runs later; otherwise they are the encoders'
        outputs themselves.
        """
        names = list(encoders)
        grad = torch.is_grad_enabled()
        run = {m: self._encoder(encoders[m]) for m in names}

        def one(m: str) -> torch.Tensor:
            # grad mode and autocast are thread-local: set both in the task's own thread
            with torch.set_grad_enabled(grad), self._autocast():
                f = run[m](inputs[m])
            return f.float() if f.dtype == torch.bfloat16 else f

        feats = dict(zip(names, self._map(one, names), strict=True))
        if self.threads == 1 or not grad:
            return feats
        leaves = {}
        for m, f in feats.items():
            if f.requires_grad:
                leaves[m] = f.detach().requires_grad_()
                self._pending.append((f, leaves[m]))
            else:
                leaves[m] = f
        return leaves

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, with the pending encoder backward passes run on the threads."""
        pending, self._pending = self._pending, []
        loss.backward()
        work = [(f, leaf.grad) for f, leaf in pending if leaf.grad is not None]
        self._map(lambda fg: torch.autograd.backward(fg[0], fg[1]), work)
