"""The gate's bookkeeping with the real tracker; the eye signal is scripted (its models are tested elsewhere)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_mfr.identity.classifier import Decision
from edge_mfr.liveness.gate import PASSED, WAITING, LivenessGate
from edge_mfr.policy import observations
from edge_mfr.stream.tracker import Tracker
from edge_mfr.vision.types import Face

FPS = 15.0


@dataclass
class ScriptedEyes:
    """Openness per call from a list (then open); what EyeOpenness.measure returns, minus landmarks."""

    series: list[float]

    def measure(self, image, face):
        value = self.series.pop(0) if self.series else 0.45

        @dataclass
        class State:
            openness: float = value
            presence: float = 1.0

        return State()


def face() -> Face:
    kp = np.array([[110, 120], [150, 120], [130, 140], [130, 160], [95, 125], [165, 125]], np.float32)
    return Face(np.array([90, 90, 170, 180], np.float32), 0.9, kp)


def decision(person: str | None) -> Decision:
    return Decision(person, person or "ada", 0.8 if person else 0.2, 0.1, False, "scripted")


def run(votes: list[str | None], series: list[float], frames: int = 30, window_s: float = 1.0):
    tracker = Tracker(vote_n=1, vote_m=3)
    gate = LivenessGate(ScriptedEyes(series), window_s=window_s)
    seen, events, closed = [], [], []
    for i in range(frames):
        (track,) = tracker.update([face()], i)
        gate.measure([track], None, i / FPS, tracker.ended)
        closed.append(gate.eyes_closed(track.id))
        if i < len(votes):
            track.add_identification(decision(votes[i]), i)
        allowed, refusals = gate.admit([track], i / FPS, "front")
        seen.append([o.person_id for o in observations(allowed)])
        events += refusals
    run.closed = closed
    return gate, track, seen, events


def test_an_unknown_face_still_reaches_the_policy_after_an_early_known_vote():
    _, _, seen, events = run(["ada", "unknown", "unknown"], [])
    assert seen[-1] == [None]  # decided unknown: the policy counts it towards the lockout
    assert events == []


def test_a_recognised_face_waits_for_a_blink_and_is_refused_once_when_the_window_passes():
    gate, track, seen, events = run(["ada"], [])
    assert all(s == [] for s in seen)
    assert gate.status(track.id, 29 / FPS) == WAITING
    assert [(k, p["person_id"], p["reason"]) for k, p in events] == [
        ("liveness_refused", "ada", "no blink within 1.0 s (liveness check)")]


def test_a_blink_lets_the_recognised_face_through_from_the_frame_it_ends():
    series = [0.45] * 10 + [0.2, 0.2] + [0.45] * 5
    gate, track, seen, events = run(["ada"], series)
    first = next(i for i, s in enumerate(seen) if s == ["ada"])
    assert first == 13  # measured from frame 1 (after the first vote): closed in 11-12, open in 13
    assert gate.status(track.id, 13 / FPS) == PASSED and events == []
    assert [i for i, c in enumerate(run.closed) if c] == [11, 12]  # the frames the loop does not embed
