"""MTCNN face detection (Zhang et al. 2016) on the TFLite runtime: the seed projects' detector, no TensorFlow.

Three small networks in a cascade, all fed (pixel - 127.5) / 128 RGB in the ordinary (row, column) frame.
The ``mtcnn`` 1.0 package's weights, exported by ``tools/export_mtcnn.py``, already absorb the transposed
frame of the original Caffe models (its R-Net and O-Net permute before flattening), so nothing here
transposes images or swaps x and y.

1. P-Net, fully convolutional, runs on an image pyramid. Each output cell is a 12x12 window with stride 2
   in the scaled image, scored face / not face and regressed to a box. Scales start at 12 / min_face (the
   smallest wanted face fills P-Net's window) and shrink by ``scale_factor`` while the short side keeps
   at least 12 pixels.
2. R-Net re-scores 24x24 crops of the surviving squares and refines their boxes.
3. O-Net does the same on 48x48 crops and places five landmarks.

After each net the boxes are regressed, thinned by non-maximum suppression and made square (crops must
not distort the face).

Why the details below follow the ``mtcnn`` package so closely: O-Net's box and landmarks move by one or
two pixels when its crop moves by half a pixel, so every small convention changes which candidates
survive and where the final box lands. Written from the textbook algorithm, an earlier version of this
module agreed with the package at IoU >= 0.9 on only 79% of the development photos; with the package's
conventions it agrees on 120 of 121 (median IoU 0.99, landmarks within 0.6% of the box width), and the
seed projects' galleries were built with the package. The conventions:

* box corners are pixel centres, both inside the box: a box spans x2 - x1 + 1 pixels, the unit of the
  R-Net and O-Net offsets and landmarks (the landmark's trailing -1 comes from MATLAB's 1-based pixels);
* P-Net cell (row, col) is the window from pixel 2*col + 1 to 2*col + 12 of its level, with offsets in
  units of 11 pixels; levels are floor(size * scale) pixels, area-resampled, and mapped back with the
  nominal scale;
* a crop samples its box bilinearly from corner to corner, after scaling box coordinates by
  (size - 1) / size (the package hands TensorFlow's crop_and_resize box / size where it expects
  box / (size - 1)); outside the frame it reads 0, mid-grey after normalising;
* NMS lets a suppressed box still suppress the boxes ranked below it (see ``_nms``).

Precision: fp32. Measured on this host (x86, 1 TFLite thread, 640x480 frames): fp32 and fp16 both ran at
about 42 ms per frame, full int8 at about 100 ms (its int8 graph is slower under XNNPACK here), and int8
agreed with the package on only 84% of the photos (IoU >= 0.9). The three fp32 files total 2 MB.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge_mfr.errors import ConfigError, ImageError
from edge_mfr.vision.runtime import TFLiteModel, load_model
from edge_mfr.vision.types import (
    KP_LEFT_EAR,
    KP_LEFT_EYE,
    KP_MOUTH,
    KP_NOSE,
    KP_RIGHT_EAR,
    KP_RIGHT_EYE,
    NUM_KEYPOINTS,
    Face,
)

PNET_CELL = 12  # P-Net's receptive window, in scaled-image pixels
PNET_STRIDE = 2  # one max-pool of stride 2
RNET_SIZE = 24
ONET_SIZE = 48

# NMS overlap thresholds of the reference implementation: within one pyramid scale, across scales, after
# R-Net (all intersection over union) and after O-Net (intersection over the smaller box, which also
# removes a small box nested inside a face's box).
NMS_PNET_SCALE = 0.5
NMS_PNET_ALL = 0.7
NMS_RNET = 0.7
NMS_ONET = 0.7

# Ears are not predicted by MTCNN. They are placed beyond each eye along the eye line and a little below
# it: with d the vector from the subject's right eye to the left eye, c the eyes' midpoint and n = d turned
# 90 degrees to point down the face, ear = c -/+ EAR_ALONG * d + EAR_BELOW * n. The constants are the
# medians of BlazeFace (short range)'s own tragion keypoints in that frame over the 100 LFW photos of the
# development set (`python tools/export_mtcnn.py --calibrate-ears`; full range gives 1.03 and 0.26). They
# suit frontal faces; with the head turned, the estimate stays symmetric while real ears do not.
EAR_ALONG = 1.04
EAR_BELOW = 0.25

# P-Net interpreters kept, one per pyramid level size (a fixed camera size needs about ten).
PNET_CACHE = 32

# Cap on the P-Net candidates handed to R-Net: bounds the cost on busy frames, keeping the best scores.
MAX_RNET_CANDIDATES = 1000


def _nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Indices of the boxes that no better-scored box overlaps by more than ``threshold``, best first.

    Unlike textbook greedy NMS, a box that is itself suppressed still suppresses the ones below it (it
    thins a little more): the ``mtcnn`` package does this, and matching it keeps the candidate sets, so
    the final boxes, the same as the package's. ``mode`` 'min' divides the intersection by the smaller
    area. Rows go in blocks so memory stays bounded on frames with thousands of candidates.
    """
    order = np.argsort(-scores, kind="stable")
    b = boxes[order].astype(np.float32)
    n = len(b)
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    suppressed = np.zeros(n, dtype=bool)
    block = 256
    for start in range(0, n, block):
        rows = slice(start, min(start + block, n))
        iw = np.clip(np.minimum(x2[rows, None], x2[None]) - np.maximum(x1[rows, None], x1[None]), 0, None)
        ih = np.clip(np.minimum(y2[rows, None], y2[None]) - np.maximum(y1[rows, None], y1[None]), 0, None)
        inter = iw * ih
        if mode == "min":
            denom = np.minimum(areas[rows, None], areas[None])
        else:
            denom = areas[rows, None] + areas[None] - inter
        over = inter > threshold * np.maximum(denom, 1e-9)
        # Only a better-ranked row may suppress a column.
        later = np.arange(n)[None, :] > np.arange(rows.start, rows.stop)[:, None]
        suppressed |= (over & later).any(axis=0)
    return order[~suppressed]


def _square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square around its centre (the nets expect undistorted faces)."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + (w - side) / 2
    out[:, 1] = boxes[:, 1] + (h - side) / 2
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def _regress(boxes: np.ndarray, offsets: np.ndarray, inclusive: bool = True) -> np.ndarray:
    """Apply the nets' box offsets, fractions of the input box's size (x2 - x1 + 1 pixels if inclusive)."""
    extra = 1.0 if inclusive else 0.0
    w = (boxes[:, 2] - boxes[:, 0] + extra)[:, None]
    h = (boxes[:, 3] - boxes[:, 1] + extra)[:, None]
    return boxes + offsets * np.concatenate([w, h, w, h], axis=1)


def _crop_batch(frame: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Bilinear size x size samples of each box of the normalised frame, corner to corner (see above)."""
    batch = np.empty((len(boxes), size, size, 3), dtype=np.float32)
    fh, fw = frame.shape[:2]
    shrink = np.array([(fw - 1) / fw, (fh - 1) / fh, (fw - 1) / fw, (fh - 1) / fh], dtype=np.float32)
    for k, (x1, y1, x2, y2) in enumerate(boxes * shrink):
        step_x = (x2 - x1) / (size - 1)
        step_y = (y2 - y1) / (size - 1)
        # Inverse map: output pixel (u, v) samples frame point (x1 + u * step_x, y1 + v * step_y).
        m = np.array([[step_x, 0.0, x1], [0.0, step_y, y1]], dtype=np.float64)
        batch[k] = cv2.warpAffine(
            frame,
            m,
            (size, size),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0.0, 0.0, 0.0),
        )
    return batch


def _normalise(pixels: np.ndarray) -> np.ndarray:
    return (pixels.astype(np.float32) - 127.5) * (1.0 / 128.0)


def _outputs_by_width(outputs: list[np.ndarray]) -> dict[int, np.ndarray]:
    """Name the outputs by their last dimension (2 = face/not-face, 4 = box, 10 = landmarks).

    Exported signatures give the tensors generic names whose order is not guaranteed, but the widths
    are unambiguous.
    """
    return {int(o.shape[-1]): o for o in outputs}


def estimate_ears(right_eye: np.ndarray, left_eye: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Subject's right and left ear positions extrapolated from the eyes (see EAR_ALONG / EAR_BELOW)."""
    d = left_eye - right_eye
    centre = (left_eye + right_eye) / 2
    # Image y grows downwards; rotating d by +90 degrees in that frame points down the face.
    down = np.array([-d[1], d[0]], dtype=np.float32)
    below = EAR_BELOW * down
    return centre - EAR_ALONG * d + below, centre + EAR_ALONG * d + below


class MTCNNDetector:
    """MTCNN cascade on three TFLite models (roles ``mtcnn_pnet``, ``mtcnn_rnet``, ``mtcnn_onet``).

    ``min_face`` is the smallest face side, in frame pixels, the pyramid looks for (smaller is slower);
    ``thresholds`` are the P-Net, R-Net and O-Net face probabilities a candidate must exceed. Returned
    keypoints follow the Face layout; MTCNN's two mouth corners are averaged into the mouth centre and
    the ears are estimated (``ears_estimated=True``).
    """

    name = "mtcnn"

    def __init__(
        self,
        num_threads: int = 1,
        min_face: float = 20,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        scale_factor: float = 0.709,
        models_dir: Path | None = None,
    ):
        if not min_face > 0:
            raise ConfigError(f"MTCNN min_face must be a positive number of pixels, not {min_face!r}")
        if len(thresholds) != 3 or not all(0.0 <= t < 1.0 for t in thresholds):
            raise ConfigError(f"MTCNN thresholds must be three probabilities in [0, 1), not {thresholds!r}")
        if not 0.1 <= scale_factor < 0.95:
            raise ConfigError(f"MTCNN scale_factor must be in [0.1, 0.95), not {scale_factor!r}")
        self.min_face = float(min_face)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.scale_factor = float(scale_factor)
        self.num_threads = num_threads
        self.pnet: TFLiteModel = load_model("mtcnn_pnet", num_threads=num_threads, models_dir=models_dir)
        self._pnet_cache: dict[tuple[int, int], TFLiteModel] = {}
        self.rnet: TFLiteModel = load_model("mtcnn_rnet", num_threads=num_threads, models_dir=models_dir)
        self.onet: TFLiteModel = load_model("mtcnn_onet", num_threads=num_threads, models_dir=models_dir)

    def scales(self, height: int, width: int) -> list[float]:
        """Pyramid scales for a frame: from 12 / min_face down while the short side stays >= 12 pixels."""
        out: list[float] = []
        scale = PNET_CELL / self.min_face
        short = min(height, width)
        while short * scale >= PNET_CELL and len(out) < 64:
            out.append(scale)
            scale *= self.scale_factor
        return out

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in an RGB uint8 frame, best score first; [] when the frame is too small for any face."""
        _check_image(image)
        frame = _normalise(image)
        boxes = self._stage_pnet(frame)
        if len(boxes):
            boxes = self._stage_rnet(frame, boxes)
        if not len(boxes):
            return []
        boxes, scores, landmarks = self._stage_onet(frame, boxes)
        h, w = image.shape[:2]
        faces: list[Face] = []
        for box, score, lm in zip(boxes, scores, landmarks, strict=True):
            box = np.clip(box, 0, [w - 1, h - 1, w - 1, h - 1]).astype(np.float32)
            if box[2] - box[0] < 1 or box[3] - box[1] < 1:
                continue
            faces.append(
                Face(box=box, score=float(score), keypoints=_to_face_keypoints(lm), ears_estimated=True)
            )
        return faces

    # -- stages ---------------------------------------------------------------------------------------

    def _pnet_for(self, height: int, width: int) -> TFLiteModel:
        """A P-Net interpreter sized for one pyramid level.

        The model is declared 1x12x12x3 but holds no shape-dependent op, so an interpreter can be resized
        to any level. Re-planning the tensors costs about as much as running the level, so each size
        keeps its own interpreter: a camera's frames all share one pyramid, and the cache is dropped
        when it outgrows PNET_CACHE sizes (frames of changing sizes).
        """
        key = (height, width)
        model = self._pnet_cache.get(key)
        if model is None:
            if len(self._pnet_cache) >= PNET_CACHE:
                self._pnet_cache.clear()
            model = TFLiteModel(self.pnet.path, self.pnet.spec, num_threads=self.num_threads)
            model.interpreter.resize_tensor_input(model.input_details[0]["index"], [1, height, width, 3])
            model.interpreter.allocate_tensors()
            model.input_details = model.interpreter.get_input_details()
            model.output_details = model.interpreter.get_output_details()
            self._pnet_cache[key] = model
        return model

    def _run_pnet(self, level: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """P-Net on one pyramid level: (face probability map, box offsets map)."""
        model = self._pnet_for(level.shape[0], level.shape[1])
        out = _outputs_by_width(model.run(level[None]))
        return out[2][0, :, :, 1], out[4][0]

    def _stage_pnet(self, frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        threshold = self.thresholds[0]
        per_scale: list[np.ndarray] = []
        for scale in self.scales(h, w):
            lh, lw = int(h * scale), int(w * scale)
            if min(lh, lw) < PNET_CELL:
                break
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            prob, reg = self._run_pnet(cv2.resize(frame, (lw, lh), interpolation=interp))
            rows, cols = np.nonzero(prob > threshold)
            if not len(rows):
                continue
            # Window of cell (row, col): pixels 2*col+1 .. 2*col+12 of this level, back in the frame.
            left, top = cols * PNET_STRIDE, rows * PNET_STRIDE
            windows = np.stack([left + 1, top + 1, left + PNET_CELL, top + PNET_CELL], axis=1) / scale
            windows = windows.astype(np.float32)
            boxes = _regress(windows, reg[rows, cols], inclusive=False)
            scores = prob[rows, cols]
            keep = _nms(boxes, scores, NMS_PNET_SCALE)
            per_scale.append(np.concatenate([boxes[keep], scores[keep, None]], axis=1))
        if not per_scale:
            return np.zeros((0, 4), dtype=np.float32)
        found = np.concatenate(per_scale)
        keep = _nms(found[:, :4], found[:, 4], NMS_PNET_ALL)[:MAX_RNET_CANDIDATES]
        return _square(found[keep, :4])

    def _stage_rnet(self, frame: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        out = _outputs_by_width(self.rnet.run(_crop_batch(frame, boxes, RNET_SIZE)))
        scores = out[2][:, 1]
        ok = scores > self.thresholds[1]
        if not ok.any():
            return np.zeros((0, 4), dtype=np.float32)
        refined = _regress(boxes[ok], out[4][ok])
        keep = _nms(refined, scores[ok], NMS_RNET)
        return _square(refined[keep])

    def _stage_onet(self, frame: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = _outputs_by_width(self.onet.run(_crop_batch(frame, boxes, ONET_SIZE)))
        scores = out[2][:, 1]
        ok = scores > self.thresholds[2]
        boxes, scores, offsets, marks = boxes[ok], scores[ok], out[4][ok], out[10][ok]
        # Landmarks come as five x then five y, fractions of the (inclusive) box O-Net was given; the
        # trailing -1 is the reference code's, from MATLAB's 1-based pixels.
        w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        xs = boxes[:, 0:1] + marks[:, 0:5] * w - 1
        ys = boxes[:, 1:2] + marks[:, 5:10] * h - 1
        landmarks = np.stack([xs, ys], axis=-1)
        refined = _regress(boxes, offsets)
        keep = _nms(refined, scores, NMS_ONET, mode="min")
        return refined[keep], scores[keep], landmarks[keep]


def _to_face_keypoints(landmarks: np.ndarray) -> np.ndarray:
    """MTCNN's five points (image-left eye, image-right eye, nose, image-left and image-right mouth
    corner) into the six-point Face layout, ordered by the subject's side."""
    kps = np.zeros((NUM_KEYPOINTS, 2), dtype=np.float32)
    kps[KP_RIGHT_EYE] = landmarks[0]
    kps[KP_LEFT_EYE] = landmarks[1]
    kps[KP_NOSE] = landmarks[2]
    kps[KP_MOUTH] = (landmarks[3] + landmarks[4]) / 2
    kps[KP_RIGHT_EAR], kps[KP_LEFT_EAR] = estimate_ears(kps[KP_RIGHT_EYE], kps[KP_LEFT_EYE])
    return kps


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise ImageError(
            f"MTCNN needs an RGB image of shape HxWx3, got {type(image).__name__} of shape {shape}"
        )
    if image.dtype != np.uint8:
        raise ImageError(f"MTCNN needs a uint8 image, got {image.dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"MTCNN got an empty image of shape {image.shape}")
