"""BlazeFace face detection: letterbox, TFLite invoke, anchor decoding, weighted NMS.

The anchor layouts follow MediaPipe's published SSD anchor options for the two BlazeFace models:
short range (128x128 input, strides 8/16/16/16, two anchors per cell per layer: 896 anchors) for faces
within about 2 m, and full range (192x192, one stride-4 layer, one anchor per cell: 2304) for kiosk
distances. Each anchor regresses 16 values: box centre offset, box size and six keypoints, all in
input pixels relative to the anchor centre.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from edge_mfr.vision.runtime import TFLiteModel, load_model
from edge_mfr.vision.types import NUM_KEYPOINTS, Face


class Detector(Protocol):
    """Anything that finds faces in an RGB uint8 frame."""

    name: str

    def detect(self, image: np.ndarray) -> list[Face]: ...


@dataclass(frozen=True)
class AnchorLayout:
    input_size: int
    strides: tuple[int, ...]
    anchors_per_layer: int  # anchors per cell contributed by each layer


SHORT_RANGE = AnchorLayout(input_size=128, strides=(8, 16, 16, 16), anchors_per_layer=2)
FULL_RANGE = AnchorLayout(input_size=192, strides=(4,), anchors_per_layer=1)


def make_anchors(layout: AnchorLayout) -> np.ndarray:
    """Anchor centres (N, 2) in [0, 1]; consecutive layers with one stride share a grid, as in MediaPipe."""
    centres: list[np.ndarray] = []
    i = 0
    strides = layout.strides
    while i < len(strides):
        stride = strides[i]
        per_cell = 0
        while i < len(strides) and strides[i] == stride:
            per_cell += layout.anchors_per_layer
            i += 1
        cells = layout.input_size // stride
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 2)
        centres.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


def _iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def weighted_nms(
    boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou_threshold: float, max_faces: int
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe-style blending NMS: overlapping candidates are averaged, weighted by score.

    Averaging the cluster instead of keeping only its best member steadies boxes and keypoints from
    frame to frame, which the aligner and the tracker both benefit from.
    """
    order = np.argsort(-scores)
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    remaining = np.ones(len(scores), dtype=bool)
    out: list[tuple[np.ndarray, np.ndarray, float]] = []
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        ious = _iou_one_to_many(boxes[i], boxes)
        cluster = remaining & (ious > iou_threshold)
        cluster[i] = True
        w = scores[cluster][:, None]
        box = (boxes[cluster] * w).sum(0) / w.sum()
        kps = (keypoints[cluster] * w[:, :, None]).sum(0) / w.sum()
        out.append((box, kps, float(scores[i])))
        remaining &= ~cluster
        if len(out) >= max_faces:
            break
    return out


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float, float, float]:
    """Resize keeping the aspect ratio and pad to size x size; returns (img, scale, pad_x, pad_y)."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interp)
    pad_x, pad_y = (size - new_w) / 2, (size - new_h) / 2
    out = np.zeros((size, size, 3), dtype=np.uint8)
    top, left = int(pad_y), int(pad_x)
    out[top : top + new_h, left : left + new_w] = resized
    return out, scale, float(left), float(top)


class BlazeFaceDetector:
    """BlazeFace short- or full-range on the TFLite runtime.

    ``min_score`` of 0.5 is MediaPipe's default for the short-range model; ``min_face`` drops faces
    whose box is smaller than that many frame pixels (too small to recognise anyway).
    """

    def __init__(
        self,
        variant: str = "short",
        num_threads: int = 1,
        min_score: float | None = None,
        iou_threshold: float = 0.3,
        max_faces: int = 20,
        min_face: float = 0.0,
        models_dir: Path | None = None,
    ):
        if variant not in ("short", "full"):
            raise ValueError(f"BlazeFace variant must be 'short' or 'full', not {variant!r}")
        self.variant = variant
        self.name = f"blazeface_{variant}"
        role = "detector" if variant == "short" else "detector_full_range"
        self.model: TFLiteModel = load_model(role, num_threads=num_threads, models_dir=models_dir)
        self.layout = SHORT_RANGE if variant == "short" else FULL_RANGE
        self.anchors = make_anchors(self.layout)
        n_out = int(self.model.spec.outputs[0]["shape"][1])
        if n_out != len(self.anchors):
            raise ValueError(f"{self.model.path}: {n_out} outputs but {len(self.anchors)} anchors")
        default_score = float(self.model.spec.extra.get("score_threshold", 0.5))
        self.min_score = default_score if min_score is None else min_score
        self.iou_threshold = iou_threshold
        self.max_faces = max_faces
        self.min_face = min_face

    def detect(self, image: np.ndarray, min_score: float | None = None) -> list[Face]:
        """Faces in an RGB frame, strongest first; ``min_score`` overrides the threshold for this call."""
        size = self.layout.input_size
        boxed, scale, pad_x, pad_y = letterbox(image, size)
        x = (boxed.astype(np.float32) - 127.5) / 127.5
        regressors, logits = self.model.run(x[None])
        regressors, logits = regressors[0], logits[0, :, 0]
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -80.0, 80.0)))
        keep = scores >= (self.min_score if min_score is None else min_score)
        if not keep.any():
            return []
        raw, anchors, scores = regressors[keep], self.anchors[keep], scores[keep]
        # Decode into letterboxed input pixels.
        centre = raw[:, 0:2] + anchors * size
        half = raw[:, 2:4] / 2
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        kps = raw[:, 4 : 4 + 2 * NUM_KEYPOINTS].reshape(-1, NUM_KEYPOINTS, 2) + anchors[:, None, :] * size
        faces: list[Face] = []
        h, w = image.shape[:2]
        offset = np.array([pad_x, pad_y], dtype=np.float32)
        for box, kp, score in weighted_nms(boxes, kps, scores, self.iou_threshold, self.max_faces):
            box_px = np.concatenate([(box[:2] - offset) / scale, (box[2:] - offset) / scale])
            box_px = np.clip(box_px, 0, [w, h, w, h]).astype(np.float32)
            if min(box_px[2] - box_px[0], box_px[3] - box_px[1]) < max(self.min_face, 1.0):
                continue
            kp_px = ((kp - offset) / scale).astype(np.float32)
            faces.append(Face(box=box_px, score=score, keypoints=kp_px))
        return faces
