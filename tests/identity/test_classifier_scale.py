"""The vectorised person scores equal the plain per-person rule (issue 18), and big galleries skip the SVM."""

from __future__ import annotations

import numpy as np
import pytest

from edge_mfr.identity.classifier import SVM_MAX_PEOPLE, IdentityClassifier, Thresholds
from edge_mfr.identity.fusion import Fusion


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def reference_similarity(e, templates, labels, synthetic, masked, top_k):
    """The rule written out person by person, as the classifier computed it before issue 18."""
    ids = sorted(set(labels.tolist()))
    sims = e @ templates.T
    out = np.full((len(e), len(ids)), -1.0, dtype=np.float32)
    for j, pid in enumerate(ids):
        mine = labels == pid
        all_cols = sims[:, mine]
        real_cols = sims[:, mine & ~synthetic]
        if real_cols.shape[1] == 0:
            real_cols = all_cols
        k = min(top_k, real_cols.shape[1])
        top = np.sort(real_cols, axis=1)[:, -k:].mean(axis=1)
        out[:, j] = np.where(masked, all_cols.mean(axis=1), top)
    return out


def _random_gallery(rng, people, dims=(16,), ties=True):
    """Uneven template counts (1 to 12), people with only synthetic or only real templates, shuffled rows,
    some duplicated templates (ties in the top-k)."""
    labels, synthetic = [], []
    for i in range(people):
        n_real = int(rng.integers(0, 7)) if i % 5 else 0  # every fifth person: synthetic templates only
        n_synth = int(rng.integers(0 if n_real else 1, 7))
        labels += [f"p{i:03d}"] * (n_real + n_synth)
        synthetic += [False] * n_real + [True] * n_synth
    order = rng.permutation(len(labels))
    labels, synthetic = np.array(labels)[order], np.array(synthetic)[order]
    templates = {}
    for d in dims:
        t = _unit(rng.normal(size=(len(labels), d)))
        if ties:
            t[1::7] = t[0::7][: len(t[1::7])]  # equal similarities inside and across people
        templates[d] = t
    return templates, labels, synthetic


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("top_k", [1, 3, 5])
def test_vectorised_scores_equal_the_per_person_rule(seed, top_k):
    rng = np.random.default_rng(seed)
    templates, labels, synthetic = _random_gallery(rng, int(rng.integers(1, 40)))
    t = templates[16]
    clf = IdentityClassifier(top_k=top_k).fit(t, labels, synthetic)
    probes = _unit(rng.normal(size=(9, 16)))
    probes[0] = t[3]  # a probe equal to a template: ties at the top
    masked = rng.random(9) < 0.5
    expected = reference_similarity(probes, t, labels, synthetic, masked, top_k)
    got = clf.similarity(probes, masked)
    assert got.shape == expected.shape and got.dtype == np.float32
    # The top-k rule picks the same values and adds them in the same order: bit for bit. The masked mean
    # adds in another order (in float64), so it agrees to float32 rounding.
    np.testing.assert_array_equal(got[~masked], expected[~masked])
    np.testing.assert_allclose(got[masked], expected[masked], rtol=0, atol=2e-6)
    np.testing.assert_array_equal(clf.primary_similarity(probes, masked), got)
    for m in (np.zeros(9, bool), np.ones(9, bool)):  # all rows on one route
        np.testing.assert_allclose(clf.similarity(probes, m),
                                   reference_similarity(probes, t, labels, synthetic, m, top_k), rtol=0, atol=2e-6)


@pytest.mark.parametrize("seed", range(4))
def test_fused_scores_equal_the_per_person_rule_with_nan_extra_rows(seed):
    rng = np.random.default_rng(100 + seed)
    templates, labels, synthetic = _random_gallery(rng, 25, dims=(16, 8))
    fusion = Fusion(("A", "B"), {"unmasked": {"A": (0.1, 0.2), "B": (0.05, 0.3)},
                                 "masked": {"A": (0.2, 0.15), "B": (0.1, 0.25)}}, {"A": 1.0, "B": 0.7})
    rows = {"A": templates[16], "B": templates[8]}
    clf = IdentityClassifier().fit(rows, labels, synthetic, fusion=fusion)
    probes = {"A": _unit(rng.normal(size=(8, 16))), "B": _unit(rng.normal(size=(8, 8)))}
    probes["B"][[1, 4, 5]] = np.nan  # the cascade did not run the extra embedder on these faces
    masked = np.array([False, True, False, True, False, True, False, True])
    per = {name: reference_similarity(np.nan_to_num(probes[name]), rows[name], labels, synthetic, masked, 3)
           for name in ("A", "B")}
    full = ~np.isnan(probes["B"]).any(axis=1)
    expected = np.where(full[:, None], fusion.fuse(per, masked), per["A"])
    np.testing.assert_allclose(clf.similarity(probes, masked), expected, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(clf.rank_scores(probes, masked)[~full], clf.similarity(probes, masked)[~full])


def test_scores_after_without_equal_the_rule_on_the_smaller_gallery():
    rng = np.random.default_rng(7)
    templates, labels, synthetic = _random_gallery(rng, 30)
    t = templates[16]
    clf = IdentityClassifier().fit(t, labels, synthetic)
    gone = {"p003", "p010", "p029"}
    smaller = clf.without(gone)
    keep = ~np.isin(labels, list(gone))
    probes = _unit(rng.normal(size=(6, 16)))
    masked = np.array([True, False] * 3)
    np.testing.assert_allclose(smaller.similarity(probes, masked),
                               reference_similarity(probes, t[keep], labels[keep], synthetic[keep], masked, 3),
                               rtol=0, atol=2e-6)
    # The same people score the same (to the matrix product's rounding, which depends on the matrix's size).
    np.testing.assert_allclose(clf.similarity(probes, masked)[:, [clf.ids.index(p) for p in smaller.ids]],
                               smaller.similarity(probes, masked), rtol=0, atol=1e-6)


def test_one_person_and_no_probe():
    t = _unit(np.random.default_rng(1).normal(size=(3, 8)))
    clf = IdentityClassifier().fit(t, np.array(["a", "a", "a"]), np.array([False, True, False]))
    assert clf.similarity(np.zeros((0, 8), np.float32), []).shape == (0, 1)
    np.testing.assert_array_equal(clf.similarity(t[:1], [False]),
                                  reference_similarity(t[:1], t, np.array(["a"] * 3), np.array([False, True, False]),
                                                       np.array([False]), 3))


def _people(rng, n, per=4, dim=32):
    centres = _unit(rng.normal(size=(n, dim)))
    x = _unit(np.repeat(centres, per, axis=0) + 0.5 * _unit(rng.normal(size=(n * per, dim))))
    labels = np.repeat(np.array([f"p{i:02d}" for i in range(n)]), per)
    return x, labels, centres


def test_above_svm_max_people_the_verification_score_ranks():
    rng = np.random.default_rng(3)
    x, labels, centres = _people(rng, 6)
    small = IdentityClassifier(Thresholds(unmasked=0.5, masked=0.5), svm_max_people=6).fit(x, labels)
    big = IdentityClassifier(Thresholds(unmasked=0.5, masked=0.5), svm_max_people=5).fit(x, labels)
    assert small.ranks_by_svm and not big.ranks_by_svm
    probes = _unit(centres + 0.4 * _unit(rng.normal(size=centres.shape)))
    bare = [False] * len(probes)
    assert not np.array_equal(small.rank_scores(probes, bare), small.similarity(probes, bare))
    np.testing.assert_array_equal(big.rank_scores(probes, bare), big.similarity(probes, bare))
    np.testing.assert_array_equal(big.similarity(probes, bare), small.similarity(probes, bare))
    # The candidate is the best-scoring person, so the margin is the lead over the runner-up's score.
    sims = big.similarity(probes, bare)
    for d, row in zip(big.decide(probes, bare), sims, strict=True):
        assert d.candidate_id == big.ids[int(np.argmax(row))]
        assert d.margin == pytest.approx(float(np.sort(row)[-1] - np.sort(row)[-2]))
    assert [d.person_id for d in big.decide(probes, bare)] == big.ids
    # Dropping people never brings the SVM back before a refit.
    assert not big.without({"p00"}).ranks_by_svm and small.without({"p00"}).ranks_by_svm


def test_the_svm_ranks_up_to_the_documented_number_of_people():
    assert IdentityClassifier().svm_max_people == SVM_MAX_PEOPLE >= 42  # the evaluation's gallery keeps its SVM
