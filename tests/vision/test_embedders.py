"""Several embedders, each fed by its manifest entry: template, preprocessing and a fixed batch."""

from __future__ import annotations

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


def test_manifest_decides_template_preprocessing_and_batch(mobilefacenet):
    facenet = Embedder()
    assert (facenet.template, facenet.size, facenet.fixed_batch) == ("facenet160", 160, 0)
    assert (mobilefacenet.template, mobilefacenet.size, mobilefacenet.dim) == ("arcface112", 112, 192)
    assert mobilefacenet.fixed_batch == 2 and mobilefacenet.mean == 127.5


def test_a_fixed_batch_model_takes_any_number_of_faces(mobilefacenet):
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    together = mobilefacenet.embed(crops)
    assert together.shape == (3, 192)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1, atol=1e-5)
    alone = np.stack([mobilefacenet.embed(c)[0] for c in crops])  # each padded with a copy of itself
    np.testing.assert_allclose(together, alone, atol=1e-5)


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
