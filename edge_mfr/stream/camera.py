"""Camera construction from the config: which backend, with which of its options (size, fps, lores stream).

Kept beside the sources so the appliance and `edge-mfr doctor` build the same camera without importing each other.
"""

from __future__ import annotations

from typing import Any

from edge_mfr.stream.sources import make_source
from edge_mfr.vision.samples import sample_image


def make_camera(camera: Any, spec: str | None = None) -> Any:
    """The raw frame source the config (or ``spec``) names, with the options its backend takes."""
    spec = spec or camera.source
    if spec == "picamera2" or spec.startswith("picamera2:"):
        return make_source(spec, size=(camera.width, camera.height),
                           lores_size=(camera.lores_width, camera.lores_height), fps=camera.fps)
    if spec.startswith("/dev/") or spec.isdigit() or "://" in spec:
        return make_source(spec, width=camera.width, height=camera.height, fps=camera.fps)
    if spec == "synthetic":
        face = sample_image()[0:300, 100:340].copy()
        return make_source(spec, faces=face, size=(camera.width, camera.height), fps=camera.fps, loop=True)
    return make_source(spec)
