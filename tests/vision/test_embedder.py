"""FaceNet int8 through the whole pipeline: LFW same-person pairs score clearly above different-person pairs."""

from __future__ import annotations

import numpy as np
import pytest

from edge_mfr.vision.embedder import Embedder
from edge_mfr.vision.faces import best_face
from edge_mfr.vision.imageio import read_image
from edge_mfr.vision.pipeline import FacePipeline


def test_embeddings_are_unit_vectors_and_shape_is_checked(astronaut):
    pipeline = FacePipeline()
    face = pipeline.analyze(astronaut)[0]
    assert face.embedding.shape == (512,) and abs(np.linalg.norm(face.embedding) - 1) < 1e-5
    batch = pipeline.embedder.embed(np.stack([face.crop, face.crop[:, ::-1]]))
    assert batch.shape == (2, 512) and np.allclose(batch[0], face.embedding, atol=1e-5)
    assert float(batch[0] @ batch[1]) > 0.8  # a mirrored face is still the same person
    with pytest.raises(ValueError, match="160, 160, 3"):
        pipeline.embedder.embed(np.zeros((1, 112, 112, 3), np.uint8))


@pytest.mark.data
def test_lfw_pairs_separate(data_dir, labels):
    pipeline = FacePipeline(num_threads=2)
    assert isinstance(pipeline.embedder, Embedder)
    rows = [r for r in labels if r["subset"] == "lfw"]
    embeddings, people = [], []
    for r in rows:
        image = read_image(data_dir / r["path"])
        face = best_face(pipeline.detect(image), image.shape)
        embeddings.append(pipeline.analyze_faces(image, [face])[0].embedding)
        people.append(r["identity"])
    e, who = np.stack(embeddings), np.array(people)
    upper = np.triu_indices(len(e), 1)
    scores = (e @ e.T)[upper]
    same = (who[:, None] == who[None, :])[upper]
    # Rank-based AUC without extra dependencies: P(genuine score > impostor score).
    genuine, impostor = np.sort(scores[same]), np.sort(scores[~same])
    auc = np.searchsorted(impostor, genuine).sum() / (len(genuine) * len(impostor))
    best_accuracy = max(np.mean((scores > t) == same) for t in np.linspace(0, 1, 101))
    print(f"LFW subset: AUC {auc:.4f}, best-threshold accuracy {best_accuracy:.4f}")
    assert auc >= 0.99
    assert best_accuracy >= 0.98
    assert genuine.mean() - impostor.mean() >= 0.4
