"""tools/pi/compare_recognize.py: the x86-64 against emulated-arm64 comparison of `recognize --json`.

It must pass equal outputs and small numeric noise, and catch a different decision of the fused embedders
(another person, a flipped mask state) or a similarity off by more than 0.01, not only detection changes.
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
                 "masked": False, "candidate": "eileen-collins", "reason": "match"},
}]}


def _changed(**identity) -> list[dict]:
    got = copy.deepcopy(RECORD)
    got["faces"][0]["identity"].update(identity)
    return [got]


def test_equal_and_noise_pass() -> None:
    assert compare.differences([RECORD], [copy.deepcopy(RECORD)]) == []
    noisy = _changed(score=0.7361, margin=0.395)
    noisy[0]["faces"][0]["box"][0] += 0.4
    assert compare.differences([RECORD], noisy) == []


def test_a_different_decision_is_caught() -> None:
    assert any("person_id" in d for d in compare.differences([RECORD], _changed(person_id=None, name=None)))
    assert any("masked" in d for d in compare.differences([RECORD], _changed(masked=True)))
    assert any("candidate" in d for d in compare.differences([RECORD], _changed(candidate="someone-else")))


def test_similarity_beyond_tolerance_is_caught() -> None:
    assert any("identity score" in d for d in compare.differences([RECORD], _changed(score=0.75)))
    assert any("margin" in d for d in compare.differences([RECORD], _changed(margin=0.38)))


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
    assert "1 images, 1 faces (1 identified)" in out and "similarity 0.0030" in out
    b.write_text(json.dumps(_changed(masked=True)[0]) + "\n")
    assert compare.main(["compare_recognize.py", str(a), str(b)]) == 1
