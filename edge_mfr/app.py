"""The appliance: camera -> detector -> tracker -> (embed + identify when needed) -> votes -> policy -> locks.

Why it is shaped like this:

* **Nothing half-started.** Models, gallery, journal and camera are loaded and checked first (the first
  frame is read, so a camera that opens but cannot capture counts as failed), the relays are created
  de-energised after that, and only then is systemd told READY. Any failure before that point aborts
  with one clear message and the door never left the locked state.
* **Fail-secure on every way out.** ``run()`` relocks every door in a ``finally`` block whatever ended
  the loop (end of a video, ``stop()``, an exception, SIGTERM/SIGINT, whose handler relocks before
  anything else), then journals a final ``locked`` record per door with the cause.
* **A stalled camera stops the pings.** The frame loop is the only place that feeds the lock's watchdog
  and systemd's: a ``read()`` that never returns lets the lock relock on its own after
  ``watchdog_seconds`` (journalled as ``watchdog_tripped``) and systemd restart us. A camera that fails
  loudly is retried with back-off by :class:`ResilientSource`, which reports each retry: the door is
  relocked then, systemd still hears from us, and the tracks start afresh once frames return.
* **The expensive stage runs rarely.** Detection runs on every frame; the tracker decides which faces
  need a new embedding (new, undecided, notably better, or stale tracks), so a person standing at the
  door costs one embedding every few frames.
* **Enrollment without a restart.** The gallery file is re-read when its mtime or size changes (at most
  once a second); a bad file is reported and the previous gallery kept.

Everything that happens goes to the journal (decisions with their reasons, lock actions) and to the
``on_event`` hooks, which MQTT and the kiosk subscribe to; ``on_frame`` hooks see every processed frame.
Hooks must be quick and thread-safe: lock events (unlocked, locked, watchdog_tripped, door contact) arrive
from the lock's own dispatcher thread, everything else from the frame loop.

Why one file: the start-up order, the frame loop and every way out (stop, end of input, exception, signal,
camera loss) form one fail-secure sequence around the same few fields; the subscribers (MQTT, the kiosk)
live in edge_mfr/interfaces/, and splitting the lifecycle would spread the relock paths across files.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from edge_mfr.errors import EdgeMfrError

log = logging.getLogger(__name__)

EventHook = Callable[[str, dict[str, Any]], None]
GALLERY_CHECK_S = 1.0  # how often the gallery file's mtime is looked at
STATUS_EVERY_S = 10.0  # how often `systemctl status` text is refreshed
FPS_WINDOW = 30  # frames over which the current fps is measured
# Policy events that are decisions about a person: journalled with the policy's reasons.
# Test override of the config's device.gpio: EDGE_MFR_GPIO=mock simulates GPIO whatever the config says.
GPIO_ENV = "EDGE_MFR_GPIO"
DECISION_EVENTS = frozenset({"access_granted", "access_denied", "unknown_face", "lockout"})


# ------------------------------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class TrackView:
    """What the loop knows about one visible face in one frame."""

    track_id: int
    box: tuple[float, float, float, float]
    decided: str | None  # person id, "unknown", or None while the vote is open
    name: str | None
    masked: bool
    score: float  # latest classifier similarity of this track (0 before the first embedding)
    embedded: bool  # an embedding was computed for it in this frame
    liveness: str | None = None  # "waiting" for a blink, "passed", or None (not checked)
    in_zone: bool = True  # in the camera's door zone: only such faces can open the door or count
    refused: str | None = None  # why the door will not open for this face now (lockout, not allowed, ...)


@dataclass(frozen=True)
class FrameReport:
    """One processed frame, for ``on_frame`` hooks (demo, kiosk, tests)."""

    index: int  # frames handled since start-up, from 0 (equals the frame number in a video file)
    timestamp: float  # the source's timestamp (stream time for files)
    tracks: list[TrackView]
    action: str  # the policy's action: unlock, deny or none
    person_id: str | None
    relays: dict[str, bool]  # door -> relay energised right after this frame was handled
    reasons: list[str] = field(default_factory=list)
    # The frame's RGB image, shared (not copied): hooks may keep a reference but must never modify it.
    image: Any = field(default=None, repr=False, compare=False)


@dataclass
class Stats:
    """Counters for bench, doctor and (later) the MQTT state topic."""

    frames: int = 0
    faces: int = 0
    embeddings: int = 0
    extra_embeddings: int = 0  # faces the cascade also gave to the extra embedders
    unlocks: int = 0
    denials: int = 0
    started_at: float | None = None  # clock() at the first processed frame
    last_frame_at: float | None = None
    detect_ms: float = 0.0  # running means
    embed_ms: float = 0.0
    liveness_ms: float = 0.0  # total spent on eye measurements (landmark + iris models)
    _recent: list[float] = field(default_factory=list, repr=False)

    def frame_done(self, now: float) -> None:
        if self.started_at is None:
            self.started_at = now
        self.frames += 1
        self.last_frame_at = now
        self._recent.append(now)
        del self._recent[:-FPS_WINDOW]

    @property
    def fps(self) -> float:
        """Frames per second over the last FPS_WINDOW frames."""
        if len(self._recent) < 2 or self._recent[-1] <= self._recent[0]:
            return 0.0
        return (len(self._recent) - 1) / (self._recent[-1] - self._recent[0])

    @property
    def fps_mean(self) -> float:
        """Frames per second since the first frame."""
        if self.started_at is None or self.last_frame_at is None or self.frames < 2:
            return 0.0
        span = self.last_frame_at - self.started_at
        return (self.frames - 1) / span if span > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"frames": self.frames, "fps": round(self.fps, 2), "fps_mean": round(self.fps_mean, 2),
                "faces": self.faces, "embeddings": self.embeddings, "unlocks": self.unlocks,
                "denials": self.denials, "detect_ms": round(self.detect_ms, 2), "embed_ms": round(self.embed_ms, 2)}


# ------------------------------------------------------------------------------------------------ adapters


class _PolicyClock:
    """The policy's clock: the appliance's monotonic clock for durations, local wall time for schedules."""

    def __init__(self, monotonic: Callable[[], float], timezone: str | None):
        self.monotonic = monotonic
        self._tz = ZoneInfo(timezone) if timezone else None

    def now(self) -> datetime:
        return datetime.now(self._tz) if self._tz else datetime.now()


Subscriber = Callable[["Appliance"], Any]  # called once during start-up; hooks itself onto on_event/on_frame


def default_interfaces(config: Any) -> list[Subscriber]:
    """The subscribers the config enables: MQTT first (its outbox takes the start-up records), then the kiosk."""
    found: list[Subscriber] = []
    if config.mqtt.enabled:
        from edge_mfr.interfaces.mqtt_link import attach_mqtt

        found.append(attach_mqtt)
    if config.fleet.enabled:  # after MQTT: it reports the gallery version in MQTT's retained state
        from edge_mfr.interfaces.fleet.attach import attach_fleet

        found.append(attach_fleet)
    if config.kiosk.enabled:
        from edge_mfr.interfaces.kiosk.server import attach_kiosk

        found.append(attach_kiosk)
    return found


def gpio_mock(setting: str, environ: Mapping[str, str]) -> bool | None:
    """``device.gpio`` as make_pin_factory's ``mock`` (None: decide by the board); $EDGE_MFR_GPIO=mock wins."""
    if environ.get(GPIO_ENV, "").lower() == "mock":
        return True
    return {"mock": True, "real": False}.get(setting)


def lock_doors(doors: list[Any]) -> list[Any]:
    """config.DoorConfig (a config section) -> device.lock.DoorConfig (the lock's frozen dataclass)."""
    from dataclasses import fields as dc_fields

    from edge_mfr.device.lock import DoorConfig

    names = {f.name for f in dc_fields(DoorConfig)}
    return [DoorConfig(**{k: v for k, v in d.model_dump().items() if k in names}) for d in doors]


class _Closer:
    """What the signal handler relocks: the bank once it exists (a signal during start-up finds none)."""

    def __init__(self, app: Appliance):
        self.app = app

    def close(self) -> None:
        if self.app.bank is not None:
            self.app.bank.close()

    def stop_now(self) -> None:
        bank = self.app.bank
        if bank is not None:
            bank.stop_now()


class _Stop(BaseException):
    """Raised by the signal handler to leave the frame loop at once (even from a blocked read).

    A BaseException, like KeyboardInterrupt, so no ``except Exception`` on the way can swallow it.
    """

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# ---------------------------------------------------------------------------------------------- appliance


class Appliance:
    """The door appliance. ``run()`` starts it (unless :meth:`start` was called), loops, and always relocks.

    Injected by the entry point, tests and the demo: ``interfaces`` (subscribers called once during start-up,
    default: :func:`default_interfaces` of the config), ``source`` (any FrameSource; default: ``config.camera``),
    ``pin_factory`` (default: as ``device.gpio`` says: real GPIO on a Pi, gpiozero MockFactory elsewhere,
    logged; ``EDGE_MFR_GPIO=mock`` in the environment simulates whatever the config says, for tests), ``notifier``
    (default: sd_notify), ``clock`` (monotonic seconds; drives the policy's cooldowns and the stats).
    ``pace`` replays a finite source (a video file) at its own frame rate, as a camera would deliver it.
    """

    def __init__(self, config: Any, *, source: Any = None, pin_factory: Any = None, notifier: Any = None,
                 clock: Callable[[], float] = time.monotonic, pace: bool = False,
                 models_dir: Path | None = None, interfaces: Sequence[Subscriber] | None = None):
        from edge_mfr.device.notify import Notifier

        self.config = config
        self.clock = clock
        self.pace = pace
        self.models_dir = models_dir or config.models.dir
        self.notifier = notifier if notifier is not None else Notifier()
        self.on_event: list[EventHook] = []
        self.on_frame: list[Callable[[FrameReport], None]] = []
        self.stats = Stats()
        self.door = config.doors[0].name  # the door this camera watches
        self.pipeline: Any = None
        self.identifier: Any = None
        self.journal: Any = None
        self.bank: Any = None
        self.tracker: Any = None
        self.policy: Any = None
        self.liveness: Any = None  # the LivenessGate when the door's liveness is "blink"
        self.fleet: Any = None  # the fleet Follower when fleet.enabled
        self.mqtt: Any = None  # the MqttClient when mqtt.enabled (kept after stop: its stats stay readable)
        self.kiosk: Any = None  # the web view when kiosk.enabled (None when its port was taken)
        self._given_source = source
        self._pin_factory = pin_factory
        # Subscribers (MQTT, the kiosk) the entry point wires in; by default those the config enables.
        self.interfaces = list(interfaces) if interfaces is not None else default_interfaces(config)
        self.source: Any = None
        self._first_frame: Any = None
        self._stop = threading.Event()
        self._started = False
        self._ready = False
        self._gallery_sig: tuple | None = None
        self._clear_id = 0  # newest lockout_cleared journal row already applied
        self._clear_checked = float("-inf")
        self._gallery_checked = -math.inf
        # A changed gallery is read on a helper thread (the SVM refit runs in a child process, seconds on a
        # Pi): the frame loop keeps deciding with the old gallery and adopts the new one when it is ready.
        self._reloader: threading.Thread | None = None
        self._reloaded: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # People to stop matching now (a fleet revoke): applied by the frame thread before the next decision;
        # a reload that began before them is discarded (it may have read the gallery without the change).
        self._forget: queue.SimpleQueue[frozenset[str]] = queue.SimpleQueue()
        self._gallery_gen = 0
        self._last_ping = -math.inf
        self._last_status = -math.inf
        self._pace_origin: tuple[float, float] | None = None
        self._scores: dict[int, float] = {}
        self._faulted: set[int] = set()  # tracks whose face matched everyone enrolled (journaled once)
        self._frame_no = 0
        self._shut_down = False
        if len(config.doors) > 1:
            log.warning("%d doors configured: the camera's decisions act on the first, %r", len(config.doors),
                        self.door)

    # -------------------------------------------------------------------------------------------- start-up

    def start(self) -> None:
        """Relock (create the locks, relays off) before anything else, load and check everything, then READY.

        The relock comes first because a restart after SIGKILL or an out-of-memory kill is the only software
        that relocks then, and loading the models takes seconds on a Pi.

        Raises an EdgeMfrError naming what failed; whatever was opened is closed again (the caller's
        ``run()`` does that when it called us).
        """
        from edge_mfr.device.journal import Journal
        from edge_mfr.device.lock import LockBank, make_pin_factory
        from edge_mfr.identity.gallery import remove_stale_temp_files
        from edge_mfr.policy import AccessPolicy
        from edge_mfr.stream.camera import make_camera
        from edge_mfr.stream.sources import Backoff, ResilientSource
        from edge_mfr.stream.tracker import Tracker
        from edge_mfr.vision.pipeline import FacePipeline

        cfg = self.config
        factory = self._pin_factory
        if factory is None:
            factory = make_pin_factory(mock=gpio_mock(cfg.device.gpio, os.environ))
        watchdog = cfg.watchdog_seconds or None
        self.bank = LockBank(lock_doors(cfg.doors), factory, self._lock_event, watchdog_s=watchdog)
        self.journal = Journal.from_config(cfg)  # before the checks below, so a refusal is journaled
        self.notifier.status("loading models")
        remove_stale_temp_files(cfg.recognition.gallery)  # a killed writer's temp file may hold face crops
        self.pipeline = FacePipeline(detector=cfg.models.detector, num_threads=cfg.models.threads,
                                     models_dir=self.models_dir, embedders=cfg.recognition.embedders)
        self.notifier.status("model self-test")
        self._refuse_if(self._self_test)
        self.identifier = self._refuse_if(self._load_identifier)
        self._gallery_sig = self._gallery_signature()
        for problem in getattr(self.identifier.classifier, "problems", ()):  # e.g. a damaged SVM cache, rebuilt
            self._record("warning", problem=problem)
        self.notifier.status("opening the camera")
        raw = self._given_source if self._given_source is not None else make_camera(cfg.camera)
        self.source = raw
        raw.open()
        first = raw.read()
        if first is None:
            raise EdgeMfrError(f"{raw.name}: the camera/source gave no frame at start-up")
        self._first_frame = first
        if raw.live and not isinstance(raw, ResilientSource):  # reopening an open source is a no-op
            backoff = Backoff(cfg.camera.retry_min_seconds, cfg.camera.retry_max_seconds)
            self.source = ResilientSource(raw, backoff=backoff, on_event=self._source_event, stop=self._stop)
        rec = cfg.recognition
        self.tracker = Tracker(vote_n=rec.vote_n, vote_m=rec.vote_m, reembed_every=rec.reembed_every)
        self.policy = AccessPolicy(cfg.policy, _PolicyClock(self.clock, cfg.policy.timezone))
        self._restore_lockouts()
        door_cfg = cfg.doors[0]
        if door_cfg.liveness == "blink":
            from edge_mfr.liveness.gate import LivenessGate
            from edge_mfr.vision.eyes import EyeOpenness

            eyes = EyeOpenness(num_threads=cfg.models.threads, models_dir=self.models_dir,
                               landmarker=self.pipeline.landmarker)
            self.liveness = LivenessGate(eyes, window_s=door_cfg.liveness_window_seconds)
        for attach in self.interfaces:  # MQTT first: its outbox takes the start-up records below
            attach(self)  # a broker or kiosk port problem is journalled; a bad secret or password file aborts
        for door in self.bank:
            self._record("locked", door=door.name, reason="startup", relay="off")
        people = len(self.identifier.gallery.people)
        self._record("started", source=self.source.name, people=people, detector=cfg.models.detector,
                     watchdog_s=watchdog)
        self._started = True
        self.notifier.ready(f"watching {self.source.name}; {people} people enrolled")
        self._ready = True
        log.info("ready: %s, %d people enrolled, doors %s", self.source.name, people, ", ".join(self.bank.names))

    def _refuse_if(self, step: Callable[[], Any]) -> Any:
        """Run a start-up check; a broken model or gallery is journaled as a fault, then start-up stops."""
        from edge_mfr.errors import GalleryError
        from edge_mfr.vision.selftest import SelfTestError

        try:
            return step()
        except (SelfTestError, GalleryError) as exc:
            self._record("fault", door=self.door, reason=str(exc), action="refused to start; doors stay locked")
            raise

    def _self_test(self) -> None:
        """Known-answer self-test of the interpreters just loaded (edge_mfr/vision/selftest.py)."""
        from edge_mfr.vision.selftest import check_pipeline

        for r in check_pipeline(self.pipeline, self.models_dir):
            log.info("self-test %s (%s): worst cosine %.4f", r.file, r.role, r.worst_cosine)

    def _restore_lockouts(self) -> None:
        """Resume lockouts the journal says are still running (a restart must not end one)."""
        from edge_mfr.device.lockouts import active_lockouts, latest_clear_id

        self._clear_id = latest_clear_id(self.journal)
        for door, seconds in active_lockouts(self.journal).items():
            if door in self.bank.names:
                self.policy.restore_lockout(door, seconds)
                self._record("lockout_restored", door=door, seconds=round(seconds, 1))

    def _check_lockout_clears(self, now: float) -> None:
        """Apply the operators' clears (CLI, kiosk, MQTT: all written to the journal); once a second, here in
        the frame thread, so the policy is only ever changed by the thread that decides."""
        from edge_mfr.device.lockouts import clears_since

        if now - self._clear_checked < 1.0 or self.journal is None or self.policy is None:
            return
        self._clear_checked = now
        try:
            rows = clears_since(self.journal, self._clear_id)
        except Exception:
            log.exception("journal: cannot read lockout clears")
            return
        for row in rows:
            self._clear_id = int(row["id"])
            if self.policy.clear_lockout(row["door"]):
                log.info("lockout cleared by %s", row["payload"].get("by", "an operator"))

    def _load_identifier(self) -> Any:
        from edge_mfr.identity.enroll import extra_models
        from edge_mfr.identity.fusion import load_fusion
        from edge_mfr.identity.gallery import Gallery
        from edge_mfr.identity.identify import Identifier
        from edge_mfr.vision.mask_status import MaskStatusClassifier

        path = self.config.recognition.gallery
        sha = self.pipeline.embedder.model_sha256
        ids = self.pipeline.embedder_ids
        thresholds = self.config.recognition.thresholds
        if path.exists():
            return Identifier.from_files(path, ids, self.models_dir, thresholds, out_of_process=True)
        log.warning("%s: no gallery yet, every face is unknown (enroll people with `edge-mfr enroll`)", path)
        return Identifier(Gallery.create(sha, dim=self.pipeline.embedder.dim, extra_models=extra_models(self.pipeline)),
                          MaskStatusClassifier.load(self.models_dir, sha), thresholds,
                          fusion=load_fusion(ids, self.models_dir) if len(ids) > 1 else None)

    def _gallery_signature(self) -> tuple | None:
        from edge_mfr.identity import gallery_delta

        return gallery_delta.signature(self.config.recognition.gallery)  # the file and its fleet deltas

    # --------------------------------------------------------------------------------------------- the loop

    def run(self, max_frames: int | None = None) -> int:
        """Start if needed, process frames until the source ends, ``max_frames``, :meth:`stop` or a signal.

        Returns 0 (also after SIGTERM: a requested stop is a success for systemd); after SIGINT it raises
        SystemExit(130) once the doors are locked. Exceptions propagate after the doors are relocked.
        """
        previous = self._install_signals()
        cause = "end of input"
        exit_code = 0
        try:
            if not self._started:
                self.start()
            done = 0
            while not self._stop.is_set() and (max_frames is None or done < max_frames):
                if not self.step():
                    break
                done += 1
            if self._stop.is_set():
                cause = "stop requested"
            elif max_frames is not None and done >= max_frames:
                cause = f"max frames ({max_frames})"
        except _Stop as sig:
            cause = str(sig)
            exit_code = 0 if sig.signum == signal.SIGTERM else 128 + sig.signum
        except BaseException as exc:
            if self._started:
                cause = f"error: {type(exc).__name__}: {exc}"
                log.error("stopping (%s): relocking every door", cause)
            else:  # the caller prints the one-line reason; the relays were never energised
                cause = "start-up failed"
                log.info("start-up failed before READY: %s", exc)
            raise
        finally:
            self._shutdown(cause)
            self._restore_signals(previous)
        if exit_code:
            raise SystemExit(exit_code)
        return 0

    def stop(self) -> None:
        """Ask the loop to end after the current frame (thread-safe); a retrying camera stops waiting."""
        self._stop.set()

    def step(self) -> bool:
        """Read and handle one frame; False at the end of a finite source (or when stopping)."""
        frame = self._next_frame()
        if frame is None:
            return False
        now = self.clock()
        self.bank.watchdog_feed()
        self._ping(now)
        self._check_gallery(now)
        self._check_lockout_clears(now)
        self.handle_frame(frame)
        self.stats.frame_done(self.clock())
        return True

    def _next_frame(self) -> Any:
        if self._first_frame is not None:
            frame, self._first_frame = self._first_frame, None
        else:
            frame = self.source.read()
        if frame is not None and self.pace and not self.source.live:
            self._wait_for(frame.timestamp)
        return frame

    def _wait_for(self, stream_time: float) -> None:
        """Deliver a file's frames no faster than its own frame rate (the demo, `run --realtime`)."""
        now = time.monotonic()
        if self._pace_origin is None:
            self._pace_origin = (now, stream_time)
            return
        delay = self._pace_origin[0] + (stream_time - self._pace_origin[1]) - now
        if delay > 0:
            self._stop.wait(delay)

    def handle_frame(self, frame: Any) -> FrameReport:
        """Detect, track, identify what needs it, decide, act. Public so tests can drive single frames."""
        from edge_mfr.policy import observations
        from edge_mfr.stream.sources import scale_faces

        rec = self.config.recognition
        index = self._frame_no  # our own count: sources restart theirs on a reconnect
        self._frame_no += 1
        image, sx, sy = frame.detection_view()
        t0 = time.perf_counter()
        faces = scale_faces(self.pipeline.detect(image, crop_kind="photo"), sx, sy)
        faces = [f for f in faces if f.width >= rec.min_face_px]
        t1 = time.perf_counter()
        self.stats.faces += len(faces)
        tracks = self.tracker.update(faces, index)
        if self.liveness is not None:  # before embedding: a face with its eyes shut is not embedded
            t2 = time.perf_counter()
            self.liveness.measure(tracks, frame.image, float(frame.timestamp), self.tracker.ended)
            self.stats.liveness_ms += (time.perf_counter() - t2) * 1000
        todo = [(i, t) for i, t in enumerate(tracks) if t.needs_embedding(index)
                and not (self.liveness is not None and self.liveness.eyes_closed(t.id))]
        embedded: set[int] = set()
        if todo:
            analyzed = self.pipeline.analyze_faces(frame.image, [faces[i] for i, _ in todo])
            def embed(fs: list, masked: Any, extra: Any) -> dict[str, Any]:
                self.stats.extra_embeddings += int(sum(bool(x) for x in extra))
                return self.pipeline.embed_for_identity(frame.image, fs, masked, extra)

            height, width = frame.image.shape[:2]
            in_zone = [self.config.camera.in_door_zone(faces[i].box, width, height) for i, _ in todo]
            idents = self.identifier.identify(analyzed, embed, in_zone)
            for (_, track), ident in zip(todo, idents, strict=True):
                if ident.decision.fault and track.id not in self._faulted:
                    self._faulted.add(track.id)  # once per track; the face stays unknown, the door locked
                    self._record("fault", door=self.door, reason=ident.decision.reason, track_id=track.id)
                track.add_identification(ident, index)
                self._scores[track.id] = float(ident.decision.score)
                embedded.add(track.id)
            self.stats.embeddings += len(todo)
            spent_ms = (time.perf_counter() - t1) * 1000  # align + embed + identify, all faces
            self.stats.embed_ms += (spent_ms - len(todo) * self.stats.embed_ms) / self.stats.embeddings
        self.stats.detect_ms += ((t1 - t0) * 1000 - self.stats.detect_ms) / (self.stats.frames + 1)
        for ended in self.tracker.ended:
            self._scores.pop(ended.id, None)
            self._faulted.discard(ended.id)

        height, width = frame.image.shape[:2]
        zone = {t.id: self.config.camera.in_door_zone(t.box, width, height) for t in tracks}
        candidates = tracks
        if self.liveness is not None:
            candidates, refusals = self.liveness.admit(tracks, float(frame.timestamp), self.door)
            for kind, payload in refusals:
                self._record(kind, **payload)
        decision = self.policy.decide(observations(candidates, in_zone=lambda t: zone[t.id]), door=self.door)
        self._act(decision, frame.image, tracks)
        views = [self._view(t, t.id in embedded, float(frame.timestamp), zone[t.id], decision.refused.get(t.id))
                 for t in tracks]
        relays = {d.name: d.is_unlocked for d in self.bank}
        report = FrameReport(index, float(frame.timestamp), views, decision.action, decision.person_id,
                             relays, list(decision.reasons), image=frame.image)
        for hook in self.on_frame:
            try:
                hook(report)
            except Exception:
                log.exception("on_frame hook failed")
        return report

    def _view(self, track: Any, embedded: bool, now: float = 0.0, in_zone: bool = True,
              refused: str | None = None) -> TrackView:
        ident = track.identification
        box = tuple(round(float(v), 1) for v in track.box)
        live = self.liveness.status(track.id, now) if self.liveness is not None else None
        return TrackView(track.id, box, track.decided, getattr(ident, "name", None), bool(track.masked),
                         self._scores.get(track.id, 0.0), embedded, live, in_zone, refused)

    # --------------------------------------------------------------------------------------------- actions

    def _act(self, decision: Any, image: Any = None, tracks: list[Any] | None = None) -> None:
        """Turn one policy decision into lock actions, journal records and events."""
        door = self.bank[decision.door]
        for kind, payload in decision.events:
            if kind in DECISION_EVENTS:
                snapshot = self._snapshot(image, tracks or [], payload.get("track_id"))
                self._record(kind, **payload, reasons=decision.reasons, snapshot=snapshot)
            else:
                self._record(kind, **payload)
        if decision.action == "unlock":
            granted = next((p for k, p in decision.events if k == "access_granted"), {})
            who = granted.get("name") or decision.person_id
            if door.unlock(f"access granted: {who}"):
                self.stats.unlocks += 1
                door.signal("granted")
            else:  # the lock refused (watchdog tripped, closing): say so, never pretend it opened
                self._record("unlock_refused", door=door.name, person_id=decision.person_id,
                             reason="the lock refused the unlock (watchdog tripped or closing)")
        elif decision.action == "deny":
            self.stats.denials += 1
            door.signal("denied" if decision.person_id else "unknown")

    def _snapshot(self, image: Any, tracks: list[Any], track_id: int | None) -> bytes | None:
        """JPEG of the face a decision is about, for ``<prefix>/snapshot/<kind>``; only with mqtt.snapshots."""
        if self.mqtt is None or not self.config.mqtt.snapshots or image is None:
            return None
        from edge_mfr.interfaces.mqtt import encode_snapshot

        track = next((t for t in tracks if t.id == track_id), None)
        if track is None:
            return None
        x0, y0, x1, y1 = (float(v) for v in track.box)
        pad_x, pad_y = 0.4 * (x1 - x0), 0.4 * (y1 - y0)  # head and shoulders, not just the face box
        h, w = image.shape[:2]
        left, top = max(0, int(x0 - pad_x)), max(0, int(y0 - pad_y))
        right, bottom = min(w, int(x1 + pad_x)), min(h, int(y1 + pad_y))
        if right - left < 2 or bottom - top < 2:
            return None
        try:
            return encode_snapshot(image[top:bottom, left:right])
        except ValueError:
            log.warning("could not encode a snapshot for track %s", track_id)
            return None

    def _record(self, kind: str, snapshot: bytes | None = None, **payload: Any) -> None:
        """Journal one event and hand it to the hooks; a failing journal is logged, never fatal here."""
        door = payload.pop("door", None)
        person_id = payload.pop("person_id", None)
        mqtt = self.mqtt
        if self.journal is not None:
            try:  # with MQTT, the event's message enters the outbox in the same transaction
                publish = {"publish": lambda ev: self._mqtt_messages(ev, snapshot)} if mqtt is not None else {}
                self.journal.record(kind, door=door, person_id=person_id, **publish, **payload)
            except Exception:
                log.exception("journal: cannot record %s", kind)
            if mqtt is not None:
                mqtt.wake()
        event = {"door": door, "person_id": person_id, **payload}
        if not self.config.policy.announce_masked:
            event.pop("masked", None)
        for hook in self.on_event:
            try:
                hook(kind, event)
            except Exception:
                log.exception("on_event hook failed for %s", kind)

    def _lock_event(self, name: str, door: str, details: dict[str, Any]) -> None:
        """From the lock's dispatcher thread: unlocked, locked (with reason), watchdog_tripped, door..."""
        if name == "watchdog_tripped":
            self.notifier.status(f"door {door}: no frame for {details.get('watchdog_s')} s, relocked")
        self._record(name, door=door, **details)

    def _source_event(self, kind: str, payload: dict[str, Any]) -> None:
        """ResilientSource: camera lost (relock, keep systemd informed) or restored (start tracks afresh)."""
        if kind == "source_lost":
            if self.bank is not None:
                self.bank.lock_all("camera lost")
            self.notifier.status(f"camera lost: {payload.get('error')}; retry in {payload.get('retry_in')} s")
            self.notifier.watchdog()  # alive and retrying; the door stays locked meanwhile
        elif kind == "source_restored" and self.tracker is not None:
            self.tracker.reset()
        self._record(kind, **payload)

    # ---------------------------------------------------------------------------------------- housekeeping

    def _ping(self, now: float) -> None:
        interval = self.notifier.watchdog_interval() if hasattr(self.notifier, "watchdog_interval") else None
        every = min(interval, 1.0) if interval else 1.0
        if now - self._last_ping >= every:
            self._last_ping = now
            self.notifier.watchdog()
        if now - self._last_status >= STATUS_EVERY_S:
            self._last_status = now
            self.notifier.status(f"{self.stats.fps:.1f} fps, {len(self.identifier.gallery.people)} people "
                                 f"enrolled, {self.stats.unlocks} unlocks")

    def _check_gallery(self, now: float) -> None:
        """Forget revoked people; adopt a gallery read in the background; start reading one when it changed."""
        self._apply_forget()
        self._adopt_reloaded()
        if self._reloader is not None and self._reloader.is_alive():
            return
        if now - self._gallery_checked < GALLERY_CHECK_S:
            return
        self._gallery_checked = now
        sig = self._gallery_signature()
        if sig == self._gallery_sig:
            return
        self._gallery_sig = sig  # taken before reading: a change during the read is seen next time
        self._reloader = threading.Thread(target=self._reload_in_background, args=(self._gallery_gen,),
                                          name="gallery-reload", daemon=True)
        self._reloader.start()

    def forget_people(self, person_ids: Iterable[str]) -> None:
        """Stop matching these people from the next frame on, without waiting for the gallery reload (which
        refits the classifier: minutes with thousands of people). Thread-safe (the fleet follower calls it)."""
        self._forget.put(frozenset(person_ids))

    def _apply_forget(self) -> None:
        ids: set[str] = set()
        while True:
            try:
                ids |= self._forget.get_nowait()
            except queue.Empty:
                break
        if not ids or self.identifier is None:
            return
        self._gallery_gen += 1  # a reload already under way may predate the change: it is not adopted
        self.identifier = self.identifier.without(ids)
        self._clear_votes()
        self.request_gallery_reload()
        log.info("forgot %d people in memory until the gallery is re-read", len(ids))

    def _clear_votes(self) -> None:
        if self.tracker is not None:
            for track in self.tracker.tracks:  # votes of the old gallery no longer count
                track.votes.clear()
                track.last_embed_frame = None

    def _reload_in_background(self, gen: int) -> None:
        """Helper thread: read the gallery and build its identifier; the frame thread adopts the result."""
        try:
            result: Any = self._load_identifier()
        except EdgeMfrError as exc:
            result = exc
        except Exception as exc:  # noqa: BLE001 - a reload must never take the door loop down
            log.exception("reading the changed gallery failed")
            result = EdgeMfrError(f"reading the gallery failed: {exc}")
        self._reloaded.put((gen, result))

    def wait_for_reload(self, timeout: float | None = None) -> bool:
        """Block until a background gallery read has finished (tests; False on timeout)."""
        reloader = self._reloader
        if reloader is not None:
            reloader.join(timeout)
            return not reloader.is_alive()
        return True

    def _adopt_reloaded(self) -> None:
        try:
            gen, result = self._reloaded.get_nowait()
        except queue.Empty:
            return
        if gen != self._gallery_gen:  # began before people were forgotten: read again
            self.request_gallery_reload()
            return
        if isinstance(result, EdgeMfrError):
            log.error("gallery changed but cannot be used, keeping the previous one: %s", result)
            self._record("gallery_error", error=str(result))
            return
        self.identifier = result
        self._clear_votes()
        people = len(result.gallery.people)
        log.info("gallery reloaded: %d people", people)
        self._record("gallery_reloaded", people=people)

    def state(self) -> dict[str, Any]:
        """A JSON-ready snapshot (kiosk, MQTT state, bench)."""
        return {"stats": self.stats.as_dict(), "doors": self.bank.state() if self.bank is not None else {},
                "people": len(self.identifier.gallery.people) if self.identifier is not None else 0,
                "lockout_s": round(self.policy.lockout_remaining(), 1) if self.policy is not None else 0.0}

    # ----------------------------------------------------------------------------------------- subscribers

    def record(self, kind: str, **payload: Any) -> None:
        """Journal an event and hand it to the ``on_event`` hooks (for subscribers: MQTT, the kiosk)."""
        self._record(kind, **payload)

    def request_gallery_reload(self) -> None:
        """Re-read the gallery file at the next frame (thread-safe: only the frame thread acts on it)."""
        self._gallery_sig, self._gallery_checked = None, -math.inf

    def _mqtt_messages(self, event: dict[str, Any], snapshot: bytes | None = None) -> list[tuple]:
        """A journal event's outbox messages; ``masked`` left out unless policy.announce_masked."""
        if not self.config.policy.announce_masked and "masked" in (event.get("payload") or {}):
            event = {**event, "payload": {k: v for k, v in event["payload"].items() if k != "masked"}}
        return self.mqtt.messages_for(event, snapshot)

    # ------------------------------------------------------------------------------------------- shutdown

    def _install_signals(self) -> dict[int, Any] | None:
        if threading.current_thread() is not threading.main_thread():
            return None  # tests and embedders running us in a thread handle stopping themselves
        from edge_mfr.device.lock import install_signal_handlers

        def then(signum: int) -> None:
            self._stop.set()  # even if something catches _Stop, the loop ends at the next frame
            raise _Stop(signum)

        return dict(install_signal_handlers(_Closer(self), then=then))

    def _restore_signals(self, previous: dict[int, Any] | None) -> None:
        for signum, handler in (previous or {}).items():
            try:
                signal.signal(signum, handler)
            except (ValueError, TypeError):  # pragma: no cover - not the main thread / odd handler
                pass

    def _shutdown(self, cause: str) -> None:
        """Relock first, then release everything; each step runs even if an earlier one failed."""
        if self._shut_down:
            return
        self._shut_down = True
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):  # a second signal must not cut the cleanup
                signal.signal(signum, lambda s, f: log.warning("%s while stopping: ignored",
                                                               signal.Signals(s).name))
        self._stop.set()
        self.notifier.stopping()
        bank, self.bank = self.bank, None
        if bank is not None:
            states = {}
            try:
                bank.lock_all(f"shutdown: {cause}")
                states = {d.name: d.is_unlocked for d in bank}
            except Exception:
                log.exception("relocking before shutdown failed; closing releases the relays anyway")
            try:
                bank.close()  # relays off first, then the pins are released
            except Exception:
                log.exception("closing the locks failed")
            for name in bank.names:
                relay = "off" if not states.get(name, False) else "unknown"
                self._record("locked", door=name, reason=f"shutdown: {cause}", relay=relay)
        for closer in (self.source, self._given_source):
            if closer is not None:
                try:
                    closer.close()
                except Exception:
                    log.debug("closing the source failed", exc_info=True)
        kiosk, fleet, self.kiosk, self.fleet = self.kiosk, self.fleet, None, None
        for name, stop in (("kiosk", getattr(kiosk, "close", None)), ("fleet follower", getattr(fleet, "stop", None))):
            if stop is not None:
                try:
                    stop()
                except Exception:
                    log.exception("stopping the %s failed", name)
        if self.mqtt is not None:  # after the relock (its LOCKED state goes out), before the journal closes
            try:
                self.mqtt.stop()  # publishes offline; unsent events stay in the outbox for the next start
            except Exception:
                log.exception("stopping MQTT failed")
        if self.journal is not None:
            self._record("stopped", cause=cause, **self.stats.as_dict())
            journal, self.journal = self.journal, None
            journal.close()
        self._started = False
        close = getattr(self.notifier, "close", None)
        if close is not None:
            close()
        log.info("stopped (%s) after %d frames", cause, self.stats.frames)


# --------------------------------------------------------------------------------------------------- CLI


def run_command(config_path: Path | None, source: str | None = None, max_frames: int | None = None,
                models_dir: Path | None = None, realtime: bool = False) -> int:
    """``edge-mfr run``: the systemd service's ExecStart."""
    from edge_mfr.config import load_config
    from edge_mfr.config_safety import require_safe
    from edge_mfr.run_console import RunConsole

    cfg = load_config(config_path)
    require_safe(cfg, Path(config_path) if config_path is not None else None)  # the checks of `config check`
    if source:
        cfg.camera = cfg.camera.model_copy(update={"source": source})
    app = Appliance(cfg, models_dir=models_dir, pace=realtime, interfaces=default_interfaces(cfg))
    console = RunConsole(kiosk=lambda: app.kiosk.url if app.kiosk is not None else
                         "not running (see the warning above)" if cfg.kiosk.enabled else "off (kiosk.enabled = false)")
    app.on_event.append(console)
    started = False
    try:
        code = app.run(max_frames=max_frames)
        started = True
    except SystemExit:  # SIGINT: the doors are locked; the summary is still owed
        started = True
        raise
    finally:
        if started:
            console.summary(app.stats, cfg.journal.path)
    return code


def relock_command(config_path: Path | None) -> int:
    """``edge-mfr relock``: systemd's ExecStopPost, run after every end of the service, SIGKILL included.

    A GPIO line released by a killed process may keep its last (unlocked) level; this drives every relay
    to its de-energised level and releases it there, in well under a second, instead of waiting for the
    restart (RestartSec plus start-up) or for nothing at all once systemd's start limit is hit.
    """
    from edge_mfr.config import load_config
    from edge_mfr.device.lock import LockBank, make_pin_factory

    cfg = load_config(config_path)
    factory = make_pin_factory(mock=gpio_mock(cfg.device.gpio, os.environ))
    LockBank(lock_doors(cfg.doors), factory).close()  # created de-energised, then released
    print(f"relocked {', '.join(d.name for d in cfg.doors)}")
    return 0
