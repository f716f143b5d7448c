"""Kiosk parts of issue 13 without a browser: the labels show the door's own verdict, one bad upload no
longer rejects the good ones (the CLI's rule), and live-camera enrollment keeps one tracked face only."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

from edge_mfr.app import FrameReport, TrackView
from edge_mfr.errors import EnrollmentError
from edge_mfr.identity.gallery import Gallery
from edge_mfr.interfaces.kiosk import server as kiosk_module
from edge_mfr.interfaces.kiosk.live import track_label
from edge_mfr.interfaces.kiosk.server import Kiosk
from edge_mfr.interfaces.kiosk.uploads import Part, UploadError
from edge_mfr.vision.draw import AMBER, GREEN, RED
from edge_mfr.vision.imageio import read_image
from tests.interfaces.kiosk.test_kiosk import kiosk_config


def _view(**kw) -> TrackView:
    base = {"track_id": 1, "box": (10.0, 10.0, 200.0, 200.0), "decided": "ada", "name": "Ada", "masked": False,
            "score": 0.8, "embedded": True}
    return TrackView(**{**base, **kw})


def test_labels_are_green_only_when_the_door_would_let_the_person_in():
    assert track_label(_view()).color == GREEN
    refused = track_label(_view(refused="lockout active for 250 s more"))
    assert refused.color == RED and "refused, lockout active" in refused.text
    far = track_label(_view(in_zone=False, refused="not at the door"))
    assert far.color == AMBER and "not at the door" in far.text
    assert track_label(_view(decided="unknown", name=None)).color == RED


@pytest.fixture()
def kiosk(tmp_path) -> Kiosk:
    state = tmp_path / "state"
    state.mkdir()
    config = kiosk_config(state, tmp_path / "clip.mp4", None)
    app = SimpleNamespace(config=config, models_dir=None, journal=None, on_frame=[], on_event=[])
    return Kiosk(app)


@pytest.mark.data
def test_one_bad_file_no_longer_rejects_the_good_ones(kiosk, data_dir):
    photos = sorted((data_dir / "lfw" / "ColinPowell").glob("*.jpg"))[:2]
    files = [Part("files", p.name, p.read_bytes()) for p in photos] + [Part("files", "notes.txt", b"not a photo")]
    name, person_id, result = kiosk.enroll_uploads("Colin Powell", files, True, False)
    assert len(result.kept) == 2 and Gallery.load(kiosk.gallery_path).get(person_id).num_real == 2
    assert [src for src, _ in result.dropped] == ["notes.txt"]
    assert "not a photo or video" in result.dropped[0][1]
    with pytest.raises(UploadError, match="notes.txt"):  # nothing usable: refused, as by the CLI
        kiosk.enroll_uploads("Nobody", [Part("files", "notes.txt", b"not a photo")], True, False)


@pytest.mark.data
def test_live_capture_keeps_only_the_face_it_started_tracking(kiosk, data_dir, monkeypatch):
    """The feed cuts from one person (track 1) to another (track 2), as the Hamilton clip cuts from the
    performer to the audience: only track 1's frames are enrolled."""
    monkeypatch.setattr(kiosk_module, "CAPTURE_GAP_S", 0.0)
    monkeypatch.setattr(kiosk_module, "CAPTURE_TIMEOUT_S", 3.0)
    first = read_image(sorted((data_dir / "lfw" / "ColinPowell").glob("*.jpg"))[0])
    second = read_image(sorted((data_dir / "lfw" / "GeorgeWBush").glob("*.jpg"))[0])
    job = kiosk.start_capture("Colin Powell", True, False)

    def show(track: int, image: np.ndarray, index: int) -> None:
        view = _view(track_id=track, box=(60.0, 60.0, 190.0, 190.0), decided=None, name=None)
        kiosk.live.on_frame(FrameReport(index, index / 10, [view], "none", None, {}, image=image))
        time.sleep(0.05)

    for i in range(3):
        show(1, first, i)
    for i in range(3, 40):
        show(2, second, i)
    deadline = time.monotonic() + 60
    while job.state in ("capturing", "enrolling") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job.state == "done", job.message
    assert job.captured == 3  # track 2's frames were never collected


@pytest.mark.data
def test_a_kiosk_duplicate_is_refused_until_the_admin_says_it_is_someone_else(kiosk, data_dir):
    photos = sorted((data_dir / "lfw" / "ColinPowell").glob("*.jpg"))
    _, colin, _ = kiosk.enroll_uploads("Colin Powell", [Part("files", p.name, p.read_bytes()) for p in photos[:3]],
                                       True, False)
    again = [Part("files", photos[3].name, photos[3].read_bytes())]
    with pytest.raises(EnrollmentError, match=rf"match 'Colin Powell' \({colin}.*'Different from'"):
        kiosk.enroll_uploads("Someone Else", again, True, False)
    _, other, _ = kiosk.enroll_uploads("Someone Else", again, True, False, different_from=colin)
    assert other != colin and len(Gallery.load(kiosk.gallery_path).people) == 2
