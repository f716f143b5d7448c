"""Blink detection on one track's eye-openness signal: open -> closed -> open within a time window.

A printed photo or a phone showing a still never closes its eyes; a live person blinks every few
seconds, and at a door can be asked to. Eye openness differs between people, with glasses and with
the camera angle, so "closed" is judged against the track's own open level (a high percentile of its
recent samples), not a fixed number: a closure is a drop below ``close_ratio`` of that level, the blink
ends when the eye is back above ``open_ratio`` of it, and the closure must be short (a blink, not a
squint or the landmark model losing the eye). Samples the landmark model does not trust (face presence
below ``min_presence``: profile views, occlusions) are skipped, never read as closed eyes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class BlinkDetector:
    """Feed ``(time_s, openness, presence)`` samples of one track; :attr:`blinked_at` is the first blink's end."""

    window_s: float = 4.0  # how far back the open level is measured and a blink may start
    close_ratio: float = 0.75
    open_ratio: float = 0.9
    max_closed_s: float = 0.6  # longer than a blink: a squint, a nod or a lost eye
    min_open: float = 0.18  # open level below this: the eyes are not measurable (too small, too turned)
    min_presence: float = 0.5
    min_samples: int = 3  # open samples needed before a drop can count
    min_history_s: float = 0.5  # and the time they must span: an open level from 0.2 s of jitter is noise
    samples: deque[tuple[float, float]] = field(default_factory=deque)
    blinked_at: float | None = None  # end of the first blink
    last_blink_at: float | None = None
    blinks: int = 0
    _closed_since: float | None = None
    _closed_level: float = 0.0
    _squinting: bool = False  # closed too long: the eye must open again before a closure counts

    @property
    def closed(self) -> bool:
        """Is the eye closed (or squinting) as of the last trusted sample?"""
        return self._closed_since is not None or self._squinting

    def open_level(self) -> float:
        """The 80th percentile of recent openness: the eyes' open level, robust to the blink itself."""
        values = sorted(v for _, v in self.samples)
        if not values:
            return 0.0
        return values[min(len(values) - 1, int(0.8 * len(values)))]

    def update(self, t: float, openness: float, presence: float = 1.0) -> bool:
        """Add one sample; True when this sample completes a blink."""
        if presence < self.min_presence:
            return False
        while self.samples and t - self.samples[0][0] > self.window_s:
            self.samples.popleft()
        level = self.open_level()
        ready = (len(self.samples) >= self.min_samples and level >= self.min_open
                 and t - self.samples[0][0] >= self.min_history_s)
        self.samples.append((t, openness))
        if not ready:
            return False
        if self._squinting:
            self._squinting = openness < self.open_ratio * level
            return False
        if self._closed_since is None:
            if openness < self.close_ratio * level:
                self._closed_since = t
                self._closed_level = level
            return False
        if t - self._closed_since > self.max_closed_s:
            self._closed_since = None  # too long closed: not a blink; wait for the eye to open again
            self._squinting = True
            return False
        if openness >= self.open_ratio * self._closed_level:
            self._closed_since = None
            self.blinks += 1
            self.last_blink_at = t
            if self.blinked_at is None:
                self.blinked_at = t
            return True
        return False

    def last_blink_within(self, now: float, window_s: float) -> bool:
        """Did a blink end in the last ``window_s`` seconds? (A clock that went back counts as no.)"""
        return self.last_blink_at is not None and 0 <= now - self.last_blink_at <= window_s
