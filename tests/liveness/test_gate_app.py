"""The blink gate inside the real appliance loop (real models, MockFactory relay, real MP4 clips).

The enrolled face is scikit-image's astronaut photo pasted into the frames, which is exactly a photo
held up to the camera: with ``liveness = "off"`` it unlocks (today's behaviour), with ``"blink"`` it must
not. The live variant has her lids closed for four frames by edge_mfr.liveness.render.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from edge_mfr.app import Appliance
from edge_mfr.config import Config
from edge_mfr.device.journal import Journal

FPS = 15.0
RELAY = 17
EILEEN = "eileen-collins"
BLINK_AT = 22  # frame index where her lids start closing (1.3 s after she appears)


@dataclass(frozen=True)
class Clips:
    gallery: Path
    still: Path
    blink: Path


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Clips:
    from edge_mfr.cli import sample_image
    from edge_mfr.demo import NAME, actors, render_frames, walk, write_video
    from edge_mfr.identity.enroll import EnrollOptions, enroll
    from edge_mfr.liveness.render import BLINK_PROFILE, close_eyes
    from edge_mfr.vision.eyes import EyeOpenness
    from edge_mfr.vision.imageio import write_image
    from edge_mfr.vision.pipeline import FacePipeline

    pytest.importorskip("skimage")
    root = tmp_path_factory.mktemp("liveness-app")
    pipeline = FacePipeline(num_threads=2)
    write_image(root / "eileen.png", sample_image())
    enroll(root / "gallery.npz", NAME, [root / "eileen.png"], pipeline, EnrollOptions())
    cast = actors(pipeline)
    frames = render_frames(cast, [None] * 2 + walk(34, cast.eileen.shape[:2], (1.2, 1.5), 0.4, 0) + [None] * 2)
    eyes = EyeOpenness()
    blinking = list(frames)
    for k, amount in enumerate(BLINK_PROFILE):
        image = frames[BLINK_AT + k]
        face = max(pipeline.detect(image, crop_kind="photo"), key=lambda f: f.width)
        blinking[BLINK_AT + k] = close_eyes(image, eyes.measure(image, face).landmarks, amount)
    return Clips(root / "gallery.npz", write_video(root / "still", frames, FPS),
                 write_video(root / "blink", blinking, FPS))


def run(tmp_path: Path, clip: Path, gallery: Path, **door) -> tuple[Appliance, list, list[dict]]:
    state = tmp_path / "state"
    state.mkdir(parents=True)
    (state / "gallery.npz").write_bytes(gallery.read_bytes())
    config = Config.model_validate({
        "device": {"id": "test", "state_dir": str(state)}, "camera": {"source": str(clip)},
        "models": {"threads": 2}, "doors": [{"name": "front", "relay_pin": RELAY, **door}]})
    app = Appliance(config, pin_factory=MockFactory())
    reports: list = []
    app.on_frame.append(reports.append)
    assert app.run() == 0
    with Journal(config.journal.path, readonly=True) as journal:
        events = journal.query(limit=None, newest_first=False)
    return app, reports, events


def comparable(reports: list) -> list[tuple]:
    return [(r.index, r.action, r.person_id, tuple(sorted(r.relays.items())), tuple(r.reasons),
             tuple((t.track_id, t.decided, t.embedded) for t in r.tracks)) for r in reports]


def test_liveness_off_is_todays_behaviour_and_lets_a_photo_in(tmp_path, clips):
    app, off, events = run(tmp_path / "off", clips.still, clips.gallery, liveness="off")
    _, default, _ = run(tmp_path / "default", clips.still, clips.gallery)
    assert app.liveness is None  # the landmark models are not even loaded
    assert comparable(off) == comparable(default)
    assert [t.liveness for r in off for t in r.tracks] == [None] * sum(len(r.tracks) for r in off)
    assert [e["kind"] for e in events].count("access_granted") == 1
    assert "liveness_refused" not in {e["kind"] for e in events}


def test_blink_gate_refuses_a_photo_and_journals_why(tmp_path, clips, monkeypatch):
    import edge_mfr.vision.runtime as runtime

    loaded: list[str] = []
    real_init = runtime.TFLiteModel.__init__

    def counting_init(self, path, spec, num_threads=1):
        loaded.append(Path(path).name)
        real_init(self, path, spec, num_threads)

    monkeypatch.setattr(runtime.TFLiteModel, "__init__", counting_init)
    app, reports, events = run(tmp_path, clips.still, clips.gallery, liveness="blink",
                               liveness_window_seconds=1.0)
    # The gate measures eyes on the pipeline's face mesh (which aligns masked faces): one mesh in memory.
    assert loaded.count("face_landmark.tflite") == 1 and "iris_landmark.tflite" in loaded
    assert not any(r.relays["front"] for r in reports)
    assert "access_granted" not in {e["kind"] for e in events}
    refused = [e for e in events if e["kind"] == "liveness_refused"]
    assert len(refused) == 1 and refused[0]["person_id"] == EILEEN
    assert refused[0]["payload"]["reason"] == "no blink within 1.0 s (liveness check)"
    assert any(t.liveness == "waiting" for r in reports for t in r.tracks)
    assert app.liveness.measured > 0


def test_blink_gate_unlocks_after_the_blink_and_not_before(tmp_path, clips):
    _, reports, events = run(tmp_path, clips.blink, clips.gallery, liveness="blink")
    relay = [r.relays["front"] for r in reports]
    assert any(relay), "a live, blinking, enrolled person was refused"
    first_on = relay.index(True)
    assert first_on >= BLINK_AT + 2  # the blink ends when the lids are open again
    assert reports[first_on].person_id == EILEEN
    assert [e["kind"] for e in events].count("access_granted") == 1
    face_seen = next(r.index for r in reports if r.tracks)
    print(f"face to unlock: {(first_on - face_seen) / FPS:.2f} s at {FPS:.0f} fps")
