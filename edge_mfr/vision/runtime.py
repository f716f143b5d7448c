"""TFLite model loading, checked against ``models/manifest.json`` before anything runs.

The device never imports TensorFlow: models run on ``ai_edge_litert`` (any Python, numpy 2) or, where
only that is installed, the older ``tflite_runtime`` (Python <= 3.11, numpy < 2). Every model file is
hashed and compared with its manifest entry first, so a truncated download, a model swapped by hand or
a manifest from another release gives a clear error naming the file instead of wrong embeddings.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from edge_mfr.errors import ModelError, RuntimeMissingError
from edge_mfr.native_output import native_chatter_to_log
from edge_mfr.paths import sha256_file

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1


def default_models_dir() -> Path:
    """Where the device models live: ``$EDGE_MFR_MODELS``, the source tree's models/, or the installed copy."""
    env = os.environ.get("EDGE_MFR_MODELS")
    if env:
        return Path(env)
    source_tree = Path(__file__).resolve().parents[2] / "models"
    if (source_tree / MANIFEST_NAME).is_file():
        return source_tree
    return Path(sys.prefix) / "share" / "edge-mfr" / "models"


@lru_cache(maxsize=1)
def _interpreter_class() -> tuple[type, str]:
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter  # type: ignore[import-not-found]

        return Interpreter, "tflite-runtime"
    except ImportError as exc:
        raise RuntimeMissingError(
            "no TFLite runtime: install ai-edge-litert (pip install ai-edge-litert) "
            "or tflite-runtime on Python <= 3.11"
        ) from exc


def runtime_name() -> str:
    """Name of the TFLite runtime package in use (for bench and doctor output)."""
    return _interpreter_class()[1]


@dataclass(frozen=True)
class ModelSpec:
    """One manifest entry: what a model file must be, and how to feed it."""

    file: str
    role: str
    sha256: str
    size_bytes: int
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    preprocessing: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def load_manifest(models_dir: Path | None = None) -> dict[str, ModelSpec]:
    """Read and validate the manifest; keys are model file names."""
    models_dir = Path(models_dir or default_models_dir())
    path = models_dir / MANIFEST_NAME
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{path}: model manifest not found (run `make models` or set EDGE_MFR_MODELS)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: unreadable model manifest: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != MANIFEST_FORMAT or not isinstance(raw.get("models"), dict):
        raise ModelError(f"{path}: not an edge-mfr model manifest of format {MANIFEST_FORMAT}")
    specs: dict[str, ModelSpec] = {}
    known = {"role", "sha256", "size_bytes", "inputs", "outputs", "preprocessing"}
    for name, entry in raw["models"].items():
        try:
            specs[name] = ModelSpec(
                file=name,
                role=entry["role"],
                sha256=entry["sha256"],
                size_bytes=int(entry["size_bytes"]),
                inputs=list(entry["inputs"]),
                outputs=list(entry["outputs"]),
                preprocessing=dict(entry.get("preprocessing", {})),
                extra={k: v for k, v in entry.items() if k not in known},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{path}: entry {name!r} is incomplete ({exc})") from None
    return specs


def find_model(role: str, models_dir: Path | None = None, name: str | None = None) -> tuple[Path, ModelSpec]:
    """The model file for ``role`` ('detector', 'embedder', ...), or the one called ``name``."""
    models_dir = Path(models_dir or default_models_dir())
    specs = load_manifest(models_dir)
    if name is not None:
        if name not in specs:
            raise ModelError(f"{models_dir / name}: not listed in {models_dir / MANIFEST_NAME}")
        return models_dir / name, specs[name]
    matches = [s for s in specs.values() if s.role == role and s.extra.get("default", True)]
    if not matches:
        raise ModelError(f"{models_dir / MANIFEST_NAME}: no model with role {role!r}")
    return models_dir / matches[0].file, matches[0]


def verify_model_file(path: Path, spec: ModelSpec) -> None:
    """Raise ModelError naming ``path`` unless it is exactly the file the manifest describes."""
    if not path.is_file():
        raise ModelError(f"{path}: model file missing (run `make models`)")
    size = path.stat().st_size
    if size != spec.size_bytes:
        what = "truncated" if size < spec.size_bytes else "larger than expected"
        raise ModelError(f"{path}: model file is {what} ({size} bytes, manifest says {spec.size_bytes})")
    actual = sha256_file(path)
    if actual != spec.sha256:
        raise ModelError(f"{path}: sha256 {actual[:12]}... does not match the manifest ({spec.sha256[:12]}...)")


class TFLiteModel:
    """A verified TFLite interpreter with float-in/float-out helpers for quantized tensors."""

    def __init__(self, path: Path, spec: ModelSpec, num_threads: int = 1):
        verify_model_file(path, spec)
        interpreter_cls, self.runtime = _interpreter_class()
        try:
            with native_chatter_to_log(f"loading {path.name}"):  # LiteRT's "Created ... XNNPACK delegate"
                self.interpreter = interpreter_cls(model_path=str(path), num_threads=num_threads)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{path}: {self.runtime} cannot load this model: {exc}") from None
        self.path = path
        self.spec = spec
        self.num_threads = num_threads
        self.input_details = self.interpreter.get_input_details()
        self.output_details = self.interpreter.get_output_details()
        self._check_shapes()
        self._batch = int(self.input_details[0]["shape"][0])
        # Re-planning a resized graph makes XNNPACK pack its weights again (tens of MiB at peak), and
        # FaceNet's frozen graph cannot resize at all; only models the manifest marks as batchable try it.
        self._fixed_batch = not bool(spec.extra.get("dynamic_batch", False))
        # One run makes sure every delegate has packed its weights, then the file's pages can go.
        with native_chatter_to_log(f"first run of {path.name}"):
            self._invoke(np.zeros(self.input_shape, np.float32))
        release_mapped_pages(path)

    def _check_shapes(self) -> None:
        for kind, details, expected in (
            ("input", self.input_details, self.spec.inputs),
            ("output", self.output_details, self.spec.outputs),
        ):
            actual = sorted(tuple(int(v) for v in d["shape"][1:]) for d in details)
            wanted = sorted(tuple(int(v) for v in e["shape"][1:]) for e in expected)
            if actual != wanted:
                raise ModelError(f"{self.path}: {kind} shapes {actual} differ from the manifest's {wanted}")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self.input_details[0]["shape"])

    def _resize_batch(self, batch: int) -> bool:
        """Resize the input's batch dimension; False when the graph only runs with its built-in batch."""
        if batch == self._batch:
            return True
        if self._fixed_batch:
            return False
        index = self.input_details[0]["index"]
        shape = list(self.input_details[0]["shape"])
        try:
            shape[0] = batch
            self.interpreter.resize_tensor_input(index, shape)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError):
            # Graphs with a hard-coded batch in a reshape (FaceNet's frozen graph) cannot be resized:
            # go back to the original batch and run items one by one from now on.
            self._fixed_batch = True
            shape[0] = self._batch
            self.interpreter.resize_tensor_input(index, shape)
            self.interpreter.allocate_tensors()
            return False
        self.input_details = self.interpreter.get_input_details()
        self.output_details = self.interpreter.get_output_details()
        self._batch = batch
        return True

    def _invoke(self, x: np.ndarray) -> list[np.ndarray]:
        detail = self.input_details[0]
        self.interpreter.set_tensor(detail["index"], _quantize(x, detail))
        self.interpreter.invoke()
        by_name = {d["name"]: d for d in self.output_details}
        ordered = [by_name.get(o.get("name")) for o in self.spec.outputs]
        if any(d is None for d in ordered):
            ordered = self.output_details
        return [_dequantize(self.interpreter.get_tensor(d["index"]), d) for d in ordered]

    def invoke_again(self) -> None:
        """Run the graph on the input already set (bench: the bare model time, nothing around it)."""
        self.interpreter.invoke()

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Run on a float32 batch (already preprocessed); returns float32 outputs in manifest order."""
        if self._resize_batch(int(x.shape[0])):
            return self._invoke(x)
        parts = [self._invoke(x[i : i + self._batch]) for i in range(0, len(x), self._batch)]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


_MADV_DONTNEED = 4  # Linux


def release_mapped_pages(path: Path) -> int:
    """Drop this process's resident pages of read-only mappings of ``path``; returns the bytes released.

    XNNPACK repacks every weight tensor into its own heap buffers when the model is prepared and never
    reads the mapped model file's weights again, but the pages it read them from stay resident: FaceNet's
    24.6 MB counted twice in RSS. MADV_DONTNEED on a read-only file mapping only unmaps those pages; if
    anything reads them later they fault back in from the file, which was verified against the manifest,
    so results cannot change (tested bit for bit). Measured: FaceNet loaded and run, RSS 97 -> 74 MiB.
    Linux only; elsewhere, or when madvise is refused, nothing happens.
    """
    try:
        target = str(Path(path).resolve())
        libc = ctypes.CDLL(None, use_errno=True)
        with open("/proc/self/maps") as maps:
            lines = maps.readlines()
    except OSError:
        return 0
    madvise = libc.madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    released = 0
    for line in lines:
        parts = line.split(maxsplit=5)
        if len(parts) < 6 or parts[5].strip() != target or "w" in parts[1]:
            continue
        start, end = (int(v, 16) for v in parts[0].split("-"))
        if madvise(start, end - start, _MADV_DONTNEED) == 0:
            released += end - start
    return released


def _quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = detail["dtype"]
    if dtype == np.float32:
        return np.ascontiguousarray(x, dtype=np.float32)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    q = np.round(x / scale + zero)
    return np.clip(q, info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return y.copy()
    scale, zero = detail["quantization"]
    return (y.astype(np.float32) - zero) * scale


def load_model(role: str, num_threads: int = 1, models_dir: Path | None = None, name: str | None = None) -> TFLiteModel:
    """Find, verify and load the model for ``role``."""
    path, spec = find_model(role, models_dir, name)
    log.debug("loading %s (%s) with %d thread(s)", path, role, num_threads)
    return TFLiteModel(path, spec, num_threads=num_threads)
