"""The kiosk's banner asks a recognised face that waits for the liveness check to blink."""

from __future__ import annotations

from edge_mfr.app import FrameReport, TrackView
from edge_mfr.interfaces.kiosk.live import StatusBoard


def report(*liveness: str | None) -> FrameReport:
    views = [TrackView(i, (0, 0, 10, 10), "ada", "Ada", False, 0.8, False, state) for i, state in enumerate(liveness)]
    return FrameReport(0, 0.0, views, "none", None, {"front": False}, [])


def test_a_waiting_face_is_asked_to_blink_and_a_welcome_still_wins():
    board = StatusBoard(clock=lambda: 100.0)
    assert board.banner(report(None), False, 0.0)["text"] == "Door locked"
    assert board.banner(report("passed"), False, 0.0)["text"] == "Door locked"
    assert board.banner(report(None, "waiting"), False, 0.0) == {"kind": "blink", "text": "Blink to enter"}
    board.on_event("access_granted", {"name": "Ada", "track_id": 0})
    assert board.banner(report("waiting"), True, 0.0)["text"] == "Welcome, Ada"


def test_a_liveness_refusal_is_listed_in_plain_words():
    board = StatusBoard(clock=lambda: 100.0)
    board.on_event("liveness_refused", {"person_id": "ada", "reason": "no blink within 4.0 s (liveness check)"})
    assert board.events()[0]["text"] == "no blink, not let in: ada"
