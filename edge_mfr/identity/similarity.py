"""Are these faces one person? Group agreement of an enrollment and its match against the gallery.

Everything that compares faces for enrollment goes through :func:`similarity_matrix`, so that switching
the recognition score (one embedder today, a fused score of several later) changes these checks too.

Thresholds (int8 FaceNet, cosine of real bare-face templates), chosen on half of the identities of
../shared/data (lfw, face_recognition_examples, mfr2 unmasked, glint_celeb; sorted names, even
positions: 27 people) and confirmed on the other half (26 people), never on the eval's strangers:

- ``SAME_PERSON`` = 0.30, average-linkage agreement inside one enrollment. Chosen half: random sets of
  2/3/6 photos of one person refused 3/265, photos dropped as outliers 3/845; 3+3 photos of two people
  accepted as one 11/210; a 4+1 intruder kept 26/338. Other half: 3/220, 2/690, 7/90, 24/250.
- ``DUPLICATE`` = 0.45, mean similarity of a new enrollment to an enrolled person's real templates
  (each person's photos split in two: one half enrolled, the other enrolled again). Chosen half: the same
  person missed 0/26 (lowest 0.503), another person flagged 6/650. Other half: 0/24 (lowest 0.493), 17/552.

FaceNet's genuine and impostor pairs overlap, so single pairs decide nothing here: groups do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAME_PERSON = 0.30
DUPLICATE = 0.45


def similarity_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) recognition similarity between two sets of embeddings (cosine)."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def agreement_groups(embeddings: np.ndarray, threshold: float = SAME_PERSON) -> list[list[int]]:
    """Average-linkage groups of faces that agree (mean similarity >= ``threshold``), largest first.

    Plain numpy for the at most a few dozen faces of one enrollment: the daemon (kiosk enrollment)
    never loads SciPy.
    """
    n = len(embeddings)
    if n == 0:
        return []
    sims = similarity_matrix(embeddings, embeddings)
    groups: list[list[int]] = [[i] for i in range(n)]
    while len(groups) > 1:
        best, pair = -np.inf, (0, 1)
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                value = float(sims[np.ix_(groups[i], groups[j])].mean())
                if value > best:
                    best, pair = value, (i, j)
        if best < threshold:
            break
        i, j = pair
        groups[i] = groups[i] + groups[j]
        del groups[j]
    return sorted(groups, key=lambda g: (-len(g), min(g)))


@dataclass(frozen=True)
class Match:
    person_id: str
    name: str
    score: float


def gallery_matches(embeddings: np.ndarray, people: list, threshold: float = DUPLICATE) -> list[Match]:
    """Enrolled people whose real templates match ``embeddings`` as a group (mean similarity), best first."""
    out: list[Match] = []
    for person in people:
        real = [i for i, t in enumerate(person.templates) if not t.synthetic]
        if not real or not len(embeddings):
            continue
        score = float(similarity_matrix(embeddings, person.embeddings[real]).mean())
        if score >= threshold:
            out.append(Match(person.person_id, person.name, score))
    return sorted(out, key=lambda m: -m.score)
