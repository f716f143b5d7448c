"""Gallery + classifier + mask status: from embedded faces to named (or unknown) people.

One object per loaded gallery; the CLI, the stream loop and the evaluator share it so a face is judged
the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_mfr.errors import GalleryError
from edge_mfr.identity.classifier import Decision, IdentityClassifier, Thresholds, collapsed
from edge_mfr.identity.gallery import Gallery
from edge_mfr.identity.svm import cache_path as svm_cache_path
from edge_mfr.vision.mask_status import MaskStatusClassifier
from edge_mfr.vision.pipeline import AnalyzedFace


@dataclass(frozen=True)
class Identification:
    decision: Decision
    name: str | None  # display name when accepted
    masked: bool
    mask_probability_margin: float  # signed SVM decision value; >0 means masked
    allowed: bool  # accepted and allowed through the door


class Identifier:
    def __init__(self, gallery: Gallery, mask_status: MaskStatusClassifier, thresholds: Thresholds | None = None,
                 svm_cache: Path | None = None, out_of_process: bool = False):
        self.gallery = gallery
        self.mask_status = mask_status
        x, labels, metas = gallery.matrix()
        lowest = collapsed(x)
        if lowest is not None:
            raise GalleryError(f"gallery: all {len(x)} templates are the same face to the "
                               f"embedder (cosine >= {lowest:.3f} to their mean): it was enrolled with a broken "
                               "model/runtime; re-enroll on a device whose `edge-mfr doctor` passes")
        self.classifier = IdentityClassifier(thresholds)
        if len(x):
            self.classifier.fit(x, labels, np.array([m.synthetic for m in metas], dtype=bool), svm_cache=svm_cache,
                                out_of_process=out_of_process)
        self._people = {p.person_id: p for p in gallery.people}

    @classmethod
    def from_files(cls, gallery_path: Path, embedder_sha256: str, models_dir: Path | None = None,
                   thresholds: Thresholds | None = None, out_of_process: bool = False) -> Identifier:
        """Load the gallery and mask model; the SVM weights come from (or refresh) ``<gallery>.svm.npz``."""
        gallery = Gallery.load(gallery_path, embedder_sha256, with_crops=False)
        try:
            return cls(gallery, MaskStatusClassifier.load(models_dir, embedder_sha256), thresholds,
                       svm_cache=svm_cache_path(gallery_path), out_of_process=out_of_process)
        except GalleryError as exc:
            raise GalleryError(f"{gallery_path}: {str(exc).removeprefix('gallery: ')}") from None

    def identify(self, faces: list[AnalyzedFace],
                 embed_masked: Callable[[list[AnalyzedFace]], np.ndarray] | None = None) -> list[Identification]:
        """Mask status from the usual embedding; faces judged masked are then matched by the embedding
        of their eyes-and-nose aligned crop when ``embed_masked`` (FacePipeline.masked_embeddings on the frame)
        is given.
        """
        if not faces:
            return []
        embeddings = np.stack([f.embedding for f in faces])
        from edge_mfr.vision.mask_status import features

        mask_values = self.mask_status.decision(features(embeddings, [f.crop for f in faces]))
        masked = mask_values > 0
        if embed_masked is not None and masked.any():
            idx = np.flatnonzero(masked)
            embeddings = embeddings.copy()
            embeddings[idx] = embed_masked([faces[i] for i in idx])
        out = []
        for d, m, v in zip(self.classifier.decide(embeddings, masked), masked, mask_values, strict=True):
            person = self._people.get(d.person_id) if d.person_id else None
            out.append(Identification(d, person.name if person else None, bool(m), float(v),
                                      bool(person is not None and person.allowed)))
        return out
