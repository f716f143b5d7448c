"""What `edge-mfr run` prints on stdout for a person at a terminal (the journal keeps the full record).

Why: the daemon logged only warnings, so a person trying it saw nothing while it decided, did not learn
where the kiosk was, and got no summary on Ctrl-C. One line per decision and lock action, a start line
naming the camera and the kiosk URL, and a summary line on every way out.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any, TextIO

#: Events not printed: one per frame or per identified track, the journal and MQTT have them.
QUIET = frozenset({"recognized", "mask_status"})


class RunConsole:
    """An ``Appliance.on_event`` hook writing one line per event; ``kiosk()`` (its URL or why there is none)
    is asked for once the appliance has started."""

    def __init__(self, stream: TextIO | None = None, kiosk: Callable[[], str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.kiosk = kiosk
        self.decisions = 0

    def __call__(self, kind: str, event: dict[str, Any]) -> None:
        if kind in QUIET:
            return
        if kind in ("access_granted", "access_denied", "unknown_face", "lockout"):
            self.decisions += 1
        self._line(f"{datetime.now():%H:%M:%S}  {describe(kind, event)}")
        if kind == "started":
            if self.kiosk is not None:
                self._line(f"kiosk: {self.kiosk()}")
            self._line("running: one line per decision and lock action; Ctrl-C stops (the door stays locked)")

    def summary(self, stats: Any, journal: Any, cause: str = "") -> None:
        self._line(f"stopped{f' ({cause})' if cause else ''} after {stats.frames} frames ({stats.fps_mean:.1f} fps): "
                   f"{self.decisions} decisions, {stats.unlocks} unlocks, {stats.embeddings} embeddings; "
                   f"journal {journal} (edge-mfr events lists it)")

    def _line(self, text: str) -> None:
        try:
            print(text, file=self.stream, flush=True)
        except (BrokenPipeError, ValueError):  # the terminal went away: the journal still has everything
            pass


def _who(event: dict[str, Any]) -> str:
    name, person = event.get("name"), event.get("person_id")
    who = f"{name} ({person})" if name and person and name != person else (name or person or "someone")
    if "score" in event and isinstance(event["score"], int | float):
        who += f", similarity {event['score']:.2f}"
    if event.get("masked") is not None:
        who += ", masked" if event["masked"] else ", no mask"
    return who


def describe(kind: str, event: dict[str, Any]) -> str:
    """One human line for an appliance event."""
    door = f"door {event['door']}: " if event.get("door") else ""
    if kind == "access_granted":
        return f"{door}GRANTED {_who(event)}"
    if kind == "access_denied":
        return f"{door}DENIED {_who(event)}: {event.get('reason', '')}".rstrip(": ")
    if kind == "unknown_face":
        score = event.get("score")
        return f"{door}unknown face" + (f" (best similarity {score:.2f})" if isinstance(score, int | float) else "")
    if kind == "unlocked":
        return f"{door}UNLOCKED ({event.get('reason', '')}, {event.get('seconds', '?')} s)"
    if kind == "locked":
        return f"{door}locked ({event.get('reason', '')})"
    if kind == "started":
        return f"started: camera {event.get('source')}, {event.get('people', '?')} people enrolled"
    if kind == "stopped":
        return f"stopping ({event.get('cause', '')})"
    rest = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("door", "person_id") and v is not None)
    return f"{door}{kind.replace('_', ' ')}{' ' + rest if rest else ''}"
