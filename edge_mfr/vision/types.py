"""Small value types shared by the vision stages."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Keypoint order of every Face (BlazeFace's own order). "Right"/"left" are the subject's: the
# subject's right eye is on the left of an unmirrored image.
KP_RIGHT_EYE = 0
KP_LEFT_EYE = 1
KP_NOSE = 2
KP_MOUTH = 3
KP_RIGHT_EAR = 4
KP_LEFT_EAR = 5
NUM_KEYPOINTS = 6


@dataclass(frozen=True)
class Face:
    """One detected face in frame pixel coordinates.

    ``box`` is (x1, y1, x2, y2); ``keypoints`` is (6, 2) float32 x,y in the KP_* order above. Detectors
    that do not predict ears (MTCNN) estimate them from the eyes and mark ``ears_estimated``.
    """

    box: np.ndarray
    score: float
    keypoints: np.ndarray
    ears_estimated: bool = False

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def eye_distance(self) -> float:
        return float(np.linalg.norm(self.keypoints[KP_LEFT_EYE] - self.keypoints[KP_RIGHT_EYE]))
