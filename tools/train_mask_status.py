"""Train the mask-status classifier (models/mask_status.json) on a labelled mask/no-mask folder.

Usage: python tools/train_mask_status.py [--data ../shared/data/mask_status] [--models models]

Runs on the device code path (TFLite detector + embedder), so it needs no TensorFlow. Prints the
k-fold accuracy of the same recipe, so the figure in the model file is not measured on training images.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge_mfr.vision import mask_status as ms  # noqa: E402
from edge_mfr.vision.pipeline import FacePipeline  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=REPO.parent / "shared" / "data" / "mask_status",
        help="folder with labels.csv (path,masked,...) and the images",
    )
    parser.add_argument("--models", type=Path, default=None, help="models folder (default: the bundled one)")
    parser.add_argument(
        "--synthetic-per-crop", type=int, default=2, help="synthetic masks rendered on each unmasked training face"
    )
    args = parser.parse_args(argv)
    if not (args.data / "labels.csv").is_file():
        parser.error(f"{args.data}: no labels.csv")
    pipeline = FacePipeline(num_threads=2, models_dir=args.models)
    accuracy, detail = ms.cross_validated_accuracy(pipeline, args.data)
    print(f"5-fold accuracy of this recipe: {accuracy:.4f} ({detail})")
    x, y, no_face = ms.folder_features(pipeline, args.data)
    models_dir = args.models or REPO / "models"
    clf = ms.MaskStatusClassifier.train(x, y, pipeline.embedder.model_sha256, meta={
        "trained_on": f"{args.data.name}: {len(y)} faces ({int(y.sum())} masked), {no_face} images without a face",
        "recipe": "RBF SVM (C=1, gamma=scale, balanced) on standardised FaceNet embedding + lower-face statistics",
        "cv_accuracy_5fold": round(accuracy, 4),
        "trained_at": dt.date.today().isoformat(),
        "tool": "tools/train_mask_status.py",
    })
    clf.save(models_dir / ms.MODEL_FILE)
    print(f"wrote {models_dir / ms.MODEL_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
