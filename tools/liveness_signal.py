"""Which eye-openness signal separates open from closed lids better: face-mesh EAR or the iris model's lids?

    python -m tools.liveness_signal ../shared/data

On the frontal stretch of ``video/short_hamilton_clip.mp4`` (real footage, 15 fps) every frame is measured
as it is (open) and with both lids rendered closed (edge_mfr.liveness.render.close_eyes), without and with
a synthetic surgical mask drawn at the detected keypoints. Per signal: mean open and closed value, the
spread of the open values (frame-to-frame noise, what a still photo produces too) and the separation
d' = (open - closed) / open spread. The larger d', the fewer false and missed blinks.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from edge_mfr.liveness.render import close_eyes
from edge_mfr.vision.eyes import EyeOpenness
from edge_mfr.vision.imageio import rgb_frames
from edge_mfr.vision.pipeline import make_detector
from edge_mfr.vision.synthetic_masks import MaskStyle, render_mask

FRONTAL = (82, 210)
MESH_RIGHT = (33, 160, 158, 133, 153, 144)  # six lid points (Soukupova and Cech), MediaPipe mesh indices
MESH_LEFT = (263, 387, 385, 362, 380, 373)
MASK = MaskStyle("surgical", (120, 200, 190), "pleats", 0.5)


def mesh_ear(landmarks: np.ndarray) -> float:
    def one(idx: tuple[int, ...]) -> float:
        p1, p2, p3, p4, p5, p6 = landmarks[list(idx), :2]
        return float(np.linalg.norm(p2 - p6) + np.linalg.norm(p3 - p5)) / (2 * float(np.linalg.norm(p1 - p4)))

    return (one(MESH_RIGHT) + one(MESH_LEFT)) / 2


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    args = ap.parse_args(argv)
    det = make_detector("blazeface")
    eyes = EyeOpenness()
    cap = cv2.VideoCapture(str(args.data / "video/short_hamilton_clip.mp4"))
    values: dict[tuple[str, str, str], list[float]] = {}
    for i, image in enumerate(rgb_frames(cap)):
        if FRONTAL[0] <= i <= FRONTAL[1] and (i - FRONTAL[0]) % 2 == 0:
            faces = det.detect(image)
            if faces:
                face = max(faces, key=lambda f: f.width)
                landmarks = eyes.measure(image, face).landmarks
                for masked in (False, True):
                    base = render_mask(image, face.keypoints, MASK) if masked else image
                    for state, frame in (("open", base), ("closed", close_eyes(base, landmarks, 1.0))):
                        found = det.detect(frame)
                        if not found:
                            continue
                        e = eyes.measure(frame, max(found, key=lambda f: f.width))
                        mask = "mask" if masked else "no mask"
                        values.setdefault(("iris lids", mask, state), []).append(e.openness)
                        values.setdefault(("mesh EAR", mask, state), []).append(mesh_ear(e.landmarks))
    cap.release()
    print("| signal | mask | frames | open mean | open sd | closed mean | closed/open | d' |")
    print("|---|---|---|---|---|---|---|---|")
    for signal in ("mesh EAR", "iris lids"):
        for mask in ("no mask", "mask"):
            o = np.array(values.get((signal, mask, "open"), [np.nan]))
            c = np.array(values.get((signal, mask, "closed"), [np.nan]))
            sd = float(np.std(o))
            print(f"| {signal} | {mask} | {len(o)} | {o.mean():.3f} | {sd:.3f} | {c.mean():.3f} | "
                  f"{c.mean() / o.mean():.2f} | {(o.mean() - c.mean()) / max(sd, 1e-9):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
