"""Measure the passive planar-motion cue: does one homography explain the face's motion between frames?

    python -m tools.liveness_planar CLIP... [--gap 3]

A flat photo moves as a plane, so corner features tracked inside the face box (Lucas-Kanade) between
frames ``gap`` apart fit one homography up to tracking noise; a real head turning shows parallax (nose
against cheeks and outline). Per clip the median over frame pairs of the median residual (pixels over the
face width, in per cent) is printed, with the number of pairs. The landmark model's points are not used:
the model fits a 3D head to any face image, so its points on a tilted photo move like a turning head.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from edge_mfr.liveness.evaluate import _frames
from edge_mfr.vision.pipeline import make_detector


def residuals(frames: list[np.ndarray], detector, gap: int) -> list[float]:
    """Median homography residual (per cent of face width) for each frame pair ``gap`` apart."""
    out = []
    grays = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    for i in range(0, len(frames) - gap, gap):
        faces = detector.detect(frames[i])
        if not faces:
            continue
        face = max(faces, key=lambda f: f.width)
        x1, y1, x2, y2 = (int(v) for v in face.box)
        mask = np.zeros_like(grays[i])
        mask[max(y1, 0):y2, max(x1, 0):x2] = 255
        pts = cv2.goodFeaturesToTrack(grays[i], 80, 0.01, max(3, face.width / 20), mask=mask)
        if pts is None or len(pts) < 12:
            continue
        nxt, status, _ = cv2.calcOpticalFlowPyrLK(grays[i], grays[i + gap], pts, None)
        ok = status.ravel() == 1
        if ok.sum() < 12:
            continue
        a, b = pts[ok].reshape(-1, 2), nxt[ok].reshape(-1, 2)
        h, _ = cv2.findHomography(a, b, cv2.LMEDS)
        if h is None:
            continue
        proj = cv2.perspectiveTransform(a[None], h)[0]
        out.append(float(np.median(np.linalg.norm(proj - b, axis=1))) / face.width * 100)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="+", type=Path)
    ap.add_argument("--gap", type=int, default=3, help="frames between the two of a pair")
    args = ap.parse_args(argv)
    det = make_detector("blazeface")
    for clip in args.clips:
        frames, _ = _frames(clip)
        r = residuals(frames, det, args.gap)
        value = f"{np.median(r):.3f}" if r else "n/a"
        print(f"{value}\t{len(r)}\t{clip}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
