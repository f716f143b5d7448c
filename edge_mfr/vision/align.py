"""Keypoints to a 160x160 aligned face crop by a least-squares similarity transform.

FaceNet (davidsandberg's VGGFace2 model) was trained on loose MTCNN box crops. The template was
measured, not guessed: start from the mean BlazeFace keypoints on the unmasked MFR2 160x160 crops
(eyes at y=78, mouth at y=122), then scale about (80, 100). With the fp32 model, scale 1.0 / 1.2 / 1.36
gave LFW pair AUC 0.991 / 0.998 / 0.997 and MFR2 masked rank-1 0.835 / 0.859 / 0.776; 1.2 was taken
from the LFW plateau (LFW is not an evaluation probe set for masks). Only the four stable facial points
are used; the ear tragions move with yaw and would pull the crop.

Masked faces are aligned from the eyes and the nose tip only (MASKED_ALIGN_POINTS): under a mask
BlazeFace's mouth point is a guess that drags the crop, while the nose tip still shows as the mask's
peak. Measured with the int8 model on `edge-mfr eval` (mfr2,lfw,face_recognition_examples vs
glint_celeb), re-aligning faces routed as masked: masked rank-1 0.824 -> 0.859 (3 probes gained, none
lost); eyes only (2 points, or eyes plus a fixed eye-to-nose ratio) lost 2-3 probes, and moving the
synthetic-mask gallery crops to the same alignment gained nothing over probes alone. The point set was
picked among 8 on these numbers; choosing on half of the MFR2 identities and scoring the other half
(50 random halvings) still gained 2.5 probes on average.

The ArcFace-style embedders (issue 11) were trained on the standard InsightFace 112x112 five-point
template; BlazeFace has one mouth point, so the two mouth corners are merged into their mean (a 4-point
fit). Their own packages' crops (a 3-point affine, a squared box) lost 0.2-0.7 masked rank-1.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np

from edge_mfr.vision.types import KP_LEFT_EYE, KP_MOUTH, KP_NOSE, KP_RIGHT_EYE, Face

CROP_SIZE = 160
ALIGN_POINTS = (KP_RIGHT_EYE, KP_LEFT_EYE, KP_NOSE, KP_MOUTH)
MASKED_ALIGN_POINTS = (KP_RIGHT_EYE, KP_LEFT_EYE, KP_NOSE)  # the mouth keypoint is a guess under a mask

# Template in 160x160 crop pixels for ALIGN_POINTS (subject's right eye, left eye, nose tip, mouth
# centre), symmetrised about the vertical centre line.
TEMPLATE_160 = np.array(
    [
        [55.5, 73.5],
        [104.5, 73.5],
        [80.0, 100.7],
        [80.0, 125.9],
    ],
    dtype=np.float32,
)


# InsightFace's ArcFace template (112x112), mouth corners merged into the mouth centre, in ALIGN_POINTS order.
TEMPLATE_ARCFACE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [56.1396, 92.2848],
    ],
    dtype=np.float32,
)

# Template name (a manifest's "alignment.template") -> (ALIGN_POINTS coordinates, native crop size).
TEMPLATES: dict[str, tuple[np.ndarray, int]] = {
    "facenet160": (TEMPLATE_160, CROP_SIZE),
    "arcface112": (TEMPLATE_ARCFACE_112, 112),
}
DEFAULT_TEMPLATE = "facenet160"

# A masked face going to an ArcFace-style embedder is fitted on six face-mesh points instead
# (landmarks.CORNER_POINTS: right eye outer and inner corner, left eye inner and outer, nose bridge, nose
# tip): BlazeFace's eye points are coarse and nothing below the nose is trusted under a mask. Positions in
# the template's native crop: where those points sit in crops aligned as the gallery's are (ALIGN_POINTS),
# measured on the bare faces of mask_status/ by tools/mesh_template.py (200 faces, symmetrised; 0.8 px apart
# before). Masked rank-1 with this fit: models/README.md, "Face mesh for alignment". FaceNet has no entry:
# the mesh gained it nothing.
MESH_MASKED_TEMPLATES: dict[str, np.ndarray] = {
    "arcface112": np.array([
        [28.11, 52.13],
        [45.18, 53.36],
        [66.82, 53.36],
        [83.89, 52.13],
        [56.00, 51.08],
        [56.00, 74.30],
    ], dtype=np.float32),
}


def template_points(template: str) -> tuple[np.ndarray, int]:
    """(points, native size) of a named template; ValueError naming the known ones otherwise."""
    try:
        return TEMPLATES[template]
    except KeyError:
        raise ValueError(f"unknown alignment template {template!r}; known: {', '.join(sorted(TEMPLATES))}") from None


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 matrix of the similarity (rotation, uniform scale, translation) mapping src onto dst.

    Least squares over all points (Umeyama, without reflection), so one noisy keypoint moves the crop
    only a little.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    var_s = (s**2).sum() / len(src)
    scale = (sig * sign).sum() / max(var_s, 1e-12)
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]]).astype(np.float32)


def alignment_matrix(face: Face, size: int | None = None, masked: bool = False,
                     template: str = DEFAULT_TEMPLATE) -> np.ndarray:
    """Frame-to-crop 2x3 matrix for ``face``; ``masked`` fits the eyes and nose only."""
    dst, native = template_points(template)
    size = size or native
    points = list(MASKED_ALIGN_POINTS if masked else ALIGN_POINTS)
    src = face.keypoints[points]
    return similarity_transform(src, dst[points] * (size / native))


def align_face(image: np.ndarray, face: Face, size: int | None = None, masked: bool = False,
               template: str = DEFAULT_TEMPLATE) -> np.ndarray:
    """Aligned RGB uint8 crop (size x size, default the template's own); outside the frame: edge replication.

    ``masked``: the crop for a face already judged masked (see MASKED_ALIGN_POINTS).
    """
    matrix = alignment_matrix(face, size, masked, template)
    size = size or template_points(template)[1]
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def align_on_mesh(image: np.ndarray, corner_points: np.ndarray, template: str, size: int | None = None) -> np.ndarray:
    """Masked-face crop for ``template`` fitted on the mesh's six CORNER_POINTS (MESH_MASKED_TEMPLATES)."""
    native = template_points(template)[1]
    size = size or native
    matrix = similarity_transform(corner_points, MESH_MASKED_TEMPLATES[template] * (size / native))
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to (N, 2) points."""
    pts = np.asarray(points, dtype=np.float32)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def face_crops_from_paths(
    paths: Iterable[Path], detector=None, crop_kind: str = "auto", template: str = DEFAULT_TEMPLATE,
    size: int | None = None,
) -> Iterator[tuple[Path, np.ndarray]]:
    """Aligned crops (``template``, ``size``) of the most prominent face of each readable image (images
    without a face are skipped).

    Used by the host converter to build int8 calibration sets from an image folder.
    """
    from edge_mfr.vision.detector import BlazeFaceDetector
    from edge_mfr.vision.faces import best_face, detect_faces
    from edge_mfr.vision.imageio import read_image

    detector = detector or BlazeFaceDetector("short")
    for path in paths:
        try:
            image = read_image(path)
        except (OSError, ValueError):
            continue
        faces = detect_faces(detector, image, crop_kind=crop_kind)
        face = best_face(faces, image.shape)
        if face is not None:
            yield Path(path), align_face(image, face, size=size, template=template)
