"""Enrollment from photos, folders and video scans; every bad input leaves the gallery untouched."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_mfr.errors import EnrollmentError, GalleryError, InputNotFoundError
from edge_mfr.identity.enroll import EnrollOptions, enroll, prepare_enrollment
from edge_mfr.identity.gallery import Gallery, GalleryModelMismatch
from edge_mfr.identity.identify import Identifier
from edge_mfr.vision.mask_status import MaskStatusClassifier
from edge_mfr.vision.pipeline import FacePipeline


@pytest.fixture(scope="module")
def pipeline() -> FacePipeline:
    return FacePipeline(num_threads=2)


def _write(path: Path, rgb: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def _video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def _scan_frames(image: np.ndarray, n: int = 24) -> list[np.ndarray]:
    """A person moving and turning slightly in front of a grey background (a synthetic 'video scan')."""
    frames = []
    for i in range(n):
        canvas = np.full((480, 640, 3), 110, np.uint8)
        scale = 0.75 + 0.01 * i
        angle = -8 + 16 * i / max(n - 1, 1)
        m = cv2.getRotationMatrix2D((256, 256), angle, scale)
        m[:, 2] += (64 + 3 * i, -10)
        frames.append(cv2.warpAffine(image, m, (640, 480), dst=canvas, borderMode=cv2.BORDER_TRANSPARENT))
    return frames


def test_photo_enrollment_adds_real_and_synthetic_templates(tmp_path, pipeline, astronaut):
    photo = _write(tmp_path / "eileen.jpg", astronaut)
    gallery = tmp_path / "gallery.npz"
    person_id, result = enroll(gallery, "Eileen Collins", [photo], pipeline)
    g = Gallery.load(gallery, pipeline.embedder.model_sha256)
    person = g.get(person_id)
    n_styles = len(EnrollOptions().mask_styles)
    assert person.num_real == 1 and len(person) == 1 + n_styles
    assert sum(t.synthetic and t.masked for t in person.templates) == n_styles
    assert person.templates[0].source == "eileen.jpg"
    # The enrolled person is recognised again, and the file holds no face images by default.
    identifier = Identifier(g, MaskStatusClassifier.load(embedder_sha256=pipeline.embedder.model_sha256))
    ident = identifier.identify(pipeline.analyze(astronaut))[0]
    assert ident.name == "Eileen Collins" and ident.allowed and not ident.masked
    assert all(c is None for c in person.crops)


def test_video_scan_keeps_good_distinct_frames_and_reports_the_rest(tmp_path, pipeline, astronaut):
    frames = _scan_frames(astronaut) + [np.full((480, 640, 3), 110, np.uint8)] * 4
    video = _video(tmp_path / "scan.mp4", frames)
    result = prepare_enrollment(pipeline, [video], EnrollOptions(max_video_frames=28))
    assert 1 <= len(result.kept) <= 28
    reasons = " ".join(why for _, why in result.dropped)
    assert "no face found" in reasons  # the empty frames at the end
    assert all("#frame=" in c.source for c in result.kept)
    kept = np.stack([c.embedding for c in result.kept])
    sims = kept @ kept.T
    assert (sims[~np.eye(len(kept), dtype=bool)] < EnrollOptions().duplicate_cosine).all()


def test_two_faces_in_a_frame_are_skipped(tmp_path, pipeline, astronaut):
    face = astronaut[30:250, 110:340]  # head and shoulders, so each face is large in the frame
    two = np.hstack([face, face])
    photo = _write(tmp_path / "two.jpg", two)
    with pytest.raises(EnrollmentError, match="2 faces"):
        prepare_enrollment(pipeline, [photo])


@pytest.mark.parametrize("bad_name", ["", "   ", "../etc/passwd", "a/b", "x\x00y", "-rf"])
def test_bad_names_are_refused_before_anything_is_written(tmp_path, pipeline, astronaut, bad_name):
    photo = _write(tmp_path / "p.jpg", astronaut)
    gallery = tmp_path / "gallery.npz"
    with pytest.raises(EnrollmentError):
        enroll(gallery, bad_name, [photo], pipeline)
    assert not gallery.exists()


def _enrolled_gallery(tmp_path, pipeline, astronaut) -> tuple[Path, bytes]:
    gallery = tmp_path / "gallery.npz"
    enroll(gallery, "Eileen", [_write(tmp_path / "e.jpg", astronaut)], pipeline,
           EnrollOptions(synthetic_masks=False))
    return gallery, gallery.read_bytes()


def test_bad_inputs_leave_the_existing_gallery_untouched(tmp_path, pipeline, astronaut):
    gallery, before = _enrolled_gallery(tmp_path, pipeline, astronaut)
    empty_video = _video(tmp_path / "empty.mp4", [np.full((240, 320, 3), 90, np.uint8)] * 10)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text("hello")
    fake = texts / "b.jpg"
    fake.write_text("not a jpeg")
    cases = [
        ([empty_video], EnrollmentError, "no usable face"),
        ([corrupt], EnrollmentError, "corrupt"),
        ([texts], EnrollmentError, "no usable face"),
        ([tmp_path / "missing.jpg"], InputNotFoundError, "no such file"),
    ]
    for paths, error, message in cases:
        with pytest.raises(error, match=message):
            enroll(gallery, "Someone Else", paths, pipeline)
        assert gallery.read_bytes() == before


def test_folder_without_images_is_a_clear_error(tmp_path, pipeline):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "readme.txt").write_text("x")
    with pytest.raises(EnrollmentError, match="holds no images or videos"):
        prepare_enrollment(pipeline, [folder])


def test_truncated_or_foreign_gallery_is_refused_and_kept(tmp_path, pipeline, astronaut):
    gallery, before = _enrolled_gallery(tmp_path, pipeline, astronaut)
    photo = tmp_path / "e.jpg"
    gallery.write_bytes(before[: len(before) // 2])
    with pytest.raises(GalleryError):
        enroll(gallery, "Other", [photo], pipeline)
    assert gallery.read_bytes() == before[: len(before) // 2]

    foreign = tmp_path / "foreign.npz"
    other = Gallery.create("0" * 64)
    other.save(foreign)
    foreign_bytes = foreign.read_bytes()
    with pytest.raises(GalleryModelMismatch, match="re-enroll"):
        enroll(foreign, "Other", [photo], pipeline)
    assert foreign.read_bytes() == foreign_bytes


def test_second_enrollment_of_same_name_needs_add(tmp_path, pipeline, astronaut):
    gallery, _ = _enrolled_gallery(tmp_path, pipeline, astronaut)
    photo = tmp_path / "e.jpg"
    with pytest.raises(EnrollmentError, match="already enrolled"):
        enroll(gallery, "eileen", [photo], pipeline)
    enroll(gallery, "Eileen", [photo], pipeline, EnrollOptions(synthetic_masks=False), add_to_existing=True)
    assert len(Gallery.load(gallery).get("Eileen")) == 2


@pytest.mark.data
def test_enroll_from_a_real_photo_folder_and_recognise_a_held_out_photo(tmp_path, pipeline, data_dir):
    photos = sorted((data_dir / "lfw").iterdir())[0]
    images = sorted(photos.glob("*.jpg"))
    gallery = tmp_path / "g.npz"
    folder = tmp_path / "enroll"
    folder.mkdir()
    for img in images[:-1]:
        (folder / img.name).write_bytes(img.read_bytes())
    _, result = enroll(gallery, photos.name, [folder], pipeline)
    assert len(result.kept) >= len(images) - 3
    from edge_mfr.vision.imageio import read_image

    g = Gallery.load(gallery, pipeline.embedder.model_sha256)
    identifier = Identifier(g, MaskStatusClassifier.load())
    ident = identifier.identify(pipeline.analyze(read_image(images[-1])))[0]
    assert ident.decision.candidate_id == g.people[0].person_id


def test_reembed_after_a_model_change_needs_kept_crops(tmp_path, pipeline, astronaut):
    from edge_mfr.identity.enroll import reembed

    photo = _write(tmp_path / "e.jpg", astronaut)
    kept = tmp_path / "kept.npz"
    enroll(kept, "Eileen", [photo], pipeline, keep_crops=True)
    # Pretend the gallery was built by another model: re-embedding brings it back to the current one.
    g = Gallery.load(kept)
    original = g.get("Eileen").embeddings.copy()
    g.replace_embeddings("1" * 64, {g.get("Eileen").person_id: original})
    g.save(kept)
    with pytest.raises(GalleryModelMismatch, match="people reembed"):
        Gallery.load(kept, pipeline.embedder.model_sha256)
    assert reembed(kept, pipeline) == len(original)
    again = Gallery.load(kept, pipeline.embedder.model_sha256).get("Eileen").embeddings
    cos = np.sum(again * original, axis=1)
    assert cos[0] > 0.999  # the real template is recomputed from its kept crop
    assert cos.min() > 0.8  # synthetic ones are re-rendered (keypoints found again), close but not equal

    plain = tmp_path / "plain.npz"
    enroll(plain, "Eileen", [photo], pipeline)
    before = plain.read_bytes()
    with pytest.raises(GalleryError, match="re-enroll"):
        reembed(plain, pipeline)
    assert plain.read_bytes() == before


def test_only_faces_judged_masked_are_matched_by_their_masked_alignment(tmp_path, pipeline, astronaut):
    """Identifier.identify re-embeds exactly the masked faces' eyes-and-nose crops, and still finds her."""
    from edge_mfr.demo import DEMO_MASK
    from edge_mfr.vision.synthetic_masks import MaskStyle, render_mask

    photo = _write(tmp_path / "eileen.jpg", astronaut)
    gallery = tmp_path / "gallery.npz"
    enroll(gallery, "Eileen Collins", [photo], pipeline)
    g = Gallery.load(gallery, pipeline.embedder.model_sha256)
    identifier = Identifier(g, MaskStatusClassifier.load(embedder_sha256=pipeline.embedder.model_sha256))
    asked: list[int] = []

    def spy_on(image):
        def embed(faces, masked, extra):
            asked.append(int(np.sum(masked)))  # faces re-aligned on eyes and nose
            return pipeline.embed_for_identity(image, faces, masked, extra)
        return embed

    bare = identifier.identify(pipeline.analyze(astronaut), spy_on(astronaut))[0]
    assert not bare.masked and asked == [0]
    face = pipeline.detect(astronaut, crop_kind="photo")[0]
    masked_image = render_mask(astronaut, face.keypoints, MaskStyle(*DEMO_MASK))
    analyzed = pipeline.analyze(masked_image)
    ident = identifier.identify(analyzed, spy_on(masked_image))[0]
    assert ident.masked and asked == [0, 1]
    assert ident.decision.person_id is not None and ident.name == "Eileen Collins"
    # A different alignment was used: its embedding is not the usual one.
    rerouted = pipeline.embed_for_identity(masked_image, analyzed, [True])[pipeline.embedder.name][0]
    assert not np.allclose(rerouted, analyzed[0].embedding)
