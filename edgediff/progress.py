"""Progress for long work, the same on every command: a bar redrawn in place on stderr when stderr is a terminal;
elsewhere (nohup, CI, pipes) plain lines on stdout, which a log keeps and a human can grep: one at each tenth of
the work and at least every LINE_EVERY_S seconds once the work has run QUIET_S seconds (short work stays quiet),
and one whenever the caller marks a step (a checkpoint). stderr stays for the one-line errors scripts rely on.

Pure Python, no tqdm: the device install (no training extras) shows the same progress as the training side.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

LINE_EVERY_S = 30.0
QUIET_S = 5.0
REDRAW_S = 0.1
WIDTH = 24


def rate_text(rate: float, unit: str = "steps") -> str:
    """`2.51 steps/s`, or for slow work (a 384 px step can take minutes) `1 step per 9.6 min` instead of 0.00."""
    if rate >= 0.1 or rate <= 0:
        return f"{rate:.2f} {unit}/s"
    seconds = 1.0 / rate
    single = unit[:-1] if unit.endswith("s") else unit
    return f"1 {single} per {seconds:.0f} s" if seconds < 120 else f"1 {single} per {seconds / 60:.1f} min"


class Progress:
    """`update(done)` with done in 1..total; `close()` ends the bar's line."""

    def __init__(self, label: str, total: int, *, start: int = 0, unit: str = "steps", tenths: bool = True,
                 enabled: bool = True):
        self.label, self.total, self.start, self.unit, self.tenths = label, max(1, total), start, unit, tenths
        self.enabled = enabled
        self.tty = enabled and sys.stderr.isatty()
        self.stream: TextIO = sys.stderr if self.tty else sys.stdout
        self.t0 = self.last = time.perf_counter()
        self.drawn = False
        self.tenth = (10 * start) // self.total

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def _rate(self, done: int) -> str:
        rate = (done - self.start) / max(time.perf_counter() - self.t0, 1e-9)
        left = (self.total - done) / rate if rate > 0 else float("inf")
        eta = f", {left:.0f} s left" if done < self.total and left != float("inf") else ""
        return f"{rate_text(rate, self.unit)}{eta}"

    def update(self, done: int, note: str = "", line: bool = False) -> None:
        """Report `done` of `total`; `note` is appended (e.g. the loss); `line` forces a plain line."""
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.tty:
            if now - self.last >= REDRAW_S or done >= self.total or not self.drawn:
                k = WIDTH * done // self.total
                self.drawn, self.last = True, now  # first: a Ctrl-C during the write must still end the line
                self._write(f"\r{self.label} [{'#' * k}{'.' * (WIDTH - k)}] {done}/{self.total}{note}  "
                            f"{self._rate(done)}\x1b[K")
            return
        tenth = (10 * done) // self.total
        due = now - self.t0 >= QUIET_S and ((self.tenths and tenth > self.tenth) or now - self.last >= LINE_EVERY_S)
        if line or due:
            self._write(f"{self.label} {done}/{self.total}{note}  {self._rate(done)}\n")
            self.last = now
        self.tenth = tenth

    def step_callback(self) -> Callable[[int, int], None]:
        """An `on_step(done, total)` callable for the samplers."""
        def on_step(done: int, total_now: int) -> None:
            if total_now != self.total:
                self.total = max(1, total_now)
            self.update(done)

        return on_step

    def close(self) -> None:
        if self.tty and self.drawn:
            self._write("\n")
        self.drawn = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
