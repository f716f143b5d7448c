"""Write the liveness evaluation clips (seeded) into a folder: attacks from real stills, live clips from real footage.

    python -m tools.liveness_clips ../shared/data OUT [--split design|confirm|all] [--seed 0]

Attacks: every ``lfw/`` and ``face_recognition_examples/`` identity's first photo and the
``presentation_attacks/`` photos, each as a print and as a screen (edge_mfr.liveness.render). Identities are
split in two halves by name: thresholds were chosen on ``design`` and confirmed on ``confirm``. Live: 3 s
windows of the frontal stretch of ``video/short_hamilton_clip.mp4`` at 15 fps with one blink rendered onto
the real frames at a seeded time. Clips go to OUT (a temp folder: never commit them); their paths are
printed as ``real PATH`` / ``attack PATH`` lines.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from edge_mfr.liveness.render import ATTACK_KINDS, BLINK_PROFILE, attack_frames, close_eyes, write_clip
from edge_mfr.vision.eyes import EyeOpenness
from edge_mfr.vision.imageio import read_image, rgb_frames
from edge_mfr.vision.pipeline import make_detector

FPS = 15.0
VIDEO = "video/short_hamilton_clip.mp4"
FRONTAL = (82, 210)  # source frames (29.97 fps) where one face looks at the camera, measured by hand
LIVE_STARTS = (82, 96, 110, 120)


def stills(data: Path, split: str) -> list[tuple[str, Path]]:
    """(identity, photo) pairs for attacks, halved by identity name for design/confirm."""
    people: list[tuple[str, Path]] = []
    for subset in ("lfw", "face_recognition_examples"):
        for folder in sorted((data / subset).iterdir()):
            photos = sorted(folder.glob("*.jpg"))
            if folder.is_dir() and folder.name != "multi_face" and photos:
                people.append((folder.name, photos[0]))
    people += [(p.stem, p) for p in sorted((data / "presentation_attacks").glob("*.jpg"))]
    people.sort()
    if split == "all":
        return people
    half = len(people) // 2
    return people[:half] if split == "design" else people[half:]


def face_print(photo: np.ndarray, detector) -> np.ndarray:
    """The part of ``photo`` an attacker would print or show: its main face with head and shoulders."""
    from edge_mfr.vision.faces import best_face, detect_faces

    face = best_face(detect_faces(detector, photo), photo.shape)
    if face is None:
        return photo
    x1, y1, x2, y2 = face.box
    cx, cy, side = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1) * 2.2
    h, w = photo.shape[:2]
    top, left = int(max(cy - side / 2, 0)), int(max(cx - side / 2, 0))
    return np.ascontiguousarray(photo[top:int(min(cy + side / 2, h)), left:int(min(cx + side / 2, w))])


def live_clips(data: Path, out: Path, seed: int) -> list[Path]:
    """Real footage (15 fps) with one rendered blink each."""
    cap = cv2.VideoCapture(str(data / VIDEO))
    frames = [(i, image) for i, image in enumerate(rgb_frames(cap))
              if FRONTAL[0] <= i <= FRONTAL[1] and (i - FRONTAL[0]) % 2 == 0]
    cap.release()
    det = make_detector("blazeface")
    eyes = EyeOpenness()
    rng = np.random.default_rng(seed)
    paths = []
    for start in LIVE_STARTS:
        clip = [f for j, f in frames if j >= start][:45]
        at = int(rng.integers(8, 30))  # the blink starts 0.5-2 s in
        rendered = []
        for k, image in enumerate(clip):
            amount = BLINK_PROFILE[k - at] if 0 <= k - at < len(BLINK_PROFILE) else 0.0
            if amount > 0:
                faces = det.detect(image)
                if faces:
                    face = max(faces, key=lambda f: f.width)
                    image = close_eyes(image, eyes.measure(image, face).landmarks, amount)
            rendered.append(image)
        paths.append(write_clip(out / f"live_hamilton_{start}_blink{at}.mp4", rendered, FPS))
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--split", choices=("design", "confirm", "all"), default="all")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frames", type=int, default=75, help="frames per attack clip (15 fps)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    detector = make_detector("blazeface")
    for path in live_clips(args.data, args.out, args.seed):
        print("real", path)
    for n, (who, photo) in enumerate(stills(args.data, args.split)):
        image = face_print(read_image(photo), detector)
        for k, kind in enumerate(ATTACK_KINDS):
            frames = attack_frames(image, kind, seed=args.seed * 1000 + n * 10 + k, frames=args.frames, fps=FPS)
            print("attack", write_clip(args.out / f"attack_{kind}_{who}.mp4", frames, FPS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
