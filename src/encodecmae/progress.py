"""Progress of long steps as whole lines, for job logs.

tqdm redraws its bar with carriage returns even when its output is a file (every rule sends a
job's stdout and stderr to its log), so a log holds one ever-growing line that ``tail -f``,
``less`` and ``grep`` show badly. ``Progress`` prints whole lines instead, at most every
``interval`` seconds, plus one when it is closed::

    resample 000: 120/400 file (30%), 5.2 file/s, elapsed 0:00:23, ETA 0:00:54
    resample 000: 400/400 file (100%), 5.1 file/s, elapsed 0:01:18, done

Usage: ``for f in progress(files, "resample 000", unit="file"): ...`` or, with counts other
than one, ``with Progress("embed", total=n, unit="chunk") as p: ... p.update(k)``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, TypeVar

T = TypeVar("T")

DEFAULT_INTERVAL = 10.0  # seconds between lines
_BINARY = ["", "Ki", "Mi", "Gi", "Ti", "Pi"]


def format_duration(seconds: float) -> str:
    """``3725.2`` -> ``1:02:05`` (hours unbounded)."""
    s = int(max(0.0, seconds) + 0.5)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _scaled(x: float, unit: str) -> str:
    """``1536, "B"`` -> ``1.5 KiB`` (binary prefixes, for byte counts)."""
    i = 0
    while abs(x) >= 1024 and i < len(_BINARY) - 1:
        x, i = x / 1024, i + 1
    return f"{x:.1f} {_BINARY[i]}{unit}"


class Progress:
    """Counts work done and prints ``name: i/n unit (x%), rate, elapsed, ETA`` lines.

    ``total`` may be None (unknown: no percentage or ETA). ``scale`` writes counts with binary
    prefixes (bytes). ``disable`` prints nothing. Lines go to ``file`` (stderr by default, as
    tqdm's), flushed.
    """

    def __init__(self, name: str, total: int | None = None, unit: str = "it", interval: float = DEFAULT_INTERVAL,
                 file: IO[str] | None = None, disable: bool = False, scale: bool = False):
        self.name, self.total, self.unit, self.interval = name, total, unit, interval
        self.file, self.disable, self.scale = file, disable, scale
        self.count = 0
        self.closed = False
        self.t0 = self._last = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.count += n
        if not self.disable and time.perf_counter() - self._last >= self.interval:
            self._print(final=False)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if not self.disable:
                self._print(final=True)

    def line(self, final: bool = False) -> str:
        elapsed = time.perf_counter() - self.t0
        rate = self.count / elapsed if elapsed > 0 else 0.0
        fmt = (lambda x: _scaled(x, self.unit)) if self.scale else (lambda x: f"{x} {self.unit}")
        if self.total:
            done = _scaled(self.count, self.unit) if self.scale else str(self.count)
            parts = [f"{done}/{fmt(self.total)} ({100 * self.count / self.total:.0f}%)"]
        else:
            parts = [fmt(self.count)]
        if self.scale:
            parts.append(f"{_scaled(rate, self.unit)}/s")
        elif rate >= 1 or rate == 0:
            parts.append(f"{rate:.1f} {self.unit}/s")
        else:
            parts.append(f"{1 / rate:.1f} s/{self.unit}")
        parts.append(f"elapsed {format_duration(elapsed)}")
        if final:
            parts.append("done" if not self.total or self.count >= self.total else "stopped")
        elif self.total and rate > 0:
            parts.append(f"ETA {format_duration((self.total - self.count) / rate)}")
        return f"{self.name}: " + ", ".join(parts)

    def _print(self, final: bool) -> None:
        print(self.line(final), file=self.file or sys.stderr, flush=True)
        self._last = time.perf_counter()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(iterable: Iterable[T], name: str, total: int | None = None, unit: str = "it",
             interval: float = DEFAULT_INTERVAL, file: IO[str] | None = None, disable: bool = False) -> Iterator[T]:
    """``iterable``, printing progress lines as its items are consumed (``total`` defaults to
    its length when it has one)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with Progress(name, total, unit, interval, file, disable) as p:
        for item in iterable:
            yield item
            p.update(1)
