"""TFLite model loading, checked against ``models/manifest.json`` before anything runs.

The device never imports TensorFlow: models run on ``ai_edge_litert`` (any Python, numpy 2) or, where
only that is installed, the older ``tflite_runtime`` (Python <= 3.11, numpy < 2). Every model file is
hashed and compared with its manifest entry first, so a truncated download, a model swapped by hand or
a manifest from another release gives a clear error naming the file instead of wrong embeddings.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from edge_mfr.errors import ModelError, RuntimeMissingError
from edge_mfr.paths import sha256_file
from edge_mfr.vision import weight_cache

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


class _ModelBase:
    """What both back-ends share: manifest shape checks and float-in/float-out batches."""

    path: Path
    spec: ModelSpec
    runtime: str
    num_threads: int
    _batch: int

    def _check_shapes(self, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> None:
        for kind, details, expected in (("input", inputs, self.spec.inputs), ("output", outputs, self.spec.outputs)):
            actual = sorted(tuple(int(v) for v in d["shape"][1:]) for d in details)
            wanted = sorted(tuple(int(v) for v in e["shape"][1:]) for e in expected)
            if actual != wanted:
                raise ModelError(f"{self.path}: {kind} shapes {actual} differ from the manifest's {wanted}")

    def _ordered(self, details: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Output details in manifest order (by tensor name; as given when the names differ)."""
        by_name = {d["name"]: d for d in details}
        ordered = [by_name.get(o.get("name")) for o in self.spec.outputs]
        return details if any(d is None for d in ordered) else ordered  # type: ignore[return-value]

    def _resize_batch(self, batch: int) -> bool:
        return batch == self._batch

    def _invoke(self, x: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def invoke_again(self) -> None:
        """Run the graph on the input already set (bench: the bare model time, nothing around it)."""
        raise NotImplementedError

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Run on a float32 batch (already preprocessed); returns float32 outputs in manifest order."""
        if self._resize_batch(int(x.shape[0])):
            return self._invoke(x)
        parts = [self._invoke(x[i : i + self._batch]) for i in range(0, len(x), self._batch)]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


class TFLiteModel(_ModelBase):
    """A verified TFLite interpreter with float-in/float-out helpers for quantized tensors."""

    def __init__(self, path: Path, spec: ModelSpec, num_threads: int = 1):
        verify_model_file(path, spec)
        interpreter_cls, self.runtime = _interpreter_class()
        try:
            self.interpreter = interpreter_cls(model_path=str(path), num_threads=num_threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{path}: {self.runtime} cannot load this model: {exc}") from None
        self.path = path
        self.spec = spec
        self.num_threads = num_threads
        self.input_details = self.interpreter.get_input_details()
        self.output_details = self.interpreter.get_output_details()
        self._check_shapes(self.input_details, self.output_details)
        self._batch = int(self.input_details[0]["shape"][0])
        # Re-planning a resized graph makes XNNPACK pack its weights again (tens of MiB at peak), and
        # FaceNet's frozen graph cannot resize at all; only models the manifest marks as batchable try it.
        self._fixed_batch = not bool(spec.extra.get("dynamic_batch", False))

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
        return [_dequantize(self.interpreter.get_tensor(d["index"]), d) for d in self._ordered(self.output_details)]

    def invoke_again(self) -> None:
        self.interpreter.invoke()


class CachedWeightsModel(_ModelBase):
    """A fixed-shape, float-interface model on LiteRT's CompiledModel with XNNPACK weights cached in a file.

    Same results as the Interpreter (bit-identical embeddings, tested), but the packed weights are
    file-backed, so the model costs its weights once in RSS instead of twice (see weight_cache).
    """

    def __init__(self, path: Path, spec: ModelSpec, num_threads: int, cache: Path):
        verify_model_file(path, spec)
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.hardware_accelerator import HardwareAccelerator
        from ai_edge_litert.options import CpuOptions, Options

        self.path, self.spec, self.num_threads = path, spec, num_threads
        self.runtime = "ai-edge-litert (CompiledModel, cached XNNPACK weights)"
        self.cache = cache
        fresh = not weight_cache.usable(cache)
        target = weight_cache.build_path(cache) if fresh else cache
        options = Options(hardware_accelerators=HardwareAccelerator.CPU,
                          cpu_options=CpuOptions(num_threads=num_threads, xnnpack_weight_cache_path=str(target)))
        try:
            with _native_log_to_debug():
                self._model = CompiledModel.from_file(str(path), options=options, environment=_environment())
        except Exception:
            if fresh:
                weight_cache.discard(target)
            raise
        if fresh:
            weight_cache.publish(target, cache)
            log.info("%s: packed weights cached in %s", path.name, cache)
        signatures = self._model.get_signature_list()
        self._signature = next(iter(signatures))
        inputs = list(self._model.get_input_tensor_details(self._signature).values())
        outputs = list(self._model.get_output_tensor_details(self._signature).values())
        self._check_shapes(inputs, outputs)
        if len(inputs) != 1 or any(d["dtype"] != "float32" for d in inputs + outputs):
            raise ModelError(f"{path}: only one-input float32-interface models can use the weight cache")
        self._input_shape = tuple(int(v) for v in inputs[0]["shape"])
        self._batch = self._input_shape[0]
        ordered = self._ordered(outputs)
        self._out_shapes = [tuple(int(v) for v in d["shape"]) for d in ordered]
        position = {d["name"]: i for i, d in enumerate(outputs)}
        with _native_log_to_debug():  # buffers and the first run set up more of LiteRT, which talks too
            self._inputs = self._model.create_input_buffers(0)
            buffers = self._model.create_output_buffers(0)
            self._outputs = [buffers[position[d["name"]]] for d in ordered]
            self._invoke(np.zeros(self._input_shape, np.float32))

    def close(self) -> None:
        """Release the compiled model and its buffers (their environment goes with the last model)."""
        self._inputs, self._outputs = [], []
        if self._model is not None:
            self._model.close()
            self._model = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._input_shape

    def _invoke(self, x: np.ndarray) -> list[np.ndarray]:
        self._inputs[0].write(np.ascontiguousarray(x, dtype=np.float32))
        self.invoke_again()
        return [np.asarray(buf.read(int(np.prod(shape)), np.float32), dtype=np.float32).reshape(shape)
                for buf, shape in zip(self._outputs, self._out_shapes, strict=True)]

    def invoke_again(self) -> None:
        self._model.run_by_index(0, self._inputs, self._outputs)


@lru_cache(maxsize=1)
def _environment() -> Any:
    """One LiteRT environment per process, shared by every compiled model."""
    from ai_edge_litert.environment import Environment

    with _native_log_to_debug():
        return Environment.create()


@contextmanager
def _native_log_to_debug() -> Iterator[None]:
    """Send what LiteRT's C++ code writes to stderr while a model loads to our log at DEBUG level.

    Creating an environment probes for GPU and NPU plug-ins a Pi does not have and prints a warning for
    each one; that would read like a fault in the journal at every start.
    """
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            for line in sink.read().decode("utf-8", "replace").splitlines():
                if line.strip():
                    log.debug("litert: %s", line)


def weight_cached_model(path: Path, spec: ModelSpec, num_threads: int) -> _ModelBase | None:
    """The model with XNNPACK weights cached on disk, or None where that cannot be had.

    None (and the caller uses the Interpreter) when the cache is switched off, the runtime predates
    CompiledModel, the model needs resizing, or the cache folder is not writable.
    """
    folder = weight_cache.weight_cache_dir()
    if folder is None or spec.extra.get("dynamic_batch", False):
        return None
    try:
        import ai_edge_litert
        from ai_edge_litert.compiled_model import CompiledModel  # noqa: F401
    except ImportError:
        return None
    version = str(getattr(ai_edge_litert, "__version__", "unknown"))
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not os.access(folder, os.W_OK):
            raise PermissionError(f"{folder} is not writable")
        return CachedWeightsModel(path, spec, num_threads, weight_cache.cache_path(path, spec.sha256, version, folder))
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure here only costs memory: fall back, loudly
        log.warning("%s: XNNPACK weight cache unavailable (%s); using the plain interpreter", path.name, exc)
        return None


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


def load_model(role: str, num_threads: int = 1, models_dir: Path | None = None, name: str | None = None,
               cache_weights: bool = False) -> TFLiteModel | CachedWeightsModel:
    """Find, verify and load the model for ``role``; ``cache_weights`` asks for file-cached XNNPACK weights."""
    path, spec = find_model(role, models_dir, name)
    log.debug("loading %s (%s) with %d thread(s)", path, role, num_threads)
    if cache_weights:
        cached = weight_cached_model(path, spec, num_threads)
        if cached is not None:
            return cached  # type: ignore[return-value]
    return TFLiteModel(path, spec, num_threads=num_threads)
