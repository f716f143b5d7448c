"""Several embedders' scores made into one, so the classifier, its thresholds and the SVM see a single number.

Each embedder's person score (the classifier's rule: top-k real templates for bare faces, the mean of all
templates for masked ones) is z-normalised by that embedder's *stranger* statistics for the face's route,
and the weighted mean of the z-scores is mapped back onto the first (primary, FaceNet) embedder's scale:
``fused = mean_0 + std_0 * sum(w_e * z_e) / sum(w_e)``. With one embedder this is the plain cosine, so a
FaceNet-only set needs no fusion file and keeps its thresholds' meaning; with several, a fused score reads
like a FaceNet similarity whose stranger tail is thinner.

The statistics and weights live in ``models/fusion.json`` with their provenance. They are fitted only on
faces outside the evaluation protocol (tools/fit_fusion.py: the mask_status faces, which belong to nobody,
against an enrolled gallery), so fusing never learns from a probe or a reported stranger.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_mfr.errors import ModelError

FUSION_NAME = "fusion.json"
FUSION_FORMAT = 1
KINDS = ("unmasked", "masked")
# Stranger-safe operating point: mean + Z sd of the stranger scores, at most 1 in 10,000 strangers above the
# threshold per enrolled person (the FaceNet-only defaults and tools/fit_fusion.py use the same rule).
Z = 4.57


@dataclass(frozen=True)
class Fusion:
    """z-score fusion over ``embedders`` (model file names, primary first)."""

    embedders: tuple[str, ...]
    stats: dict[str, dict[str, tuple[float, float]]]  # kind -> embedder -> (mean, std) of stranger scores
    weights: dict[str, float]
    sha256: dict[str, str] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    # Cascade bounds on the primary's own score for faces judged bare: at or above ``accept`` (with the
    # margin) or below ``reject`` the extra embedders cannot change the outcome and are not run. None: run
    # them on every face.
    cascade: dict[str, float] | None = None
    # The fused scores' operating point, calibrated with the statistics (tools/fit_fusion.py); None: Thresholds()
    thresholds: dict[str, float] | None = None

    def __post_init__(self) -> None:
        if not self.embedders:
            raise ValueError("a fusion needs at least one embedder")
        for kind in KINDS:
            for name in self.embedders:
                mean, std = self.stats[kind][name]
                if not np.isfinite(mean) or not std > 0:
                    raise ValueError(f"{name}: {kind} statistics must be finite with std > 0 (got {mean}, {std})")
        if any(not self.weights.get(n, 0) > 0 for n in self.embedders):
            raise ValueError("every embedder of a fusion needs a positive weight")

    @classmethod
    def identity(cls, name: str) -> Fusion:
        """One embedder: the fused score is its own score."""
        return cls((name,), {k: {name: (0.0, 1.0)} for k in KINDS}, {name: 1.0})

    def primary_thresholds(self) -> dict[str, float] | None:
        """Kind -> the primary embedder's own stranger-safe threshold (mean + z sd of its stranger scores),
        for faces scored by the primary alone; None with one embedder (its thresholds are the fused ones)."""
        if len(self.embedders) == 1:
            return None
        z = float(self.provenance.get("z", Z))
        return {kind: float(m + z * s) for kind, (m, s) in ((k, self.stats[k][self.embedders[0]]) for k in KINDS)}

    def fuse(self, scores: Mapping[str, np.ndarray], masked: np.ndarray | Sequence[bool]) -> np.ndarray:
        """(n, people) fused scores from each embedder's (n, people) scores; ``masked`` (n,) picks the statistics."""
        first = np.asarray(scores[self.embedders[0]], dtype=np.float32)
        if len(self.embedders) == 1:
            return first
        masked = np.broadcast_to(np.asarray(masked, dtype=bool), (first.shape[0],))[:, None]
        total = np.zeros_like(first, dtype=np.float64)
        for name in self.embedders:
            z = [(np.asarray(scores[name], np.float64) - m) / s for m, s in
                 (self.stats[kind][name] for kind in KINDS)]
            total += self.weights[name] * np.where(masked, z[1], z[0])
        total /= sum(self.weights[n] for n in self.embedders)
        base = [self.stats[kind][self.embedders[0]] for kind in KINDS]
        mean = np.where(masked, base[1][0], base[0][0])
        std = np.where(masked, base[1][1], base[0][1])
        return (mean + std * total).astype(np.float32)

    def to_json(self) -> dict[str, Any]:
        return {"format": FUSION_FORMAT, "embedders": list(self.embedders), "sha256": self.sha256,
                "weights": self.weights,
                "stats": {k: {n: {"mean": m, "std": s} for n, (m, s) in v.items()} for k, v in self.stats.items()},
                "cascade": self.cascade, "thresholds": self.thresholds, "provenance": self.provenance}

    def save(self, path: Path) -> None:
        """Atomic write (a reader never sees half a file)."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(self.to_json(), fh, indent=2)
                fh.write("\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path, embedders: Sequence[tuple[str, str]]) -> Fusion:
        """The fusion for exactly ``embedders`` ((file name, sha256), primary first); ModelError otherwise."""
        names = tuple(n for n, _ in embedders)
        if len(names) == 1:
            return cls.identity(names[0])
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise ModelError(f"{path}: no fusion statistics for embedders {', '.join(names)} "
                             "(run `make fusion`)") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"{path}: unreadable fusion statistics: {exc}") from None
        try:
            if raw.get("format") != FUSION_FORMAT:
                raise ValueError(f"format {raw.get('format')!r}, expected {FUSION_FORMAT}")
            if tuple(raw["embedders"]) != names:
                raise ModelError(f"{path}: fitted for embedders {', '.join(raw['embedders'])}, not "
                                 f"{', '.join(names)} (run `make fusion` for this set)")
            for name, sha in embedders:
                if raw["sha256"].get(name) != sha:
                    raise ModelError(f"{path}: fitted on another version of {name} (run `make fusion`)")
            stats = {k: {n: (float(v["mean"]), float(v["std"])) for n, v in raw["stats"][k].items()} for k in KINDS}
            cascade = raw.get("cascade")
            if cascade is not None:
                cascade = {"accept": float(cascade["accept"]), "reject": float(cascade["reject"])}
            thresholds = raw.get("thresholds")
            if thresholds is not None:
                thresholds = {k: float(thresholds[k]) for k in ("unmasked", "masked", "margin")}
            return cls(names, stats, {n: float(w) for n, w in raw["weights"].items()}, dict(raw["sha256"]),
                       dict(raw.get("provenance", {})), cascade, thresholds)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelError(f"{path}: not valid fusion statistics ({exc})") from None


def load_fusion(embedders: Sequence[tuple[str, str]], models_dir: Path | None = None) -> Fusion:
    """The fusion for the pipeline's embedders ((name, sha256), primary first) from ``<models>/fusion.json``."""
    from edge_mfr.vision.runtime import default_models_dir

    return Fusion.load(Path(models_dir or default_models_dir()) / FUSION_NAME, embedders)


def fit_stats(stranger_scores: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, dict[str, tuple[float, float]]]:
    """kind -> embedder -> (mean, std) of stranger-vs-person scores (one row per stranger face, one column a person)."""
    return {kind: {name: (float(np.mean(s)), float(np.std(s))) for name, s in per.items()}
            for kind, per in stranger_scores.items()}
