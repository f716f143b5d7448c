"""Run-time guard: a gallery or a probe that says 'everyone is the same face' is a fault, never a welcome."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_mfr.errors import GalleryError
from edge_mfr.identity.classifier import IdentityClassifier, Thresholds
from edge_mfr.identity.enroll import enroll
from edge_mfr.identity.identify import Identifier
from edge_mfr.vision.pipeline import FacePipeline


@pytest.fixture(scope="module")
def pipeline() -> FacePipeline:
    return FacePipeline()


def _photo(tmp_path: Path, astronaut: np.ndarray) -> Path:
    path = tmp_path / "eileen.png"
    cv2.imwrite(str(path), cv2.cvtColor(astronaut[0:300, 100:340], cv2.COLOR_RGB2BGR))
    return path


def test_gallery_from_a_working_embedder_loads(tmp_path, astronaut, pipeline):
    gallery = tmp_path / "gallery.npz"
    enroll(gallery, "Eileen Collins", [_photo(tmp_path, astronaut)], pipeline)
    identifier = Identifier.from_files(gallery, pipeline.embedder_ids)
    assert len(identifier.gallery.people) == 1


def test_gallery_enrolled_by_a_broken_embedder_is_refused(tmp_path, astronaut):
    """What the emulated CPU did: nearly one embedding for every face, synthetic masks included."""
    broken = FacePipeline()
    rng = np.random.default_rng(1)
    base = rng.normal(size=(1, 512)).astype(np.float32)
    broken.embedder.model._invoke = lambda x: [base + rng.normal(0, 0.01, base.shape).astype(np.float32)]
    gallery = tmp_path / "gallery.npz"
    enroll(gallery, "Eileen Collins", [_photo(tmp_path, astronaut)], broken)
    with pytest.raises(GalleryError, match=rf"{gallery}: all \d+ templates are the same face to the embedder"):
        Identifier.from_files(gallery, broken.embedder_ids)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def test_a_probe_matching_every_enrolled_person_is_a_fault_not_a_match():
    rng = np.random.default_rng(0)
    centres = _unit(rng.normal(size=(2, 512)))
    x = _unit(np.repeat(centres, 3, axis=0) + 0.2 * _unit(rng.normal(size=(6, 512))))
    clf = IdentityClassifier(Thresholds(unmasked=0.6, masked=0.6, margin=0.0)).fit(x, np.repeat(["a", "b"], 3))
    between = _unit(centres.sum(axis=0))  # as like one as the other: above the threshold for both
    d = clf.decide(between, [False])[0]
    assert d.fault and not d.accepted and d.reason.startswith("fault: the face matches all 2 enrolled people")
    genuine = clf.decide(_unit(centres[0] + 0.2 * _unit(rng.normal(size=512))), [False])[0]
    assert genuine.accepted and not genuine.fault
