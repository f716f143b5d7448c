"""Face quality scores used to pick enrollment frames (and, later, the best frame of a track).

Only cheap, explainable measures: face size, sharpness, exposure and head pose from the detector's
keypoints. Each failed check has a reason string so enrollment can report why a frame was dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge_mfr.vision.types import KP_LEFT_EYE, KP_MOUTH, KP_NOSE, KP_RIGHT_EYE, Face


@dataclass(frozen=True)
class QualityLimits:
    """Thresholds for enrollment frames; defaults accept ordinary phone photos and 160x160 dataset crops."""

    min_eye_distance: float = 18.0  # frame pixels between the eyes (about a 60 px wide face)
    min_sharpness: float = 25.0  # variance of the Laplacian of the aligned grey crop
    min_brightness: float = 40.0  # mean grey level of the crop's central face area
    max_brightness: float = 220.0
    max_yaw: float = 0.45  # nose offset from the eye midline, in eye distances (about 35-40 degrees)
    max_roll_degrees: float = 30.0
    min_score: float = 0.6


@dataclass(frozen=True)
class Quality:
    eye_distance: float
    sharpness: float
    brightness: float
    yaw: float
    roll_degrees: float
    score: float

    def problems(self, limits: QualityLimits) -> list[str]:
        """Reasons this face is not good enough to enroll; empty when it is."""
        out = []
        if self.eye_distance < limits.min_eye_distance:
            out.append(f"face too small (eyes {self.eye_distance:.0f} px apart, need {limits.min_eye_distance:.0f})")
        if self.sharpness < limits.min_sharpness:
            out.append(f"blurred (sharpness {self.sharpness:.0f} < {limits.min_sharpness:.0f})")
        if self.brightness < limits.min_brightness:
            out.append(f"too dark (brightness {self.brightness:.0f})")
        if self.brightness > limits.max_brightness:
            out.append(f"over-exposed (brightness {self.brightness:.0f})")
        if abs(self.yaw) > limits.max_yaw:
            out.append(f"head turned too far (yaw {self.yaw:+.2f})")
        if abs(self.roll_degrees) > limits.max_roll_degrees:
            out.append(f"head tilted too far ({self.roll_degrees:+.0f} degrees)")
        if self.score < limits.min_score:
            out.append(f"uncertain detection (score {self.score:.2f})")
        return out

    @property
    def overall(self) -> float:
        """A single 0..1 figure for ranking frames of one person: frontal, sharp, large."""
        pose = max(0.0, 1.0 - abs(self.yaw) / 0.6) * max(0.0, 1.0 - abs(self.roll_degrees) / 45.0)
        sharp = min(1.0, self.sharpness / 200.0)
        size = min(1.0, self.eye_distance / 60.0)
        return float(round(pose * (0.5 + 0.25 * sharp + 0.25 * size) * self.score, 4))


def head_pose(face: Face) -> tuple[float, float]:
    """(yaw, roll in degrees) estimated from the eyes, nose and mouth.

    Yaw is the nose's sideways offset from the line through the eye midpoint and the mouth, in eye
    distances: 0 for a frontal face, about +-0.5 near 45 degrees.
    """
    kp = face.keypoints
    right, left = kp[KP_RIGHT_EYE], kp[KP_LEFT_EYE]
    eye_vec = left - right
    eye_dist = float(np.linalg.norm(eye_vec)) or 1.0
    roll = float(np.degrees(np.arctan2(eye_vec[1], eye_vec[0])))
    mid = (left + right) / 2
    axis = kp[KP_MOUTH] - mid
    axis_len = float(np.linalg.norm(axis)) or 1.0
    # Signed perpendicular distance of the nose from the eye-mid-to-mouth axis.
    unit, rel = axis / axis_len, kp[KP_NOSE] - mid
    offset = unit[0] * rel[1] - unit[1] * rel[0]
    return float(offset / eye_dist), roll


def assess(face: Face, crop: np.ndarray) -> Quality:
    """Quality of ``face`` given its aligned crop."""
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    h, w = grey.shape
    centre = grey[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4]
    sharpness = float(cv2.Laplacian(centre, cv2.CV_64F).var())
    yaw, roll = head_pose(face)
    return Quality(
        eye_distance=face.eye_distance,
        sharpness=sharpness,
        brightness=float(centre.mean()),
        yaw=yaw,
        roll_degrees=roll,
        score=float(face.score),
    )
