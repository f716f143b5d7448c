"""Eye openness of a detected face, from MediaPipe's face landmark and iris models (Apache-2.0).

Liveness by blinking needs one number per eye and frame that drops when the lid closes. The 468-point
face landmark model (192x192, crop: detection box x1.5, squared, eyes level, as MediaPipe does) finds the
eyes even when a mask hides mouth and nose, but its lid points barely move when the lids do (measured on
footage with rendered closed lids: eye aspect ratio 0.300 -> 0.288). The iris model, run on a 64x64 crop
of each eye placed by the mesh, traces the lids themselves (0.44 -> 0.29 on the same frames), so the
openness is measured on its eye contour. Cost per face asked for: one mesh and two iris calls; the caller
asks only for faces that could open a door.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_mfr.vision.landmarks import LEFT_EYE_CORNERS as LEFT_CORNERS
from edge_mfr.vision.landmarks import RIGHT_EYE_CORNERS as RIGHT_CORNERS
from edge_mfr.vision.landmarks import FaceLandmarker
from edge_mfr.vision.runtime import TFLiteModel, load_model
from edge_mfr.vision.types import Face

IRIS_MODEL = "iris_landmark.tflite"
IRIS_SIZE = 64
IRIS_ROI_SCALE = 2.3  # eye crop side over the eye's corner-to-corner width (MediaPipe's)
# The iris model's 16-point eye contour: 0 and 8 the corners (the mesh's RIGHT_/LEFT_CORNERS, outer
# first), 1-7 the lower lid, 9-15 the upper lid, 16 - i facing i.
LID_PAIRS = ((3, 13), (4, 12), (5, 11))


@dataclass(frozen=True)
class EyeState:
    """Lid gap over eye width of each eye, from the iris model's contour."""

    right: float
    left: float
    presence: float  # the model's face-presence probability for the crop
    landmarks: np.ndarray  # (468, 3) the face mesh (landmarks.Mesh.points: frame pixels)

    @property
    def openness(self) -> float:
        """Both eyes blink together; the mean halves the noise of either alone."""
        return (self.right + self.left) / 2


class EyeOpenness:
    """Runs the landmark model on a face and measures both eyes."""

    def __init__(self, num_threads: int = 1, models_dir: Path | None = None,
                 landmarker: FaceLandmarker | None = None):
        # ``landmarker``: the pipeline's own face mesh when it has one (it aligns masked faces): one mesh
        # interpreter in the process instead of two (about 6 MiB). Both run in the frame loop's thread.
        self.landmarker = landmarker or FaceLandmarker(models_dir=models_dir, num_threads=num_threads)
        self.iris: TFLiteModel = load_model("iris_landmarks", num_threads=num_threads, models_dir=models_dir,
                                            name=IRIS_MODEL)

    def lid_ratio(self, image: np.ndarray, outer: np.ndarray, inner: np.ndarray, mirror: bool) -> float:
        """Lid gap over eye width from the iris model's eye contour (about 0.45 open, under 0.3 closed)."""
        d = inner - outer if mirror else outer - inner  # image left to right: the crop stays upright
        width = float(np.hypot(*d))
        if width < 2:
            return 0.0
        centre = (outer + inner) / 2
        angle = float(np.degrees(np.arctan2(d[1], d[0])))
        m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, IRIS_SIZE / (width * IRIS_ROI_SCALE))
        m[:, 2] += IRIS_SIZE / 2 - centre
        crop = cv2.warpAffine(image, m, (IRIS_SIZE, IRIS_SIZE), flags=cv2.INTER_LINEAR)
        if mirror:
            crop = crop[:, ::-1]
        contour = self.iris.run(crop.astype(np.float32)[None] / 255.0)[0].reshape(71, 3)[:16, :2]
        span = float(np.linalg.norm(contour[0] - contour[8]))
        if span <= 1e-6:
            return 0.0
        return float(np.mean([np.linalg.norm(contour[a] - contour[b]) for a, b in LID_PAIRS])) / span

    def measure(self, image: np.ndarray, face: Face) -> EyeState:
        """Eye state of ``face`` in the RGB frame ``image`` (frame pixel coordinates)."""
        mesh = self.landmarker.mesh(image, face)
        frame_xy = mesh.points[:, :2]
        right = self.lid_ratio(image, frame_xy[RIGHT_CORNERS[0]], frame_xy[RIGHT_CORNERS[1]], mirror=True)
        left = self.lid_ratio(image, frame_xy[LEFT_CORNERS[0]], frame_xy[LEFT_CORNERS[1]], mirror=False)
        return EyeState(right, left, mesh.presence, mesh.points)
