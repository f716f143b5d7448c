"""Classifier: routing by mask status, SVM ranking, and open-set rejection on synthetic embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from edge_mfr.identity.classifier import IdentityClassifier, Thresholds


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture()
def gallery():
    """Five people: 4 real templates near their centre, 4 'masked' templates shifted along a shared axis."""
    rng = np.random.default_rng(0)
    centres = _unit(rng.normal(size=(5, 512)))
    mask_axis = _unit(rng.normal(size=512))
    x, labels, synthetic = [], [], []
    for i, c in enumerate(centres):
        for _ in range(4):
            x.append(_unit(c + 0.35 * _unit(rng.normal(size=512))))
            labels.append(f"p{i}")
            synthetic.append(False)
            x.append(_unit(c + 0.8 * mask_axis + 0.35 * _unit(rng.normal(size=512))))
            labels.append(f"p{i}")
            synthetic.append(True)
    return np.array(x), np.array(labels), np.array(synthetic), centres, mask_axis, rng


def test_accepts_enrolled_and_rejects_strangers(gallery):
    x, labels, synthetic, centres, mask_axis, rng = gallery
    clf = IdentityClassifier(Thresholds(unmasked=0.5, masked=0.5, margin=0.05)).fit(x, labels, synthetic)
    probes = _unit(centres + 0.3 * _unit(rng.normal(size=(5, 512))))
    decisions = clf.decide(probes, [False] * 5)
    assert [d.person_id for d in decisions] == [f"p{i}" for i in range(5)]
    strangers = _unit(rng.normal(size=(50, 512)))
    assert all(not d.accepted for d in clf.decide(strangers, [False] * 50))
    assert all(d.candidate_id is not None and "below" in d.reason for d in clf.decide(strangers, [False] * 50))


def test_masked_probe_is_scored_against_masked_templates(gallery):
    x, labels, synthetic, centres, mask_axis, rng = gallery
    clf = IdentityClassifier(Thresholds(unmasked=0.5, masked=0.5)).fit(x, labels, synthetic)
    masked_probe = _unit(centres[2] + 0.8 * mask_axis + 0.3 * _unit(rng.normal(size=512)))
    s_masked = clf.similarity(masked_probe, [True])[0]
    s_unmasked = clf.similarity(masked_probe, [False])[0]
    assert int(np.argmax(s_masked)) == 2
    # The unmasked rule ignores synthetic templates, so it sees less of this probe's person.
    assert s_masked[2] > s_unmasked[2] - 0.2
    d = clf.decide(masked_probe, [True])[0]
    assert d.masked and d.person_id == "p2"


def test_thresholds_are_per_mask_status(gallery):
    x, labels, synthetic, centres, mask_axis, rng = gallery
    probe = _unit(centres[1] + 0.3 * _unit(rng.normal(size=512)))
    score = float(IdentityClassifier().fit(x, labels, synthetic).similarity(probe, [False])[0, 1])
    strict = IdentityClassifier(Thresholds(unmasked=score + 0.01, masked=-1)).fit(x, labels, synthetic)
    assert not strict.decide(probe, [False])[0].accepted
    lenient = IdentityClassifier(Thresholds(unmasked=score - 0.01, masked=1)).fit(x, labels, synthetic)
    assert lenient.decide(probe, [False])[0].person_id == "p1"


def test_margin_rejects_ambiguous_faces(gallery):
    x, labels, synthetic, centres, mask_axis, rng = gallery
    between = _unit(centres[0] + centres[1])
    clf = IdentityClassifier(Thresholds(unmasked=-1, masked=-1, margin=0.2)).fit(x, labels, synthetic)
    d = clf.decide(between, [False])[0]
    assert not d.accepted and "too close" in d.reason


def test_svm_rows_for_two_and_one_person():
    rng = np.random.default_rng(3)
    a, b = _unit(rng.normal(size=(2, 512)))
    x = _unit(np.stack([a, a + 0.1 * b, b, b + 0.1 * a]))
    clf = IdentityClassifier(Thresholds(unmasked=0.3)).fit(x, np.array(["a", "a", "b", "b"]))
    assert [d.person_id for d in clf.decide(np.stack([a, b]), [False, False])] == ["a", "b"]
    single = IdentityClassifier(Thresholds(unmasked=0.3)).fit(x[:2], np.array(["a", "a"]))
    assert single.decide(a, [False])[0].person_id == "a"


def test_empty_classifier_says_nobody_enrolled():
    d = IdentityClassifier().decide(np.ones((1, 512), np.float32) / np.sqrt(512), [False])[0]
    assert not d.accepted and d.reason == "nobody enrolled"


def test_default_operating_point_is_stricter_for_masked_faces():
    t = Thresholds()
    assert 0.5 < t.unmasked < t.masked < 0.9 and t.margin > 0
    with pytest.raises(ValueError):
        Thresholds(unmasked=2.0)
    with pytest.raises(ValueError):
        Thresholds(bogus=1.0)


def test_svm_weights_are_persisted_and_refitted_when_the_gallery_changes(tmp_path, gallery):
    from edge_mfr.identity.svm import _read, fit_key

    x, labels, synthetic, centres, mask_axis, rng = gallery
    cache = tmp_path / "gallery.npz.svm.npz"
    first = IdentityClassifier().fit(x, labels, synthetic, svm_cache=cache)
    assert (cache.stat().st_mode & 0o777) == 0o600
    real = ~synthetic
    owner = np.array([first.ids.index(p) for p in labels])
    assert _read(cache, fit_key(x[real], owner[real])) is not None
    # Loading from the cache gives the same ranking as fitting.
    again = IdentityClassifier().fit(x, labels, synthetic, svm_cache=cache)
    probes = _unit(centres + 0.3 * _unit(rng.normal(size=(5, 512))))
    assert np.allclose(first.rank_scores(probes, [False] * 5), again.rank_scores(probes, [False] * 5))
    # A changed gallery does not match the key: refitted, here in a child process.
    keep = labels != "p4"
    child = IdentityClassifier().fit(x[keep], labels[keep], synthetic[keep], svm_cache=cache, out_of_process=True)
    assert len(child) == 4
    assert [d.candidate_id for d in child.decide(probes[:4], [False] * 4)] == ["p0", "p1", "p2", "p3"]


def test_daemon_side_identifier_never_imports_sklearn(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from edge_mfr.identity.classifier import IdentityClassifier\n"
        "rng = np.random.default_rng(0)\n"
        "x = rng.normal(size=(12, 512)).astype(np.float32); x /= np.linalg.norm(x, axis=1, keepdims=True)\n"
        "labels = np.array(['a', 'b', 'c'] * 4)\n"
        f"IdentityClassifier().fit(x, labels, svm_cache=__import__('pathlib').Path({str(tmp_path)!r}) / 'g.svm.npz',"
        " out_of_process=True)\n"
        "assert not [m for m in sys.modules if m.startswith(('sklearn', 'scipy'))], 'sklearn imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _damaged_caches(good: bytes) -> list[bytes]:
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x40
    header_flip = bytearray(good)
    header_flip[header_flip.index(b"'descr'")] = ord("(")
    return [b"", b"garbage" * 20, good[: len(good) // 2], bytes(flipped), bytes(header_flip),
            b"\x93NUMPY\x01\x00" + b"x" * 100]


@pytest.mark.parametrize("case", range(6))
def test_damaged_svm_cache_is_rebuilt_and_reported(gallery, tmp_path, case):
    """A corrupt gallery.npz.svm.npz stopped the daemon with BadZipFile (issue 16 item 6): now a refit."""
    x, labels, synthetic, centres, mask_axis, rng = gallery
    cache = tmp_path / "gallery.npz.svm.npz"
    IdentityClassifier().fit(x, labels, synthetic, svm_cache=cache)
    cache.write_bytes(_damaged_caches(cache.read_bytes())[case])
    clf = IdentityClassifier().fit(x, labels, synthetic, svm_cache=cache, out_of_process=case == 0)
    probes = _unit(centres + 0.3 * _unit(rng.normal(size=(5, 512))))
    assert [d.candidate_id for d in clf.decide(probes, [False] * 5)] == [f"p{i}" for i in range(5)]
    assert len(clf.problems) == 1 and "rebuilt" in clf.problems[0] and "\n" not in clf.problems[0]
    again = IdentityClassifier().fit(x, labels, synthetic, svm_cache=cache)  # the rebuilt cache is valid
    assert again.problems == []
