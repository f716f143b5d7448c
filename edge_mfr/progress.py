"""Progress of long commands on stderr: a tqdm bar on a terminal, plain lines in a log.

Why both: a person at a terminal wants a live bar; a log (systemd, CI, `| tee`) cannot show a bar and
would otherwise show nothing for minutes. In a log a line is written at every tenth of the total (or every
``every`` items when the total is unknown), so the output depends on the work done, not on the clock.
"""

from __future__ import annotations

import sys
from typing import TextIO


class Progress:
    """One long step: ``update()`` per item done, ``close()`` at the end (also a context manager)."""

    def __init__(self, desc: str, total: int | None = None, unit: str = "item", *, stream: TextIO | None = None,
                 tty: bool | None = None, every: int = 25) -> None:
        self.desc, self.total, self.unit, self.every = desc, total, unit, every
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.done = 0
        self._last_step = 0
        self._bar = None
        self._closed = False
        if self.tty:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False, file=self.stream)
        else:
            self._line(f"{desc}: started{f' ({self._count(total)})' if total else ''}")

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        if self.total:
            step = min(10, self.done * 10 // self.total)
            if step > self._last_step and self.done < self.total:
                self._last_step = step
                self._line(f"{self.desc}: {self.done}/{self._count(self.total)} ({step * 10}%)")
        elif self.done % self.every == 0:
            self._line(f"{self.desc}: {self._count(self.done)}")

    def close(self, failed: bool = False) -> None:
        """End the bar or write the closing line ("stopped after", not "done", when the work failed)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.tty:
            pass
        elif not self._closed:
            self._line(f"{self.desc}: {'stopped after' if failed else 'done,'} {self._count(self.done)}")
        self._closed = True

    def _count(self, n: int) -> str:
        if n == 1:
            return f"{n} {self.unit}"
        return f"{n} {self.unit[:-1] + 'ies' if self.unit.endswith('y') else self.unit + 's'}"

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type, *_) -> None:
        self.close(failed=exc_type is not None)


class StagedProgress:
    """A ``progress(stage, done, total)`` hook (as ``run_eval`` calls it) shown as one Progress per stage."""

    def __init__(self, prefix: str, *, units: dict[str, str] | None = None, stream: TextIO | None = None,
                 tty: bool | None = None) -> None:
        self.prefix, self.units, self.stream, self.tty = prefix, units or {}, stream, tty
        self._stage: str | None = None
        self._current: Progress | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self._stage:
            self.close()
            self._stage = stage
            self._current = Progress(f"{self.prefix}: {stage}", total, self.units.get(stage, "item"),
                                     stream=self.stream, tty=self.tty)
        assert self._current is not None
        if done > self._current.done:
            self._current.update(done - self._current.done)

    def close(self, failed: bool = False) -> None:
        if self._current is not None:
            self._current.close(failed)
            self._current = None
