"""Drawing faces, names and scores onto frames; shared by `recognize --annotate` and the kiosk view."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge_mfr.vision.types import Face

GREEN = (40, 200, 80)
RED = (230, 60, 50)
AMBER = (245, 170, 30)
WHITE = (255, 255, 255)


@dataclass(frozen=True)
class Label:
    """What to write next to a face box; colour says accepted (green), unknown (red) or unsure (amber)."""

    text: str
    color: tuple[int, int, int] = AMBER


def draw_faces(image: np.ndarray, faces: list[Face], labels: list[Label | None] | None = None,
               keypoints: bool = True) -> np.ndarray:
    """A copy of ``image`` (RGB) with boxes, keypoints and labels drawn on it."""
    out = image.copy()
    thickness = max(1, round(max(image.shape[:2]) / 400))
    font_scale = max(0.4, max(image.shape[:2]) / 1200)
    labels = labels or [None] * len(faces)
    for face, label in zip(faces, labels, strict=True):
        color = label.color if label else AMBER
        x1, y1, x2, y2 = (int(round(v)) for v in face.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        if keypoints:
            for x, y in face.keypoints:
                if np.isfinite(x) and np.isfinite(y):
                    cv2.circle(out, (int(round(x)), int(round(y))), thickness + 1, color, -1, cv2.LINE_AA)
        text = label.text if label else f"face {face.score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        ty = max(y1, th + base + 2)
        cv2.rectangle(out, (x1, ty - th - base - 2), (x1 + tw + 4, ty), color, -1)
        cv2.putText(out, text, (x1 + 2, ty - base), cv2.FONT_HERSHEY_SIMPLEX, font_scale, WHITE, thickness,
                    cv2.LINE_AA)
    return out
