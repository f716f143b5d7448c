"""Long commands show progress in a log (stderr not a terminal), and a video ends with who was seen."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import pytest

from edge_mfr.cli import main
from edge_mfr.identity.seen import SeenTally

FRAMES = 3 + 9  # empty frames, then Eileen Collins walks up


@pytest.fixture(scope="module")
def clip_and_photo(tmp_path_factory) -> tuple[Path, Path]:
    pytest.importorskip("skimage")
    from edge_mfr.demo import actors, render_frames, walk, write_video
    from edge_mfr.vision.pipeline import FacePipeline

    cast = actors(FacePipeline(num_threads=2))
    folder = tmp_path_factory.mktemp("progress")
    script = [None] * 3 + walk(9, cast.eileen.shape[:2], (1.1, 1.4), 0.3, 0)
    photo = folder / "eileen.jpg"
    cv2.imwrite(str(photo), cv2.cvtColor(cast.eileen, cv2.COLOR_RGB2BGR))
    return write_video(folder / "walk", render_frames(cast, script)), photo


def test_enroll_then_recognize_a_video_show_progress_lines_and_who_was_seen(clip_and_photo, tmp_path, capsys):
    clip, photo = clip_and_photo
    gallery = tmp_path / "gallery.npz"
    assert main(["enroll", "Eileen Collins", str(photo), "--gallery", str(gallery)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "enroll Eileen Collins: started" and err[-1] == "enroll Eileen Collins: done, 1 image"

    assert main(["recognize", str(clip), "--gallery", str(gallery)]) == 0
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert err[0] == f"recognize {clip.name}: started ({FRAMES} frames)"
    assert err[-1] == f"recognize {clip.name}: done, {FRAMES} frames"
    assert any(re.fullmatch(rf"recognize {clip.name}: \d+/{FRAMES} frames \(\d0%\)", line) for line in err)
    seen = re.search(r"seen: Eileen Collins in (\d+) frames \(best similarity (0\.\d\d)\)", captured.out)
    assert seen and 1 <= int(seen.group(1)) <= 9 and float(seen.group(2)) >= 0.66, captured.out


def test_seen_tally_counts_frames_per_person_and_unknown_frames():
    tally = SeenTally()
    ada = {"identity": {"name": "Ada", "score": 0.8}}
    tally.add([ada, {"identity": {"name": "Ada", "score": 0.9}}])  # two boxes, one frame
    tally.add([ada, {"identity": {"name": None, "score": 0.2}}])
    tally.add([])
    assert tally.lines(True) == ["seen: Ada in 2 frames (best similarity 0.90)", "unknown faces in 1 frame"]
    assert "nobody is enrolled" in tally.lines(False)[0]
