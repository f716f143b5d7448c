"""A synthetic door scene: a face photo pasted into a plain background along a scripted approach.

For the demo, tests and `edge-mfr run --source synthetic`: a camera that needs no camera.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from edge_mfr.stream.frames import Frame, SourceError, _Base


@dataclass(frozen=True)
class Placement:
    """Where frame ``i`` shows a face: top-left corner (x, y) in frame pixels, scale of the face image,
    and which of the given face images to paste."""

    x: float
    y: float
    scale: float = 1.0
    image: int = 0


def approach_script(size: tuple[int, int], face_shape: tuple[int, int], frames: int = 60,
                    empty_before: int = 3, empty_after: int = 3) -> list[Placement | None]:
    """A person walking up to the door: enters from the left, moves to the centre while growing from
    0.6x to 1.0x, then leaves; a few empty frames on both ends."""
    w, h = size
    fh, fw = face_shape
    out: list[Placement | None] = [None] * empty_before
    n = max(frames - empty_before - empty_after, 1)
    for i in range(n):
        t = i / max(n - 1, 1)  # 0..1 over the visible part
        scale = 0.6 + 0.4 * min(1.0, t / 0.5)  # grows while walking up
        if t < 0.5:
            x_centre = w * (0.25 + 0.25 * t / 0.5)  # walks to the centre
        elif t < 0.8:
            x_centre = w * 0.5  # stands at the door
        else:
            x_centre = w * (0.5 + 0.25 * (t - 0.8) / 0.2)  # walks off to the right
        out.append(Placement(x_centre - fw * scale / 2, h * 0.5 - fh * scale / 2, scale))
    out += [None] * empty_after
    return out


class SyntheticSource(_Base):
    """A deterministic scripted scene: face images pasted over a background at scripted places.

    ``faces``: one RGB image or a list (a ``Placement.image`` picks one). ``script``: one entry per frame,
    a :class:`Placement`, a list of them (several faces) or ``None`` (empty frame); by default
    :func:`approach_script`. The background is a fixed image or a seeded gradient + noise of ``size``
    (width, height). The same arguments always give the same frames, so tests and the demo are
    reproducible; :meth:`boxes` tells where each face was pasted.
    """

    def __init__(self, faces: np.ndarray | Sequence[np.ndarray], script: Sequence[Any] | None = None,
                 size: tuple[int, int] = (640, 480), background: np.ndarray | None = None,
                 fps: float = 15.0, loop: bool = False, seed: int = 0, name: str = "synthetic"):
        face_list = [faces] if isinstance(faces, np.ndarray) else list(faces)
        if not face_list:
            raise SourceError("synthetic source: no face image given")
        for img in face_list:
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise SourceError(f"synthetic source: face images must be RGB uint8 HxWx3, "
                                  f"got {img.shape} {img.dtype}")
        self.faces = face_list
        if background is not None:
            self.background = np.ascontiguousarray(background)
            self.size = (background.shape[1], background.shape[0])
        else:
            self.size = size
            self.background = _background(size, seed)
        self.script: list[list[Placement]] = [
            [] if s is None else ([s] if isinstance(s, Placement) else list(s))
            for s in (script if script is not None else approach_script(self.size, face_list[0].shape[:2]))
        ]
        if not self.script:
            raise SourceError("synthetic source: the script has no frames")
        self.fps = fps
        self.loop = loop
        self.name = name
        self._index = 0

    def open(self) -> None:
        self._index = 0

    def render(self, i: int) -> np.ndarray:
        """Frame ``i`` of the script (modulo its length)."""
        frame = self.background.copy()
        for p in self.script[i % len(self.script)]:
            face = self.faces[p.image]
            fh, fw = face.shape[:2]
            nw, nh = max(1, round(fw * p.scale)), max(1, round(fh * p.scale))
            if (nw, nh) != (fw, fh):
                interp = cv2.INTER_AREA if p.scale < 1 else cv2.INTER_LINEAR
                face = cv2.resize(face, (nw, nh), interpolation=interp)
            _paste(frame, face, round(p.x), round(p.y))
        return frame

    def boxes(self, i: int) -> list[np.ndarray]:
        """Pasted face-image rectangles (x1, y1, x2, y2) of frame ``i``, clipped to the frame."""
        w, h = self.size
        out = []
        for p in self.script[i % len(self.script)]:
            fh, fw = self.faces[p.image].shape[:2]
            box = np.array([p.x, p.y, p.x + fw * p.scale, p.y + fh * p.scale], dtype=np.float32)
            out.append(np.clip(box, 0, [w, h, w, h]))
        return out

    def read(self) -> Frame | None:
        if self._index >= len(self.script) and not self.loop:
            return None
        frame = Frame(self.render(self._index), self._index, self._index / self.fps)
        self._index += 1
        return frame

    def close(self) -> None:
        pass

    def __len__(self) -> int:
        return len(self.script)


def _background(size: tuple[int, int], seed: int) -> np.ndarray:
    w, h = size
    rng = np.random.default_rng(seed)
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([60 + 80 * gx / max(w, 1), 70 + 60 * gy / max(h, 1),
                     90 + 40 * (gx + gy) / max(w + h, 1)], -1)
    noise = rng.normal(0, 6, (h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _paste(dst: np.ndarray, src: np.ndarray, x: int, y: int) -> None:
    h, w = dst.shape[:2]
    sh, sw = src.shape[:2]
    x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + sw, w), min(y + sh, h)
    if x1 >= x2 or y1 >= y2:
        return
    dst[y1:y2, x1:x2] = src[y1 - y : y2 - y, x1 - x : x2 - x]
