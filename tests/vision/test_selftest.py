"""Known-answer self-test: the recorded outputs pass here, a broken runtime (constant outputs) never does."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_mfr.vision import selftest
from edge_mfr.vision.pipeline import FacePipeline
from edge_mfr.vision.runtime import load_manifest, load_model

REPO = Path(__file__).resolve().parents[2]
EMBEDDER = "facenet_int8.tflite"


def break_model(model, output) -> None:
    """Make a loaded TFLiteModel answer ``output(x)`` instead of running its graph (a broken runtime)."""
    model._invoke = lambda x: output(x)


def test_every_tflite_model_has_a_known_answer_and_passes_here():
    specs = load_manifest()
    results = {r.file: r for r in selftest.check_all()}
    assert set(results) == {n for n in specs if n.endswith(".tflite")}
    for r in results.values():
        assert r.inputs == 2
        assert r.worst_cosine >= selftest.MIN_COSINE


def test_constant_embedding_fails_naming_the_model_and_the_reference():
    model = load_model("embedder")
    answers = selftest.read_known_answers(model.path.parent)
    constant = np.full((1, 512), 0.044, np.float32)
    break_model(model, lambda x: [constant])
    with pytest.raises(selftest.SelfTestError, match=rf"{EMBEDDER}: known-answer self-test failed on reference"):
        selftest.check_model(model, answers)


def test_nearly_the_same_embedding_for_every_face_fails():
    """What the emulated CPU did: one embedding, a little noise on top, whatever the face."""
    model = load_model("embedder")
    answers = selftest.read_known_answers(model.path.parent)
    rng = np.random.default_rng(0)
    base = answers[selftest.array_key(EMBEDDER, "astronaut", "out0")][None].astype(np.float32)
    break_model(model, lambda x: [base + rng.normal(0, 0.001, base.shape).astype(np.float32)])
    with pytest.raises(selftest.SelfTestError, match="reference 'cameraman'"):
        selftest.check_model(model, answers)


def test_constant_detector_scores_fail():
    model = load_model("detector")
    answers = selftest.read_known_answers(model.path.parent)
    shapes = [tuple(o["shape"]) for o in model.spec.outputs]
    break_model(model, lambda x: [np.full(s, -20.0, np.float32) for s in shapes])
    with pytest.raises(selftest.SelfTestError, match="face_detection_short_range"):
        selftest.check_model(model, answers)


def test_pipeline_check_covers_the_interpreters_it_runs():
    pipeline = FacePipeline(detector="blazeface")
    files = {r.file for r in selftest.check_pipeline(pipeline)}
    assert files == {"face_detection_short_range.tflite", EMBEDDER, "fr_feature_dynamic.tflite",
                     "mobilefacenet.tflite"}  # every embedder of the default fused set
    break_model(pipeline.embedder.model, lambda x: [np.zeros((1, 512), np.float32)])
    with pytest.raises(selftest.SelfTestError, match=EMBEDDER):
        selftest.check_pipeline(pipeline)


def _edit_manifest(models: Path, change) -> None:
    path = models / "manifest.json"
    raw = json.loads(path.read_text())
    change(raw["models"])
    path.write_text(json.dumps(raw))


def test_answers_recorded_for_another_model_version_are_refused(models_copy):
    _edit_manifest(models_copy, lambda m: m[EMBEDDER][selftest.KEY].update(model_sha256="0" * 64))
    with pytest.raises(selftest.SelfTestError, match="another version of this model"):
        selftest.check_all(models_copy)


def test_embedder_without_a_known_answer_is_refused(models_copy):
    _edit_manifest(models_copy, lambda m: m[EMBEDDER].pop(selftest.KEY))
    with pytest.raises(selftest.SelfTestError, match="no known answer for the embedder"):
        selftest.check_all(models_copy)
    with pytest.raises(selftest.SelfTestError, match="no known answer in the manifest for this embedder"):
        selftest.check_pipeline(FacePipeline(models_dir=models_copy), models_copy)


def test_changed_reference_arrays_are_refused(models_copy):
    path = models_copy / selftest.KNOWN_ANSWERS_FILE
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    key = selftest.array_key(EMBEDDER, "astronaut", "out0")
    arrays[key] = arrays[key] * 0.5  # same direction: only the digest can tell
    np.savez_compressed(path, **arrays)
    with pytest.raises(selftest.SelfTestError, match="do not match the manifest's sha256"):
        selftest.check_all(models_copy)


def test_missing_known_answers_file_is_one_clear_error(models_copy):
    (models_copy / selftest.KNOWN_ANSWERS_FILE).unlink()
    with pytest.raises(selftest.SelfTestError, match=r"known_answers.npz: missing"):
        selftest.check_all(models_copy)


def test_regenerating_reproduces_the_committed_answers(models_copy):
    """The tool is deterministic here, so the committed file is what it writes (and adding a model is one run)."""
    before = json.loads((models_copy / "manifest.json").read_text())["models"][EMBEDDER][selftest.KEY]
    _edit_manifest(models_copy, lambda m: m[EMBEDDER].pop(selftest.KEY))
    done = subprocess.run([sys.executable, str(REPO / "tools" / "known_answers.py"), "--models", str(models_copy),
                           "--only", EMBEDDER], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    after = json.loads((models_copy / "manifest.json").read_text())["models"][EMBEDDER][selftest.KEY]
    if platform.machine() in before["recorded_with"]:  # the build host: bit for bit what is committed
        assert after["sha256"] == before["sha256"]
    assert [r.file for r in selftest.check_all(models_copy) if r.file == EMBEDDER] == [EMBEDDER]
