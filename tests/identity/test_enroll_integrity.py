"""Enrollment integrity on real photos: one enrollment is one person, and nobody is enrolled twice.

Photos of two people under one name would let both open the door as that name; the same person under a
second name makes both "too close to another person", so the real one is locked out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_mfr.errors import EnrollmentError
from edge_mfr.identity.enroll import EnrollOptions, enroll
from edge_mfr.identity.gallery import Gallery
from edge_mfr.identity.identify import Identifier
from edge_mfr.identity.similarity import agreement_groups, similarity_matrix
from edge_mfr.vision.imageio import read_image
from edge_mfr.vision.mask_status import MaskStatusClassifier
from edge_mfr.vision.pipeline import FacePipeline

pytestmark = pytest.mark.data
FAST = EnrollOptions(synthetic_masks=False)


@pytest.fixture(scope="module")
def pipeline() -> FacePipeline:
    return FacePipeline(num_threads=2)


def _photos(data_dir: Path, person: str, numbers: range) -> list[Path]:
    folder = data_dir / "lfw" / person
    return [sorted(folder.glob("*.jpg"))[i - 1] for i in numbers]


def _colin(data_dir: Path, numbers: range = range(1, 5)) -> list[Path]:
    return _photos(data_dir, "ColinPowell", numbers)


def _bush(data_dir: Path, numbers: range = range(1, 4)) -> list[Path]:
    return _photos(data_dir, "GeorgeWBush", numbers)


def _opens_for(gallery: Path, pipeline: FacePipeline, photo: Path) -> str | None:
    g = Gallery.load(gallery, pipeline.embedder.model_sha256)
    ident = Identifier(g, MaskStatusClassifier.load()).identify(pipeline.analyze(read_image(photo)))[0]
    return ident.name if ident.allowed else None


def test_similarity_groups_split_two_people(pipeline, data_dir):
    faces = [pipeline.analyze(read_image(p))[0].embedding for p in [*_colin(data_dir, range(1, 4)), *_bush(data_dir)]]
    assert np.allclose(np.diag(similarity_matrix(np.stack(faces), np.stack(faces))), 1, atol=1e-5)
    assert sorted(sorted(g) for g in agreement_groups(np.stack(faces))) == [[0, 1, 2], [3, 4, 5]]


def test_two_people_under_one_name_are_refused(tmp_path, pipeline, data_dir):
    gallery = tmp_path / "g.npz"
    with pytest.raises(EnrollmentError, match="groups that look like different people") as err:
        enroll(gallery, "Two People", [*_colin(data_dir, range(1, 4)), *_bush(data_dir)], pipeline, FAST)
    assert "Colin_Powell_0001.jpg" in str(err.value) and "George_W_Bush_0001.jpg" in str(err.value)
    assert not gallery.exists()


def test_one_stray_photo_is_dropped_with_a_reason(tmp_path, pipeline, data_dir):
    _, result = enroll(tmp_path / "g.npz", "Colin Powell", [*_colin(data_dir), *_bush(data_dir, range(1, 2))],
                       pipeline, FAST)
    assert [c.source for c in result.kept] and all("Colin_Powell" in c.source for c in result.kept)
    assert [why for source, why in result.dropped if "George_W_Bush" in source] == [
        "does not look like the same person as the other faces"]


def test_a_duplicate_is_refused_naming_the_match_and_the_original_still_opens(tmp_path, pipeline, data_dir):
    gallery = tmp_path / "g.npz"
    colin_id, _ = enroll(gallery, "Colin Powell", _colin(data_dir), pipeline, FAST)
    before = gallery.read_bytes()
    with pytest.raises(EnrollmentError, match=rf"match 'Colin Powell' \({colin_id}, similarity") as err:
        enroll(gallery, "Someone Else", _colin(data_dir, range(1, 3)), pipeline, FAST)
    assert f"--same-as {colin_id}" in str(err.value) and f"--different-from {colin_id}" in str(err.value)
    assert gallery.read_bytes() == before
    held_out = _colin(data_dir, range(10, 11))[0]
    assert _opens_for(gallery, pipeline, held_out) == "Colin Powell"


def test_the_operator_can_add_to_the_match_or_confirm_another_person(tmp_path, pipeline, data_dir):
    gallery = tmp_path / "g.npz"
    colin_id, _ = enroll(gallery, "Colin Powell", _colin(data_dir), pipeline, FAST)
    added_to, _ = enroll(gallery, "Colin", _colin(data_dir, range(5, 7)), pipeline, FAST, same_as=colin_id)
    assert added_to == colin_id and Gallery.load(gallery).get(colin_id).num_real == 6
    other, _ = enroll(gallery, "Bush", _bush(data_dir), pipeline, FAST)  # not a match: no confirmation needed
    assert other != colin_id
    twin, _ = enroll(gallery, "Twin", _colin(data_dir, range(8, 9)), pipeline, FAST, different_from=["colin powell"])
    assert twin not in (colin_id, other) and len(Gallery.load(gallery).people) == 3
