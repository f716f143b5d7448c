"""One object that turns an image into detected, aligned and embedded faces.

It owns the models (loaded once) and is what the CLI, enrollment, the evaluator and the stream
recognizer all call, so every path sees the same detector settings, alignment and preprocessing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_mfr.vision.align import align_face
from edge_mfr.vision.detector import BlazeFaceDetector, Detector
from edge_mfr.vision.embedder import Embedder
from edge_mfr.vision.faces import detect_faces
from edge_mfr.vision.types import Face

DETECTORS = ("blazeface", "blazeface-full", "mtcnn")


def make_detector(name: str = "blazeface", num_threads: int = 1, models_dir: Path | None = None,
                  min_score: float | None = None) -> Detector:
    """Build a detector by its CLI/config name."""
    if name == "blazeface":
        return BlazeFaceDetector("short", num_threads=num_threads, models_dir=models_dir, min_score=min_score)
    if name == "blazeface-full":
        return BlazeFaceDetector("full", num_threads=num_threads, models_dir=models_dir, min_score=min_score)
    if name == "mtcnn":
        from edge_mfr.vision.mtcnn import MTCNNDetector

        return MTCNNDetector(num_threads=num_threads, models_dir=models_dir)
    raise ValueError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")


@dataclass
class AnalyzedFace:
    face: Face
    crop: np.ndarray
    embedding: np.ndarray | None = None


@dataclass
class StageTimes:
    """Wall time per stage of the last call, in milliseconds."""

    detect_ms: float = 0.0
    align_ms: float = 0.0
    embed_ms: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


class FacePipeline:
    """Detector + aligner + embedder, loaded once."""

    def __init__(self, detector: str | Detector = "blazeface", num_threads: int = 1,
                 models_dir: Path | None = None, embed: bool = True):
        self.detector = (make_detector(detector, num_threads, models_dir) if isinstance(detector, str)
                         else detector)
        self.embedder = Embedder(num_threads=num_threads, models_dir=models_dir) if embed else None
        self.times = StageTimes()

    def detect(self, image: np.ndarray, crop_kind: str = "auto") -> list[Face]:
        t0 = time.perf_counter()
        faces = detect_faces(self.detector, image, crop_kind=crop_kind)
        self.times.detect_ms = (time.perf_counter() - t0) * 1000
        return faces

    def analyze_faces(self, image: np.ndarray, faces: list[Face]) -> list[AnalyzedFace]:
        """Align and (when an embedder is loaded) embed the given faces of ``image`` in one batch."""
        t0 = time.perf_counter()
        crops = [align_face(image, f) for f in faces]
        t1 = time.perf_counter()
        embeddings: list[np.ndarray | None] = [None] * len(crops)
        if self.embedder is not None and crops:
            embeddings = list(self.embedder.embed(np.stack(crops)))
        t2 = time.perf_counter()
        self.times.align_ms = (t1 - t0) * 1000
        self.times.embed_ms = (t2 - t1) * 1000
        return [AnalyzedFace(f, c, e) for f, c, e in zip(faces, crops, embeddings, strict=True)]

    def masked_embeddings(self, image: np.ndarray, faces: list[AnalyzedFace]) -> np.ndarray:
        """(n, dim) embeddings of eyes-and-nose aligned crops (align.MASKED_ALIGN_POINTS) of faces in ``image``.

        Only for faces already judged masked, so bare faces never pay for the second alignment.
        """
        if self.embedder is None:
            raise RuntimeError("this FacePipeline was built with embed=False")
        if not faces:
            return np.zeros((0, self.embedder.dim), np.float32)
        return self.embedder.embed(np.stack([align_face(image, f.face, masked=True) for f in faces]))

    def analyze(self, image: np.ndarray, crop_kind: str = "auto") -> list[AnalyzedFace]:
        return self.analyze_faces(image, self.detect(image, crop_kind=crop_kind))
