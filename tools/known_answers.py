"""Record the models' known answers: reference inputs and the outputs a known-good machine computes.

    python tools/known_answers.py                 # every TFLite model in models/manifest.json
    python tools/known_answers.py --only NAME.tflite [--only ...]   # just these (after adding a model)
    python tools/known_answers.py --check         # run the self-test against what is recorded, write nothing

Run it on a machine whose runtime is trusted (the x86-64 build host, where the converter verified every
model against its source), after any model is added or replaced. It writes ``models/known_answers.npz``
(reference inputs and expected outputs) and a ``known_answer`` block into each model's manifest entry;
edge_mfr/vision/selftest.py then checks at start-up (``edge-mfr run``) and in ``edge-mfr doctor`` that this
device reproduces them (cosine >= 0.99).

Reference inputs: two public-domain faces from scikit-image's data folder (the astronaut, Eileen Collins,
NASA, public domain; the cameraman, CC0), so the file is licence-clean and every model sees two different
people: a runtime that returns (nearly) the same output for every input cannot match both. Models whose
role starts with ``detector`` get the scene around the face, letterboxed to their input size; every other
model (embedders, landmark models, MTCNN's stages) gets the face aligned by edge-mfr's own detector and
aligner, resized to its input size. Inputs are stored at the model's size, so the check never resizes.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from edge_mfr.errors import EdgeMfrError  # noqa: E402
from edge_mfr.vision import selftest  # noqa: E402
from edge_mfr.vision.runtime import MANIFEST_NAME, load_manifest, load_model, runtime_name  # noqa: E402

log = logging.getLogger("known_answers")

# name -> (scikit-image data file, the scene around the face: rows, columns)
REFERENCES = {
    "astronaut": ("astronaut.png", (slice(0, 300), slice(100, 340))),
    "cameraman": ("camera.png", (slice(40, 300), slice(100, 350))),
}


def scenes() -> dict[str, np.ndarray]:
    """The reference scenes as RGB uint8 (the cameraman is greyscale: replicated to three channels)."""
    from edge_mfr.demo import skimage_data_file
    from edge_mfr.vision.imageio import read_image

    out = {}
    for name, (file, (rows, cols)) in REFERENCES.items():
        image = read_image(skimage_data_file(file))
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        out[name] = np.ascontiguousarray(image[rows, cols, :3])
    return out


def aligned_faces(images: dict[str, np.ndarray], models_dir: Path) -> dict[str, np.ndarray]:
    """Each scene's one face, detected and aligned by edge-mfr itself (160x160 RGB)."""
    from edge_mfr.vision.align import align_face
    from edge_mfr.vision.pipeline import FacePipeline

    pipeline = FacePipeline(detector="blazeface", models_dir=models_dir, embed=False)
    out = {}
    for name, image in images.items():
        faces = pipeline.detect(image)
        if len(faces) != 1:
            raise EdgeMfrError(f"reference '{name}': expected one face, the detector found {len(faces)}")
        out[name] = align_face(image, faces[0])
    return out


def letterboxed(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` scaled to fit (height, width), centred on black."""
    scale = min(height / image.shape[0], width / image.shape[1])
    h, w = max(1, round(image.shape[0] * scale)), max(1, round(image.shape[1] * scale))
    small = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    out = np.zeros((height, width, 3), np.uint8)
    top, left = (height - h) // 2, (width - w) // 2
    out[top : top + h, left : left + w] = small
    return out


def reference_input(role: str, scene: np.ndarray, face: np.ndarray, shape: list[int]) -> np.ndarray:
    if len(shape) != 4 or shape[0] < 1 or shape[3] != 3:
        raise EdgeMfrError(f"input shape {shape}: only (N, H, W, 3) image models get known answers here")
    height, width = int(shape[1]), int(shape[2])
    if role.startswith("detector"):
        return letterboxed(scene, height, width)
    return cv2.resize(face, (width, height), interpolation=cv2.INTER_AREA)


def record(models_dir: Path, only: list[str]) -> list[str]:
    """Recompute the known answers of ``only`` (or every TFLite model); returns one line per model."""
    specs = load_manifest(models_dir)
    names = only or [n for n in specs if n.endswith(".tflite")]
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise EdgeMfrError(f"{models_dir / MANIFEST_NAME}: no entry for {', '.join(unknown)}")
    npz_path = models_dir / selftest.KNOWN_ANSWERS_FILE
    arrays = selftest.read_known_answers(models_dir) if npz_path.exists() else {}
    arrays = {k: v for k, v in arrays.items() if k.split("__")[0] in specs and k.split("__")[0] not in names}
    images = scenes()
    faces = aligned_faces(images, models_dir)
    blocks: dict[str, dict[str, Any]] = {}
    lines = []
    for name in names:
        spec = specs[name]
        model = load_model(spec.role, models_dir=models_dir, name=name)
        outputs = {}
        for ref in REFERENCES:
            x = reference_input(spec.role, images[ref], faces[ref], spec.inputs[0]["shape"])
            outs = model.run(selftest.preprocess(x, spec.preprocessing, model.input_shape[0]))
            arrays[selftest.array_key(name, ref, "in")] = x
            outputs[ref] = [selftest.first_row(o) for o in outs]
        for ref in REFERENCES:
            for k, out in enumerate(outputs[ref]):
                arrays[selftest.array_key(name, ref, f"out{k}")] = out.astype(np.float32)
        # The two references must give distinguishable outputs, or a constant output could pass both.
        a, b = outputs["astronaut"], outputs["cameraman"]
        apart = [selftest.agreement(x, y) for x, y in zip(a, b, strict=True)]
        if min(apart) >= selftest.MIN_COSINE:
            raise EdgeMfrError(f"{name}: the two references give the same outputs (cosine {min(apart):.3f}); "
                               "the known answer could not tell a broken runtime from a working one")
        blocks[name] = {
            "file": selftest.KNOWN_ANSWERS_FILE,
            "model_sha256": spec.sha256,
            "inputs": list(REFERENCES),
            "sha256": None,  # filled below, over the arrays in the order the check reads them
            "min_cosine": selftest.MIN_COSINE,
            "references_apart_cosine": round(min(apart), 4),
            "recorded_with": f"{runtime_name()} on {platform.machine()}",
        }
        lines.append(f"{name}: {len(REFERENCES)} references, {len(spec.outputs)} output(s); "
                     f"references apart: cosine {min(apart):.3f}")
    for name, block in blocks.items():
        refs = block["inputs"]
        order = [selftest.array_key(name, r, "in") for r in refs]
        order += [selftest.array_key(name, r, f"out{k}") for r in refs for k in range(len(specs[name].outputs))]
        block["sha256"] = selftest.digest([arrays[k] for k in order])
    write(models_dir, arrays, blocks)
    return lines


def write(models_dir: Path, arrays: dict[str, np.ndarray], blocks: dict[str, dict[str, Any]]) -> None:
    """known_answers.npz first, then the manifest (both atomically)."""
    import io

    from tools.convert import atomic_write, read_manifest

    buffer = io.BytesIO()
    np.savez_compressed(buffer, **dict(sorted(arrays.items())))
    atomic_write(models_dir / selftest.KNOWN_ANSWERS_FILE, buffer.getvalue())
    path = models_dir / MANIFEST_NAME
    manifest = read_manifest(path)
    for name, block in blocks.items():
        manifest["models"][name][selftest.KEY] = block
    atomic_write(path, (json.dumps(manifest, indent=2) + "\n").encode())


def check(models_dir: Path) -> list[str]:
    return [f"{r.file}: OK, worst cosine {r.worst_cosine:.4f} over {r.inputs} references"
            for r in selftest.check_all(models_dir)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=REPO_ROOT / "models", help="models folder (default models/)")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="record only this manifest entry (repeatable); default: every .tflite model")
    parser.add_argument("--check", action="store_true", help="only run the self-test against what is recorded")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        lines = check(args.models) if args.check else record(args.models, args.only)
    except EdgeMfrError as exc:
        print(f"known_answers: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
