"""One object that turns an image into detected, aligned and embedded faces.

It owns the models (loaded once) and is what the CLI, enrollment, the evaluator and the stream
recognizer all call, so every path sees the same detector settings, alignment and preprocessing.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_mfr.vision.align import MESH_MASKED_TEMPLATES, align_face, align_on_mesh
from edge_mfr.vision.detector import BlazeFaceDetector, Detector
from edge_mfr.vision.embedder import DEFAULT_EMBEDDERS, Embedder
from edge_mfr.vision.faces import detect_faces
from edge_mfr.vision.landmarks import FaceLandmarker, corner_points
from edge_mfr.vision.types import Face

DETECTORS = ("blazeface", "blazeface-full", "mtcnn")
# A mesh whose face presence is below this is not trusted for alignment (BlazeFace's points are used).
MESH_MIN_PRESENCE = 0.5


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
    """Detector + aligner + embedders, loaded once.

    ``embedders``: model file names, the primary (FaceNet: mask status and enrollment checks run on it)
    first; None means embedder.DEFAULT_EMBEDDERS. The others are run only when asked (embed_for_identity,
    enrollment), because clear bare faces are decided on the primary alone. When an extra embedder's
    template has a mesh fit (align.MESH_MASKED_TEMPLATES), the face mesh model is loaded too: masked faces
    going to that embedder are aligned on the mesh.
    """

    def __init__(self, detector: str | Detector = "blazeface", num_threads: int = 1,
                 models_dir: Path | None = None, embed: bool = True, embedders: Sequence[str] | None = None):
        self.detector = (make_detector(detector, num_threads, models_dir) if isinstance(detector, str)
                         else detector)
        self.embedder: Embedder | None = None
        self.extra_embedders: list[Embedder] = []
        if embed:
            names = list(embedders or DEFAULT_EMBEDDERS)
            self.embedder = Embedder(num_threads=num_threads, models_dir=models_dir, name=names[0])
            self.extra_embedders = [Embedder(num_threads=num_threads, models_dir=models_dir, name=n)
                                    for n in names[1:]]
        self.landmarker: FaceLandmarker | None = None
        if any(e.template in MESH_MASKED_TEMPLATES for e in self.extra_embedders):
            self.landmarker = FaceLandmarker(models_dir=models_dir, num_threads=num_threads)
        self.times = StageTimes()

    @property
    def embedders(self) -> list[Embedder]:
        """Every loaded embedder, primary first."""
        return ([self.embedder] if self.embedder is not None else []) + self.extra_embedders

    @property
    def embedder_ids(self) -> list[tuple[str, str]]:
        """(model file name, sha256) of every embedder, primary first: what a gallery and a fusion are tied to."""
        return [(e.name, e.model_sha256) for e in self.embedders]

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

    def embed_for_identity(self, image: np.ndarray, faces: Sequence[AnalyzedFace], masked: Sequence[bool],
                           extra: Sequence[bool] | None = None) -> dict[str, np.ndarray]:
        """Embedder name -> (n, dim) embeddings that identify ``faces`` of ``image``: the one rule for every caller.

        A face judged ``masked`` is re-embedded from its eyes-and-nose alignment (align.MASKED_ALIGN_POINTS),
        by every embedder, or from the face mesh's eye corners, bridge and tip for templates that have a mesh
        fit (align.MESH_MASKED_TEMPLATES; one mesh per face, BlazeFace's points when the mesh is not
        trusted); a bare face keeps the primary embedding it already has. The extra embedders run only on
        faces flagged in ``extra`` (default: all); other faces get NaN rows there. Each template is aligned
        once per face and shared by the embedders that use it.
        """
        if self.embedder is None:
            raise RuntimeError("this FacePipeline was built with embed=False")
        n = len(faces)
        masked_a = np.asarray(masked, dtype=bool).reshape(n)
        extra_a = np.ones(n, bool) if extra is None else np.asarray(extra, dtype=bool).reshape(n)
        t0 = time.perf_counter()
        self.times.extra["mesh_ms"] = 0.0
        out: dict[str, np.ndarray] = {}
        crops: dict[tuple[str, bool, int], np.ndarray] = {}
        meshes: dict[int, np.ndarray | None] = {}

        def mesh_points(i: int) -> np.ndarray | None:
            if i not in meshes:
                assert self.landmarker is not None
                t = time.perf_counter()
                mesh = self.landmarker.mesh(image, faces[i].face)
                meshes[i] = corner_points(mesh.points) if mesh.presence >= MESH_MIN_PRESENCE else None
                self.times.extra["mesh_ms"] += (time.perf_counter() - t) * 1000
            return meshes[i]

        def crop(template: str, i: int) -> np.ndarray:
            key = (template, bool(masked_a[i]), i)
            if key not in crops:
                points = (mesh_points(i) if masked_a[i] and self.landmarker is not None
                          and template in MESH_MASKED_TEMPLATES else None)
                crops[key] = (align_on_mesh(image, points, template) if points is not None
                              else align_face(image, faces[i].face, masked=bool(masked_a[i]), template=template))
            return crops[key]

        primary = np.stack([f.embedding for f in faces]) if n else np.zeros((0, self.embedder.dim), np.float32)
        primary = primary.astype(np.float32, copy=True)
        idx = np.flatnonzero(masked_a)
        if len(idx):
            primary[idx] = self.embedder.embed(np.stack([crop(self.embedder.template, i) for i in idx]))
        out[self.embedder.name] = primary
        for emb in self.extra_embedders:
            rows = np.full((n, emb.dim), np.nan, np.float32)
            idx = np.flatnonzero(extra_a)
            t = time.perf_counter()
            if len(idx):
                rows[idx] = emb.embed(np.stack([crop(emb.template, i) for i in idx]))
            self.times.extra[emb.name] = (time.perf_counter() - t) * 1000
            out[emb.name] = rows
        self.times.extra["identity_ms"] = (time.perf_counter() - t0) * 1000
        return out

    def analyze(self, image: np.ndarray, crop_kind: str = "auto") -> list[AnalyzedFace]:
        return self.analyze_faces(image, self.detect(image, crop_kind=crop_kind))
