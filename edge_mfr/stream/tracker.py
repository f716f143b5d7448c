"""Faces followed across frames, so one person is one track with one vote, and the embedder runs rarely.

Detection runs on every frame; matching boxes by IoU (against a constant-velocity prediction, which
keeps two people who walk past each other apart) links them into tracks. Each track collects the
identities the recognizer gave it and is *decided* only once ``vote_n`` of its last ``vote_m``
identifications agree ("unknown" is an outcome like any person), so a single bad frame neither opens
the door nor raises an alarm. The embedder (about 20x the detector's cost on a Pi) is asked for only
when it can add something: a new track, an undecided track, a face that got notably better (closer,
more frontal, more confident) than at its last embedding, or every ``reembed_every`` frames to catch a
swapped person.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_mfr.vision.quality import head_pose
from edge_mfr.vision.types import Face

log = logging.getLogger(__name__)

UNKNOWN = "unknown"



def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) intersection over union of (x1, y1, x2, y2) boxes."""
    a = np.asarray(a, dtype=np.float32).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float32).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def match(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """(row, col) pairs, best IoU first, each at least ``threshold``.

    Greedy on purpose: with the handful of faces a door camera sees, and boxes predicted forward by
    each track's velocity, it picks the same pairs as an optimal assignment, and it keeps SciPy (38 MiB
    of memory) out of the daemon.
    """
    if iou.size == 0:
        return []
    pairs = []
    used_r: set[int] = set()
    used_c: set[int] = set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        r, c = divmod(int(flat), iou.shape[1])
        if iou[r, c] < threshold:
            break
        if r not in used_r and c not in used_c:
            pairs.append((r, c))
            used_r.add(r)
            used_c.add(c)
    return sorted(pairs)


@dataclass(frozen=True)
class Vote:
    outcome: str  # person id or UNKNOWN
    masked: bool
    score: float  # classifier similarity to the (candidate) person
    frame_index: int
    identification: Any  # the Identification it came from (name, allowed flag, decision reason)


def _outcome(ident: Any) -> tuple[str, bool, float]:
    """(outcome, masked, score) of an Identification (or a bare classifier Decision)."""
    decision = getattr(ident, "decision", ident)
    person = decision.person_id
    masked = bool(getattr(ident, "masked", getattr(decision, "masked", False)))
    return (person if person else UNKNOWN), masked, float(decision.score)


@dataclass(eq=False)
class Track:
    """One face followed over frames. Created by :class:`Tracker`; callers read it and add identifications."""

    id: int
    face: Face
    first_frame: int
    last_frame: int  # last frame the face was seen in
    tracker: Tracker = field(repr=False)
    hits: int = 1
    missed: int = 0  # consecutive frames without a matching face
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2, np.float32))  # box centre px/frame
    votes: deque[Vote] = field(default_factory=deque)
    embeddings: int = 0
    last_embed_frame: int | None = None
    _embed_eye: float = 0.0
    _embed_score: float = 0.0
    _embed_yaw: float = 0.0
    best_face: Face | None = None  # the best-quality face seen (largest, most frontal), for snapshots

    @property
    def box(self) -> np.ndarray:
        return self.face.box

    @property
    def visible(self) -> bool:
        return self.missed == 0

    def predicted_box(self, frame_index: int) -> np.ndarray:
        """The last box moved on by the track's velocity to ``frame_index``."""
        dt = frame_index - self.last_frame
        dx, dy = self.velocity * dt
        return self.face.box + np.array([dx, dy, dx, dy], dtype=np.float32)

    # ------------------------------------------------------------------------------------ embeddings

    def needs_embedding(self, frame_index: int) -> bool:
        """Should the caller embed this track's face in frame ``frame_index``?

        Yes for a visible, confirmed track that has never been embedded, that is still undecided (every
        ``undecided_every`` frames), whose face improved notably since its last embedding, or whose last
        embedding is ``reembed_every`` frames old.
        """
        t = self.tracker
        if self.missed or self.last_frame != frame_index or self.hits < t.min_hits:
            return False
        if self.last_embed_frame is None:
            return True
        age = frame_index - self.last_embed_frame
        if age <= 0:
            return False
        if self.decided is None and age >= t.undecided_every:
            return True
        if age >= t.reembed_every:
            return True
        return self.improved() is not None

    def improved(self) -> str | None:
        """Why the current face is notably better than the last embedded one, or None."""
        t = self.tracker
        f = self.face
        if self._embed_eye > 0 and f.eye_distance >= self._embed_eye * (1 + t.improve_size):
            return f"face grew to {f.eye_distance:.0f} px between the eyes"
        if f.score >= self._embed_score + t.improve_score:
            return f"detector score rose to {f.score:.2f}"
        yaw = abs(head_pose(f)[0])
        if yaw <= self._embed_yaw - t.improve_yaw:
            return f"head turned towards the camera (yaw {yaw:.2f})"
        return None

    def add_identification(self, ident: Any, frame_index: int | None = None) -> None:
        """Record what the recognizer said about this track's current face (an embedding was made).

        ``ident`` is an :class:`~edge_mfr.identity.identify.Identification` (a classifier ``Decision``
        works too); only the last ``vote_m`` are kept.
        """
        frame = self.last_frame if frame_index is None else frame_index
        outcome, masked, score = _outcome(ident)
        self.votes.append(Vote(outcome, masked, score, frame, ident))
        while len(self.votes) > self.tracker.vote_m:
            self.votes.popleft()
        self.embeddings += 1
        self.last_embed_frame = frame
        self._embed_eye = self.face.eye_distance
        self._embed_score = float(self.face.score)
        self._embed_yaw = abs(head_pose(self.face)[0])

    # ---------------------------------------------------------------------------------------- votes

    @property
    def decided(self) -> str | None:
        """The person id (or UNKNOWN) that ``vote_n`` of the last ``vote_m`` votes agree on; else None.

        When ``vote_n`` is half of ``vote_m`` or less two outcomes can both reach it: the one with more
        votes wins, then the most recent.
        """
        n = self.tracker.vote_n
        if len(self.votes) < n:
            return None
        counts = Counter(v.outcome for v in self.votes)
        reaching = [o for o, c in counts.items() if c >= n]
        if not reaching:
            return None
        latest = {v.outcome: i for i, v in enumerate(self.votes)}
        return max(reaching, key=lambda o: (counts[o], latest[o]))

    @property
    def identification(self) -> Any | None:
        """The latest identification agreeing with the decision (name, allowed flag), or None."""
        decided = self.decided
        if decided is None:
            return None
        for v in reversed(self.votes):
            if v.outcome == decided:
                return v.identification
        return None  # pragma: no cover - a decided outcome always has a vote

    @property
    def masked(self) -> bool:
        """Majority mask status of the votes (ties: the latest vote); False before any vote."""
        if not self.votes:
            return False
        yes = sum(v.masked for v in self.votes)
        no = len(self.votes) - yes
        return yes > no if yes != no else self.votes[-1].masked

    @property
    def best_score(self) -> float:
        """Highest classifier similarity among the votes for the decided outcome (all votes while
        undecided); 0.0 without votes."""
        decided = self.decided
        scores = [v.score for v in self.votes if decided is None or v.outcome == decided]
        return max(scores) if scores else 0.0


def _quality(face: Face) -> float:
    """Ranking for a track's best face: big, confident, frontal."""
    return face.eye_distance * float(face.score) * max(0.0, 1.0 - abs(head_pose(face)[0]))


class Tracker:
    """IoU tracker with per-track identity votes and an embedding schedule.

    ``update`` returns the tracks seen in this frame, in the order of the given faces (``tracks[i]``
    follows ``faces[i]``); tracks unseen for more than ``max_missed`` frames end and are listed in
    :attr:`ended` after that update.
    """

    def __init__(self, iou_threshold: float = 0.3, max_missed: int = 5, vote_n: int = 3, vote_m: int = 5,
                 reembed_every: int = 10, undecided_every: int = 1, min_hits: int = 1,
                 improve_size: float = 0.25, improve_score: float = 0.15, improve_yaw: float = 0.2,
                 velocity_smoothing: float = 0.5):
        if not 1 <= vote_n <= vote_m:
            raise ValueError(f"votes: need 1 <= vote_n <= vote_m, got vote_n={vote_n}, vote_m={vote_m}")
        if not 0 < iou_threshold < 1:
            raise ValueError(f"iou_threshold must be in (0, 1), got {iou_threshold}")
        if max_missed < 0 or reembed_every < 1 or undecided_every < 1 or min_hits < 1:
            raise ValueError("need max_missed >= 0, reembed_every >= 1, undecided_every >= 1, min_hits >= 1")
        self.iou_threshold = iou_threshold
        self.max_missed = max_missed
        self.vote_n = vote_n
        self.vote_m = vote_m
        self.reembed_every = reembed_every
        self.undecided_every = undecided_every
        self.min_hits = min_hits
        self.improve_size = improve_size
        self.improve_score = improve_score
        self.improve_yaw = improve_yaw
        self.velocity_smoothing = velocity_smoothing
        self.tracks: list[Track] = []
        self.ended: list[Track] = []
        self._next_id = 1
        self._last_frame: int | None = None

    def update(self, faces: list[Face], frame_index: int) -> list[Track]:
        """Match this frame's faces to tracks, start new tracks, end stale ones."""
        if self._last_frame is not None and frame_index <= self._last_frame:
            raise ValueError(f"frame_index must increase: got {frame_index} after {self._last_frame}")
        self._last_frame = frame_index
        boxes = np.array([f.box for f in faces], dtype=np.float32).reshape(-1, 4)
        predicted = np.array([t.predicted_box(frame_index) for t in self.tracks], dtype=np.float32)
        predicted = predicted.reshape(-1, 4)
        pairs = match(iou_matrix(predicted, boxes), self.iou_threshold)
        out: list[Track | None] = [None] * len(faces)
        matched_tracks = set()
        for ti, fi in pairs:
            track = self.tracks[ti]
            self._advance(track, faces[fi], frame_index)
            out[fi] = track
            matched_tracks.add(ti)
        for ti, track in enumerate(self.tracks):
            if ti not in matched_tracks:
                track.missed += 1
        for fi, face in enumerate(faces):
            if out[fi] is None:
                track = Track(self._next_id, face, frame_index, frame_index, tracker=self, best_face=face)
                self._next_id += 1
                self.tracks.append(track)
                out[fi] = track
        self.ended = [t for t in self.tracks if t.missed > self.max_missed]
        if self.ended:
            self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
            for t in self.ended:
                log.debug("track %d ended after %d frames (decided %s)", t.id, t.hits, t.decided)
        return [t for t in out if t is not None]

    def _advance(self, track: Track, face: Face, frame_index: int) -> None:
        dt = max(frame_index - track.last_frame, 1)
        old = (track.face.box[:2] + track.face.box[2:]) / 2
        new = (face.box[:2] + face.box[2:]) / 2
        step = (new - old) / dt
        a = self.velocity_smoothing
        track.velocity = (a * step + (1 - a) * track.velocity if track.hits > 1 else step).astype(np.float32)
        track.face = face
        track.last_frame = frame_index
        track.hits += 1
        track.missed = 0
        if track.best_face is None or _quality(face) > _quality(track.best_face):
            track.best_face = face

    def reset(self) -> None:
        """Forget every track (after a camera reconnect the scene may have changed)."""
        self.ended = list(self.tracks)
        self.tracks = []
        self._last_frame = None
