"""Tracker: IDs through motion and crossings, track death, N-of-M votes, the embedding schedule, and the
real BlazeFace detector on the real video."""

from __future__ import annotations

import numpy as np
import pytest

from edge_mfr.identity.classifier import Decision
from edge_mfr.identity.identify import Identification
from edge_mfr.stream.tracker import UNKNOWN, Tracker, iou_matrix, match
from edge_mfr.vision.types import Face


def face_at(cx: float, cy: float, size: float = 80.0, score: float = 0.9, yaw: float = 0.0) -> Face:
    """A detector-like face: square box, eyes/nose/mouth/ears where BlazeFace puts them; ``yaw`` shifts
    the nose sideways in eye distances."""
    s = size
    eye = 0.4 * s
    kps = np.array([
        [cx - eye / 2, cy - 0.1 * s],  # subject's right eye (image left)
        [cx + eye / 2, cy - 0.1 * s],
        [cx + yaw * eye, cy + 0.08 * s],  # nose
        [cx, cy + 0.25 * s],  # mouth
        [cx - 0.45 * s, cy - 0.05 * s],
        [cx + 0.45 * s, cy - 0.05 * s],
    ], dtype=np.float32)
    box = np.array([cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2], dtype=np.float32)
    return Face(box, score, kps)


def ident(person: str | None, masked: bool = False, score: float = 0.7,
          allowed: bool = True) -> Identification:
    d = Decision(person, person or "someone", score, 0.2, masked, "accepted" if person else "below threshold")
    return Identification(d, person.title() if person else None, masked, 1.0 if masked else -1.0,
                          bool(person) and allowed)


# ------------------------------------------------------------------------------------------ matching


def test_iou_and_greedy_assignment():
    a = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], np.float32)
    assert np.allclose(iou_matrix(a, a).diagonal(), 1) and iou_matrix(a, a)[0, 1] == pytest.approx(50 / 150)
    # Best pair first; each row and column used once; pairs under the threshold are dropped.
    iou = np.array([[0.9, 0.8, 0.0], [0.85, 0.2, 0.0], [0.0, 0.6, 0.7]])
    assert match(iou, 0.3) == [(0, 0), (2, 2)]
    assert match(iou, 0.1) == [(0, 0), (1, 1), (2, 2)]
    assert match(np.zeros((0, 3)), 0.3) == []


# ------------------------------------------------------------------------------------ IDs and motion


def test_one_moving_face_keeps_its_id():
    tr = Tracker()
    ids = set()
    for i in range(60):
        (t,) = tr.update([face_at(100 + 6 * i, 200 + 2 * np.sin(i / 3), 90 + 0.5 * i)], i)
        ids.add(t.id)
    assert ids == {1} and tr.tracks[0].hits == 60 and tr.tracks[0].velocity[0] == pytest.approx(6, abs=0.5)


def test_two_crossing_faces_keep_their_ids():
    tr = Tracker()
    seen: dict[str, set[int]] = {"left_to_right": set(), "right_to_left": set()}
    for i in range(50):
        a = face_at(100 + 10 * i, 200)
        b = face_at(600 - 10 * i, 250)  # 50 px lower: the boxes overlap heavily while passing
        order = [a, b] if i % 2 else [b, a]  # detector order must not matter
        tracks = tr.update(order, i)
        by_face = {id(f): t for f, t in zip(order, tracks, strict=True)}
        seen["left_to_right"].add(by_face[id(a)].id)
        seen["right_to_left"].add(by_face[id(b)].id)
    assert len(seen["left_to_right"]) == 1 and len(seen["right_to_left"]) == 1
    assert seen["left_to_right"] != seen["right_to_left"]


def test_face_hidden_while_crossing_is_found_again_by_its_motion():
    tr = Tracker(max_missed=15)
    ids_b = []
    hidden = 0
    for i in range(50):
        xa, xb = 100 + 8 * i, 500 - 8 * i
        faces = [face_at(xa, 200)]
        if abs(xa - xb) >= 80:
            faces.append(face_at(xb, 200))  # b walks behind a: not detected while they overlap
        else:
            hidden += 1
        tracks = tr.update(faces, i)
        assert tracks[0].id == 1  # a is never confused with b's predicted box
        if len(tracks) == 2:
            ids_b.append(tracks[1].id)
    assert hidden >= 5 and set(ids_b) == {2}


def test_tracks_end_after_max_missed_and_a_returning_face_is_new():
    tr = Tracker(max_missed=3)
    for i in range(5):
        (t,) = tr.update([face_at(200, 200)], i)
    for i in range(5, 8):  # 3 missed frames: still alive, not returned as visible
        assert tr.update([], i) == [] and [x.id for x in tr.tracks] == [1] and tr.tracks[0].missed == i - 4
        assert not tr.tracks[0].needs_embedding(i)
    assert tr.update([], 8) == [] and tr.tracks == [] and [x.id for x in tr.ended] == [1]
    (again,) = tr.update([face_at(200, 200)], 9)
    assert again.id == 2 and tr.ended == []


def test_a_face_back_within_max_missed_keeps_its_id():
    tr = Tracker(max_missed=5)
    tr.update([face_at(200, 200)], 0)
    tr.update([face_at(204, 200)], 1)
    (t,) = tr.update([face_at(220, 200)], 5)  # 3 frames without detection, then further along its path
    assert t.id == 1 and t.missed == 0 and t.hits == 3


def test_frame_index_must_increase_and_bad_settings_are_refused():
    tr = Tracker()
    tr.update([], 3)
    with pytest.raises(ValueError, match="must increase"):
        tr.update([], 3)
    with pytest.raises(ValueError, match="vote_n"):
        Tracker(vote_n=4, vote_m=3)
    with pytest.raises(ValueError, match="iou_threshold"):
        Tracker(iou_threshold=1.5)


# ---------------------------------------------------------------------------------------------- votes


def _track(**kw):
    tr = Tracker(**kw)
    (t,) = tr.update([face_at(200, 200)], 0)
    return t


def test_vote_decides_after_n_of_m_agree():
    t = _track(vote_n=3, vote_m=5)
    t.add_identification(ident("alice"))
    t.add_identification(ident("alice"))
    assert t.decided is None and t.identification is None
    t.add_identification(ident("alice", score=0.81))
    assert t.decided == "alice" and t.identification.name == "Alice" and t.best_score == pytest.approx(0.81)


def test_disagreeing_votes_delay_the_decision_and_the_window_slides():
    t = _track(vote_n=3, vote_m=5)
    for p in ("alice", "bob", "alice", "bob"):
        t.add_identification(ident(p))
        assert t.decided is None
    t.add_identification(ident("alice"))
    assert t.decided == "alice"  # 3 of the last 5
    for _ in range(3):
        t.add_identification(ident("bob"))
    assert t.decided == "bob" and len(t.votes) == 5  # alice's votes fell out of the window


def test_unknown_is_a_vote_outcome_and_mask_is_a_majority():
    t = _track(vote_n=2, vote_m=3)
    t.add_identification(ident(None, masked=True, score=0.3))
    assert t.decided is None
    t.add_identification(ident("carol", masked=False))
    t.add_identification(ident(None, masked=True, score=0.4))
    assert t.decided == UNKNOWN and t.masked and t.best_score == pytest.approx(0.4)
    assert t.identification.decision.person_id is None


def test_ties_between_outcomes_go_to_the_most_recent():
    t = _track(vote_n=2, vote_m=4)
    for p in ("alice", "alice", "bob", "bob"):
        t.add_identification(ident(p))
    assert t.decided == "bob"
    t.add_identification(ident("alice"))
    assert t.decided == "alice"  # window is alice, bob, bob, alice: tie again, alice is newer
    t2 = _track(vote_n=1, vote_m=1)
    t2.add_identification(ident("dave"))
    assert t2.decided == "dave"


def test_a_bare_decision_also_counts_as_a_vote():
    t = _track(vote_n=1, vote_m=1)
    t.add_identification(Decision("erin", "erin", 0.9, 0.3, True, "accepted"))
    assert t.decided == "erin" and t.masked


# ---------------------------------------------------------------------------------- embedding schedule


def _run(tracker: Tracker, faces_per_frame, outcome=lambda i: ident("alice")) -> list[int]:
    """Drive the tracker like the stream loop: embed only tracks that ask; returns embedding frames."""
    asked = []
    for i, faces in enumerate(faces_per_frame):
        for t in tracker.update(faces, i):
            if t.needs_embedding(i):
                asked.append(i)
                t.add_identification(outcome(i), i)
    return asked


def test_embedding_reuse_on_a_steady_face():
    k, frames = 10, 100
    rng = np.random.default_rng(0)
    faces = [[face_at(300 + rng.normal(0, 2), 220 + rng.normal(0, 2), 100 + rng.normal(0, 1.5),
                      score=0.9 + rng.normal(0, 0.02))] for _ in range(frames)]
    tracker = Tracker(vote_n=3, vote_m=5, reembed_every=k)
    asked = _run(tracker, faces)
    assert asked[:3] == [0, 1, 2]  # undecided: every frame until the vote is reached
    assert len(asked) <= frames // k + 3
    assert len(asked) >= frames // k - 1  # and it does keep re-checking the person
    assert all(b - a == k for a, b in zip(asked[2:], asked[3:], strict=False))
    assert tracker.tracks[0].embeddings == len(asked) and tracker.tracks[0].decided == "alice"


def test_embedding_is_asked_again_when_the_face_gets_better():
    tr = Tracker(vote_n=1, vote_m=1, reembed_every=1000)
    (t,) = tr.update([face_at(300, 200, 60, yaw=0.35)], 0)
    assert t.needs_embedding(0)
    t.add_identification(ident(None), 0)
    assert not t.needs_embedding(0)  # the same frame is not embedded twice
    tr.update([face_at(300, 200, 70, yaw=0.35)], 1)  # +17 %: not enough
    assert not t.needs_embedding(1) and t.improved() is None
    tr.update([face_at(300, 200, 80, yaw=0.35)], 2)  # +33 % eye distance: closer to the camera
    assert t.needs_embedding(2) and "grew" in t.improved()
    t.add_identification(ident(None), 2)
    tr.update([face_at(300, 200, 80, yaw=0.05)], 3)  # turned to the camera
    assert t.needs_embedding(3) and "yaw" in t.improved()
    t.add_identification(ident(None), 3)
    tr.update([face_at(300, 200, 80, yaw=0.05, score=0.99)], 4)  # +0.09 score: below improve_score
    assert not t.needs_embedding(4)


def test_undecided_tracks_are_embedded_at_their_own_pace_and_min_hits_waits():
    tr = Tracker(vote_n=3, vote_m=5, reembed_every=50, undecided_every=3)
    rotate = [ident("alice"), ident("bob"), ident(None)]  # never 3 of 5 alike
    asked = _run(tr, [[face_at(300, 200)] for _ in range(30)], outcome=lambda i: rotate[(i // 3) % 3])
    assert asked == list(range(0, 30, 3))  # never decided: every 3rd frame, never more
    tr2 = Tracker(min_hits=3)
    asked2 = _run(tr2, [[face_at(300, 200)] for _ in range(5)])
    assert asked2[0] == 2  # a one-frame false detection costs no embedding


# ---------------------------------------------------------------------------------- real detector


@pytest.mark.data
def test_real_detector_tracks_are_stable_on_the_video(data_dir, short_detector):
    from edge_mfr.stream.sources import make_source

    video = data_dir / "video" / "short_hamilton_clip.mp4"
    if not video.is_file():
        pytest.skip(f"{video} not found")
    tracker = Tracker(iou_threshold=0.3, max_missed=5)
    per_frame: list[list[tuple[int, np.ndarray]]] = []
    with make_source(str(video)) as src:
        for frame in src:
            if frame.index >= 120:
                break
            tracks = tracker.update(short_detector.detect(frame.image), frame.index)
            per_frame.append([(t.id, t.face.box.copy()) for t in tracks])
    single = [i for i, f in enumerate(per_frame) if len(f) == 1]
    assert len(single) >= 50, "expected a face in most frames of the clip's start"
    # Churn: consecutive frames showing one overlapping face must show it under the same track id.
    continuations = switches = 0
    for i in range(1, len(per_frame)):
        if len(per_frame[i]) == 1 and len(per_frame[i - 1]) == 1:
            (id_a, box_a), (id_b, box_b) = per_frame[i - 1][0], per_frame[i][0]
            if iou_matrix(box_a, box_b)[0, 0] > 0.5:
                continuations += 1
                switches += id_a != id_b
    assert continuations >= 40 and switches == 0
    # The steady close-up from about frame 82 on is one track from its first to its last frame.
    run_ids = {per_frame[i][0][0] for i in single if i >= 85}
    assert len(run_ids) == 1
    all_ids = {tid for f in per_frame for tid, _ in f}
    assert len(all_ids) <= 4, f"too many tracks for a clip with one person at a time: {sorted(all_ids)}"


def test_synthetic_walk_up_with_the_real_detector(short_detector, astronaut):
    """The demo's scene: a face walks up to the door; the real detector plus tracker give one track."""
    from edge_mfr.stream.sources import SyntheticSource

    src = SyntheticSource(np.ascontiguousarray(astronaut[0:300, 100:340]), size=(640, 480))
    tracker = Tracker(vote_n=3, vote_m=5, reembed_every=10)
    ids: set[int] = set()
    detected = embeds = 0
    for frame in src:
        faces = short_detector.detect(frame.image)
        pasted = src.boxes(frame.index)
        if not pasted:
            assert faces == []
        for f in faces:
            cx, cy = (f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2
            x1, y1, x2, y2 = pasted[0]
            assert x1 < cx < x2 and y1 < cy < y2
        detected += bool(faces)
        for t in tracker.update(faces, frame.index):
            ids.add(t.id)
            if t.needs_embedding(frame.index):
                embeds += 1
                t.add_identification(ident("astronaut"), frame.index)
    assert detected >= 0.7 * len(src) - 6 and ids == {1}
    assert embeds <= detected // 10 + 3 + 3, embeds  # schedule + vote + a few "face got better"
