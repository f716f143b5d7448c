"""Blink liveness with the real landmark and iris models on real faces (short clips, few frames).

Live footage: the frontal stretch of the data set's real video at 15 fps; its lids are closed for a few
frames by edge_mfr.liveness.render (the only rendered part: the data set holds no footage of a blink).
Attacks: real LFW stills presented as a print or a screen by the same module.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_mfr.liveness.blink import BlinkDetector
from edge_mfr.liveness.evaluate import assess_clip
from edge_mfr.liveness.render import BLINK_PROFILE, attack_frames, close_eyes, write_clip
from edge_mfr.vision.imageio import read_image, write_image

REPO = Path(__file__).resolve().parents[2]
FPS = 15.0
START = 120  # source frame (29.97 fps) in the frontal stretch of short_hamilton_clip.mp4
BLINK_AT = 6


@pytest.fixture(scope="module")
def eyes():
    from edge_mfr.vision.eyes import EyeOpenness

    return EyeOpenness()


@pytest.fixture(scope="module")
def footage(data_dir: Path) -> list[np.ndarray]:
    """16 real frames at 15 fps with one face looking at the camera."""
    cap = cv2.VideoCapture(str(data_dir / "video" / "short_hamilton_clip.mp4"))
    cap.set(cv2.CAP_PROP_POS_FRAMES, START)
    frames = []
    while len(frames) < 16:
        ok, bgr = cap.read()
        assert ok, "the data set's video ended early"
        ok, _ = cap.read()  # 29.97 -> 15 fps
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


def with_blink(frames: list[np.ndarray], detector, eyes) -> list[np.ndarray]:
    out = []
    for k, image in enumerate(frames):
        amount = BLINK_PROFILE[k - BLINK_AT] if 0 <= k - BLINK_AT < len(BLINK_PROFILE) else 0.0
        if amount:
            face = max(detector.detect(image), key=lambda f: f.width)
            image = close_eyes(image, eyes.measure(image, face).landmarks, amount)
        out.append(image)
    return out


def blinks(frames: list[np.ndarray], detector, eyes) -> int:
    det = BlinkDetector()
    for k, image in enumerate(frames):
        faces = detector.detect(image)
        if faces:
            state = eyes.measure(image, max(faces, key=lambda f: f.width))
            det.update(k / FPS, state.openness, state.presence)
    return det.blinks


def test_blink_on_real_footage_is_detected_and_its_absence_too(footage, short_detector, eyes):
    assert blinks(footage, short_detector, eyes) == 0
    assert blinks(with_blink(footage, short_detector, eyes), short_detector, eyes) == 1


@pytest.mark.parametrize("kind", ["print", "screen"])
def test_still_photo_attack_is_refused(kind, data_dir, short_detector, eyes, tmp_path):
    photo = read_image(data_dir / "lfw" / "TonyBlair" / "Tony_Blair_0001.jpg")
    clip = write_clip(tmp_path / f"{kind}.mp4", attack_frames(photo, kind, seed=3, frames=30), FPS)
    result = assess_clip(clip, "attack", short_detector, eyes, window_s=1.5)
    assert result.decision == "refused"
    assert result.reason == "no blink within the 1.5 s window"


def test_eval_liveness_reports_bad_clips_as_results_and_missing_ones_as_errors(data_dir, footage, tmp_path):
    blank = write_clip(tmp_path / "blank.mp4", [np.full((240, 320, 3), 90, np.uint8)] * 10, FPS)
    short = write_clip(tmp_path / "short.mp4", footage[:8], FPS)
    stills = tmp_path / "stills"
    stills.mkdir()
    for folder, name in (("TonyBlair", "Tony_Blair"), ("ColinPowell", "Colin_Powell")):
        write_image(stills / f"{name}.jpg", read_image(data_dir / "lfw" / folder / f"{name}_0001.jpg"))
    out = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "edge_mfr.cli", "eval-liveness", "--real", str(short), str(stills),
           "--attack", str(blank), "--json", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["apcer"] == 0.0 and report["bpcer"] == 1.0
    by_path = {Path(c["path"]).name: c for c in report["per_clip"]}
    assert by_path["blank.mp4"]["reason"] == "no face in the clip"
    assert "shorter than the 4.0 s window" in by_path["short.mp4"]["reason"]
    assert by_path["stills"]["decision"] == "refused"

    missing = subprocess.run([sys.executable, "-m", "edge_mfr.cli", "eval-liveness", "--attack",
                              str(tmp_path / "nope.mp4")], cwd=REPO, capture_output=True, text=True)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1].endswith("nope.mp4: no such clip")
