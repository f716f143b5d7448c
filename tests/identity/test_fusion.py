"""Score fusion of several embedders: the maths on known scores, the file's checks, and the cascade rule."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_mfr.errors import ModelError
from edge_mfr.identity.classifier import IdentityClassifier, Thresholds
from edge_mfr.identity.fusion import Fusion
from edge_mfr.identity.identify import needs_extras

SHA_A, SHA_B = "a" * 64, "b" * 64


def two() -> Fusion:
    stats = {"unmasked": {"A": (0.1, 0.2), "B": (0.0, 0.1)}, "masked": {"A": (0.2, 0.1), "B": (0.1, 0.05)}}
    # z = 2: A's own stranger-safe thresholds are 0.1 + 2 * 0.2 = 0.5 (bare) and 0.2 + 2 * 0.1 = 0.4 (masked)
    return Fusion(("A", "B"), stats, {"A": 1.0, "B": 3.0}, {"A": SHA_A, "B": SHA_B}, {"z": 2.0},
                  cascade={"accept": 0.7, "reject": 0.3}, thresholds={"unmasked": 0.5, "masked": 0.6, "margin": 0.05})


def test_fused_score_is_the_weighted_z_mean_on_the_primary_scale():
    f = two()
    a = np.array([[0.5], [0.4]])
    b = np.array([[0.2], [0.2]])
    fused = f.fuse({"A": a, "B": b}, [False, True])
    # unmasked: z_A = (0.5-0.1)/0.2 = 2, z_B = 0.2/0.1 = 2 -> mean 2 -> 0.1 + 0.2*2 = 0.5
    # masked:   z_A = (0.4-0.2)/0.1 = 2, z_B = (0.2-0.1)/0.05 = 2 -> 0.2 + 0.1*2 = 0.4
    np.testing.assert_allclose(fused[:, 0], [0.5, 0.4], atol=1e-6)
    # weights count: z_A = 0, z_B = 4 -> (1*0 + 3*4)/4 = 3 -> 0.1 + 0.2*3 = 0.7
    np.testing.assert_allclose(f.fuse({"A": np.array([[0.1]]), "B": np.array([[0.4]])}, [False])[0, 0], 0.7,
                               atol=1e-6)


def test_one_embedder_is_its_own_plain_score():
    f = Fusion.identity("A")
    s = np.array([[0.3, -0.2]], np.float32)
    np.testing.assert_array_equal(f.fuse({"A": s}, [True]), s)


@pytest.mark.parametrize("stats_std, weight", [(0.0, 1.0), (0.1, 0.0)])
def test_degenerate_statistics_or_weights_are_refused(stats_std, weight):
    stats = {k: {"A": (0.0, 0.1), "B": (0.0, stats_std)} for k in ("unmasked", "masked")}
    with pytest.raises(ValueError):
        Fusion(("A", "B"), stats, {"A": 1.0, "B": weight})


def test_file_round_trip_and_refusals(tmp_path):
    path = tmp_path / "fusion.json"
    two().save(path)
    loaded = Fusion.load(path, [("A", SHA_A), ("B", SHA_B)])
    assert loaded == two()
    before = path.read_bytes()
    with pytest.raises(ModelError, match="fitted for embedders A, B, not A, C"):
        Fusion.load(path, [("A", SHA_A), ("C", SHA_B)])
    with pytest.raises(ModelError, match="another version of B"):
        Fusion.load(path, [("A", SHA_A), ("B", "c" * 64)])
    raw = json.loads(before)
    raw["stats"]["masked"]["B"]["std"] = 0
    path.write_text(json.dumps(raw))
    with pytest.raises(ModelError, match="not valid fusion statistics"):
        Fusion.load(path, [("A", SHA_A), ("B", SHA_B)])
    with pytest.raises(ModelError, match="make fusion"):
        Fusion.load(tmp_path / "missing.json", [("A", SHA_A), ("B", SHA_B)])


def _classifier() -> IdentityClassifier:
    """Two people, two orthogonal axes per embedder; A is 4-d, B is 3-d."""
    a = np.eye(4, dtype=np.float32)[[0, 1]]
    b = np.eye(3, dtype=np.float32)[[0, 1]]
    return IdentityClassifier(Thresholds(unmasked=0.5, masked=0.6, margin=0.05)).fit(
        {"A": a, "B": b}, np.array(["p", "q"]), fusion=two())


def test_rows_without_the_extra_embedders_are_scored_by_the_primary_alone():
    clf = _classifier()
    probe_a = np.array([[0.8, 0.6, 0, 0]], np.float32)
    full = clf.similarity({"A": probe_a, "B": np.array([[0.0, 0.0, 1.0]], np.float32)}, [False])
    primary_only = clf.similarity({"A": probe_a, "B": np.full((1, 3), np.nan, np.float32)}, [False])
    np.testing.assert_allclose(primary_only[0], [0.8, 0.6], atol=1e-6)
    # B says "neither": z_B = 0 for both, so fused = 0.1 + 0.2 * (z_A / 4)
    np.testing.assert_allclose(full[0], [0.1 + 0.2 * (3.5 / 4), 0.1 + 0.2 * (2.5 / 4)], atol=1e-6)


def test_cascade_runs_the_extras_only_where_they_can_change_the_outcome():
    clf = _classifier()
    clear_accept = [0.9, 0.1, 0.0, 0.0]  # >= accept 0.7, lead 0.8
    clear_reject = [0.2, 0.1, 0.0, 0.0]  # < reject 0.3
    close = [0.5, 0.1, 0.0, 0.0]  # between the bounds
    tie = [0.75, 0.72, 0.0, 0.0]  # above accept but within the margin of the runner-up
    e = np.array([clear_accept, clear_reject, close, tie, clear_accept], np.float32)
    masked = np.array([False, False, False, False, True])
    assert needs_extras(clf, e, masked).tolist() == [False, False, True, True, True]
    single = IdentityClassifier().fit(np.eye(4, dtype=np.float32)[[0, 1]], np.array(["p", "q"]))
    assert not needs_extras(single, e, masked).any()


def test_without_extra_embeddings_every_face_is_decided_by_the_primary():
    """Identifier.identify without an embed function: the fused classifier falls back to FaceNet's own rules."""
    clf = _classifier()
    e = {"A": np.array([[0.9, 0.1, 0, 0], [0.2, 0.1, 0, 0]], np.float32), "B": np.full((2, 1), np.nan, np.float32)}
    decisions = clf.decide(e, [False, False])
    assert [d.person_id for d in decisions] == ["p", None]
    assert decisions[0].score == pytest.approx(0.9)


def test_a_face_left_to_the_primary_is_held_to_the_primary_own_threshold():
    """The fused threshold is lower than the primary's own (the fused stranger tail is thinner); a face the
    cascade or the door zone left to the primary alone must clear the primary's stranger-safe one."""
    stats = {"unmasked": {"A": (0.1, 0.1), "B": (0.0, 0.1)}, "masked": {"A": (0.2, 0.1), "B": (0.1, 0.05)}}
    fusion = Fusion(("A", "B"), stats, {"A": 1.0, "B": 1.0}, provenance={"z": 4.0},
                    cascade={"accept": 0.7, "reject": 0.3},
                    thresholds={"unmasked": 0.4, "masked": 0.45, "margin": 0.05})
    assert fusion.primary_thresholds() == pytest.approx({"unmasked": 0.5, "masked": 0.6})
    clf = IdentityClassifier(Thresholds(unmasked=0.4, masked=0.45, margin=0.05)).fit(
        {"A": np.eye(4, dtype=np.float32)[[0, 1]], "B": np.eye(3, dtype=np.float32)[[0, 1]]}, np.array(["p", "q"]),
        fusion=fusion)
    probe = np.array([[0.55, 0.0, 0.835, 0.0]], np.float32)  # p at 0.55: above 0.45 fused, below A's own 0.6
    alone = clf.decide({"A": probe, "B": np.full((1, 3), np.nan, np.float32)}, [True])[0]
    assert alone.person_id is None and "primary embedder alone" in alone.reason
    bare = clf.decide({"A": probe, "B": np.full((1, 3), np.nan, np.float32)}, [False])[0]
    assert bare.person_id == "p"  # 0.55 clears A's own bare threshold 0.5
    both = clf.decide({"A": probe, "B": np.array([[1.0, 0.0, 0.0]], np.float32)}, [True])[0]
    assert both.person_id == "p"  # with B's opinion the fused score decides, on the fused threshold


def test_faces_outside_the_door_zone_never_run_the_extra_embedders():
    clf = _classifier()
    e = np.array([[0.5, 0.1, 0.0, 0.0]] * 4, np.float32)  # between the cascade bounds
    masked = np.array([False, True, False, True])
    assert needs_extras(clf, e, masked, np.array([True, True, False, False])).tolist() == [True, True, False, False]
    assert needs_extras(clf, e, masked).tolist() == [True] * 4
