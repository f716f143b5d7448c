"""MTCNN on the TFLite runtime: input handling, geometry helpers, detection rates on real photos, and
agreement with the ``mtcnn`` package it was exported from (host only)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_mfr.errors import ConfigError, ImageError
from edge_mfr.vision.imageio import read_image
from edge_mfr.vision.mtcnn import EAR_ALONG, PNET_CACHE, MTCNNDetector, _nms, estimate_ears
from edge_mfr.vision.types import (
    KP_LEFT_EAR,
    KP_LEFT_EYE,
    KP_MOUTH,
    KP_NOSE,
    KP_RIGHT_EAR,
    KP_RIGHT_EYE,
    Face,
)


@pytest.fixture(scope="module")
def mtcnn() -> MTCNNDetector:
    return MTCNNDetector()


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _photos(data_dir: Path, subset: str) -> list[Path]:
    return sorted(p for p in (data_dir / subset).rglob("*.jpg"))


# ------------------------------------------------------------------------------------ no data needed


@pytest.mark.parametrize("shape", [(480, 640, 3), (1, 1, 3), (10, 10, 3), (11, 400, 3)])
def test_blank_and_tiny_images_give_no_faces(mtcnn, shape):
    assert mtcnn.detect(np.zeros(shape, dtype=np.uint8)) == []


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((64, 64), dtype=np.uint8),
        np.zeros((64, 64, 4), dtype=np.uint8),
        np.zeros((64, 64, 3), dtype=np.float32),
        np.zeros((0, 64, 3), dtype=np.uint8),
        [[0, 0, 0]],
    ],
    ids=["gray", "rgba", "float", "empty", "list"],
)
def test_bad_images_raise_image_error(mtcnn, image):
    with pytest.raises(ImageError):
        mtcnn.detect(image)


@pytest.mark.parametrize(
    "kwargs",
    [{"min_face": 0}, {"thresholds": (0.6, 0.7)}, {"thresholds": (0.6, 0.7, 1.5)}, {"scale_factor": 1.0}],
)
def test_bad_settings_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        MTCNNDetector(**kwargs)


def test_pyramid_starts_at_min_face_and_stops_at_the_pnet_window(mtcnn):
    scales = mtcnn.scales(480, 640)
    assert scales[0] == pytest.approx(12 / 20)
    assert np.allclose(np.array(scales[1:]) / np.array(scales[:-1]), 0.709)
    assert 480 * scales[-1] >= 12 > 480 * scales[-1] * 0.709
    assert MTCNNDetector(min_face=40).scales(480, 640)[0] == pytest.approx(12 / 40)
    assert mtcnn.scales(11, 500) == []


def test_ears_lie_beyond_the_eyes_and_turn_with_them():
    right, left = np.array([100.0, 100.0]), np.array([140.0, 100.0])
    right_ear, left_ear = estimate_ears(right, left)
    # Upright face: ears outside the eyes, symmetric, a little lower than the eyes.
    assert right_ear[0] == pytest.approx(120 - EAR_ALONG * 40) and left_ear[0] == pytest.approx(
        120 + EAR_ALONG * 40
    )
    assert right_ear[1] == pytest.approx(left_ear[1]) and right_ear[1] > 100
    # Rotating and scaling the eyes rotates and scales the ears the same way.
    angle, scale = np.deg2rad(30), 1.7
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    r2, l2 = estimate_ears(rot @ right, rot @ left)
    assert np.allclose(r2, rot @ right_ear, atol=1e-3) and np.allclose(l2, rot @ left_ear, atol=1e-3)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0, 200),
            st.floats(0, 200),
            st.floats(1, 80),
            st.floats(1, 80),
            st.floats(0.01, 1),
        ),
        min_size=1,
        max_size=40,
    ),
    st.floats(0.1, 0.9),
)
def test_nms_keeps_the_best_box_and_no_kept_pair_overlaps(rows, threshold):
    arr = np.array(rows, dtype=np.float32)
    boxes = np.stack([arr[:, 0], arr[:, 1], arr[:, 0] + arr[:, 2], arr[:, 1] + arr[:, 3]], axis=1)
    scores = arr[:, 4]
    keep = _nms(boxes, scores, threshold)
    assert scores[keep[0]] == scores.max()
    assert list(scores[keep]) == sorted(scores[keep], reverse=True)
    for i, a in enumerate(keep):
        for b in keep[i + 1 :]:
            assert _iou(boxes[a], boxes[b]) <= threshold + 1e-5


def test_astronaut_face_and_keypoint_layout(mtcnn, astronaut):
    faces = mtcnn.detect(astronaut)
    assert len(faces) == 1
    f = faces[0]
    assert isinstance(f, Face) and f.ears_estimated and f.score > 0.9
    assert f.box.dtype == np.float32 and f.keypoints.shape == (6, 2)
    x1, y1, x2, y2 = f.box
    kp = f.keypoints
    assert ((kp[:4, 0] > x1) & (kp[:4, 0] < x2) & (kp[:4, 1] > y1) & (kp[:4, 1] < y2)).all()
    # Subject's right eye on the image's left; eyes above nose above mouth; ears outside the eyes.
    assert kp[KP_RIGHT_EAR, 0] < kp[KP_RIGHT_EYE, 0] < kp[KP_LEFT_EYE, 0] < kp[KP_LEFT_EAR, 0]
    assert max(kp[KP_RIGHT_EYE, 1], kp[KP_LEFT_EYE, 1]) < kp[KP_NOSE, 1] < kp[KP_MOUTH, 1]


def test_scaled_frame_scales_the_face_and_pnet_sizes_are_cached(astronaut):
    import cv2

    detector = MTCNNDetector()
    base = detector.detect(astronaut)[0]
    big = cv2.resize(astronaut, None, fx=1.5, fy=1.5, interpolation=cv2.INTER_LINEAR)
    scaled = detector.detect(big)[0]
    assert _iou(scaled.box / 1.5, base.box) > 0.85
    assert np.abs(scaled.keypoints[:4] / 1.5 - base.keypoints[:4]).max() < 4
    levels = len(detector.scales(*astronaut.shape[:2])) + len(detector.scales(*big.shape[:2]))
    assert len(detector._pnet_cache) == min(levels, PNET_CACHE)


# --------------------------------------------------------------------------------------- real photos


@pytest.mark.data
def test_finds_the_main_face_in_lfw(mtcnn, data_dir):
    photos = _photos(data_dir, "lfw")
    assert len(photos) >= 100
    found = 0
    eyes_in_order = 0
    for path in photos:
        image = read_image(path)
        h, w = image.shape[:2]
        # LFW centres the labelled face; it is roughly 80-150 px wide in a 250 px photo.
        main = [
            f
            for f in mtcnn.detect(image)
            if f.box[0] < w / 2 < f.box[2] and f.box[1] < h / 2 < f.box[3] and 50 < f.width < 200
        ]
        if main:
            found += 1
            kp = main[0].keypoints
            eyes_in_order += kp[KP_RIGHT_EYE, 0] < kp[KP_LEFT_EYE, 0]
    assert found / len(photos) >= 0.99, f"main face found in {found} of {len(photos)} LFW photos"
    assert eyes_in_order / found >= 0.98


@pytest.mark.data
def test_finds_faces_in_full_photos(mtcnn, data_dir):
    single = [p for p in _photos(data_dir, "face_recognition_examples") if p.parent.name != "multi_face"]
    assert single
    missed = [p.name for p in single if not mtcnn.detect(read_image(p))]
    # The two BarackObama "partial_face" photos cut the face at the border; everything else is found.
    assert len(missed) <= 2, missed
    for path in sorted((data_dir / "face_recognition_examples" / "multi_face").glob("*.jpg")):
        assert len(mtcnn.detect(read_image(path))) >= 2, path.name


# ----------------------------------------------------------------------------- agreement with mtcnn


@pytest.fixture(scope="module")
def reference():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    pytest.importorskip("tensorflow", reason="the agreement check runs the mtcnn package (TensorFlow)")
    package = pytest.importorskip("mtcnn", reason="the agreement check needs the mtcnn package")
    return package.MTCNN()


@pytest.mark.host
@pytest.mark.data
def test_agrees_with_the_mtcnn_package(mtcnn, reference, data_dir):
    photos = _photos(data_dir, "lfw")[::2] + _photos(data_dir, "face_recognition_examples")
    ious: list[float] = []
    landmark_errors: list[float] = []
    count_differs: list[str] = []
    for path in photos:
        image = read_image(path)
        theirs = reference.detect_faces(image, threshold_onet=0.7)  # the package defaults to 0.8
        ours = mtcnn.detect(image)
        if len(ours) != len(theirs):
            count_differs.append(path.name)
        if not theirs:
            continue
        main = max(theirs, key=lambda r: r["box"][2] * r["box"][3])
        x, y, bw, bh = main["box"]
        box = np.array([x, y, x + bw, y + bh], dtype=np.float64)
        best = max(ours, key=lambda f: _iou(f.box, box))
        ious.append(_iou(best.box, box))
        k = main["keypoints"]
        # The package names eyes and mouth corners from the viewer's side ("left_eye" is on the left).
        expected = np.array(
            [k["left_eye"], k["right_eye"], k["nose"], np.add(k["mouth_left"], k["mouth_right"]) / 2],
            dtype=float,
        )
        got = best.keypoints[[KP_RIGHT_EYE, KP_LEFT_EYE, KP_NOSE, KP_MOUTH]]
        landmark_errors.append(float(np.linalg.norm(got - expected, axis=1).max()))
    ious_a, errors = np.array(ious), np.array(landmark_errors)
    assert len(ious_a) >= 0.95 * len(photos)
    assert len(count_differs) <= 2, f"different face counts on {count_differs}"
    # The package rounds its output to whole pixels, so even identical maths gives IoU a little below 1.
    assert np.mean(ious_a >= 0.9) >= 0.97, (
        f"IoU >= 0.9 on {np.mean(ious_a >= 0.9):.1%}; worst {ious_a.min():.3f}"
    )
    assert np.median(ious_a) >= 0.97
    assert np.mean(errors <= 3.0) >= 0.95, f"landmarks within 3 px on {np.mean(errors <= 3.0):.1%}"
    assert np.median(errors) <= 1.5
