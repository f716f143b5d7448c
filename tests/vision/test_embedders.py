"""Several embedders, each fed by its manifest entry: template, preprocessing and a fixed batch."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_mfr.errors import ModelError
from edge_mfr.vision.align import ALIGN_POINTS, TEMPLATE_ARCFACE_112, align_face, alignment_matrix, transform_points
from edge_mfr.vision.embedder import Embedder
from edge_mfr.vision.pipeline import FacePipeline

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mobilefacenet() -> Embedder:
    return Embedder(name="mobilefacenet.tflite")


@pytest.fixture(scope="module")
def mobilefacenet_pairs(tmp_path_factory) -> Embedder:
    """MobileFaceNet as published: a graph that hard-codes two faces per run (``fixed_batch: 2``)."""
    pytest.importorskip("ai_edge_litert")
    from tools.convert_sources import rebatch_tflite

    models = tmp_path_factory.mktemp("models")
    content = rebatch_tflite((REPO / "models" / "mobilefacenet.tflite").read_bytes(), 2)
    (models / "mobilefacenet.tflite").write_bytes(content)
    manifest = json.loads((REPO / "models" / "manifest.json").read_text())
    entry = manifest["models"]["mobilefacenet.tflite"]
    entry.update(sha256=hashlib.sha256(content).hexdigest(), size_bytes=len(content), fixed_batch=2)
    entry.pop("known_answer", None)
    for spec in entry["inputs"] + entry["outputs"]:
        spec["shape"][0] = 2
    (models / "manifest.json").write_text(json.dumps({"format": manifest["format"],
                                                      "models": {"mobilefacenet.tflite": entry}}))
    return Embedder(name="mobilefacenet.tflite", models_dir=models)


def test_manifest_decides_template_preprocessing_and_batch(mobilefacenet, mobilefacenet_pairs):
    facenet = Embedder()
    assert (facenet.template, facenet.size, facenet.fixed_batch) == ("facenet160", 160, 0)
    assert (mobilefacenet.template, mobilefacenet.size, mobilefacenet.dim) == ("arcface112", 112, 192)
    assert mobilefacenet.fixed_batch == 0 and mobilefacenet.mean == 127.5  # rebatched to one face by tools/
    assert mobilefacenet_pairs.fixed_batch == 2


def test_a_fixed_batch_model_takes_any_number_of_faces(mobilefacenet, mobilefacenet_pairs):
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    together = mobilefacenet_pairs.embed(crops)  # a pair, then the third face padded with a copy of itself
    assert together.shape == (3, 192)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1, atol=1e-5)
    alone = np.stack([mobilefacenet_pairs.embed(c)[0] for c in crops])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    # The shipped one-face graph gives the same embeddings: only the batch was rewritten.
    np.testing.assert_allclose(mobilefacenet.embed(crops), together, atol=1e-6)


def test_arcface_alignment_puts_the_keypoints_on_its_template(astronaut):
    pipeline = FacePipeline(num_threads=1, embed=False)
    face = pipeline.detect(astronaut, crop_kind="photo")[0]
    crop = align_face(astronaut, face, template="arcface112")
    assert crop.shape == (112, 112, 3)
    landed = transform_points(face.keypoints, alignment_matrix(face, template="arcface112"))[list(ALIGN_POINTS)]
    assert np.abs(landed - TEMPLATE_ARCFACE_112).max() < 6  # a least-squares fit of 4 points, not exact


def test_an_unknown_template_in_the_manifest_is_refused(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(REPO / "models" / "mobilefacenet.tflite", models)
    manifest = json.loads((REPO / "models" / "manifest.json").read_text())
    entry = manifest["models"]["mobilefacenet.tflite"]
    entry["alignment"]["template"] = "arcface96"
    (models / "manifest.json").write_text(json.dumps({"format": manifest["format"],
                                                      "models": {"mobilefacenet.tflite": entry}}))
    with pytest.raises(ModelError, match="mobilefacenet.tflite: unknown alignment template 'arcface96'"):
        Embedder(name="mobilefacenet.tflite", models_dir=models)
