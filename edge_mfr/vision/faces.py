"""Finding the faces of a still image or an aligned crop: the detector plus the documented crop path.

Datasets such as MFR2 (160x160) and Glint (112x112) hold faces that are already tightly cropped and
aligned. A detector trained on whole scenes often misses a face that fills the frame, so when the plain
pass finds nothing, or only a face touching the border, the image is padded with a black border of half
its size on every side and detected again; keypoints are shifted back into the original image. The
aligner then produces the same 160x160 crop as for any other photo.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge_mfr.vision.detector import BlazeFaceDetector, Detector
from edge_mfr.vision.types import Face

PAD_FRACTION = 0.5
RELAXED_MIN_SCORE = 0.3
SPLIT_WINDOW = 2.0  # side of the re-detection window around a face, in face box sides
SPLIT_MAX_SHARE = 0.6  # re-detect only when the window is at most this share of the image's long side
SPLIT_MIN_OVERLAP = 0.3  # a face seen in the window belongs to the box when this share of it lies inside
SPLIT_SAME_IOU = 0.5  # two results this close are one face (a neighbour found again from its own box)


def _touches_border(face: Face, shape: tuple[int, ...], margin: float = 2.0) -> bool:
    h, w = shape[:2]
    x1, y1, x2, y2 = face.box
    return x1 <= margin or y1 <= margin or x2 >= w - margin or y2 >= h - margin


def _shift(face: Face, dx: float, dy: float, shape: tuple[int, ...]) -> Face:
    h, w = shape[:2]
    offset = np.array([dx, dy], dtype=np.float32)
    box = face.box - np.concatenate([offset, offset])
    box = np.clip(box, 0, [w, h, w, h]).astype(np.float32)
    return Face(box=box, score=face.score, keypoints=face.keypoints - offset, ears_estimated=face.ears_estimated)


def _detect(detector: Detector, image: np.ndarray, min_score: float | None) -> list[Face]:
    if min_score is None:
        return detector.detect(image)
    return detector.detect(image, min_score=min_score)  # type: ignore[call-arg]


def detect_padded(detector: Detector, image: np.ndarray, min_score: float | None = None) -> list[Face]:
    """Detect on a copy padded by PAD_FRACTION of the long side; coordinates refer to ``image``."""
    pad = int(round(max(image.shape[:2]) * PAD_FRACTION))
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    return [_shift(f, pad, pad, image.shape) for f in _detect(detector, padded, min_score)]


def _window(face: Face, shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    """Square window of SPLIT_WINDOW box sides around ``face``, clipped; None when it would not zoom in."""
    h, w = shape[:2]
    side = SPLIT_WINDOW * max(face.width, face.height)
    if side > SPLIT_MAX_SHARE * max(h, w):
        return None
    cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
    x1, y1 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
    x2, y2 = int(min(w, cx + side / 2)), int(min(h, cy + side / 2))
    return (x1, y1, x2, y2) if x2 - x1 >= 16 and y2 - y1 >= 16 else None


def _share_inside(face: Face, box: np.ndarray) -> float:
    """Share of ``face``'s box area that lies inside ``box``."""
    x1, y1 = max(face.box[0], box[0]), max(face.box[1], box[1])
    x2, y2 = min(face.box[2], box[2]), min(face.box[3], box[3])
    inter = max(0.0, float(x2 - x1)) * max(0.0, float(y2 - y1))
    return inter / max(face.width * face.height, 1e-9)


def split_merged(detector: Detector, image: np.ndarray, faces: list[Face]) -> list[Face]:
    """Re-detect around each face at a closer zoom; a box that turns out to hold two faces is replaced by them.

    A small-input detector (BlazeFace short range sees a 640-pixel frame at 128 pixels) blends two
    adjacent small faces into one box between them (frame 230 of the Hamilton clip: two people, one box).
    Seen through a window of twice the box's size, the same model separates them. A single face found
    again keeps its original box, so ordinary faces are not changed by this pass. Every face found in the
    window that lies at least half inside the box counts, so a box spanning two faces never survives
    this pass to be identified as one person, even when one of the two centres falls outside it.
    """
    out: list[Face] = []
    for face in faces:
        window = _window(face, image.shape)
        if window is None:
            out.append(face)
            continue
        x1, y1, x2, y2 = window
        found = [_shift(f, -x1, -y1, image.shape) for f in _detect(detector, image[y1:y2, x1:x2], None)]
        parts = [f for f in found if _share_inside(f, face.box) >= SPLIT_MIN_OVERLAP]
        for part in parts if len(parts) >= 2 else [face]:
            if all(_iou(part.box, kept.box) <= SPLIT_SAME_IOU for kept in out):
                out.append(part)
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, float(x2 - x1)) * max(0.0, float(y2 - y1))
    union = float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])) - inter
    return inter / max(union, 1e-9)


def detect_faces(detector: Detector, image: np.ndarray, crop_kind: str = "auto") -> list[Face]:
    """Faces in a still image.

    ``crop_kind``: ``"photo"`` runs the detector once; ``"aligned_crop"`` always uses the padded pass;
    ``"auto"`` runs the plain pass and falls back to the padded one when it finds no face or only faces
    cut by the border. When a BlazeFace pass finds nothing at all it is repeated with
    RELAXED_MIN_SCORE: a still handed to enroll or recognize is expected to show a face, and masked
    faces often score 0.3-0.5.
    """
    passes: list[float | None] = [None]
    if crop_kind != "photo" and isinstance(detector, BlazeFaceDetector):
        passes.append(RELAXED_MIN_SCORE)
    faces: list[Face] = []
    for min_score in passes:
        if crop_kind == "aligned_crop":
            faces = detect_padded(detector, image, min_score)
        else:
            faces = _detect(detector, image, min_score)
            if crop_kind == "auto" and (not faces or all(_touches_border(f, image.shape) for f in faces)):
                faces = detect_padded(detector, image, min_score) or faces
        if faces:
            return split_merged(detector, image, faces) if crop_kind != "aligned_crop" else faces
    return faces


def best_face(faces: list[Face], shape: tuple[int, ...]) -> Face | None:
    """The main face: large, confident and central (how a photo's subject is usually framed)."""
    if not faces:
        return None
    h, w = shape[:2]
    centre = np.array([w / 2, h / 2])
    diag = float(np.hypot(w, h))

    def prominence(face: Face) -> float:
        c = np.array([(face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2])
        off = float(np.linalg.norm(c - centre)) / diag
        return face.width * face.height * face.score * (1.0 - off)

    return max(faces, key=prominence)
