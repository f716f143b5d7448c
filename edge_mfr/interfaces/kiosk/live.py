"""Live view: draw the newest frame's tracks and encode one shared JPEG per viewer tick; the door's banner
and recent events. The frame loop only hands over a reference (``on_frame``); drawing and encoding happen in a
viewer's thread, at most ``stream_fps`` times a second, one encoded frame shared by all viewers."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

import cv2
import numpy as np

HOLD_S = 5.0  # how long the banner keeps a decision after it was made
EVENT_TEXT = {"access_granted": "granted", "access_denied": "denied", "unknown_face": "unknown face",
              "lockout": "lockout", "lockout_ended": "lockout ended", "unlocked": "door unlocked",
              "locked": "door locked", "watchdog_tripped": "watchdog relocked the door",
              "gallery_reloaded": "people updated", "liveness_refused": "no blink, not let in"}


def track_label(view: Any) -> Any:
    """The same label style as `recognize --annotate`: green name and score, red unknown, amber undecided;
    a recognised person the door refuses (lockout, not allowed, schedule) is red with the reason, and one
    outside the door zone amber: green only when the door would let them in."""
    from edge_mfr.vision.draw import AMBER, GREEN, RED, Label

    mask = " (mask)" if view.masked else ""
    if view.decided is None:
        return Label(f"checking{mask}", AMBER)
    if view.decided == "unknown":
        return Label(f"unknown{mask}", RED)
    who = f"{view.name or view.decided} {view.score:.2f}{mask}"
    refused = getattr(view, "refused", None)
    if refused == "not at the door" or not getattr(view, "in_zone", True):
        return Label(f"{who}: not at the door", AMBER)  # recognised, but the door does not act on it
    if refused:
        return Label(f"{who}: refused, {refused}", RED)  # the same verdict as the door: never green
    return Label(who, GREEN)


def annotate_report(image: np.ndarray, tracks: list[Any], max_width: int | None = None) -> np.ndarray:
    """``image`` (RGB) scaled to at most ``max_width`` with every track's box and label drawn."""
    from edge_mfr.vision.draw import draw_faces
    from edge_mfr.vision.types import Face

    scale = 1.0
    if max_width and image.shape[1] > max_width:
        scale = max_width / image.shape[1]
        size = (max_width, max(1, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    no_points = np.full((6, 2), np.nan, np.float32)
    faces = [Face(np.asarray(t.box, np.float32) * scale, 1.0, no_points) for t in tracks]
    return draw_faces(image, faces, [track_label(t) for t in tracks], keypoints=False)


# ------------------------------------------------------------------------------------------- live view


class LiveView:
    """The newest frame report, stored by the frame loop and encoded lazily, once, for all viewers."""

    def __init__(self, max_width: int = 640, quality: int = 80):
        self.max_width = max_width
        self.quality = quality
        self._cond = threading.Condition()
        self._seq = 0
        self._report: Any = None
        self._encode_lock = threading.Lock()
        self._jpeg: tuple[int, bytes] | None = None
        self.encoded = 0  # frames encoded so far (for measurements)

    def on_frame(self, report: Any) -> None:
        """The frame hook: keep a reference and wake the viewers; nothing else runs in the loop's thread."""
        with self._cond:
            self._report = report
            self._seq += 1
            self._cond.notify_all()

    def latest(self) -> tuple[int, Any]:
        with self._cond:
            return self._seq, self._report

    def wait_newer(self, seq: int, timeout: float) -> int:
        """The newest sequence number once it differs from ``seq`` (or after ``timeout``)."""
        with self._cond:
            self._cond.wait_for(lambda: self._seq != seq, timeout)
            return self._seq

    def jpeg(self) -> tuple[int, bytes] | None:
        """The newest frame, annotated and JPEG-encoded (cached per frame); None before the first frame."""
        seq, report = self.latest()
        if report is None or getattr(report, "image", None) is None:
            return None
        with self._encode_lock:
            if self._jpeg is not None and self._jpeg[0] == seq:
                return self._jpeg
            drawn = annotate_report(report.image, report.tracks, self.max_width)
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            if not ok:
                return self._jpeg
            self._jpeg = (seq, buf.tobytes())
            self.encoded += 1
            return self._jpeg


# ----------------------------------------------------------------------------------------- status board


class StatusBoard:
    """Recent events (from ``on_event``) and the banner they imply; no journal reads in the hot path."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, hold_s: float = HOLD_S, keep: int = 20):
        self.clock = clock
        self.hold_s = hold_s
        self._lock = threading.Lock()
        self._events: deque[dict[str, str]] = deque(maxlen=keep)
        self._grant: tuple[float, str, Any] | None = None  # (time, name, track id)
        self._deny: tuple[float, str] | None = None
        self._unknown_at = -float("inf")

    def on_event(self, kind: str, event: dict[str, Any]) -> None:
        if kind == "mask_status":
            return
        now = self.clock()
        who = event.get("name") or event.get("person_id") or ""
        with self._lock:
            if kind == "access_granted":
                self._grant = (now, who, event.get("track_id"))
            elif kind == "access_denied":
                self._deny = (now, who)
            elif kind == "unknown_face":
                self._unknown_at = now
            text = EVENT_TEXT.get(kind, kind.replace("_", " "))
            if who:
                text += f": {who}"
            if kind in ("access_granted", "access_denied") and isinstance(event.get("score"), int | float):
                text += f" ({event['score']:.2f})"
            if kind in ("locked", "unlocked") and event.get("reason"):
                text += f" ({event['reason']})"
            self._events.appendleft({"time": datetime.now().strftime("%H:%M:%S"), "kind": kind, "text": text})

    def events(self) -> list[dict[str, str]]:
        with self._lock:
            return list(self._events)

    def banner(self, report: Any, unlocked: bool, lockout_s: float) -> dict[str, str]:
        """Welcome, NAME / Blink to enter / Access denied / Unknown / Locked out / Door open / Door locked.

        "Blink to enter" while a recognised face waits for the door's liveness check (a track view whose
        ``liveness`` is "waiting"): without it the person would not know why the door stays shut."""
        now = self.clock()
        tracks = report.tracks if report is not None else []
        with self._lock:
            grant, deny, unknown_at = self._grant, self._deny, self._unknown_at
        if lockout_s > 0:
            return {"kind": "lockout", "text": f"Locked out: try again in {lockout_s:.0f} s"}
        if grant and (now - grant[0] < self.hold_s or any(t.track_id == grant[2] for t in tracks)):
            return {"kind": "welcome", "text": f"Welcome, {grant[1]}"}
        if any(getattr(t, "liveness", None) == "waiting" for t in tracks):
            return {"kind": "blink", "text": "Blink to enter"}
        if deny and now - deny[0] < self.hold_s:
            return {"kind": "denied", "text": "Access denied"}
        if now - unknown_at < self.hold_s or any(t.decided == "unknown" for t in tracks):
            return {"kind": "unknown", "text": "Unknown"}
        if unlocked:
            return {"kind": "open", "text": "Door unlocked"}
        return {"kind": "idle", "text": "Door locked"}
