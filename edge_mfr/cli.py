"""The `edge-mfr` command line.

Every expected failure (bad image, bad model file, bad gallery, bad config) is an EdgeMfrError and is
printed as one line with exit code 2; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from edge_mfr import __version__
from edge_mfr.errors import EdgeMfrError, ImageError, InputNotFoundError

log = logging.getLogger("edge_mfr")

KEYPOINT_NAMES = ("right_eye", "left_eye", "nose", "mouth", "right_ear", "left_ear")
SAMPLE_NAME = "astronaut (scikit-image sample, public domain)"


def sample_image() -> np.ndarray:
    """The embedded default input: scikit-image's public-domain astronaut photo (Eileen Collins)."""
    try:
        from skimage import data
    except ImportError:
        raise EdgeMfrError(
            "no input given and the embedded sample needs scikit-image: pip install 'edge-mfr[demo]'"
        ) from None
    return np.ascontiguousarray(data.astronaut())


def iter_inputs(paths: list[str]) -> Iterator[tuple[str, Callable[[], np.ndarray]]]:
    """(name, loader) for every image named or found under a named folder."""
    from edge_mfr.vision.imageio import list_images, read_image

    if not paths:
        yield SAMPLE_NAME, sample_image
        return
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            images = list_images(path)
            if not images:
                raise InputNotFoundError(f"{path}: folder holds no image files")
            for image in images:
                yield str(image), (lambda p=image: read_image(p))
        elif path.exists():
            yield str(path), (lambda p=path: read_image(p))
        else:
            raise InputNotFoundError(f"{path}: no such file or folder")


def _face_record(face, index: int) -> dict:
    return {
        "index": index,
        "box": [round(float(v), 1) for v in face.box],
        "score": round(float(face.score), 4),
        "landmarks": {n: [round(float(x), 1), round(float(y), 1)]
                      for n, (x, y) in zip(KEYPOINT_NAMES, face.keypoints, strict=True)},
    }


def cmd_recognize(args: argparse.Namespace) -> int:
    from edge_mfr.vision.draw import draw_faces
    from edge_mfr.vision.imageio import write_image
    from edge_mfr.vision.pipeline import FacePipeline

    inputs = list(iter_inputs(args.paths))
    pipeline = FacePipeline(detector=args.detector, num_threads=args.threads, models_dir=args.models,
                            embed=False)
    annotate = Path(args.annotate) if args.annotate else None
    if annotate and len(inputs) > 1:
        annotate.mkdir(parents=True, exist_ok=True)
    failures = 0
    for name, load in inputs:
        try:
            image = load()
        except ImageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failures += 1
            continue
        faces = pipeline.detect(image, crop_kind=args.crop_kind)
        records = [_face_record(f, i + 1) for i, f in enumerate(faces)]
        if args.json:
            print(json.dumps({"image": name, "faces": records}))
        else:
            print(f"{name}: {len(faces)} face{'s' if len(faces) != 1 else ''}")
            for r in records:
                lm = " ".join(f"{k}=({v[0]:.0f},{v[1]:.0f})" for k, v in r["landmarks"].items())
                box = ",".join(f"{v:.0f}" for v in r["box"])
                print(f"  face {r['index']}: box {box} score {r['score']:.2f} {lm}")
        if annotate:
            target = annotate
            if len(inputs) > 1:
                target = annotate / (Path(name).stem + "_annotated.jpg")
            write_image(target, draw_faces(image, faces))
    if annotate and not args.json:
        print(f"annotated output written to {annotate}")
    return 1 if failures else 0


def cmd_bench(args: argparse.Namespace) -> int:
    from edge_mfr.bench import run_bench

    report = run_bench(detector=args.detector, threads=args.threads, iterations=args.iterations,
                       models_dir=args.models, image_path=args.image)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    print(report["table"])
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-mfr", description=__doc__.splitlines()[0].rstrip("."))
    parser.add_argument("--version", action="version", version=f"edge-mfr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--models", type=Path, default=None,
                        help="folder with the TFLite models and manifest.json (default: bundled models/)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("recognize", help="find (and, with a gallery, identify) faces in images")
    p.add_argument("paths", nargs="*", help="image files or folders (default: the embedded sample photo)")
    p.add_argument("--detector", default="blazeface", choices=["blazeface", "blazeface-full", "mtcnn"])
    p.add_argument("--crop-kind", default="auto", choices=["auto", "photo", "aligned_crop"],
                   help="'aligned_crop' for tight face crops such as MFR2; 'auto' tries both")
    p.add_argument("--threads", type=int, default=1, help="TFLite threads (default 1)")
    p.add_argument("--annotate", metavar="OUT", help="write the image with boxes to OUT (a folder for many)")
    p.add_argument("--json", action="store_true", help="one JSON object per image on stdout")
    p.set_defaults(func=cmd_recognize)

    p = sub.add_parser("bench", help="per-stage latency, fps, memory and load time on this machine")
    p.add_argument("--detector", default="blazeface", choices=["blazeface", "blazeface-full", "mtcnn"])
    p.add_argument("--threads", default="1,2", help="thread counts to measure, comma separated")
    p.add_argument("--iterations", type=int, default=50)
    p.add_argument("--image", type=Path, help="a photo with one face (default: the embedded sample)")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s" if os.environ.get("INVOCATION_ID")
        else "%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except EdgeMfrError as exc:
        print(f"edge-mfr: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
