"""The door's liveness gate: a recognised person's track reaches the access policy only after a blink.

Only tracks that could open the door are measured (any identification vote for an enrolled person):
the landmark and iris models cost several times the detector on a Pi, and strangers or empty scenes
never pay it. A candidate that has not blinked within the last ``window_s`` seconds is held back from
the policy (the door stays locked) and shown as waiting ("blink to enter"); when its first ``window_s``
seconds pass without a blink, one ``liveness_refused`` event with the reason is emitted for it (none once
it has passed). A later blink still lets the person in: the check asks for a recent blink, not a fast one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edge_mfr.liveness.blink import BlinkDetector

UNKNOWN = "unknown"
WAITING = "waiting"
PASSED = "passed"


@dataclass
class _State:
    since: float
    blink: BlinkDetector
    settled: bool = False  # passed once or refused once: no (further) refusal event for this track


@dataclass
class LivenessGate:
    """Per-track blink state for one door; ``eyes`` is an :class:`~edge_mfr.vision.eyes.EyeOpenness`."""

    eyes: Any
    window_s: float = 4.0
    states: dict[int, _State] = field(default_factory=dict)
    measured: int = 0  # faces measured (landmark + iris calls), for the stats

    @staticmethod
    def candidate(track: Any) -> bool:
        """Could this track open the door: has any vote named an enrolled person?"""
        return any(v.outcome != UNKNOWN for v in track.votes)

    def status(self, track_id: int, now: float) -> str | None:
        """WAITING or PASSED for a measured track, None for one the gate does not look at."""
        state = self.states.get(track_id)
        if state is None:
            return None
        return PASSED if state.blink.last_blink_within(now, self.window_s) else WAITING

    def measure(self, tracks: list[Any], image: Any, now: float, ended: list[Any] = ()) -> None:
        """Measure the eyes of the candidate tracks seen in this frame (before they are embedded)."""
        for gone in ended:
            self.states.pop(gone.id, None)
        for track in tracks:
            if not self.candidate(track) or not track.visible:
                continue
            state = self.states.setdefault(track.id, _State(now, BlinkDetector(window_s=self.window_s)))
            eye = self.eyes.measure(image, track.face)
            self.measured += 1
            state.blink.update(now, eye.openness, eye.presence)

    def eyes_closed(self, track_id: int) -> bool:
        """Are this track's eyes closed in the frame just measured? Such a face is a poor one to embed:
        with a mask on, closed eyes leave nothing to recognise, and its unknown votes would count."""
        state = self.states.get(track_id)
        return state is not None and state.blink.closed

    def admit(self, tracks: list[Any], now: float, door: str) -> tuple[list[Any], list[tuple[str, dict[str, Any]]]]:
        """The tracks the policy may see (after :meth:`measure` and the votes), and refusal events."""
        allowed: list[Any] = []
        events: list[tuple[str, dict[str, Any]]] = []
        for track in tracks:
            if track.decided in (None, UNKNOWN):
                allowed.append(track)  # undecided (left out by the policy anyway) or unknown (lockout counts)
                continue
            # Decided for a person: a candidate even when its first known vote came after this frame's measure.
            state = self.states.setdefault(track.id, _State(now, BlinkDetector(window_s=self.window_s)))
            if state.blink.last_blink_within(now, self.window_s):
                state.settled = True
                allowed.append(track)
                continue
            if not state.settled and now - state.since >= self.window_s:
                state.settled = True
                events.append(("liveness_refused", {
                    "door": door, "track_id": track.id, "person_id": track.decided,
                    "reason": f"no blink within {self.window_s:.1f} s (liveness check)"}))
        return allowed, events
