"""tools/pi/compare_recognize.py: the x86-64 against emulated-arm64 comparison of `recognize --json`.

It must pass equal outputs and the measured numeric noise of arm64 (a mask state flipped where both sides'
SVM values lie at the boundary included), and catch a different decision of the fused embedders (another
person, a flipped mask state away from the boundary) or a similarity off by more than 0.02, not only
detection changes.
"""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("compare_recognize", REPO / "tools/pi/compare_recognize.py")
compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare)

RECORD = {"image": "lfw/a.jpg", "faces": [{
    "index": 1, "box": [66.9, 80.0, 175.9, 189.0], "score": 0.9099,
    "landmarks": {"right_eye": [107.4, 108.8], "left_eye": [148.3, 118.0]},
    "identity": {"person_id": "eileen-collins", "name": "Eileen Collins", "score": 0.7311, "margin": 0.4,
                 "masked": False, "mask_margin": -0.7, "candidate": "eileen-collins", "reason": "match"},
}]}


def _changed(**identity) -> list[dict]:
    got = copy.deepcopy(RECORD)
    got["faces"][0]["identity"].update(identity)
    return [got]


def test_equal_and_noise_pass() -> None:
    assert compare.differences([RECORD], [copy.deepcopy(RECORD)]) == []
    noisy = _changed(score=0.7405, margin=0.395, mask_margin=-0.665)
    noisy[0]["faces"][0]["box"][0] += 0.4
    assert compare.differences([RECORD], noisy) == []


def test_a_different_decision_is_caught() -> None:
    assert any("person_id" in d for d in compare.differences([RECORD], _changed(person_id=None, name=None)))
    assert any("masked" in d for d in compare.differences([RECORD], _changed(masked=True)))
    assert any("candidate" in d for d in compare.differences([RECORD], _changed(candidate="someone-else")))


def test_similarity_beyond_tolerance_is_caught() -> None:
    assert any("identity score" in d for d in compare.differences([RECORD], _changed(score=0.755)))
    assert any("identity margin" in d for d in compare.differences([RECORD], _changed(margin=0.37)))
    assert any("mask_margin" in d for d in compare.differences([RECORD], _changed(mask_margin=-0.64)))


def test_mask_flip_only_at_the_boundary() -> None:
    ref = [copy.deepcopy(RECORD)]
    ref[0]["faces"][0]["identity"].update(masked=True, mask_margin=0.0185, score=-0.0328)
    # measured: x86-64 0.0185 (masked), arm64 -0.0023; the similarity then comes from the other path
    flip = _changed(masked=False, mask_margin=-0.0023, score=-0.0906)
    assert compare.differences(ref, flip) == []
    assert "1 mask state flipped" in compare.summary(ref, flip)
    far = _changed(masked=False, mask_margin=-0.04)
    ref[0]["faces"][0]["identity"]["mask_margin"] = 0.06
    assert any("identity masked" in d for d in compare.differences(ref, far))
    assert any("identity person_id" in d for d in compare.differences(ref, _changed(
        masked=False, mask_margin=0.01, person_id=None)))


def test_identity_on_one_side_only_is_caught() -> None:
    got = copy.deepcopy(RECORD)
    del got["faces"][0]["identity"]
    assert any("identity" in d for d in compare.differences([RECORD], [got]))


def test_detection_only_outputs_still_compare() -> None:
    ref = copy.deepcopy(RECORD)
    del ref["faces"][0]["identity"]
    assert compare.differences([ref], [copy.deepcopy(ref)]) == []


def test_main_summary(tmp_path, capsys) -> None:
    a, b = tmp_path / "x86.jsonl", tmp_path / "arm64.jsonl"
    a.write_text(json.dumps(RECORD) + "\n")
    b.write_text(json.dumps(_changed(score=0.7341)[0]) + "\n")
    assert compare.main(["compare_recognize.py", str(a), str(b), "--summary"]) == 0
    out = capsys.readouterr().out
    assert "1 images, 1 faces (1 identified, 0 mask state" in out and "similarity 0.0030" in out
    b.write_text(json.dumps(_changed(masked=True)[0]) + "\n")
    assert compare.main(["compare_recognize.py", str(a), str(b)]) == 1
