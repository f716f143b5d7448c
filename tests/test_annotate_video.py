"""`edge-mfr recognize --annotate OUT` on a video: an annotated video with the same frames, boxes drawn.

The clip is rendered from scikit-image's public-domain astronaut photo: a few empty frames, then Eileen
Collins walks up. The output is read back with OpenCV and compared frame by frame with the input.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_mfr.cli import main

EMPTY = 3  # empty frames at the start of the clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    pytest.importorskip("skimage")
    from edge_mfr.demo import actors, render_frames, walk, write_video
    from edge_mfr.vision.pipeline import FacePipeline

    cast = actors(FacePipeline(num_threads=2))
    script = [None] * EMPTY + walk(9, cast.eileen.shape[:2], (1.1, 1.4), 0.3, 0)
    return write_video(tmp_path_factory.mktemp("annotate") / "walk", render_frames(cast, script))


def read_frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), f"{path} does not open"
    frames = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames


def test_a_video_is_annotated_frame_by_frame(clip, tmp_path, capsys):
    out = tmp_path / "annotated.mp4"
    assert main(["recognize", str(clip), "--no-identify", "--annotate", str(out), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    src, dst = read_frames(clip), read_frames(out)
    assert len(dst) == len(src) == len(records) > EMPTY
    assert [r["image"] for r in records] == [f"{clip}#frame={i}" for i in range(len(src))]
    assert all(not r["faces"] for r in records[:EMPTY])
    with_faces = [i for i, r in enumerate(records) if r["faces"]]
    assert len(with_faces) >= len(src) - EMPTY - 2  # she is found in (nearly) every frame she is in

    def change(i: int, box) -> float:
        """Mean absolute change along the box's top edge (where the outline and label are drawn)."""
        x1, y1, x2, _ = (int(round(v)) for v in box)
        band = (slice(max(y1 - 2, 0), y1 + 3), slice(max(x1, 0), x2))
        return float(np.abs(src[i][band].astype(int) - dst[i][band].astype(int)).mean())

    for i in with_faces:
        box = records[i]["faces"][0]["box"]
        assert change(i, box) > 25, f"frame {i}: no box drawn at {box}"
    box = records[with_faces[-1]]["faces"][0]["box"]
    for i in range(EMPTY):  # nothing drawn where no face was: only re-encoding noise
        assert change(i, box) < 8, f"empty frame {i} changed"


def test_several_inputs_write_one_file_each_into_a_folder(clip, tmp_path, astronaut):
    from edge_mfr.vision.imageio import write_image

    photo = tmp_path / "photo.png"
    write_image(photo, astronaut)
    out = tmp_path / "out"
    assert main(["recognize", str(clip), str(photo), "--no-identify", "--annotate", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["photo_annotated.jpg", "walk_annotated.mp4"]
    assert len(read_frames(out / "walk_annotated.mp4")) == len(read_frames(clip))


def test_an_unreadable_video_is_one_clear_error(tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    assert main(["recognize", str(bad), "--no-identify", "--annotate", str(tmp_path / "x.mp4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("edge-mfr: error: ") and str(bad) in err[-1] and "Traceback" not in "".join(err)
    assert not (tmp_path / "x.mp4").exists()
