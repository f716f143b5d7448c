"""BlazeFace decoding: anchors, NMS, coordinates, keypoint order, and detection rates on real photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_mfr.vision.detector import FULL_RANGE, SHORT_RANGE, BlazeFaceDetector, make_anchors, weighted_nms
from edge_mfr.vision.faces import best_face, detect_faces
from edge_mfr.vision.imageio import read_image
from edge_mfr.vision.types import KP_LEFT_EYE, KP_MOUTH, KP_NOSE, KP_RIGHT_EYE


def test_anchor_counts_and_layout():
    short = make_anchors(SHORT_RANGE)
    full = make_anchors(FULL_RANGE)
    assert short.shape == (896, 2) and full.shape == (2304, 2)
    # First 512 anchors: the 16x16 stride-8 grid, two per cell, row by row.
    assert np.allclose(short[0], [0.5 / 16, 0.5 / 16]) and np.allclose(short[1], short[0])
    assert np.allclose(short[2], [1.5 / 16, 0.5 / 16])
    # Then the 8x8 stride-16 grid with six anchors per cell.
    assert np.allclose(short[512], [0.5 / 8, 0.5 / 8]) and np.allclose(short[517], short[512])
    assert np.allclose(short[518], [1.5 / 8, 0.5 / 8])
    assert np.allclose(full[48], [0.5 / 48, 1.5 / 48])


def test_weighted_nms_blends_overlaps_and_keeps_separate_faces():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=np.float32)
    kps = np.zeros((3, 6, 2), dtype=np.float32)
    kps[1] += 1
    scores = np.array([0.9, 0.9, 0.6], dtype=np.float32)
    out = weighted_nms(boxes, kps, scores, iou_threshold=0.3, max_faces=10)
    assert len(out) == 2
    assert np.allclose(out[0][0], [0.5, 0.5, 10.5, 10.5])  # equal weights: the mean of the two
    assert np.allclose(out[0][1], 0.5)
    assert np.allclose(out[1][0], boxes[2])


def test_astronaut_face_and_keypoint_geometry(short_detector, astronaut):
    faces = short_detector.detect(astronaut)
    assert len(faces) == 1
    f = faces[0]
    assert f.score > 0.8
    x1, y1, x2, y2 = f.box
    xs, ys = f.keypoints[:4, 0], f.keypoints[:4, 1]
    inside = (xs > x1) & (xs < x2) & (ys > y1) & (ys < y2)
    assert inside.all()
    kp = f.keypoints
    # Subject's right eye is on the image's left; eyes above nose above mouth.
    assert kp[KP_RIGHT_EYE, 0] < kp[KP_LEFT_EYE, 0]
    assert max(kp[KP_RIGHT_EYE, 1], kp[KP_LEFT_EYE, 1]) < kp[KP_NOSE, 1] < kp[KP_MOUTH, 1]


def test_coordinates_follow_scaling_and_mirroring(short_detector, astronaut):
    base = short_detector.detect(astronaut)[0]
    big = cv2.resize(astronaut, None, fx=1.5, fy=1.5, interpolation=cv2.INTER_LINEAR)
    scaled = short_detector.detect(big)[0]
    assert np.allclose(scaled.box / 1.5, base.box, atol=4)
    # A wide letterboxed frame: the face is shifted right by the padding we add.
    wide = cv2.copyMakeBorder(astronaut, 0, 0, 256, 0, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    shifted = short_detector.detect(wide)[0]
    def centre(f):
        return np.array([(f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2])

    # The face is a sixth of its size in the 128x128 model input here: allow a few input pixels.
    assert np.allclose(centre(shifted) - [256, 0], centre(base), atol=10)
    # Mirroring swaps the subject's eyes.
    flipped = short_detector.detect(np.ascontiguousarray(astronaut[:, ::-1]))[0]
    w = astronaut.shape[1]
    assert abs((w - flipped.keypoints[KP_LEFT_EYE, 0]) - base.keypoints[KP_RIGHT_EYE, 0]) < 6


def test_no_face_in_blank_or_noise(short_detector):
    assert short_detector.detect(np.zeros((480, 640, 3), np.uint8)) == []
    rng = np.random.default_rng(0)
    assert short_detector.detect(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)) == []


def test_tiny_image_does_not_crash(short_detector):
    assert short_detector.detect(np.zeros((1, 1, 3), np.uint8)) == []


def test_unknown_variant_is_rejected():
    with pytest.raises(ValueError, match="variant"):
        BlazeFaceDetector("medium")


@pytest.mark.data
@pytest.mark.parametrize("subset", ["lfw", "face_recognition_examples"])
def test_finds_the_face_in_single_person_photos(short_detector, data_dir, labels, subset):
    rows = [r for r in labels if r["subset"] == subset and ";" not in r["identity"]]
    assert len(rows) >= 15
    found = sum(bool(detect_faces(short_detector, read_image(data_dir / r["path"]))) for r in rows)
    assert found / len(rows) >= 0.99, f"{subset}: face found in {found}/{len(rows)}"


@pytest.mark.data
@pytest.mark.parametrize("subset", ["mfr2", "glint_celeb"])
def test_crop_path_finds_faces_in_aligned_crops(short_detector, data_dir, labels, subset):
    rows = [r for r in labels if r["subset"] == subset]
    hits = 0
    for r in rows:
        image = read_image(data_dir / r["path"])
        face = best_face(detect_faces(short_detector, image), image.shape)
        if face is None:
            continue
        # The face found must be the crop's face: centred, filling a good part of it.
        cx = (face.box[0] + face.box[2]) / 2 / image.shape[1]
        hits += int(0.3 < cx < 0.7 and face.width > 0.4 * image.shape[1])
    assert hits / len(rows) >= 0.99, f"{subset}: {hits}/{len(rows)}"


@pytest.mark.data
def test_full_range_model_finds_both_faces_of_a_group_photo(data_dir):
    detector = BlazeFaceDetector("full")
    image = read_image(data_dir / "face_recognition_examples/multi_face/obama_and_biden.jpg")
    assert len(detector.detect(image)) == 2


def _video_frame(data_dir, index: int) -> np.ndarray:
    capture = cv2.VideoCapture(str(data_dir / "video" / "short_hamilton_clip.mp4"))
    capture.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, bgr = capture.read()
    capture.release()
    assert ok, f"frame {index} not readable"
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@pytest.mark.data
def test_two_adjacent_faces_of_frame_230_get_two_boxes(short_detector, data_dir):
    """Frame 230: the man (face near x=350, y=95) and the woman beside him (near x=415, y=140). The 128-pixel
    input blends them into one box between them; the closer re-detection must give one box each."""
    image = _video_frame(data_dir, 230)
    merged = short_detector.detect(image)
    faces = detect_faces(short_detector, image, crop_kind="photo")
    assert len(faces) == 2
    people = np.array([[350.0, 95.0], [415.0, 140.0]])
    for face in faces:
        inside = [(face.box[0] < x < face.box[2]) and (face.box[1] < y < face.box[3]) for x, y in people]
        assert sum(inside) == 1, f"box {face.box.round()} does not hold exactly one of the two people"
    # The blended box itself never leaves the detection stage, so it can never be identified as anyone.
    assert not any(np.allclose(f.box, m.box) for f in faces for m in merged if len(merged) == 1)


@pytest.mark.data
@pytest.mark.parametrize(("photo", "variant", "count"), [
    ("two_people.jpg", "short", 2), ("kit_with_rose.jpg", "short", 2),
    ("two_people.jpg", "full", 2), ("kit_with_rose.jpg", "full", 2), ("obama_and_biden.jpg", "full", 2)])
def test_multi_face_photos_give_the_right_count(data_dir, short_detector, photo, variant, count):
    """obama_and_biden.jpg's faces are about a tenth of the photo: too small for the short-range model
    (it finds one), which is what the full-range detector (`blazeface-full`) is for."""
    detector = short_detector if variant == "short" else BlazeFaceDetector("full")
    image = read_image(data_dir / "face_recognition_examples/multi_face" / photo)
    assert len(detect_faces(detector, image)) == count


def test_a_single_face_is_left_as_detected(short_detector, astronaut):
    """The closer look only ever splits; one face found again keeps its original box and keypoints."""
    plain = short_detector.detect(astronaut)
    refined = detect_faces(short_detector, astronaut, crop_kind="photo")
    assert len(refined) == 1 and np.array_equal(refined[0].box, plain[0].box)
