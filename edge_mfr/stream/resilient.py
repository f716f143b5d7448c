"""A live source that survives its camera: failures become retries with exponential back-off, reported as
events (the appliance relocks and keeps systemd informed) instead of a crash.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from edge_mfr.stream.frames import Frame, FrameSource, SourceError, SourceUnavailable, _Base

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Backoff:
    """Retry delays: ``min_seconds``, doubling (``factor``) up to ``max_seconds``."""

    min_seconds: float = 0.5
    max_seconds: float = 30.0
    factor: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.min_seconds <= self.max_seconds or self.factor < 1:
            raise ValueError("back-off needs 0 < min_seconds <= max_seconds and factor >= 1")

    def delay(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (1-based)."""
        return min(self.max_seconds, self.min_seconds * self.factor ** max(attempt - 1, 0))


EventCallback = Callable[[str, dict[str, Any]], None]


class ResilientSource(_Base):
    """Wraps a source so a live camera that disappears is reopened with exponential back-off.

    ``read()`` blocks while the camera is gone, retrying forever (or ``max_attempts``); each failure is
    logged and reported through ``on_event("source_lost", {...})`` *before* the wait, so the caller can
    publish its state and feed the systemd watchdog (keep ``max_seconds`` below WatchdogSec); recovery
    reports ``"source_restored"``. Finite sources pass straight through: their end is ``None`` and their
    errors are raised. Frame indices keep counting across reconnects. ``stop`` (a threading.Event) ends
    the waiting early: ``read()`` then returns ``None``. ``clock``/``sleep`` are injectable for tests.
    """

    def __init__(self, source: FrameSource, backoff: Backoff | None = None,
                 on_event: EventCallback | None = None, max_attempts: int | None = None,
                 stop: threading.Event | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] | None = None):
        self.source = source
        self.backoff = backoff or Backoff()
        self.on_event = on_event
        self.max_attempts = max_attempts
        self.stop = stop
        self.clock = clock
        self.sleep = sleep or (stop.wait if stop is not None else time.sleep)
        self.name = source.name
        self.live = source.live
        self.failures = 0  # consecutive failures of the current outage
        self.outages = 0
        self._index = 0
        self._lost_at: float | None = None
        self._opened = False

    def _report(self, kind: str, payload: dict[str, Any]) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(kind, payload)
        except Exception:  # a broken reporter must not take the camera loop down
            log.exception("%s: event callback failed", self.name)

    def _stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def _failed(self, exc: SourceError) -> bool:
        """Record one failure and wait; False when giving up or asked to stop."""
        if not self.live or not isinstance(exc, SourceUnavailable):
            raise exc
        try:
            self.source.close()
        except Exception as close_exc:
            log.debug("%s: close after failure: %s", self.name, close_exc)
        self._opened = False
        if self.failures == 0:
            self._lost_at = self.clock()
            self.outages += 1
        self.failures += 1
        if self.max_attempts is not None and self.failures > self.max_attempts:
            raise SourceUnavailable(f"{exc} (gave up after {self.max_attempts} retries)")
        delay = self.backoff.delay(self.failures)
        log.warning("%s; retry %d in %.1f s", exc, self.failures, delay)
        self._report("source_lost", {"source": self.name, "error": str(exc), "attempt": self.failures,
                                     "retry_in": delay})
        if self._stopped():
            return False
        self.sleep(delay)
        return not self._stopped()

    def open(self) -> None:
        while not self._opened:
            try:
                self.source.open()
                self._opened = True
            except SourceError as exc:
                if not self._failed(exc):
                    return

    def read(self) -> Frame | None:
        while True:
            if self._stopped():
                return None
            try:
                if not self._opened:
                    self.source.open()
                    self._opened = True
                frame = self.source.read()
            except SourceError as exc:
                if not self._failed(exc):
                    return None
                continue
            if frame is None:
                return None
            if self.failures:
                downtime = self.clock() - (self._lost_at or self.clock())
                log.info("%s: frames again after %d retries (%.1f s)", self.name, self.failures, downtime)
                self._report("source_restored", {"source": self.name, "attempts": self.failures,
                                                 "downtime": downtime})
                self.failures = 0
            frame = replace(frame, index=self._index)
            self._index += 1
            return frame

    def close(self) -> None:
        self._opened = False
        self.source.close()
