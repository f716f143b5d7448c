"""`edge-mfr demo`: the README's main job, run as a user runs it, and shown to report a failure honestly."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytest.importorskip("skimage")  # the demo's photos come from scikit-image's data folder


def segment_line(out: str, name: str) -> str:
    match = re.search(rf"^{name} +\d+-\d+ +.*$", out, re.MULTILINE)
    assert match, f"no {name} line in:\n{out}"
    return match.group(0)


def test_demo_unlocks_for_her_with_and_without_a_mask_and_nobody_else_nor_her_photo(tmp_path):
    env = {**os.environ, "EDGE_MFR_GPIO": "mock"}
    proc = subprocess.run([sys.executable, "-m", "edge_mfr.cli", "demo", "--out", str(tmp_path)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=180)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    approach, masked = segment_line(out, "approach"), segment_line(out, "masked")
    assert "UNLOCKED" in approach and "unlocked for Eileen Collins (no mask)" in approach
    assert "UNLOCKED" in masked and "unlocked for Eileen Collins (with a mask)" in masked
    photo = segment_line(out, "photo")
    assert " locked " in photo and "refused: no blink within 2.5 s (liveness check)" in photo
    assert "locked    no face" in segment_line(out, "empty")
    stranger = segment_line(out, "stranger")
    assert " locked " in stranger and "unknown face" in stranger
    assert "result: OK" in out
    # The journal it names holds what it reported.
    from edge_mfr.device.journal import Journal

    journal = tmp_path / "journal.db"
    assert str(journal) in out
    with Journal(journal, readonly=True) as j:
        granted = j.query(kind="access_granted", limit=None, newest_first=False)
        unknown = j.query(kind="unknown_face", limit=None)
        refused = j.query(kind="liveness_refused", limit=None)
    assert [(g["person_id"], g["payload"]["masked"]) for g in granted] == [("eileen-collins", False),
                                                                          ("eileen-collins", True)]
    assert len(unknown) == 1
    assert [r["person_id"] for r in refused] == ["eileen-collins"]  # the photo, and only the photo
    assert (tmp_path / "config.toml").is_file() and any(tmp_path.glob("door.*"))


def test_demo_says_so_and_exits_1_when_the_door_does_not_open(tmp_path, monkeypatch, capsys):
    """With an impossible masked threshold the masked visit must be reported as a failure, not hidden."""
    import edge_mfr.demo as demo

    write = demo.demo_config

    def strict_config(out: Path, video: Path) -> Path:
        path = write(out, video)
        path.write_text(path.read_text() + "[recognition.thresholds]\nmasked = 0.99\n")
        return path

    monkeypatch.setattr(demo, "demo_config", strict_config)
    monkeypatch.setenv("EDGE_MFR_GPIO", "mock")
    assert demo.run_demo(tmp_path) == 1
    out = capsys.readouterr().out
    assert "UNLOCKED" in segment_line(out, "approach")
    assert "UNLOCKED" not in segment_line(out, "masked")
    assert "UNEXPECTED: masked" in out and "result: FAILED" in out
