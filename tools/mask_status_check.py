"""Mask status measured on real detected faces: the three numbers issue 13 asks for.

Usage: python tools/mask_status_check.py [--data ../shared/data] [--models models] [--json out.json]

- ``mask_status``: 5-fold accuracy of the training recipe on ``mask_status/`` (what the model is trained on,
  so each image is scored by a model that never saw it);
- ``mfr2``: accuracy of the shipped model on every MFR2 crop (masked labels known; never trained on);
- ``video_false_masked``: share of every face the detector finds in ``video/short_hamilton_clip.mp4``
  (nobody in it wears a mask) that the shipped model calls masked.

Images without a face count as errors. Runs on the device code path (no TensorFlow).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from edge_mfr.vision import mask_status as ms  # noqa: E402
from edge_mfr.vision.faces import best_face  # noqa: E402
from edge_mfr.vision.imageio import read_image, rgb_frames  # noqa: E402
from edge_mfr.vision.pipeline import FacePipeline  # noqa: E402

VIDEO = Path("video") / "short_hamilton_clip.mp4"


def mfr2_accuracy(pipeline: FacePipeline, clf: ms.MaskStatusClassifier, data: Path) -> tuple[float, int]:
    """(accuracy, images) on every MFR2 crop, through the documented crop path."""
    with open(data / "labels.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["subset"] == "mfr2"]
    correct = 0
    for r in rows:
        image = read_image(data / r["path"])
        face = best_face(pipeline.detect(image, crop_kind="aligned_crop"), image.shape)
        if face is None:
            continue
        analyzed = pipeline.analyze_faces(image, [face])[0]
        correct += int(bool(clf.predict(analyzed.embedding[None], [analyzed.crop])[0]) == (r["masked"] == "1"))
    return correct / len(rows), len(rows)


def video_false_masked(pipeline: FacePipeline, clf: ms.MaskStatusClassifier, clip: Path) -> tuple[float, int]:
    """(share judged masked, faces) over every face found in every frame of an unmasked clip."""
    capture = cv2.VideoCapture(str(clip))
    masked = faces = 0
    try:
        for image in rgb_frames(capture):
            analyzed = pipeline.analyze_faces(image, pipeline.detect(image, crop_kind="photo"))
            if analyzed:
                emb = np.stack([a.embedding for a in analyzed])
                masked += int(clf.predict(emb, [a.crop for a in analyzed]).sum())
                faces += len(analyzed)
    finally:
        capture.release()
    return masked / max(faces, 1), faces


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--models", type=Path, default=None, help="models folder (default: the bundled one)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    for need in (args.data / "labels.csv", args.data / "mask_status" / "labels.csv", args.data / VIDEO):
        if not need.is_file():
            parser.error(f"{need}: missing")
    pipeline = FacePipeline(num_threads=2, models_dir=args.models)
    clf = ms.MaskStatusClassifier.load(args.models, pipeline.embedder.model_sha256)
    cv_acc, detail = ms.cross_validated_accuracy(pipeline, args.data / "mask_status")
    mfr2, n_mfr2 = mfr2_accuracy(pipeline, clf, args.data)
    video, n_video = video_false_masked(pipeline, clf, args.data / VIDEO)
    report = {"mask_status_cv_accuracy": round(cv_acc, 4), "mask_status_images": detail["images"],
              "mfr2_accuracy": round(mfr2, 4), "mfr2_images": n_mfr2,
              "video_false_masked": round(video, 4), "video_faces": n_video}
    print(f"mask_status 5-fold accuracy {cv_acc:.4f} ({detail['images']} images); MFR2 accuracy {mfr2:.4f} "
          f"({n_mfr2} crops); video false 'masked' {video:.4f} of {n_video} faces")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
