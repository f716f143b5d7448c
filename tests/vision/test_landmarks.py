"""The face mesh on real faces: its eye and nose points land where BlazeFace's do, upright and tilted."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_mfr.errors import ModelError
from edge_mfr.vision.faces import best_face, detect_faces
from edge_mfr.vision.imageio import read_image
from edge_mfr.vision.landmarks import (
    NUM_POINTS,
    FaceLandmarker,
    corner_points,
    five_points,
    keypoints_like_blazeface,
)


@pytest.fixture(scope="module")
def landmarker() -> FaceLandmarker:
    return FaceLandmarker()


def rotated(image: np.ndarray, degrees: float) -> np.ndarray:
    h, w = image.shape[:2]
    return cv2.warpAffine(image, cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0), (w, h))


@pytest.mark.parametrize("degrees", [0, 25, -25])
def test_mesh_eyes_and_nose_match_the_detector(data_dir, short_detector, landmarker, degrees):
    image = rotated(read_image(data_dir / "lfw" / "ColinPowell" / "Colin_Powell_0009.jpg"), degrees)
    face = best_face(detect_faces(short_detector, image), image.shape)
    mesh = landmarker.points(image, face)
    assert mesh.shape == (NUM_POINTS, 3)
    five = five_points(mesh)
    tolerance = 0.2 * face.eye_distance  # BlazeFace's points are coarse; a wrong ROI turn is far off
    for i in range(3):  # right eye, left eye, nose tip
        assert np.linalg.norm(five[i] - face.keypoints[i]) < tolerance
    # the mesh keeps the subject's sides: right eye left of the left eye along the (tilted) eye line
    eye_line = face.keypoints[1] - face.keypoints[0]
    assert float((five[1] - five[0]) @ eye_line) > 0
    assert float((five[4] - five[3]) @ eye_line) > 0  # mouth corners likewise


def test_blazeface_order_keypoints_take_mesh_points(data_dir, short_detector, landmarker):
    image = read_image(data_dir / "mfr2" / "ArifAlvi" / "ArifAlvi_0001.jpg")
    face = best_face(detect_faces(short_detector, image, crop_kind="aligned_crop"), image.shape)
    mesh = landmarker.points(image, face)
    kp = keypoints_like_blazeface(mesh, face)
    assert kp.shape == face.keypoints.shape
    assert np.allclose(kp[4:], face.keypoints[4:])  # ears are the detector's
    assert np.allclose(kp[3], five_points(mesh)[3:].mean(0))
    corners = corner_points(mesh)
    # eye corners lie on both sides of the eye centres, the bridge between the eyes, the tip below it
    assert corners[0, 0] < kp[0, 0] < corners[1, 0] < corners[4, 0] < corners[2, 0] < kp[1, 0] < corners[3, 0]
    assert corners[4, 1] < corners[5, 1]


def test_a_changed_landmark_model_is_refused(models_copy):
    path = models_copy / "face_landmark.tflite"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="face_landmark.tflite: sha256"):
        FaceLandmarker(models_copy)
