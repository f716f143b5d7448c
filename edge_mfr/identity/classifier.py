"""Who is this? A compact linear SVM over the gallery, with open-set rejection so strangers stay out.

The SVM ranks the enrolled people; acceptance is decided on cosine similarity, which is comparable
across galleries and calibrated once: the probe must be close enough to the candidate's own templates
(nearest few, real and synthetic-masked alike) and clearly closer than to the runner-up. Masked faces
get their own, lower similarity threshold: a mask costs genuine similarity while impostor similarity
barely moves (Boutros et al. 2022), so one threshold for both would either let strangers in or keep
masked people out.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

TOP_K = 3


class Thresholds(BaseModel):
    """Operating point of the open-set decision (cosine similarities of L2-normalised embeddings)."""

    model_config = ConfigDict(extra="forbid")

    unmasked: float = Field(0.55, ge=-1, le=1, description="minimum similarity to accept an unmasked face")
    masked: float = Field(0.50, ge=-1, le=1, description="minimum similarity to accept a masked face")
    margin: float = Field(0.05, ge=0, le=2, description="minimum lead over the runner-up person")


@dataclass(frozen=True)
class Decision:
    """The classifier's answer for one face. ``person_id`` is None for unknown."""

    person_id: str | None
    candidate_id: str | None  # best match even when rejected (for logs, never for access)
    score: float  # similarity to the candidate
    margin: float  # lead over the runner-up
    masked: bool
    reason: str

    @property
    def accepted(self) -> bool:
        return self.person_id is not None


class IdentityClassifier:
    """Fit on the gallery matrix; refit on every gallery change (milliseconds for hundreds of people)."""

    def __init__(self, thresholds: Thresholds | None = None, use_svm: bool = True, top_k: int = TOP_K):
        self.thresholds = thresholds or Thresholds()
        self.use_svm = use_svm
        self.top_k = top_k
        self.ids: list[str] = []
        self._templates = np.zeros((0, 512), np.float32)
        self._owner = np.zeros(0, np.int64)
        self._svm_w: np.ndarray | None = None
        self._svm_b: np.ndarray | None = None

    def fit(self, x: np.ndarray, labels: np.ndarray) -> IdentityClassifier:
        labels = np.asarray(labels)
        self.ids = sorted(set(labels.tolist()))
        index = {pid: i for i, pid in enumerate(self.ids)}
        self._templates = np.asarray(x, dtype=np.float32)
        self._owner = np.array([index[p] for p in labels], dtype=np.int64)
        self._svm_w = self._svm_b = None
        if self.use_svm and len(self.ids) >= 2:
            from sklearn.svm import LinearSVC

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # convergence chatter on tiny galleries
                svm = LinearSVC(C=1.0, class_weight="balanced", max_iter=5000).fit(self._templates, self._owner)
            w, b = svm.coef_.astype(np.float32), svm.intercept_.astype(np.float32)
            if len(self.ids) == 2:  # binary LinearSVC has one hyperplane: make it one per class
                w, b = np.vstack([-w, w]), np.concatenate([-b, b])
            self._svm_w, self._svm_b = w, b
        return self

    def __len__(self) -> int:
        return len(self.ids)

    def similarity(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, people) mean cosine of each probe to each person's ``top_k`` nearest templates."""
        e = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
        sims = e @ self._templates.T
        out = np.full((len(e), len(self.ids)), -1.0, dtype=np.float32)
        for j in range(len(self.ids)):
            cols = sims[:, self._owner == j]
            k = min(self.top_k, cols.shape[1])
            out[:, j] = np.sort(cols, axis=1)[:, -k:].mean(axis=1)
        return out

    def rank_scores(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, people) scores used to rank candidates: SVM decision values, else similarity."""
        if self._svm_w is None:
            return self.similarity(embeddings)
        e = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
        return e @ self._svm_w.T + self._svm_b

    def decide(self, embeddings: np.ndarray, masked: np.ndarray | list[bool]) -> list[Decision]:
        """Accept or reject each probe; ``masked`` picks the operating threshold per face."""
        masked = np.atleast_1d(np.asarray(masked, dtype=bool))
        if not self.ids:
            return [Decision(None, None, 0.0, 0.0, bool(m), "nobody enrolled") for m in masked]
        sims = self.similarity(embeddings)
        ranks = self.rank_scores(embeddings)
        decisions = []
        t = self.thresholds
        for i in range(len(sims)):
            best = int(np.argmax(ranks[i]))
            score = float(sims[i, best])
            others = np.delete(sims[i], best)
            margin = float(score - others.max()) if len(others) else 1.0
            threshold = t.masked if masked[i] else t.unmasked
            pid = self.ids[best]
            if score < threshold:
                reason = f"similarity {score:.3f} below the {'masked' if masked[i] else 'unmasked'} threshold"
                decisions.append(Decision(None, pid, score, margin, bool(masked[i]), reason))
            elif margin < t.margin:
                reason = f"too close to another person (margin {margin:.3f} < {t.margin:.3f})"
                decisions.append(Decision(None, pid, score, margin, bool(masked[i]), reason))
            else:
                decisions.append(Decision(pid, pid, score, margin, bool(masked[i]), "accepted"))
        return decisions
