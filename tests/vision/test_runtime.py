"""Model files are checked against the manifest before use, with errors naming the file."""

from __future__ import annotations

import builtins
import json

import pytest

from edge_mfr.errors import ModelError, RuntimeMissingError
from edge_mfr.vision import runtime
from edge_mfr.vision.detector import BlazeFaceDetector
from edge_mfr.vision.runtime import load_manifest, load_model, sha256_file

DETECTOR_FILE = "face_detection_short_range.tflite"


def test_manifest_matches_every_model_file(models_copy):
    specs = load_manifest(models_copy)
    assert {"detector", "embedder"} <= {s.role for s in specs.values()}
    for name, spec in specs.items():
        path = models_copy / name
        assert path.stat().st_size == spec.size_bytes, name
        assert sha256_file(path) == spec.sha256, name


def test_models_stay_under_30_mb(models_copy):
    total = sum(p.stat().st_size for p in models_copy.glob("*.tflite"))
    assert total < 30_000_000


def test_changed_byte_is_refused_with_the_file_name(models_copy):
    path = models_copy / DETECTOR_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=f"{DETECTOR_FILE}: sha256 .* does not match"):
        BlazeFaceDetector("short", models_dir=models_copy)


def test_truncated_file_is_refused(models_copy):
    path = models_copy / DETECTOR_FILE
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelError, match="truncated"):
        load_model("detector", models_dir=models_copy)


def test_missing_file_and_manifest(models_copy):
    (models_copy / DETECTOR_FILE).unlink()
    with pytest.raises(ModelError, match="model file missing"):
        load_model("detector", models_dir=models_copy)
    (models_copy / "manifest.json").unlink()
    with pytest.raises(ModelError, match="manifest not found"):
        load_model("detector", models_dir=models_copy)


def test_manifest_shape_mismatch_is_refused(models_copy):
    manifest = json.loads((models_copy / "manifest.json").read_text())
    manifest["models"][DETECTOR_FILE]["inputs"][0]["shape"] = [1, 64, 64, 3]
    (models_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="input shapes"):
        load_model("detector", models_dir=models_copy)


def test_missing_runtime_is_a_clear_error(monkeypatch):
    real_import = builtins.__import__

    def no_tflite(name, *args, **kwargs):
        if name.startswith(("ai_edge_litert", "tflite_runtime")):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    runtime._interpreter_class.cache_clear()
    monkeypatch.setattr(builtins, "__import__", no_tflite)
    try:
        with pytest.raises(RuntimeMissingError, match="pip install ai-edge-litert"):
            load_model("detector")
    finally:
        monkeypatch.undo()
        runtime._interpreter_class.cache_clear()
