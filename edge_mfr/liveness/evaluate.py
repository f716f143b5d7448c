"""`edge-mfr eval-liveness`: APCER, BPCER and time to decision per clip (EVALUATION.md, ISO/IEC 30107-3).

Each clip is played at its own frame rate through the appliance's detector and tracker; every track's
eyes are measured every frame and fed to its :class:`BlinkDetector`. A clip is *accepted* as live when
any track blinks within the window after it appeared (the time to decision is from the face's first
frame to the end of that blink); otherwise it is *refused* with the reason. APCER is the fraction of
attack clips accepted, BPCER the fraction of live clips refused.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_mfr.errors import EdgeMfrError, InputNotFoundError
from edge_mfr.liveness.blink import BlinkDetector
from edge_mfr.stream.tracker import Tracker
from edge_mfr.vision.eyes import EyeOpenness
from edge_mfr.vision.imageio import IMAGE_SUFFIXES, read_image

FOLDER_FPS = 15.0  # a folder of frames is played at the rate the targets are stated for
MIN_FACE_PX = 40


@dataclass
class ClipResult:
    path: str
    kind: str  # "real" or "attack"
    decision: str  # "accepted" (judged live) or "refused"
    reason: str
    seconds: float | None  # from the first face to the decision; None when no face was seen
    frames: int
    fps: float


def _frames(path: Path) -> tuple[list[np.ndarray], float]:
    """All RGB frames of a video file or a folder of images, and the frame rate."""
    if not path.exists():
        raise InputNotFoundError(f"{path}: no such clip")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise EdgeMfrError(f"{path}: folder holds no images to play as a clip")
        return [read_image(p) for p in files], FOLDER_FPS
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise EdgeMfrError(f"{path}: not a video OpenCV can read")
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0) or FOLDER_FPS
        frames = []
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    if not frames:
        raise EdgeMfrError(f"{path}: no frame could be decoded (not a video, or empty)")
    return frames, fps


def assess_clip(path: Path, kind: str, detector: Any, eyes: EyeOpenness, window_s: float) -> ClipResult:
    """Play one clip and decide live or refused (see the module docstring)."""
    frames, fps = _frames(path)
    tracker = Tracker(vote_n=1, vote_m=1)
    blinkers: dict[int, BlinkDetector] = {}
    starts: dict[int, float] = {}
    first_face: float | None = None
    for i, image in enumerate(frames):
        t = i / fps
        faces = [f for f in detector.detect(image) if f.width >= MIN_FACE_PX]
        for face, track in zip(faces, tracker.update(faces, i), strict=True):
            if first_face is None:
                first_face = t
            starts.setdefault(track.id, t)
            if t - starts[track.id] > window_s:
                continue  # this track had its window; only a new one could still pass
            state = eyes.measure(image, face)
            blink = blinkers.setdefault(track.id, BlinkDetector(window_s=window_s))
            if blink.update(t, state.openness, state.presence):
                seconds = round(t - starts[track.id], 3)
                return ClipResult(str(path), kind, "accepted", f"track {track.id} blinked", seconds, i + 1, fps)
    duration = len(frames) / fps
    if first_face is None:
        return ClipResult(str(path), kind, "refused", "no face in the clip", None, len(frames), fps)
    seen = duration - first_face
    if seen < window_s:
        reason = f"no blink in the {seen:.1f} s a face was seen (clip shorter than the {window_s:.1f} s window)"
    else:
        reason = f"no blink within the {window_s:.1f} s window"
    return ClipResult(str(path), kind, "refused", reason, round(seen, 3), len(frames), fps)


def summarize(results: list[ClipResult]) -> dict[str, Any]:
    """APCER, BPCER (fractions; None without clips of that kind), time to decision, per clip."""
    attacks = [r for r in results if r.kind == "attack"]
    real = [r for r in results if r.kind == "real"]
    accepted_live = [r.seconds for r in real if r.decision == "accepted" and r.seconds is not None]
    return {
        "apcer": (sum(r.decision == "accepted" for r in attacks) / len(attacks)) if attacks else None,
        "bpcer": (sum(r.decision != "accepted" for r in real) / len(real)) if real else None,
        "attack_clips": len(attacks),
        "real_clips": len(real),
        "seconds_to_accept_live": {
            "median": float(np.median(accepted_live)) if accepted_live else None,
            "max": float(max(accepted_live)) if accepted_live else None,
        },
        "per_clip": [asdict(r) for r in results],
    }


def evaluate(real: list[Path], attack: list[Path], window_s: float = 4.0, detector: str = "blazeface",
             models_dir: Path | None = None, out: Path | None = None) -> dict[str, Any]:
    """Assess every clip; write the summary as JSON to ``out`` when given."""
    from edge_mfr.vision.pipeline import make_detector

    if not real and not attack:
        raise EdgeMfrError("eval-liveness: give at least one clip with --real or --attack")
    det = make_detector(detector, models_dir=models_dir)
    eyes = EyeOpenness(models_dir=models_dir)
    results = [assess_clip(Path(p), "real", det, eyes, window_s) for p in real]
    results += [assess_clip(Path(p), "attack", det, eyes, window_s) for p in attack]
    summary = summarize(results)
    summary["window_s"] = window_s
    if out is not None:
        out.write_text(json.dumps(summary, indent=2) + "\n")
    return summary
