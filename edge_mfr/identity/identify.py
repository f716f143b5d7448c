"""Gallery + classifier + mask status: from embedded faces to named (or unknown) people.

One object per loaded gallery; the CLI, the stream loop and the evaluator share it so a face is judged
the same way everywhere.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_mfr.errors import GalleryError
from edge_mfr.identity.classifier import Decision, IdentityClassifier, Thresholds, collapsed
from edge_mfr.identity.fusion import Fusion, load_fusion
from edge_mfr.identity.gallery import Gallery
from edge_mfr.identity.svm import cache_path as svm_cache_path
from edge_mfr.vision.mask_status import MaskStatusClassifier
from edge_mfr.vision.pipeline import AnalyzedFace

# (faces, judged masked, run the extra embedders) -> embedder name -> rows: FacePipeline.embed_for_identity
# bound to the frame the faces came from.
EmbedForIdentity = Callable[[list[AnalyzedFace], np.ndarray, np.ndarray], dict[str, np.ndarray]]


def needs_extras(classifier: IdentityClassifier, primary: np.ndarray, masked: np.ndarray,
                 in_zone: np.ndarray | None = None) -> np.ndarray:
    """(n,) True for faces the extra embedders could decide differently (the cascade of issue 11).

    Faces judged masked always; a bare face only when the primary's own score is neither a clear accept
    (at or above the fusion's ``accept`` bound, ahead of the runner-up by the margin) nor a clear reject
    (below ``reject``). One embedder: never. A fusion without cascade bounds: always. ``in_zone`` (n,):
    faces outside the camera's door zone never open the door, so they are left to the primary, whose
    decision the classifier then holds to the primary's own stranger-safe threshold.
    """
    masked = np.asarray(masked, dtype=bool)
    fusion = classifier.fusion
    if len(fusion.embedders) == 1 or not len(classifier):
        return np.zeros(len(masked), bool)
    zone = (np.ones(len(masked), bool) if in_zone is None or fusion.primary_thresholds() is None
            else np.asarray(in_zone, dtype=bool).reshape(len(masked)))
    if fusion.cascade is None:
        return zone
    sims = classifier.primary_similarity(primary, masked)
    top = np.sort(sims, axis=1)
    best = top[:, -1]
    lead = best - top[:, -2] if top.shape[1] > 1 else np.full(len(best), 1.0)
    clear_accept = (best >= fusion.cascade["accept"]) & (lead >= classifier.thresholds.margin)
    clear_reject = best < fusion.cascade["reject"]
    return zone & (masked | ~(clear_accept | clear_reject))


@dataclass(frozen=True)
class Identification:
    decision: Decision
    name: str | None  # display name when accepted
    masked: bool
    mask_probability_margin: float  # signed SVM decision value; >0 means masked
    allowed: bool  # accepted and allowed through the door


class Identifier:
    def __init__(self, gallery: Gallery, mask_status: MaskStatusClassifier, thresholds: Thresholds | None = None,
                 svm_cache: Path | None = None, out_of_process: bool = False, fusion: Fusion | None = None):
        """``fusion``: how the embedders' scores combine (None: the gallery's primary embedder alone);
        ``thresholds`` None: the fusion's calibrated operating point, or Thresholds() for one embedder.
        """
        self.gallery = gallery
        self.mask_status = mask_status
        x, labels, metas = gallery.matrix()
        if thresholds is None and fusion is not None and fusion.thresholds is not None:
            thresholds = Thresholds(**fusion.thresholds)
        lowest = collapsed(x)
        if lowest is not None:
            raise GalleryError(f"gallery: all {len(x)} templates are the same face to the "
                               f"embedder (cosine >= {lowest:.3f} to their mean): it was enrolled with a broken "
                               "model/runtime; re-enroll on a device whose `edge-mfr doctor` passes")
        self.classifier = IdentityClassifier(thresholds)
        if fusion is not None and len(fusion.embedders) > 1:
            self.classifier.fusion = fusion  # also for an empty gallery: the cascade reads it
        if len(x):
            rows = {fusion.embedders[0]: x, **gallery.extra_matrices()} if fusion else {"embedding": x}
            self.classifier.fit(rows, labels, np.array([m.synthetic for m in metas], dtype=bool), svm_cache=svm_cache,
                                out_of_process=out_of_process, fusion=fusion)
        self._people = {p.person_id: p for p in gallery.people}

    @classmethod
    def from_files(cls, gallery_path: Path, embedders: str | list[tuple[str, str]], models_dir: Path | None = None,
                   thresholds: Thresholds | None = None, out_of_process: bool = False) -> Identifier:
        """Load the gallery, mask model and fusion; the SVM weights come from (or refresh) ``<gallery>.svm.npz``.

        ``embedders``: (name, sha256) of every embedder, primary first (FacePipeline.embedder_ids), or the
        primary's sha256 alone. A gallery made for another set is refused with what to do about it.
        """
        ids = [("embedding", embedders)] if isinstance(embedders, str) else list(embedders)
        primary_sha = ids[0][1]
        gallery = Gallery.load(gallery_path, primary_sha, with_crops=False, extra_models=ids[1:])
        fusion = load_fusion(ids, models_dir) if len(ids) > 1 else None
        try:
            return cls(gallery, MaskStatusClassifier.load(models_dir, primary_sha), thresholds,
                       svm_cache=svm_cache_path(gallery_path), out_of_process=out_of_process, fusion=fusion)
        except GalleryError as exc:
            raise GalleryError(f"{gallery_path}: {str(exc).removeprefix('gallery: ')}") from None

    def without(self, person_ids: Iterable[str]) -> Identifier:
        """A copy that no longer knows these people (a fleet revoke, before the full reload; see
        IdentityClassifier.without). The gallery in it is a copy without them too."""
        ids = set(person_ids)
        out = copy.copy(self)
        out.gallery = self.gallery.without(ids)
        out.classifier = self.classifier.without(ids)
        out._people = {pid: p for pid, p in self._people.items() if pid not in ids}
        return out

    def identify(self, faces: list[AnalyzedFace], embed: EmbedForIdentity | None = None,
                 in_zone: Sequence[bool] | None = None) -> list[Identification]:
        """Mask status from the primary embedding, then the embeddings that identify each face from ``embed``
        (FacePipeline.embed_for_identity on the frame: masked faces re-aligned on eyes and nose, the extra
        embedders only where the cascade needs them, never for faces outside the door zone: ``in_zone``).
        Without ``embed`` the primary embeddings decide alone.
        """
        if not faces:
            return []
        embeddings = np.stack([f.embedding for f in faces])
        from edge_mfr.vision.mask_status import features

        mask_values = self.mask_status.decision(features(embeddings, [f.crop for f in faces]))
        masked = mask_values > 0
        primary = self.classifier.fusion.embedders[0]
        if embed is None:
            e = {name: np.full((len(faces), 1), np.nan, np.float32) for name in self.classifier.fusion.embedders}
            e[primary] = embeddings
        else:
            e = embed(faces, masked, needs_extras(self.classifier, embeddings, masked,
                                                  None if in_zone is None else np.asarray(in_zone, bool)))
        out = []
        for d, m, v in zip(self.classifier.decide(e, masked), masked, mask_values, strict=True):
            person = self._people.get(d.person_id) if d.person_id else None
            out.append(Identification(d, person.name if person else None, bool(m), float(v),
                                      bool(person is not None and person.allowed)))
        return out
