"""Progress of a long phase (training steps, feature extraction, a conversion), on stderr.

On a terminal: one line redrawn in place, ``label [#####.....] 12/40 3.2 batch/s ETA 0:09``,
cleared when the phase ends (the caller's summary line takes its place). Elsewhere (a log
file, a pipe, CI): a plain line every ``every`` steps and at the end, ``label: 12/40 (30%),
3.2 batch/s, ETA 9 s``, so a log shows that a run is alive and how fast it goes.

Torch-free and small, so every command can use it: the training loop wraps its loader
(:func:`tracked`), feature extraction drives a :class:`Progress` by hand.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

__all__ = ["Progress", "format_duration", "tracked"]

#: Plain lines per phase when the output is not a terminal (every ``ceil(total / LINES)``
#: steps, and the last).
LINES = 10
#: Seconds between redraws of the terminal bar.
REDRAW_S = 0.1
BAR_WIDTH = 20


def format_duration(seconds: float) -> str:
    """``9 s``, ``2:05``, ``1:02:05``."""
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Progress of ``total`` steps of a phase named ``label``; :meth:`update` after each step,
    :meth:`close` at the end (or use it as a context manager).

    Args:
        label: what runs, e.g. ``"epoch 3/8"`` or ``"features xview-train"``.
        total: the number of steps (0: nothing is shown).
        unit: the step's name in the rate (``batch/s``).
        stream: where to write; None: ``sys.stderr`` at construction.
        enabled: False shows nothing (a library call with ``echo=None``, a non-main rank).
        every: steps between plain lines off a terminal [default: ``ceil(total / LINES)``].
        clock: seconds, monotonic (tests pass their own).
    """

    def __init__(
        self,
        label: str,
        total: int,
        unit: str = "batch",
        stream: TextIO | None = None,
        enabled: bool = True,
        every: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label, self.total, self.unit, self.clock = label, int(total), unit, clock
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled and self.total > 0
        isatty = getattr(self.stream, "isatty", None)
        self.terminal = bool(isatty and isatty())
        self.every = every if every is not None else max(1, math.ceil(self.total / LINES))
        self.done = 0
        self.started = clock()
        self._drawn_at = -math.inf
        self._width = 0

    def rate(self) -> float:
        elapsed = self.clock() - self.started
        return self.done / elapsed if elapsed > 0 else math.nan

    def eta(self) -> float:
        rate = self.rate()
        return (self.total - self.done) / rate if rate > 0 else math.nan

    def update(self, n: int = 1) -> None:
        """``n`` more steps are done."""
        self.done = min(self.done + n, self.total)
        if not self.enabled:
            return
        if self.terminal:
            now = self.clock()
            if now - self._drawn_at >= REDRAW_S or self.done == self.total:
                self._drawn_at = now
                self._draw()
        elif self.done % self.every == 0 or self.done == self.total:
            self._write(self.line() + "\n")

    def line(self) -> str:
        """The plain line: ``label: done/total (p%), rate unit/s, ETA t``."""
        pct = 100.0 * self.done / self.total
        text = f"{self.label}: {self.done}/{self.total} ({pct:.0f}%), {self._rate()}"
        if self.done < self.total:
            text += f", ETA {format_duration(self.eta())}"
        else:
            text += f", {format_duration(self.clock() - self.started)}"
        return text

    def _rate(self) -> str:
        rate = self.rate()
        return f"{rate:.3g} {self.unit}/s" if math.isfinite(rate) else f"? {self.unit}/s"

    def _draw(self) -> None:
        filled = BAR_WIDTH * self.done // self.total
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        text = (
            f"{self.label} [{bar}] {self.done}/{self.total} {self._rate()} "
            f"ETA {format_duration(self.eta())}"
        )
        self._write("\r" + text.ljust(self._width))
        self._width = len(text)

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def close(self) -> None:
        """End the phase: on a terminal the bar is cleared."""
        if self.enabled and self.terminal and self._width:
            self._write("\r" + " " * self._width + "\r")
        self.enabled = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Tracked:
    """An iterable (a DataLoader) whose iteration drives a :class:`Progress`; every other
    attribute (``dataset``, ``len``) is the wrapped object's."""

    def __init__(self, iterable: Any, label: str, enabled: bool, unit: str) -> None:
        self._iterable, self._label, self._enabled, self._unit = iterable, label, enabled, unit

    def __len__(self) -> int:
        return len(self._iterable)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._iterable, name)

    def __iter__(self) -> Iterator[Any]:
        with Progress(self._label, len(self._iterable), self._unit, enabled=self._enabled) as bar:
            for item in self._iterable:
                yield item
                bar.update()


def tracked(iterable: Iterable[Any], label: str, enabled: bool = True, unit: str = "batch"):
    """``iterable`` (with a length) showing a :class:`Progress` on stderr as it is iterated."""
    return _Tracked(iterable, label, enabled, unit)
