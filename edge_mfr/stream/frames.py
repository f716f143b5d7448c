"""What every frame source shares: the Frame it hands out, the FrameSource protocol, the errors, the base class.

Apart from the backends so that the synthetic scene and the resilient wrapper can build on it while
:mod:`edge_mfr.stream.sources` (the backends and the factory) imports them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

import numpy as np

from edge_mfr.errors import EdgeMfrError
from edge_mfr.vision.types import Face


class SourceError(EdgeMfrError, RuntimeError):
    """A frame source cannot be used: bad spec, missing backend, corrupt file."""


class SourceUnavailable(SourceError):
    """A live source is (for now) gone: camera unplugged, stream dropped. Worth retrying."""


class CameraImportError(SourceError):
    """The camera library is installed but cannot be imported (not a cable problem: a software one)."""


@dataclass(frozen=True, eq=False)
class Frame:
    """One frame. ``image`` is RGB uint8 HxWx3; ``timestamp`` is seconds (stream time for files and
    scripted sources, ``time.monotonic()`` for live ones); ``lores`` is an optional smaller RGB copy of
    the same field of view, made by the camera's ISP for free, for the detector to run on.
    """

    image: np.ndarray
    index: int
    timestamp: float
    lores: np.ndarray | None = None

    def detection_view(self) -> tuple[np.ndarray, float, float]:
        """(image to detect on, sx, sy): multiply lores x by ``sx`` and y by ``sy`` to get main pixels.

        The lores stream shows the same field of view as the main one, only scaled, so the mapping is a
        per-axis scale (the two factors differ only when the aspect ratios differ).
        """
        if self.lores is None:
            return self.image, 1.0, 1.0
        h, w = self.image.shape[:2]
        lh, lw = self.lores.shape[:2]
        return self.lores, w / lw, h / lh


def scale_faces(faces: Sequence[Face], sx: float, sy: float) -> list[Face]:
    """Faces found on a lores image mapped into main-image pixels (see :meth:`Frame.detection_view`)."""
    if sx == 1.0 and sy == 1.0:
        return list(faces)
    box_scale = np.array([sx, sy, sx, sy], dtype=np.float32)
    kp_scale = np.array([sx, sy], dtype=np.float32)
    return [replace(f, box=(f.box * box_scale).astype(np.float32),
                    keypoints=(f.keypoints * kp_scale).astype(np.float32)) for f in faces]


@runtime_checkable
class FrameSource(Protocol):
    """What the appliance reads frames from. ``live`` sources can drop out and come back."""

    name: str
    live: bool

    def open(self) -> None: ...

    def read(self) -> Frame | None: ...

    def close(self) -> None: ...

    def __enter__(self) -> FrameSource: ...

    def __exit__(self, *exc: object) -> None: ...


class _Base:
    """Context-manager plumbing shared by the backends."""

    name = "source"
    live = False

    def open(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self):
        """Frames until the end of a finite source (opening it first if needed)."""
        while (frame := self.read()) is not None:  # type: ignore[attr-defined]
            yield frame

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
