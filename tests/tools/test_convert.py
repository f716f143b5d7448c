"""tools/convert.py end to end on a tiny generated embedding model, in every source format and quant mode.

The images are synthetic (smooth noise): these tests check the tool (conversion, verification, refusal,
manifest bookkeeping), not accuracy, so calibration bypasses the face detector with --calib-kind center.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.host

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `tools` is a folder of the repo, not an installed package
    sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _tf():
    reason = "host tools need TensorFlow (pip install -r tools/requirements-host.txt)"
    return pytest.importorskip("tensorflow", reason=reason)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def smooth_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Blurred noise: a stand-in image family shared by calibration data and the independent check."""
    import cv2

    return cv2.GaussianBlur((rng.random((h, w, 3)) * 255).astype(np.uint8), (7, 7), 0)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A tiny conv embedding model saved as .keras, .h5, SavedModel and frozen .pb, plus an image folder."""
    tf = _tf()
    pytest.importorskip("ai_edge_litert", reason="verification runs the TFLite model on ai_edge_litert")
    import cv2
    import keras
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    root = tmp_path_factory.mktemp("convert")
    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3), name="input")
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inp)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(16)(x)
    model = keras.Model(inp, keras.layers.UnitNormalization(name="embeddings")(x))
    model.save(root / "m.keras")
    model.save(root / "m.h5")
    model.export(str(root / "saved"), verbose=False)
    fn = tf.function(lambda t: model(t)).get_concrete_function(tf.TensorSpec((1, 32, 32, 3), tf.float32, name="input"))
    graph_def = convert_variables_to_constants_v2(fn).graph.as_graph_def()
    (root / "m.pb").write_bytes(graph_def.SerializeToString())
    output_node = graph_def.node[-1].name

    rng = np.random.default_rng(0)
    images = root / "images" / "sub"
    images.mkdir(parents=True)
    for i in range(24):
        cv2.imwrite(str(images / f"{i:02d}.png"), smooth_image(rng, 40, 56))
    return {"root": root, "model": model, "images": root / "images", "pb_output": output_node}


@pytest.fixture()
def models_dir(tmp_path):
    """A models/ folder whose manifest already holds a detector and a default embedder."""
    d = tmp_path / "models"
    d.mkdir()
    manifest = {
        "format": 1,
        "models": {
            "det.tflite": {
                "role": "detector",
                "sha256": "0" * 64,
                "size_bytes": 1,
                "inputs": [],
                "outputs": [],
                "preprocessing": {"mean": 127.5, "std": 127.5},
                "score_threshold": 0.5,
            },
            "old_embedder.tflite": {
                "role": "embedder",
                "sha256": "1" * 64,
                "size_bytes": 2,
                "inputs": [],
                "outputs": [],
                "default": True,
            },
        },
    }
    (d / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return d


def run_tool(args: list[str]) -> int:
    from tools.convert import main

    return main([*args, "-q"])


def common(sources, out: Path, quant: str, min_cosine: float) -> list[str]:
    return [
        "--quant",
        quant,
        "--calib-dir",
        str(sources["images"]),
        "--calib-kind",
        "center",
        "--calib-count",
        "8",
        "--verify-count",
        "6",
        "--latency-runs",
        "3",
        "--out",
        str(out),
        "--min-cosine",
        str(min_cosine),
        "--source-package",
        "tiny-model==1.2",
        "--license",
        "MIT",
    ]


def tflite_embed(path: Path, x: np.ndarray) -> np.ndarray:
    """Run the written file independently of the tool, quantizing an int8 input by its own parameters."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    if d["dtype"] == np.int8:
        scale, zero = d["quantization"]
        x = np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)
    it.set_tensor(d["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"]).ravel()


CASES = [
    ("m.keras", [], "int8", "float", 0.98),
    ("m.h5", [], "fp16", "float", 0.9999),
    ("saved", [], "dynamic", "float", 0.999),
    ("m.pb", ["--input-name", "input"], "int8", "int8", 0.98),
    ("m.pb", ["--input-name", "input"], "fp32", "float", 0.99999),
]


@pytest.mark.parametrize(
    ("name", "extra", "quant", "io_type", "min_cos"), CASES, ids=[f"{c[0]}-{c[2]}-{c[3]}" for c in CASES]
)
def test_convert_verifies_and_registers(sources, models_dir, name, extra, quant, io_type, min_cos):
    tf = _tf()
    from edge_mfr.vision.runtime import TFLiteModel, load_manifest

    before = json.loads((models_dir / "manifest.json").read_text())["models"]
    out = models_dir / f"tiny_{quant}.tflite"
    src = sources["root"] / name
    if name.endswith(".pb"):
        extra = [*extra, "--output-name", sources["pb_output"]]
    rc = run_tool(
        [
            "--source",
            str(src),
            *extra,
            *common(sources, out, quant, min_cos),
            "--io-type",
            io_type,
            "--role",
            "embedder",
            "--default",
            "--set",
            'note="tiny"',
        ]
    )
    assert rc == 0
    assert out.is_file()

    manifest = json.loads((models_dir / "manifest.json").read_text())
    entry = manifest["models"][out.name]
    assert entry["sha256"] == sha256(out)
    assert entry["size_bytes"] == out.stat().st_size
    assert entry["role"] == "embedder" and entry["default"] is True and entry["note"] == "tiny"
    assert entry["inputs"][0]["shape"] == [1, 32, 32, 3]
    assert entry["inputs"][0]["dtype"] == ("int8" if io_type == "int8" else "float32")
    assert entry["outputs"][0]["shape"] == [1, 16]
    assert entry["preprocessing"]["mean"] == 127.5 and entry["preprocessing"]["std"] == 128.0
    assert entry["source"]["package"] == "tiny-model" and entry["source"]["version"] == "1.2"
    if src.is_file():
        assert entry["source"]["file_sha256"] == sha256(src)
    conv = entry["conversion"]
    assert conv["quantization"] == quant and conv["tensorflow_version"] == tf.__version__
    assert conv["calibration"]["count"] == (8 if quant == "int8" else 0)
    ver = entry["verification"]
    assert min_cos <= ver["cosine_min"] <= ver["cosine_mean"] <= 1.0 + 1e-6
    assert ver["n_crops"] == 6 and ver["latency_ms_1thread"] > 0
    assert not any(p.name.endswith(".tmp") for p in models_dir.iterdir())
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600: the service user reads it

    # Other entries survive; the previous default embedder is demoted, the detector untouched.
    assert manifest["models"]["det.tflite"] == before["det.tflite"]
    assert manifest["models"]["old_embedder.tflite"]["default"] is False

    # The device runtime accepts the entry, and the file matches the Keras model on a fresh input.
    spec = load_manifest(models_dir)[out.name]
    TFLiteModel(out, spec)
    x = (smooth_image(np.random.default_rng(99), 32, 32).astype(np.float32)[None] - 127.5) / 128.0
    ref = np.asarray(sources["model"](x)).ravel()
    got = tflite_embed(out, x)
    cos = float(ref @ got / (np.linalg.norm(ref) * np.linalg.norm(got)))
    assert cos >= min_cos - 0.01


def test_unreachable_min_cosine_writes_nothing(sources, models_dir, capsys):
    out = models_dir / "refused.tflite"
    manifest_before = (models_dir / "manifest.json").read_bytes()
    rc = run_tool(["--source", str(sources["root"] / "m.keras"), *common(sources, out, "int8", 1.0)])
    assert rc == 3
    assert not out.exists()
    assert (models_dir / "manifest.json").read_bytes() == manifest_before
    assert sorted(p.name for p in models_dir.iterdir()) == ["manifest.json"]
    err = capsys.readouterr().err.strip().splitlines()
    assert "refused" in err[-1] and "min cosine" in err[-1]


@pytest.mark.parametrize("what", ["source", "calib-dir", "out-folder"])
def test_bad_paths_give_one_line_error(sources, models_dir, tmp_path, capsys, what):
    manifest_before = (models_dir / "manifest.json").read_bytes()
    src = sources["root"] / "m.keras"
    out = models_dir / "x.tflite"
    args = ["--source", str(src), *common(sources, out, "fp32", 0.9)]
    missing = tmp_path / "does-not-exist"
    if what == "source":
        args[1] = str(missing / "m.keras")
    elif what == "calib-dir":
        args[args.index("--calib-dir") + 1] = str(missing)
    else:
        args[args.index("--out") + 1] = str(missing / "x.tflite")
        args += ["--no-manifest"]
    rc = run_tool(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("convert: error:") and "does-not-exist" in err[0]
    assert not out.exists()
    assert (models_dir / "manifest.json").read_bytes() == manifest_before


def test_help_explains_options():
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "convert.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0
    for option in ("--quant", "--calib-kind", "--min-cosine", "--io-type", "--manifest", "--source-package"):
        assert option in proc.stdout
