"""`edge-mfr demo`: the whole appliance on a machine with no Pi, no camera and no broker.

It makes its own input from public-domain photos that ship inside scikit-image (read as files, without
importing scikit-image): Eileen Collins (the astronaut photo) is enrolled through the real enrollment
code, then a short 640x480 video is rendered in which she walks up to the door and blinks, then someone
holds up a printed photo of her, she comes back wearing a mask (drawn on each frame by the synthetic-mask
renderer at her detected keypoints, in a style enrollment does not use) and blinks, then nobody is there,
then a stranger (the cameraman photo) walks up. The door's liveness check is on: it unlocks after a blink.
Everything in the clip is rendered: "live" Eileen is the same photo pasted at a growing scale, her blinks
are lids painted shut for four frames (edge_mfr.liveness.render.close_eyes at her landmarks), and the
printed photo is that photo warped, shaken, grained and lit as a hand-held print (render.attack_frames):
the demo shows the mechanism, not evidence that a photo cannot pass a real camera. The real
appliance loop runs on that video file (OpenCV source, simulated GPIO, a fresh journal), paced at the
clip's frame rate as a camera would deliver it, and the relay state is recorded after every frame.

The exit status is 0 only when the door opened for her with and without the mask, stayed locked for the
photo (with a liveness refusal journaled), the empty scene and the stranger. When an MQTT broker listens
on localhost:1883, the appliance also publishes its events, lock state and availability there under
``edge-mfr-demo/demo/`` (anonymously, no Home Assistant discovery); the result does not depend on it.

Caveat printed with the result: the mask in the clip comes from the same renderer as the synthetic masked
templates made at enrollment, so the masked similarity is higher than a real mask would give
(EVALUATION.md: synthetic-mask tests overstate accuracy; `edge-mfr eval` measures real masks).
"""

from __future__ import annotations

import importlib.util
import json
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_mfr.errors import EdgeMfrError
from edge_mfr.paths import cli_command

NAME = "Eileen Collins"
FPS = 10.0
SIZE = (640, 480)
# A light teal surgical mask: a colour enrollment's standard styles do not use.
DEMO_MASK = ("surgical", (120, 200, 190), "pleats", 0.5)
DEMO_BROKER = ("localhost", 1883)  # used when something listens there
DEMO_TOPIC_PREFIX = "edge-mfr-demo/demo"


@dataclass(frozen=True)
class Segment:
    name: str
    start: int  # first frame
    stop: int  # one past the last frame
    expect_unlock: bool
    what: str
    expect_liveness_refusal: bool = False

    def __contains__(self, index: int) -> bool:
        return self.start <= index < self.stop


def skimage_data_file(name: str) -> Path:
    """A file of scikit-image's data folder, found without importing scikit-image (SciPy costs memory)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise EdgeMfrError("the demo needs scikit-image's sample photos: pip install 'edge-mfr[demo]'")
    path = Path(spec.submodule_search_locations[0]) / "data" / name
    if not path.is_file():
        raise EdgeMfrError(f"{path}: scikit-image's sample photo is missing from the installed package")
    return path


@dataclass
class Actors:
    """The face images pasted into the clip and where the astronaut's face keypoints are on hers."""

    eileen: np.ndarray  # head and shoulders, RGB
    eileen_keypoints: np.ndarray  # (6, 2) detected on ``eileen``
    stranger: np.ndarray  # the cameraman, RGB
    eileen_landmarks: np.ndarray | None = None  # (468, 3) face mesh on ``eileen``, where blinks are painted


def actors(pipeline: Any) -> Actors:
    from edge_mfr.vision.imageio import read_image
    from edge_mfr.vision.samples import sample_image

    eileen = np.ascontiguousarray(sample_image()[10:280, 110:340])
    faces = pipeline.detect(eileen, crop_kind="photo")
    if len(faces) != 1:
        raise EdgeMfrError(f"demo: expected one face in the astronaut photo, the detector found {len(faces)}")
    stranger = np.ascontiguousarray(read_image(skimage_data_file("camera.png"))[40:300, 100:350])
    return Actors(eileen, faces[0].keypoints.copy(), stranger)


def with_landmarks(cast: Actors, pipeline: Any, models_dir: Path | None = None) -> Actors:
    """``cast`` plus Eileen's face mesh (the landmark model), needed to paint her blinks."""
    from dataclasses import replace

    from edge_mfr.vision.eyes import EyeOpenness

    face = pipeline.detect(cast.eileen, crop_kind="photo")[0]
    return replace(cast, eileen_landmarks=EyeOpenness(models_dir=models_dir).measure(cast.eileen, face).landmarks)


def walk(n: int, face_shape: tuple[int, int], scales: tuple[float, float], x_from: float, image: int) -> list:
    """``n`` placements of a face walking towards the camera: growing, drifting to the centre."""
    from edge_mfr.stream.sources import Placement

    w, h = SIZE
    fh, fw = face_shape
    out = []
    for i in range(n):
        t = min(1.0, i / max(n * 0.6, 1))  # arrives at 60 % of the segment, then stands at the door
        s = scales[0] + (scales[1] - scales[0]) * t
        cx = w * (x_from + (0.5 - x_from) * t)
        out.append(Placement(cx - fw * s / 2, h * 0.55 - fh * s / 2, s, image))
    return out


def demo_script(cast: Actors, fps: float = FPS) -> tuple[list[Any], list[Segment], dict[int, float]]:
    """The clip: approach, away, photo, masked, empty, stranger, end; one entry per frame (None = empty or,
    in the photo segment, a frame rendered as a held-up print); and the lid closure of her blink frames."""
    from edge_mfr.liveness.render import BLINK_PROFILE

    n = {k: round(v * fps) for k, v in
         {"approach": 4.5, "away": 2.0, "photo": 3.5, "masked": 4.5, "empty": 2.0, "stranger": 3.0,
          "end": 0.5}.items()}
    script: list[Any] = []
    segments = []

    def add(name: str, entries: list[Any], expect: bool, what: str) -> None:
        segments.append(Segment(name, len(script), len(script) + len(entries), expect, what))
        script.extend(entries)

    blinks: dict[int, float] = {}

    def blink_at(seconds: float) -> None:  # in the segment added last
        first = segments[-1].start + round(seconds * fps)
        blinks.update({first + k: amount for k, amount in enumerate(BLINK_PROFILE)})

    shape = cast.eileen.shape[:2]
    add("approach", walk(n["approach"], shape, (0.8, 1.6), 0.25, 0), True, f"{NAME} walks up, no mask, blinks")
    blink_at(1.5)
    add("away", [None] * n["away"], False, "she steps away")
    segments.append(Segment("photo", len(script), len(script) + n["photo"], False,
                            f"someone holds up a printed photo of {NAME}", expect_liveness_refusal=True))
    script.extend([None] * n["photo"])
    add("masked", walk(n["masked"], shape, (1.1, 1.5), 0.7, 1), True,
        f"{NAME} comes back wearing a mask, blinks")
    blink_at(1.5)
    add("empty", [None] * n["empty"], False, "nobody at the door")
    add("stranger", walk(n["stranger"], cast.stranger.shape[:2], (1.0, 1.7), 0.3, 2), False,
        "a stranger (the cameraman photo) walks up")
    add("end", [None] * n["end"], False, "nobody at the door")
    return script, segments, blinks


def render_frames(cast: Actors, script: list[Any], blinks: dict[int, float] | None = None) -> list[np.ndarray]:
    """RGB frames of ``script``; image 1 is Eileen with the demo mask drawn at her keypoints in the frame;
    in frames listed in ``blinks`` her lids are painted closed by that much (needs ``cast.eileen_landmarks``)."""
    from edge_mfr.liveness.render import close_eyes
    from edge_mfr.stream.sources import SyntheticSource
    from edge_mfr.vision.synthetic_masks import MaskStyle, render_mask

    style = MaskStyle(*DEMO_MASK)
    # image 1 is pasted bare and masked afterwards, on the frame itself
    source = SyntheticSource([cast.eileen, cast.eileen, cast.stranger], script=script, size=SIZE, fps=FPS)
    frames = []
    for i, entry in enumerate(script):
        frame = source.render(i)
        if entry is not None and entry.image == 1:
            keypoints = cast.eileen_keypoints * entry.scale + np.array([round(entry.x), round(entry.y)],
                                                                        np.float32)
            frame = render_mask(frame, keypoints, style)
        if entry is not None and entry.image in (0, 1) and blinks and i in blinks:
            if cast.eileen_landmarks is None:
                raise ValueError("render_frames: blinks need the cast's landmarks (with_landmarks)")
            mesh = cast.eileen_landmarks[:, :2] * entry.scale + np.array([round(entry.x), round(entry.y)],
                                                                          np.float32)
            frame = close_eyes(frame, mesh, blinks[i])
        frames.append(frame)
    return frames


def render_photo_attack(cast: Actors, frames: list[np.ndarray], segment: Segment, seed: int = 7) -> None:
    """Fill ``segment``'s frames with Eileen's photo held up as a print (liveness.render.attack_frames)."""
    from edge_mfr.liveness.render import attack_frames

    held = attack_frames(cast.eileen, "print", seed, frames=segment.stop - segment.start, fps=FPS, size=SIZE)
    frames[segment.start:segment.stop] = held


def write_video(path: Path, frames: list[np.ndarray], fps: float = FPS) -> Path:
    """An MP4 (mp4v) file, or MJPEG in AVI where this OpenCV build has no MP4 writer."""
    h, w = frames[0].shape[:2]
    for suffix, fourcc in ((".mp4", "mp4v"), (".avi", "MJPG")):
        target = path.with_suffix(suffix)
        writer = cv2.VideoWriter(str(target), cv2.VideoWriter.fourcc(*fourcc), fps, (w, h))
        if not writer.isOpened():
            writer.release()
            continue
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        writer.release()
        if target.is_file() and target.stat().st_size > 0:
            return target
    raise EdgeMfrError(f"{path.parent}: this OpenCV build can write neither MP4 nor MJPEG video")


def broker_listening(host: str = "localhost", port: int = 1883, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def add_demo_mqtt(config_path: Path, host: str, port: int) -> str:
    """Append an [mqtt] table publishing under the demo's own prefix; returns that prefix.

    Anonymous, no TLS, no Home Assistant discovery (a demo must not add entities to a real Home Assistant)
    and no command secret (signed commands are refused; lock and reload would only move simulated GPIO).
    """
    lines = ["[mqtt]", "enabled = true", f"host = {json.dumps(host)}", f"port = {port}",
             f"topic_prefix = {json.dumps(DEMO_TOPIC_PREFIX)}", "discovery = false", "keepalive_seconds = 10"]
    with open(config_path, "a") as fh:
        fh.write("\n".join(lines) + "\n")
    return DEMO_TOPIC_PREFIX


def demo_config(out: Path, video: Path) -> Path:
    """Write the demo's config.toml into ``out``: short timings so a 13-second clip shows every case.

    A real config file read by the normal loader, so `edge-mfr --config OUT/config.toml events` lists what
    the demo journalled.
    """
    lines = [
        "# written by `edge-mfr demo`",
        "watchdog_seconds = 3.0",  # below max_unlock_seconds, as config check requires
        "[device]", 'id = "demo"', f"state_dir = {json.dumps(str(out.resolve()))}",
        "[camera]", f"source = {json.dumps(str(video.resolve()))}", f"fps = {FPS}",
        "[models]", "threads = 2",
        "[[doors]]", 'name = "front"', "relay_pin = 17", "unlock_seconds = 2.0", "max_unlock_seconds = 4.0",
        'liveness = "blink"', "liveness_window_seconds = 2.5",
        "[policy]", "person_cooldown_seconds = 2.0", "door_cooldown_seconds = 1.0",
    ]
    path = out / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------------------------------------- the run


@dataclass
class SegmentResult:
    segment: Segment
    granted: list[dict[str, Any]]  # access_granted events in this segment
    relay: list[bool]  # relay state after each frame
    scores: list[float]  # similarities computed in this segment
    masked_votes: list[bool]
    decided: set[str]
    unknown_events: int
    liveness_refusals: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        if self.segment.expect_unlock:
            return any(g.get("name") == NAME for g in self.granted)
        if self.segment.expect_liveness_refusal and not self.liveness_refusals:
            return False
        return not self.granted and not any(self.relay)


def run_demo(out_dir: Path | None = None, models_dir: Path | None = None, quiet: bool = False,
             broker: tuple[str, int] | None = DEMO_BROKER) -> int:
    """Build the input, run the appliance on it, print the report; 0 when the door did what it should.

    When an MQTT broker listens at ``broker`` (None: never try), the appliance also publishes its events
    and availability there under ``edge-mfr-demo/demo/``; the outcome does not depend on it.
    """
    from edge_mfr.app import Appliance
    from edge_mfr.config import load_config
    from edge_mfr.device.lock import make_pin_factory
    from edge_mfr.identity.enroll import EnrollOptions, enroll
    from edge_mfr.vision.imageio import write_image
    from edge_mfr.vision.pipeline import FacePipeline

    def say(text: str = "") -> None:
        if not quiet:
            print(text, flush=True)

    t_start = time.monotonic()
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="edge-mfr-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("gallery.npz", "journal.db", "journal.db-wal", "journal.db-shm"):
        (out / stale).unlink(missing_ok=True)  # a fresh gallery and journal on every run
    say("edge-mfr demo: the door appliance on a rendered clip (no Pi, camera or broker needed)")

    pipeline = FacePipeline(num_threads=2, models_dir=models_dir)
    photo = out / "eileen_collins.png"
    from edge_mfr.vision.samples import sample_image

    write_image(photo, sample_image())
    person_id, result = enroll(out / "gallery.npz", NAME, [photo], pipeline, EnrollOptions())
    synthetic = sum(m.synthetic for m in result.metas)
    say(f"enrolled {NAME!r} ({person_id}) from scikit-image's public-domain astronaut photo: "
        f"{len(result.kept)} face, {synthetic} synthetic masked templates")

    cast = with_landmarks(actors(pipeline), pipeline, models_dir)
    script, segments, blinks = demo_script(cast)
    frames = render_frames(cast, script, blinks)
    render_photo_attack(cast, frames, next(s for s in segments if s.name == "photo"))
    video = write_video(out / "door", frames)
    say(f"clip: {video} ({len(script)} frames, {SIZE[0]}x{SIZE[1]}, {FPS:g} fps, {len(script) / FPS:.1f} s): "
        + ", ".join(s.name for s in segments))

    config_path = demo_config(out, video)
    prefix = None
    if broker is not None and broker_listening(*broker):
        prefix = add_demo_mqtt(config_path, *broker)
        say(f"an MQTT broker answers on {broker[0]}:{broker[1]}: events and availability will be published "
            f"under {prefix}/ (watch: mosquitto_sub -h {broker[0]} -p {broker[1]} -t '{prefix}/#' -v)")
    config = load_config(config_path, environ={})
    door = config.doors[0]
    app = Appliance(config, pin_factory=make_pin_factory(mock=True), pace=True, models_dir=models_dir)
    relay: dict[int, bool] = {}
    reports = {}
    events: list[tuple[int, str, dict[str, Any]]] = []
    frame_no = [0]

    def on_frame(report: Any) -> None:
        relay[report.index] = report.relays[door.name]
        reports[report.index] = report
        frame_no[0] = report.index + 1

    app.on_frame.append(on_frame)
    # policy events are recorded while a frame is handled, before its on_frame hook: frame_no[0] is it
    app.on_event.append(lambda kind, payload: events.append((frame_no[0], kind, payload)))
    say(f"running the appliance loop on it: simulated GPIO (gpiozero MockFactory), relay on GPIO"
        f"{door.relay_pin}, unlock {door.unlock_seconds:g} s, votes {config.recognition.vote_n} of "
        f"{config.recognition.vote_m}, paced at {FPS:g} fps ...")
    app.run()
    stats = app.stats

    results = []
    for seg in segments:
        frames = range(seg.start, seg.stop)
        views = [v for i in frames if i in reports for v in reports[i].tracks]
        results.append(SegmentResult(
            seg,
            [p for i, k, p in events if k == "access_granted" and i in seg],
            [relay.get(i, False) for i in frames],
            [v.score for v in views if v.embedded],
            [v.masked for v in views if v.embedded],
            {v.name or v.decided for v in views if v.decided},
            sum(1 for i, k, _ in events if k == "unknown_face" and i in seg),
            [p for i, k, p in events if k == "liveness_refused" and i in seg]))

    say(f"processed {stats.frames} frames: {stats.fps_mean:.1f} fps (paced; the clip is {FPS:g} fps), "
        f"{stats.embeddings} embeddings (the tracker reuses them between frames)")
    say()
    say(f"{'segment':9} {'frames':8} {'door':9} what happened")
    for r in results:
        say(_segment_line(r))
    say()
    say(f"journal: {config.journal.path}  (list it: {cli_command()} --config {config_path} events)")
    if prefix is not None:
        say(_mqtt_line(app.mqtt, broker, prefix))
    main = [r for r in results if r.segment.name in ("approach", "photo", "masked", "empty", "stranger")]
    failed = [r for r in results if not r.ok]
    masked = next(r for r in results if r.segment.name == "masked")
    say("note: the clip's mask comes from the same renderer as the synthetic templates made at enrollment, "
        "so masked similarities here are higher than real masks give (see `edge-mfr eval` on MFR2).")
    if masked.masked_votes and not any(masked.masked_votes):
        say("note: the mask-status classifier did not see the mask in the masked segment; that face was "
            "scored as unmasked.")
    took = time.monotonic() - t_start
    if failed:
        for r in failed:
            want = "unlock for " + NAME if r.segment.expect_unlock else "stay locked"
            if r.segment.expect_liveness_refusal:
                want += " and journal a liveness refusal"
            say(f"UNEXPECTED: {r.segment.name}: the door should {want} ({r.segment.what})")
        say(f"result: FAILED ({took:.0f} s)")
        return 1
    say(f"result: OK: the door unlocked for {NAME} without and with a mask after she blinked and stayed "
        f"locked for a printed photo of her, the empty scene and the stranger ({len(main)} segments, "
        f"{took:.0f} s)")
    return 0


def _mqtt_line(client: Any, broker: tuple[str, int], prefix: str) -> str:
    """What reached the broker: outbox messages it acknowledged (events), or why nothing did."""
    where = f"{broker[0]}:{broker[1]}"
    if client is None or not client.stats["connects"]:
        why = client.last_error if client is not None and client.last_error is not None else "no connection"
        return (f"MQTT: the broker on {where} could not be used ({why}); the events stayed in the journal's "
                "outbox")
    return (f"MQTT: the broker on {where} acknowledged {client.stats['acked']} event messages under {prefix}/event/ "
            f"(availability: {prefix}/availability, now offline; lock state: {prefix}/state/lock/front)")


def _segment_line(r: SegmentResult) -> str:
    seg = r.segment
    strip = "".join("#" if on else "." for on in r.relay)
    door = "UNLOCKED" if r.granted else ("open" if any(r.relay) else "locked")
    if r.granted:
        g = r.granted[0]
        mask = "with a mask" if g.get("masked") else "no mask"
        what = f"unlocked for {g.get('name')} ({mask}), similarity {g.get('score', 0):.2f}"
    elif r.liveness_refusals:
        who = r.liveness_refusals[0].get("person_id")
        what = f"recognised ({who}) but refused: {r.liveness_refusals[0].get('reason')}"
    elif r.unknown_events or "unknown" in r.decided:
        best = max(r.scores) if r.scores else 0.0
        what = f"unknown face, refused (best similarity to anyone enrolled {best:.2f})"
    elif r.scores:
        what = f"face seen, no decision (similarities {min(r.scores):.2f}-{max(r.scores):.2f})"
    else:
        what = "no face"
    if r.scores and r.granted:
        what += f"; per-embedding {min(r.scores):.2f}-{max(r.scores):.2f}"
        if r.masked_votes:
            what += f", mask seen in {sum(r.masked_votes)}/{len(r.masked_votes)}"
    if any(r.relay) and not r.granted:
        what += " (relay still on from the previous unlock)"
    return f"{seg.name:9} {seg.start:>3}-{seg.stop - 1:<4} {door:9} {what}\n{'':9} relay     {strip}"
