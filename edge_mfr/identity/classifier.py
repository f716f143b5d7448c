"""Who is this? A compact linear SVM over the gallery, with open-set rejection so strangers stay out.

Faces are routed by mask status, because a mask changes which comparison works (measured with
`edge-mfr eval` on ../shared/data, int8 FaceNet, 42 enrolled people):
- unmasked: a linear SVM over the person's real templates ranks the candidates; acceptance needs the
  mean of the top-3 cosine similarities to the candidate's real templates above ``unmasked``. Above
  SVM_MAX_PEOPLE people that verification score ranks too (see there: the fit's cost grows with the
  square of the people).
- masked: the mean similarity to all of a person's templates, real and synthetic-masked, both ranks and
  verifies (masked rank-1 0.824, against 0.765 for the SVM and 0.706 for real templates only).
Either way the candidate must lead the runner-up by ``margin``. With several embedders (issue 11) every
rule runs per embedder and the scores are fused into one (edge_mfr/identity/fusion.py); the SVM then
ranks on the embedders' concatenated embeddings. Masked faces get their own threshold:
a mask costs genuine similarity, and a masked stranger looks more like synthetic-masked templates than
a bare-faced one does, so one threshold for both would let masked strangers in or keep everyone out.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_mfr.identity.fusion import Fusion
from edge_mfr.identity.svm import load_or_fit
from edge_mfr.schema import Section, field

TOP_K = 3
# Galleries of more people than this are ranked by the verification score instead of the linear SVM. The
# one-vs-rest fit costs people x templates x dimensions per person, so its time grows with the square of
# the people (tools/bench/classifier_scale.py, x86-64 build machine, 2 shared cores, 4 real + 4 masked
# templates of 512-d a person: 1.6-2.2 s for 100 people, 3.1 s for 200, 13.4 s for 400, 149 s for 1,000,
# about 4 hours extrapolated for 10,000), and the door refits on every gallery change. 200 keeps the fit a
# few seconds (well under a minute on a Pi) and the SVM exactly where it was measured to help (42 people).
# Decisions stay safe either way: the thresholds and the margin act on the verification score, never the
# SVM's. Ranking by it is how masked faces are ranked at every size.
SVM_MAX_PEOPLE = 200
SINGLE = "embedding"  # the one embedder's name when plain arrays are given

Embeddings = np.ndarray | Mapping[str, np.ndarray]  # one embedder's rows, or embedder name -> rows


def _as_mapping(x: Embeddings) -> dict[str, np.ndarray]:
    if isinstance(x, Mapping):
        return {k: np.atleast_2d(np.asarray(v, dtype=np.float32)) for k, v in x.items()}
    return {SINGLE: np.atleast_2d(np.asarray(x, dtype=np.float32))}

# A working embedder keeps a person's synthetic-masked templates well apart from the real ones (cosine
# 0.63-0.90 in the demo) and different people further still; a gallery whose every template lies within
# this cosine of their common direction was built by an embedder that answers the same for every face.
COLLAPSED_COSINE = 0.98


def collapsed(templates: np.ndarray) -> float | None:
    """The lowest cosine of any template to the templates' mean direction when all are above
    COLLAPSED_COSINE (a collapsed gallery), else None. O(n): the daemon never builds an n x n matrix."""
    x = np.asarray(templates, dtype=np.float32)
    if len(x) < 2:
        return None
    mean = x.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    if norm == 0.0:
        return None
    lowest = float((x @ (mean / norm)).min())
    return lowest if lowest >= COLLAPSED_COSINE else None


@dataclass(frozen=True)
class _Segments:
    """Template columns grouped by person: ``order`` lists them person by person (gallery order within one),
    person j's run starts at ``starts[j]`` and is ``counts[j]`` long. ``top_*``: the same for the columns the
    top-k rule reads (a person's real templates, or all of them for a person who has none)."""

    order: np.ndarray
    starts: np.ndarray
    counts: np.ndarray
    top_order: np.ndarray
    top_starts: np.ndarray
    top_counts: np.ndarray

    @classmethod
    def of(cls, owner: np.ndarray, synthetic: np.ndarray, people: int) -> _Segments:
        order = np.argsort(owner, kind="stable")
        counts = np.bincount(owner, minlength=people)
        if (counts == 0).any():
            raise ValueError("every person needs at least one template")
        has_real = np.bincount(owner[~synthetic], minlength=people) > 0
        top = order[~synthetic[order] | ~has_real[owner[order]]]
        top_counts = np.bincount(owner[top], minlength=people)
        return cls(order, _starts(counts), counts, top, _starts(top_counts), top_counts)


def _people_with_real(owner: np.ndarray, synthetic: np.ndarray) -> int:
    """How many people have a real template: the SVM is fitted (and kept) only for two or more."""
    return len(np.unique(owner[~synthetic]))


def _starts(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.intp)


def _top_k_mean(x: np.ndarray, starts: np.ndarray, counts: np.ndarray, k: int) -> np.ndarray:
    """(n, segments) mean of the min(k, count) largest values of each run of columns of ``x`` (n, columns).

    The largest value of every run is taken k times over (``np.maximum.reduceat``), each time striking out the
    first column that holds it; the picks are then added smallest first and divided by their number, which is
    what ``np.sort(run)[:, -k:].mean(axis=1)`` computes for one run.
    """
    x = np.array(x, dtype=np.float32)  # a copy: picks are struck out in place
    n, width = x.shape
    owner = np.repeat(np.arange(len(starts)), counts)
    columns = np.arange(width)
    rows = np.arange(n)[:, None]
    picks = []
    for i in range(k):
        best = np.maximum.reduceat(x, starts, axis=1)
        picks.append(best)
        if i + 1 == k:
            break
        first = np.minimum.reduceat(np.where(x == best[:, owner], columns, width), starts, axis=1)
        found = first < width  # False only where the run holds NaN
        first = np.minimum(first, width - 1)
        x[rows, first] = np.where(found, -np.inf, x[rows, first])
    used = np.minimum(counts, k)
    total = np.zeros_like(picks[0])
    for i in reversed(range(k)):
        total += np.where(i < used, picks[i], np.float32(0))
    return total / used


class Thresholds(Section):
    """Operating point of the open-set decision (cosine similarities of L2-normalised embeddings); a config
    section too (``[recognition.thresholds]``), so unknown keys are refused."""

    # Defaults calibrated on strangers outside the accuracy protocol (../shared/data/mask_status: 200 bare
    # and 200 masked faces of people nobody enrolls) against a 42-person gallery: threshold = mean + z * sd
    # of the stranger-vs-person scores (unmasked 0.029 +- 0.139, masked 0.120 +- 0.131), with z = 4.57 so
    # that at most 1 in 10,000 strangers would pass for any of the 42. A door lock errs on the safe side:
    # calibrating for 1 in 1,000 (z = 4.07: 0.59 / 0.65) let 1 of 220 Glint strangers in during evaluation.
    unmasked: float = field(0.66, ge=-1, le=1, description="minimum similarity to accept an unmasked face")
    masked: float = field(0.72, ge=-1, le=1, description="minimum similarity to accept a masked face")
    margin: float = field(0.05, ge=0, le=2, description="minimum lead of the candidate over the runner-up person")


@dataclass(frozen=True)
class Decision:
    """The classifier's answer for one face. ``person_id`` is None for unknown."""

    person_id: str | None
    candidate_id: str | None  # best match even when rejected (for logs, never for access)
    score: float  # similarity to the candidate
    margin: float  # lead over the runner-up
    masked: bool
    reason: str
    fault: bool = False  # the face matched every enrolled person: a broken embedder, never a welcome

    @property
    def accepted(self) -> bool:
        return self.person_id is not None


class IdentityClassifier:
    """Fit on the gallery matrix; refit on every gallery change (seconds at most: the SVM is fitted only up to
    ``svm_max_people`` people, SVM_MAX_PEOPLE by default; above, the verification score ranks the bare faces)."""

    def __init__(self, thresholds: Thresholds | None = None, top_k: int = TOP_K, svm_max_people: int = SVM_MAX_PEOPLE):
        self.thresholds = thresholds or Thresholds()
        self.top_k = top_k
        self.svm_max_people = svm_max_people
        self.ids: list[str] = []
        self._templates: dict[str, np.ndarray] = {}
        self.fusion = Fusion.identity(SINGLE)
        self._owner = np.zeros(0, np.int64)
        self._synthetic = np.zeros(0, bool)
        self._svm_w: np.ndarray | None = None
        self._svm_b: np.ndarray | None = None
        self._segments: _Segments | None = None
        self.problems: list[str] = []  # e.g. a damaged SVM cache that was rebuilt: the daemon journals these

    def fit(self, x: Embeddings, labels: np.ndarray, synthetic: np.ndarray | None = None,
            svm_cache: Path | None = None, out_of_process: bool = False,
            fusion: Fusion | None = None) -> IdentityClassifier:
        """``synthetic`` marks rendered-mask templates (they never train the unmasked SVM).

        ``x``: one embedder's template rows, or embedder name -> rows (the same templates, row for row),
        fused by ``fusion`` (required for more than one embedder). ``svm_cache`` persists the SVM weights
        (see edge_mfr/identity/svm.py); ``out_of_process`` fits a stale cache in a child process so this
        process never imports scikit-learn.
        """
        labels = np.asarray(labels)
        self.ids = sorted(set(labels.tolist()))
        index = {pid: i for i, pid in enumerate(self.ids)}
        self._templates = _as_mapping(x)
        if fusion is None:
            if len(self._templates) != 1:
                raise ValueError("several embedders need a Fusion to combine their scores")
            fusion = Fusion.identity(next(iter(self._templates)))
        if set(fusion.embedders) != set(self._templates):
            raise ValueError(f"templates of {sorted(self._templates)} but a fusion of {list(fusion.embedders)}")
        self.fusion = fusion
        if any(len(t) != len(labels) for t in self._templates.values()):
            raise ValueError("every embedder needs one template row per label")
        self._owner = np.array([index[p] for p in labels], dtype=np.int64)
        self._synthetic = np.zeros(len(labels), bool) if synthetic is None else np.asarray(synthetic, bool)
        self._svm_w = self._svm_b = None
        self._segments = None
        real = ~self._synthetic
        if 2 <= _people_with_real(self._owner, self._synthetic) <= self.svm_max_people:
            self._svm_w, self._svm_b = load_or_fit(self._joined(self._templates)[real], self._owner[real],
                                                   len(self.ids), svm_cache, out_of_process,
                                                   self.problems)
        return self

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def ranks_by_svm(self) -> bool:
        """True when the linear SVM ranks bare faces (two to ``svm_max_people`` people with real templates)."""
        return self._svm_w is not None

    def without(self, person_ids: Iterable[str]) -> IdentityClassifier:
        """A copy that cannot match these people: their template rows and SVM rows are gone, no refit.

        Why: a fleet revoke must stop matching at once, and the full reload (reading the gallery, refitting the
        SVM) takes seconds.
        The one-vs-rest rows of everyone else stay exactly as fitted (the revoked person was one of their
        negatives), so their scores do not change; the next full reload refits properly.
        """
        drop = set(person_ids) & set(self.ids)
        out = copy.copy(self)
        if not drop:
            return out
        keep_people = np.array([pid not in drop for pid in self.ids], bool)
        rows = keep_people[self._owner]
        out.ids = [pid for pid in self.ids if pid not in drop]
        out._owner = (np.cumsum(keep_people) - 1)[self._owner[rows]]
        out._templates = {name: t[rows] for name, t in self._templates.items()}
        out._synthetic = self._synthetic[rows]
        out._segments = None
        if self._svm_w is not None and self._svm_b is not None:
            out._svm_w, out._svm_b = self._svm_w[keep_people], self._svm_b[keep_people]
            if _people_with_real(out._owner, out._synthetic) < 2:
                out._svm_w = out._svm_b = None  # as fit() leaves it for fewer than two people
        out.problems = list(self.problems)
        return out

    def _joined(self, x: Mapping[str, np.ndarray]) -> np.ndarray:
        """The embedders' rows side by side, in fusion order (what the SVM sees)."""
        return np.hstack([x[name] for name in self.fusion.embedders])

    def similarity(self, embeddings: Embeddings, masked: np.ndarray | list[bool]) -> np.ndarray:
        """(n, people) verification scores: unmasked rows top-k real templates, masked rows mean of all; fused."""
        e = self._probe(embeddings)
        n = len(next(iter(e.values())))
        masked = np.broadcast_to(np.asarray(masked, dtype=bool), (n,))
        primary = self.fusion.embedders[0]
        own = self._similarity(e[primary], self._templates[primary], masked)
        full = self.complete_rows(e)
        if not full.any():
            return own
        # The primary's own scores serve the fusion too: its rows are NaN-free wherever every embedder embedded.
        scores = {name: own if name == primary else self._similarity(np.nan_to_num(e[name]), self._templates[name],
                                                                     masked)
                  for name in self.fusion.embedders}
        return np.where(full[:, None], self.fusion.fuse(scores, masked), own).astype(np.float32)

    def primary_similarity(self, embeddings: np.ndarray, masked: np.ndarray | list[bool]) -> np.ndarray:
        """(n, people) scores of the primary embedder alone (the cascade's first look; a plain cosine)."""
        e = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
        masked = np.broadcast_to(np.asarray(masked, dtype=bool), (len(e),))
        return self._similarity(e, self._templates[self.fusion.embedders[0]], masked)

    def complete_rows(self, e: Mapping[str, np.ndarray]) -> np.ndarray:
        """(n,) True where every embedder embedded the face; the cascade leaves NaN rows for the others."""
        rows = [~np.isnan(e[name]).any(axis=1) for name in self.fusion.embedders]
        return np.logical_and.reduce(rows)

    def _probe(self, embeddings: Embeddings) -> dict[str, np.ndarray]:
        e = _as_mapping(embeddings)
        if len(self.fusion.embedders) == 1 and self.fusion.embedders[0] not in e:
            e = {self.fusion.embedders[0]: next(iter(e.values()))}  # one embedder: the first (primary) rows
        missing = [n for n in self.fusion.embedders if n not in e]
        if missing:
            raise ValueError(f"probe embeddings lack {', '.join(missing)}")
        return e

    def _layout(self) -> _Segments:
        """The template columns grouped by person (computed once per fit or ``without``, then reused)."""
        if self._segments is None:
            self._segments = _Segments.of(self._owner, self._synthetic, len(self.ids))
        return self._segments

    def _similarity(self, e: np.ndarray, templates: np.ndarray, masked: np.ndarray) -> np.ndarray:
        """(n, people): masked rows the mean over all of a person's templates, the others the mean of the top-k
        over the person's real templates (all of them for a person with none).

        Segment operations over the template columns grouped by person, no loop over people: one decide at
        10,000 people costs milliseconds (a loop per person cost 11.6 s, issue 18). The top-k values are
        picked exactly and added smallest first, as the mean of a sorted slice adds them.
        """
        n, people = len(e), len(self.ids)
        out = np.full((n, people), -1.0, dtype=np.float32)
        if not people or not n:
            return out
        seg = self._layout()
        sims = e @ templates.T
        if masked.any():
            grouped = sims[masked][:, seg.order].astype(np.float64)
            out[masked] = np.add.reduceat(grouped, seg.starts, axis=1) / seg.counts
        if not masked.all():
            out[~masked] = _top_k_mean(sims[~masked][:, seg.top_order], seg.top_starts, seg.top_counts, self.top_k)
        return out

    def rank_scores(self, embeddings: Embeddings, masked: np.ndarray | list[bool]) -> np.ndarray:
        """(n, people) scores that rank the candidates: SVM values for unmasked rows, similarity for masked (and
        for every row when the gallery has more than ``svm_max_people`` people)."""
        e = self._probe(embeddings)
        masked = np.broadcast_to(np.asarray(masked, dtype=bool), (len(next(iter(e.values()))),))
        return self._ranks(e, masked, self.similarity(e, masked))

    def _ranks(self, e: Mapping[str, np.ndarray], masked: np.ndarray, sims: np.ndarray) -> np.ndarray:
        if self._svm_w is None:
            return sims
        # Rows scored by the primary alone (cascade) are ranked by that similarity, not the joint SVM.
        use_svm = ~masked & self.complete_rows(e)
        if not use_svm.any():
            return sims
        svm = np.nan_to_num(self._joined(e)) @ self._svm_w.T + self._svm_b
        return np.where(use_svm[:, None], svm, sims)

    def decide(self, embeddings: Embeddings, masked: np.ndarray | list[bool]) -> list[Decision]:
        """Accept or reject each probe; ``masked`` picks the scoring rule and threshold per face."""
        n = len(next(iter(_as_mapping(embeddings).values())))
        masked = np.broadcast_to(np.asarray(masked, dtype=bool), (n,))
        if not self.ids:
            return [Decision(None, None, 0.0, 0.0, bool(m), "nobody enrolled") for m in masked]
        e = self._probe(embeddings)
        sims = self.similarity(e, masked)
        ranks = self._ranks(e, masked, sims)
        decisions = []
        t = self.thresholds
        # A face the cascade left to the primary alone is held to the primary's own stranger-safe threshold:
        # the fused one is lower because the fused stranger tail is thinner, which a lone score does not share.
        alone = self.fusion.primary_thresholds()
        complete = self.complete_rows(e) if alone else np.ones(n, bool)
        for i in range(len(sims)):
            best = int(np.argmax(ranks[i]))
            score = float(sims[i, best])
            others = np.delete(sims[i], best)
            margin = float(score - others.max()) if len(others) else 1.0
            kind = "masked" if masked[i] else "unmasked"
            threshold = t.masked if masked[i] else t.unmasked
            if not complete[i]:
                threshold = max(threshold, round(alone[kind], 2))
                kind = f"{kind} (primary embedder alone)"
            pid = self.ids[best]
            if threshold > 0 and len(self.ids) >= 2 and bool((sims[i] >= threshold).all()):
                reason = (f"fault: the face matches all {len(self.ids)} enrolled people (lowest similarity "
                          f"{float(sims[i].min()):.3f} >= the {kind} threshold {threshold:.2f}): the embedder "
                          "is broken")
                decisions.append(Decision(None, pid, score, margin, bool(masked[i]), reason, fault=True))
            elif score < threshold:
                reason = f"similarity {score:.3f} below the {kind} threshold {threshold:.2f}"
                decisions.append(Decision(None, pid, score, margin, bool(masked[i]), reason))
            elif margin < t.margin:
                reason = f"too close to another person (margin {margin:.3f} < {t.margin:.2f})"
                decisions.append(Decision(None, pid, score, margin, bool(masked[i]), reason))
            else:
                decisions.append(Decision(pid, pid, score, margin, bool(masked[i]), "accepted"))
        return decisions
