"""ONNX and ready-made TFLite sources for tools/convert.py.

ONNX: onnx2tf turns the graph into a TensorFlow SavedModel (NCHW input becomes NHWC), the usual TFLite
converter quantizes that, and verification compares against onnxruntime on the original ONNX file, so
the check covers onnx2tf's work as well as the quantization. onnx2tf fetches a calibration sample from
the internet at start-up unless a file of that name lies in its working folder: it gets one made of
real aligned faces (``sample_faces``), so nothing is downloaded and its internal check sees faces.

TFLite: a file that is already a TFLite model is taken as it is (no converter can take a .tflite as
input). It must match a pinned sha256; verification then runs it on the same aligned faces (finite
outputs, the identification check in convert.py) and records its shapes, including a batch size the
graph hard-codes. One rewrite is offered (``rebatch_tflite``): a graph that hard-codes a batch larger
than one in its input and its reshapes (MobileFaceNet: two faces per run) can be given batch one, which
halves the work for a single face and the memory of every activation; the weights are not touched, and
convert.py's verification compares the rewritten graph with the published one face by face.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_mfr.errors import ModelError

log = logging.getLogger("convert")

# The name onnx2tf looks for in its working folder before trying to download (onnx2tf 1.29).
ONNX2TF_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"


class SourceError(ModelError):
    """A source model this tool cannot take (reported as one line, exit 2, nothing written)."""


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def onnx_input_shape(path: Path, given: tuple[int, ...] | None) -> tuple[int, ...]:
    """NHWC shape of the single NCHW image input of an ONNX model; SourceError for anything else."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(model)
    except Exception as exc:
        raise SourceError(f"{path}: not a valid ONNX model ({first_line(exc)})") from None
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise SourceError(f"{path}: {len(inputs)} inputs; only single-input image models are supported")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] != 3:
        raise SourceError(f"{path}: input {inputs[0].name!r} has shape {dims}; expected an NCHW image (N,3,H,W)")
    if given is not None:
        if (given[1], given[2], given[3]) != (dims[2], dims[3], 3) and None not in dims[2:]:
            raise SourceError(f"{path}: --input-shape {list(given)} does not fit the model's NCHW input {dims}")
        return given
    if None in dims[2:]:
        raise SourceError(f"{path}: input size {dims} is open; pass --input-shape N,H,W,3")
    return (dims[0] or 1, int(dims[2]), int(dims[3]), 3)


def onnx_runner(path: Path) -> Callable[[np.ndarray], list[np.ndarray]]:
    """onnxruntime on the ONNX file, fed NHWC like the TFLite model (transposed to NCHW here)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise SourceError(f"{path}: onnxruntime cannot load it ({first_line(exc)})") from None
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> list[np.ndarray]:
        nchw = np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)).astype(np.float32))
        return [np.asarray(o, dtype=np.float32) for o in session.run(None, {name: nchw})]

    return run


ONNX2TF_RUN = """
import sys
import onnx2tf
onnx2tf.convert(input_onnx_file_path=sys.argv[1], output_folder_path=sys.argv[2], non_verbose=True)
"""


def onnx_to_savedmodel(path: Path, work: Path, sample: np.ndarray) -> Path:
    """Run onnx2tf on a copy of ``path`` inside ``work``; returns the SavedModel folder. SourceError on failure.

    ``sample``: (20, 128, 128, 3) float32 preprocessed faces, written where onnx2tf looks for its sample.
    onnx2tf runs in a child process: it calls sys.exit on graphs it cannot handle, and a SavedModel loaded
    by a fresh TensorFlow names its tensors the same way whether it was just made or taken from the cache,
    so the TFLite bytes do not depend on the cache.
    """
    if importlib.util.find_spec("onnx2tf") is None:
        raise SourceError(
            "ONNX sources need onnx2tf: pip install --no-deps -r tools/requirements-onnx.txt (see that file)"
        )
    work = work.resolve()  # onnx2tf runs with work as its current folder
    np.save(work / ONNX2TF_SAMPLE, sample.astype(np.float32))
    # onnx2tf rewrites its input file in place (it names unnamed ops): give it a copy, never the source.
    copy = work / "source.onnx"
    shutil.copyfile(path, copy)
    out = work / "saved_model"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", ONNX2TF_RUN, str(copy), str(out)], cwd=work, env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not (out / "saved_model.pb").is_file():
        plain = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + "\n" + proc.stderr)
        said = [line.strip() for line in plain.splitlines() if "ERROR" in line or "Error" in line]
        reason = said[0] if said else f"exit status {proc.returncode}, no SavedModel written"
        raise SourceError(f"{path}: onnx2tf cannot convert this model ({reason})")
    return out


def face_sample(faces: np.ndarray) -> np.ndarray:
    """onnx2tf's start-up sample from preprocessed faces (n, 1, H, W, 3): 20 of them at 128x128."""
    import cv2

    picked = [faces[i % len(faces), 0] for i in range(20)]
    return np.stack([cv2.resize(f, (128, 128), interpolation=cv2.INTER_AREA) for f in picked]).astype(np.float32)


def tflite_source_bytes(path: Path, expected_sha256: str | None) -> bytes:
    """The ready model's bytes, refused unless they match the pinned sha256 and load as TFLite."""
    import hashlib

    if not expected_sha256:
        raise SourceError(f"{path}: a ready TFLite source needs --source-sha256 (the pinned hash of the file)")
    content = path.read_bytes()
    actual = hashlib.sha256(content).hexdigest()
    if actual != expected_sha256.lower():
        raise SourceError(
            f"{path}: sha256 {actual[:12]}... is not the pinned {expected_sha256[:12]}...; refusing it"
        )
    try:
        from ai_edge_litert.interpreter import Interpreter

        Interpreter(model_content=content).allocate_tensors()
    except Exception as exc:
        raise SourceError(f"{path}: not a loadable TFLite model ({first_line(exc)})") from None
    return content


def tflite_input_shape(content: bytes) -> tuple[int, ...]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=content)
    details: list[dict[str, Any]] = it.get_input_details()
    if len(details) != 1 or len(details[0]["shape"]) != 4:
        raise SourceError("ready TFLite source: only single-input NHWC image models are supported")
    return tuple(int(v) for v in details[0]["shape"])


def _schema() -> Any:
    """The TFLite flatbuffer schema's Python bindings (shipped with ai-edge-litert, and with TensorFlow)."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        from tensorflow.lite.python import schema_py_generated as schema  # type: ignore[no-redef]
    return schema


def rebatch_tflite(content: bytes, batch: int) -> bytes:
    """The same graph with its hard-coded batch replaced by ``batch``; weights and operators unchanged.

    Rewritten: the leading dimension of the input and of every non-constant tensor that carries the old
    batch, and the first entry of every RESHAPE's target shape (its constant input and its option) that
    names the old batch. Anything else that could depend on the batch (a second input, a target shape
    whose first entry is not the batch) is refused rather than guessed at.
    """
    import flatbuffers
    import numpy as np

    schema = _schema()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(content), 0))
    if len(model.subgraphs) != 1 or len(model.subgraphs[0].inputs) != 1:
        raise SourceError("--batch: only single-graph, single-input models can be rebatched")
    graph = model.subgraphs[0]
    old = int(graph.tensors[graph.inputs[0]].shape[0])
    if batch < 1 or old == batch:
        raise SourceError(f"--batch {batch}: the model's batch is already {old}" if old == batch
                          else f"--batch {batch}: must be at least 1")

    def constant(index: int) -> bool:
        data = model.buffers[graph.tensors[index].buffer].data
        return data is not None and len(data) > 0

    reshape = schema.BuiltinOperator.RESHAPE
    reshaped = 0
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        if max(code.builtinCode, code.deprecatedBuiltinCode) != reshape:
            continue
        options = op.builtinOptions
        if len(op.inputs) > 1 and op.inputs[1] >= 0:
            target = graph.tensors[op.inputs[1]]
            if not constant(op.inputs[1]):
                continue  # a computed shape follows the input's batch by itself
            values = np.frombuffer(bytes(model.buffers[target.buffer].data), dtype=np.int32).copy()
            if values.size == 0 or values[0] != old:
                raise SourceError(f"--batch: a reshape to {values.tolist()} does not start with the batch {old}")
            values[0] = batch
            model.buffers[target.buffer].data = np.frombuffer(values.tobytes(), dtype=np.uint8)
        if options is not None and getattr(options, "newShape", None) is not None and len(options.newShape):
            new_shape = np.array(options.newShape, dtype=np.int32)
            if new_shape[0] != old:
                raise SourceError(f"--batch: a reshape to {new_shape.tolist()} does not start with the batch {old}")
            new_shape[0] = batch
            options.newShape = new_shape
        reshaped += 1
    for index, tensor in enumerate(graph.tensors):
        if constant(index) or tensor.shape is None or len(tensor.shape) == 0 or int(tensor.shape[0]) != old:
            continue
        tensor.shape = np.array(tensor.shape, dtype=np.int32)
        tensor.shape[0] = batch
        if tensor.shapeSignature is not None and len(tensor.shapeSignature):
            tensor.shapeSignature = np.array(tensor.shapeSignature, dtype=np.int32)
            tensor.shapeSignature[0] = batch
    builder = flatbuffers.Builder(len(content) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    out = bytes(builder.Output())
    try:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_content=out)
        interpreter.allocate_tensors()
        shapes = [d["shape"] for d in interpreter.get_output_details()]
    except Exception as exc:
        raise SourceError(f"--batch {batch}: the rewritten graph does not load ({first_line(exc)})") from None
    if any(int(s[0]) != batch for s in shapes if len(s)):
        raise SourceError(f"--batch {batch}: outputs still have batch {[int(s[0]) for s in shapes]}")
    log.info("rebatched the graph from %d to %d (%d reshape(s) rewritten)", old, batch, reshaped)
    return out


def temp_folder() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="convert-")
