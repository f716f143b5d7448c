"""The appliance loop on real video files with gpiozero's MockFactory: relay over time, fail-secure exits.

Clips are rendered once per session from scikit-image's public-domain photos (Eileen Collins, enrolled
through the real enrollment code, and the cameraman as a stranger) and written as real MP4 files read
back through OpenCV. Durations are only checked from below (a relock may be late, never early); waits
poll with generous timeouts so a loaded machine makes the tests slower, not flaky.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from edge_mfr.app import Appliance
from edge_mfr.config import Config
from edge_mfr.device.journal import Journal

REPO = Path(__file__).resolve().parents[1]
RELAY = 17
EILEEN = "eileen-collins"
TIMEOUT = 30.0
LOCK_KINDS = ("locked", "unlocked")


@dataclass(frozen=True)
class Assets:
    gallery: Path
    eileen_clip: Path  # 3 s at 10 fps: empty, she walks up and stays, empty
    stranger_clip: Path  # 2.5 s: the cameraman walks up
    eileen_frames: int


@pytest.fixture(scope="session")
def assets(enrolled_cast, tmp_path_factory) -> Assets:
    from edge_mfr.demo import render_frames, walk, write_video

    root, cast = tmp_path_factory.mktemp("app"), enrolled_cast.cast
    eileen = [None] * 3 + walk(22, cast.eileen.shape[:2], (1.1, 1.5), 0.3, 0) + [None] * 5
    stranger = [None] * 2 + walk(20, cast.stranger.shape[:2], (1.2, 1.7), 0.3, 2) + [None] * 3
    return Assets(enrolled_cast.gallery, write_video(root / "eileen", render_frames(cast, eileen)),
                  write_video(root / "stranger", render_frames(cast, stranger)), len(eileen))


def _merge(base: dict, over: dict) -> dict:
    for k, v in over.items():
        base[k] = _merge(dict(base.get(k, {})), v) if isinstance(v, dict) else v
    return base


def config_data(state: Path, source: Path | str, **over) -> dict:
    data = {
        "watchdog_seconds": 3.5,  # below every max_unlock_seconds used here (config rule)
        "device": {"id": "test", "state_dir": str(state)},
        "camera": {"source": str(source)},
        "models": {"threads": 2},
        "doors": [{"name": "front", "relay_pin": RELAY, "unlock_seconds": 0.8, "max_unlock_seconds": 4.0}],
        "policy": {"person_cooldown_seconds": 30.0},
    }
    return _merge(data, over)


def make_config(tmp_path: Path, source: Path | str, gallery: Path | None = None, **over) -> Config:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    if gallery is not None:
        shutil.copy(gallery, state / "gallery.npz")
    return Config.model_validate(config_data(state, source, **over))


def write_toml(path: Path, data: dict) -> Path:
    """Enough TOML for config_data(): top-level scalars, tables and one array of tables."""
    def value(v):
        return json.dumps(v) if not isinstance(v, bool) else ("true" if v else "false")

    lines = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, dict | list)]
    for k, v in data.items():
        if isinstance(v, dict):
            lines += [f"[{k}]"] + [f"{kk} = {value(vv)}" for kk, vv in v.items()]
        elif isinstance(v, list):
            for item in v:
                lines += [f"[[{k}]]"] + [f"{kk} = {value(vv)}" for kk, vv in item.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def journal_events(config: Config) -> list[dict]:
    with Journal(config.journal.path, readonly=True) as journal:
        return journal.query(limit=None, newest_first=False)


def lock_actions(events: list[dict]) -> list[dict]:
    return [e for e in events if e["kind"] in LOCK_KINDS]


class FakeNotifier:
    """Records every sd_notify call with the time it was made."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []
        self.on_ready = None

    def _add(self, what: str) -> bool:
        self.calls.append((what, time.monotonic()))
        return True

    def ready(self, status=None):
        if self.on_ready:
            self.on_ready()
        return self._add("ready")

    def status(self, text):
        return self._add("status")

    def watchdog(self):
        return self._add("watchdog")

    def stopping(self):
        return self._add("stopping")

    def watchdog_interval(self):
        return 0.1  # ping often, so a missing ping is noticed

    def count(self, what: str) -> int:
        return sum(1 for c, _ in self.calls if c == what)


def wait_until(predicate, timeout: float = TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def relay_history(factory: MockFactory) -> list[tuple[float, bool]]:
    """(seconds the pin held its previous state, new state) per change, as gpiozero's MockPin records it."""
    return [(s.timestamp, bool(s.state)) for s in factory.pin(RELAY).states]


# ------------------------------------------------------------------------------------ relay vs policy


def test_relay_opens_only_after_the_vote_and_relocks_after_the_unlock_time(tmp_path, assets):
    config = make_config(tmp_path, assets.eileen_clip, assets.gallery)
    factory = MockFactory()
    app = Appliance(config, pin_factory=factory, notifier=FakeNotifier(), pace=True)
    reports = []
    app.on_frame.append(reports.append)
    assert app.run() == 0

    assert len(reports) == assets.eileen_frames
    relay = [r.relays["front"] for r in reports]
    decided = [any(t.decided == EILEEN and t.in_zone for t in r.tracks) for r in reports]
    assert any(relay), "the enrolled person never unlocked the door"
    first_on = relay.index(True)
    # Unlocked in the very frame her track was decided while in the door zone, and not before.
    assert first_on == decided.index(True)
    embeddings_before = sum(t.embedded for r in reports[: first_on + 1] for t in r.tracks)
    assert embeddings_before >= config.recognition.vote_n
    assert reports[first_on].action == "unlock" and reports[first_on].person_id == EILEEN
    # Relocked while she still stands there (unlock_seconds is shorter than her stay), and only one unlock.
    assert not relay[-1]
    on_runs = sum(1 for a, b in zip([False, *relay], relay, strict=False) if b and not a)
    assert on_runs == 1

    history = relay_history(factory)
    assert [s for _, s in history] == [False, True, False]
    assert history[2][0] >= config.doors[0].unlock_seconds - 0.01  # energised at least the unlock time
    actions = lock_actions(journal_events(config))
    assert [(a["kind"], a["payload"]["reason"]) for a in actions] == [
        ("locked", "startup"), ("unlocked", "access granted: Eileen Collins"), ("locked", "timeout"),
        ("locked", "shutdown: end of input")]
    granted = [e for e in journal_events(config) if e["kind"] == "access_granted"]
    assert len(granted) == 1 and granted[0]["person_id"] == EILEEN
    assert any("allowed, unlock" in r for r in granted[0]["payload"]["reasons"])
    assert app.stats.frames == assets.eileen_frames and 0 < app.stats.embeddings < app.stats.frames


def test_a_stranger_never_energises_the_relay(tmp_path, assets):
    config = make_config(tmp_path, assets.stranger_clip, assets.gallery)
    factory = MockFactory()
    notifier = FakeNotifier()
    app = Appliance(config, pin_factory=factory, notifier=notifier)
    at_ready = {}

    def snapshot() -> None:  # what exists at the moment READY is sent
        at_ready["embedder"] = app.pipeline is not None and app.pipeline.embedder is not None
        at_ready["people"] = len(app.identifier.gallery.people)
        at_ready["frame"] = app._first_frame is not None
        at_ready["relays"] = {d.name: d.is_unlocked for d in app.bank} if app.bank is not None else None
        at_ready["pin"] = factory.pin(RELAY).state if app.bank is not None else None

    notifier.on_ready = snapshot
    seen = []
    app.on_event.append(lambda kind, payload: seen.append(kind))
    assert app.run() == 0
    assert at_ready == {"embedder": True, "people": 1, "frame": True, "relays": {"front": False}, "pin": False}
    assert notifier.count("ready") == 1 and notifier.calls[-1][0] == "stopping"
    assert [s for _, s in relay_history(factory)] == [False]
    events = journal_events(config)
    unknown = [e for e in events if e["kind"] == "unknown_face"]
    assert len(unknown) == 1 and unknown[0]["payload"]["reasons"] == ["track 1: unknown face"]
    assert not [e for e in events if e["kind"] in ("unlocked", "access_granted")]
    assert "unknown_face" in seen and "unlocked" not in seen
    assert app.stats.faces > 0


# ---------------------------------------------------------------------------------------- fail-secure


def test_sigterm_in_process_relocks_and_returns_zero(tmp_path, assets):
    config = make_config(tmp_path, assets.eileen_clip, assets.gallery, doors=[
        {"name": "front", "relay_pin": RELAY, "unlock_seconds": 4.0, "max_unlock_seconds": 4.0}])
    factory = MockFactory()
    app = Appliance(config, pin_factory=factory, notifier=FakeNotifier(), pace=True)
    unlocked = threading.Event()
    app.on_frame.append(lambda r: r.relays["front"] and unlocked.set())

    def kill_when_unlocked() -> None:
        if unlocked.wait(TIMEOUT):
            os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=kill_when_unlocked)
    killer.start()
    previous = signal.getsignal(signal.SIGTERM)
    try:
        assert app.run() == 0
    finally:
        killer.join()
    assert unlocked.is_set()
    assert signal.getsignal(signal.SIGTERM) is previous  # handlers restored
    assert [s for _, s in relay_history(factory)] == [False, True, False]
    last = lock_actions(journal_events(config))[-1]
    assert last["kind"] == "locked" and last["payload"] == {"reason": "shutdown: SIGTERM", "relay": "off"}
    assert app.stats.frames < assets.eileen_frames  # stopped early, not at the end of the clip


def test_an_exception_in_the_loop_relocks_and_propagates(tmp_path, assets):
    config = make_config(tmp_path, assets.eileen_clip, assets.gallery, doors=[
        {"name": "front", "relay_pin": RELAY, "unlock_seconds": 4.0, "max_unlock_seconds": 4.0}])
    factory = MockFactory()
    notifier = FakeNotifier()
    app = Appliance(config, pin_factory=factory, notifier=notifier)
    app.start()
    detect = app.pipeline.detect

    def failing_detect(image, crop_kind="auto"):
        if app.bank["front"].is_unlocked:
            raise RuntimeError("injected detector failure")
        return detect(image, crop_kind=crop_kind)

    app.pipeline.detect = failing_detect
    with pytest.raises(RuntimeError, match="injected"):
        app.run()
    assert [s for _, s in relay_history(factory)] == [False, True, False]
    last = lock_actions(journal_events(config))[-1]
    assert last["kind"] == "locked" and last["payload"]["relay"] == "off"
    assert last["payload"]["reason"] == "shutdown: error: RuntimeError: injected detector failure"
    assert notifier.calls[-1][0] == "stopping"


class StallingSource:
    """Frames of a clip until ``stall_after`` frames, then a read() that blocks until released."""

    name = "stalling"
    live = True

    def __init__(self, clip: Path, stall_after: int):
        from edge_mfr.stream.sources import OpenCVSource

        self.inner = OpenCVSource(clip, live=False)
        self.stall_after = stall_after
        self.served = 0
        self.stalled = threading.Event()
        self.release = threading.Event()

    def open(self):
        self.inner.open()

    def read(self):
        if self.served >= self.stall_after:
            self.stalled.set()
            self.release.wait(TIMEOUT)
            return None  # released: behave like the end of a stream the test is done with
        self.served += 1
        return self.inner.read()

    def close(self):
        self.inner.close()


def test_a_stalled_camera_relocks_through_the_watchdog_and_stops_the_pings(tmp_path, assets):
    # The unlock would last 10 s; the watchdog (1 s without a frame) must relock long before that.
    config = make_config(tmp_path, "unused", assets.gallery, watchdog_seconds=1.0, doors=[
        {"name": "front", "relay_pin": RELAY, "unlock_seconds": 10.0, "max_unlock_seconds": 10.0}])
    source = StallingSource(assets.eileen_clip, stall_after=18)
    factory = MockFactory()
    notifier = FakeNotifier()
    app = Appliance(config, source=source, pin_factory=factory, notifier=notifier)
    events: list[tuple[str, dict]] = []
    app.on_event.append(lambda kind, payload: events.append((kind, payload)))
    result = {}
    runner = threading.Thread(target=lambda: result.setdefault("code", app.run()))
    runner.start()
    try:
        assert source.stalled.wait(TIMEOUT)
        assert factory.pin(RELAY).state, "she should have unlocked the door before the camera stalled"
        pings_at_stall = notifier.count("watchdog")
        assert pings_at_stall >= 1
        assert wait_until(lambda: any(k == "watchdog_tripped" for k, _ in events))
        assert not factory.pin(RELAY).state
        assert wait_until(lambda: ("locked", "watchdog") in [(k, p.get("reason")) for k, p in events])
        time.sleep(0.3)
        assert notifier.count("watchdog") == pings_at_stall  # no keep-alive while no frame arrives
    finally:
        source.release.set()
        runner.join(TIMEOUT)
    assert result.get("code") == 0
    kinds = [e["kind"] for e in journal_events(config)]
    assert "watchdog_tripped" in kinds
    on_off = [s for _, s in relay_history(factory)]
    assert on_off == [False, True, False]


def test_the_gallery_is_reloaded_when_its_file_changes(tmp_path, assets):
    from edge_mfr.stream.sources import OpenCVSource

    config = make_config(tmp_path, "unused")  # nobody enrolled at start
    ticks = [0]

    class Counting(OpenCVSource):
        def read(self):
            ticks[0] += 1
            if ticks[0] == 8:  # enrolled while the loop runs (Gallery writes are atomic renames)
                shutil.copy(assets.gallery, config.recognition.gallery.with_suffix(".tmp"))
                os.replace(config.recognition.gallery.with_suffix(".tmp"), config.recognition.gallery)
            if ticks[0] > 8:  # the file is read in the background; let it finish while she is in view
                app.wait_for_reload(TIMEOUT)
            return super().read()

    factory = MockFactory()
    app = Appliance(config, source=Counting(assets.eileen_clip, live=False), pin_factory=factory,
                    notifier=FakeNotifier(), clock=lambda: ticks[0] * 0.5)
    assert app.run() == 0
    kinds = [e["kind"] for e in journal_events(config)]
    assert "gallery_reloaded" in kinds
    assert kinds.index("gallery_reloaded") < kinds.index("access_granted")
    assert True in [s for _, s in relay_history(factory)]


def _ticking_appliance(config, source, ticks: list[int]):
    """An appliance on ``source`` with mock GPIO whose clock is half a second per tick of ``ticks[0]``."""
    factory = MockFactory()
    app = Appliance(config, source=source, pin_factory=factory, notifier=FakeNotifier(),
                    clock=lambda: ticks[0] * 0.5)
    return app, factory


def test_a_slow_gallery_reload_does_not_stall_the_door_loop(tmp_path, assets):
    """Reading a changed gallery (an SVM refit in a child process: seconds on a Pi) runs beside the loop."""
    from edge_mfr.stream.sources import OpenCVSource

    config = make_config(tmp_path, "unused")
    ticks = [0]
    reloading, release = threading.Event(), threading.Event()
    frames_while_reloading: list[int] = []

    class Counting(OpenCVSource):
        def read(self):
            ticks[0] += 1
            if ticks[0] == 2:
                shutil.copy(assets.gallery, config.recognition.gallery.with_suffix(".tmp"))
                os.replace(config.recognition.gallery.with_suffix(".tmp"), config.recognition.gallery)
            if reloading.is_set() and not release.is_set():
                frames_while_reloading.append(ticks[0])
                if len(frames_while_reloading) >= 5:
                    release.set()
                    app.wait_for_reload(TIMEOUT)
            return super().read()

    app, factory = _ticking_appliance(config, Counting(assets.eileen_clip, live=False), ticks)
    original, calls = app._load_identifier, [0]

    def slow_load():
        calls[0] += 1
        if calls[0] > 1:  # the read at start-up is not the one under test
            reloading.set()
            release.wait(TIMEOUT)  # a loop that waited for this would never set it: the wait times out
        return original()

    app._load_identifier = slow_load
    assert app.run() == 0
    assert len(frames_while_reloading) >= 5, "the frame loop stopped while the gallery was being read"
    kinds = [e["kind"] for e in journal_events(config)]
    assert kinds.index("gallery_reloaded") < kinds.index("access_granted")
    assert True in [s for _, s in relay_history(factory)]


def test_a_fleet_revoke_stops_her_at_once_and_a_reload_begun_before_it_is_not_adopted(tmp_path, assets):
    """forget_people acts on the next frame; a gallery read that started before the revoke (it still has
    her) must not bring her back when it finishes later (with thousands of people it finishes minutes later)."""
    from edge_mfr.identity.gallery import Gallery, append_delta
    from edge_mfr.stream.sources import OpenCVSource

    config = make_config(tmp_path, "unused", gallery=assets.gallery)
    path = config.recognition.gallery
    her = Gallery.load(path).people[0].person_id
    ticks = [0]
    read_old, release, fresh = threading.Event(), threading.Event(), threading.Event()

    class Counting(OpenCVSource):
        def read(self):
            ticks[0] += 1
            if ticks[0] == 2:  # (tick 1 is start-up's frame) before she can have 3 votes
                app.request_gallery_reload()  # a read of the old gallery, with her, begins this frame
            if ticks[0] == 3:
                assert read_old.wait(TIMEOUT)
                g = Gallery.load(path)
                append_delta(path, [], [her], g)  # the follower's revoke, on disk
                app.forget_people([her])  # ... and in memory
            if ticks[0] == 5:
                release.set()  # the stale read finishes now; the fresh one takes ten frames more
                app.wait_for_reload(TIMEOUT)
            if ticks[0] == 15:
                fresh.set()
            if ticks[0] > 15:
                app.wait_for_reload(TIMEOUT)
            return super().read()

    app, factory = _ticking_appliance(config, Counting(assets.eileen_clip, live=False), ticks)
    original, calls = app._load_identifier, [0]

    def slow_load():
        calls[0] += 1
        result = original()
        if calls[0] == 2:  # the read begun before the revoke: it has her
            read_old.set()
            release.wait(TIMEOUT)
        elif calls[0] > 2:
            fresh.wait(TIMEOUT)
        return result

    app._load_identifier = slow_load
    assert app.run() == 0
    kinds = [e["kind"] for e in journal_events(config)]
    assert calls[0] >= 3, "the stale read was not followed by a fresh one"
    assert "access_granted" not in kinds
    assert True not in [s for _, s in relay_history(factory)]


# ---------------------------------------------------------------------------------- READY and start-up


@pytest.fixture()
def notify_socket(monkeypatch):
    folder = Path(tempfile.mkdtemp(prefix="sdn-"))  # unix socket paths are limited to 107 bytes
    address = str(folder / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    yield sock, address
    sock.close()
    shutil.rmtree(folder, ignore_errors=True)


def receive(sock: socket.socket, timeout: float) -> bytes | None:
    ready, _, _ = select.select([sock], [], [], timeout)
    return sock.recv(4096) if ready else None


def edge_mfr(args: list[str], env_extra: dict[str, str]) -> subprocess.Popen:
    env = {**os.environ, "EDGE_MFR_GPIO": "mock", **env_extra}
    return subprocess.Popen([sys.executable, "-m", "edge_mfr.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run_eileen_clip(tmp_path, assets, address: str) -> tuple[subprocess.Popen, Path]:
    """`edge-mfr run --realtime` on her clip with the enrolled gallery, notifying ``address``; (process, journal)."""
    state = tmp_path / "state"
    state.mkdir()
    shutil.copy(assets.gallery, state / "gallery.npz")
    cfg = write_toml(tmp_path / "config.toml", config_data(state, assets.eileen_clip, doors=[
        {"name": "front", "relay_pin": RELAY, "unlock_seconds": 4.0, "max_unlock_seconds": 4.0}]))
    return edge_mfr(["--config", str(cfg), "run", "--realtime"], {"NOTIFY_SOCKET": address}), state / "journal.db"


def _until_ready(sock, proc: subprocess.Popen) -> list[bytes]:
    """The sd_notify messages up to and including READY=1 (fails naming stderr when none comes)."""
    messages: list[bytes] = []
    while not any(m.startswith(b"READY=1") for m in messages):
        msg = receive(sock, TIMEOUT)
        assert msg is not None, f"no READY; stderr: {proc.stderr.read() if proc.poll() is not None else ''}"
        messages.append(msg)
    return messages


def test_ready_after_start_up_then_sigterm_exits_cleanly_with_the_door_locked(tmp_path, assets, notify_socket):
    sock, address = notify_socket
    proc, journal = _run_eileen_clip(tmp_path, assets, address)
    try:
        messages = _until_ready(sock, proc)
        # By READY, models were loaded and self-tested, the camera gave a frame, and the lock exists, relay off.
        assert messages[:3] == [b"STATUS=loading models", b"STATUS=model self-test", b"STATUS=opening the camera"]
        with Journal(journal, readonly=True) as j:
            early = j.query(limit=None, newest_first=False)
        assert [e["kind"] for e in early] == ["locked", "started"]
        assert early[0]["payload"] == {"reason": "startup", "relay": "off"}

        def unlocked() -> bool:
            with Journal(journal, readonly=True) as j:
                return bool(j.query(kind="unlocked", limit=1))

        assert wait_until(unlocked), "she never unlocked the door"
        assert receive(sock, TIMEOUT) is not None  # keep-alives or status flow while running
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    rest = []
    while (msg := receive(sock, 0.5)) is not None:
        rest.append(msg)
    assert b"STOPPING=1" in rest
    with Journal(journal, readonly=True) as j:
        events = j.query(limit=None, newest_first=False)
    last = lock_actions(events)[-1]
    assert last["kind"] == "locked" and last["payload"] == {"reason": "shutdown: SIGTERM", "relay": "off"}
    assert events[-1]["kind"] == "stopped" and events[-1]["payload"]["cause"] == "SIGTERM"
    assert "Traceback" not in err


@pytest.mark.parametrize("problem", ["missing video", "bad config"])
def test_start_up_errors_abort_before_ready_with_one_line(tmp_path, notify_socket, problem):
    sock, address = notify_socket
    state = tmp_path / "state"
    data = config_data(state, tmp_path / "nope.mp4")
    if problem == "bad config":
        data["camera"]["sourc"] = "typo"
    cfg = write_toml(tmp_path / "config.toml", data)
    proc = edge_mfr(["--config", str(cfg), "run"], {"NOTIFY_SOCKET": address})
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("edge-mfr: error: ")]
    assert len(lines) == 1, err
    assert ("nope.mp4" in lines[0]) if problem == "missing video" else ("'sourc'" in lines[0])
    messages = []
    while (msg := receive(sock, 0.2)) is not None:
        messages.append(msg)
    assert not any(m.startswith(b"READY=1") for m in messages)


# -------------------------------------------------------------------------------------- real video


@pytest.mark.data
def test_hamilton_clip_with_nobody_enrolled_never_opens(tmp_path, data_dir):
    clip = data_dir / "video" / "short_hamilton_clip.mp4"
    if not clip.is_file():
        pytest.skip(f"{clip} is missing")
    config = make_config(tmp_path, clip)
    factory = MockFactory()
    app = Appliance(config, pin_factory=factory, notifier=FakeNotifier())
    assert app.run() == 0
    assert app.stats.frames == 275
    assert [s for _, s in relay_history(factory)] == [False]
    events = journal_events(config)
    unknown = [e for e in events if e["kind"] == "unknown_face"]
    assert unknown, "faces in the clip should be decided unknown"
    assert all(e["payload"]["reasons"] for e in unknown)
    assert not [e for e in events if e["kind"] in ("unlocked", "access_granted")]
    assert 0 < app.stats.embeddings < app.stats.faces  # the tracker reused embeddings


# ------------------------------------------------------------------------------------------- doctor


def test_doctor_passes_on_a_video_setup_and_fails_on_a_missing_camera(tmp_path, assets, capsys):
    from edge_mfr.doctor import run_doctor

    state = tmp_path / "state"
    state.mkdir()
    shutil.copy(assets.gallery, state / "gallery.npz")
    good = write_toml(tmp_path / "good.toml", config_data(state, assets.eileen_clip))
    assert run_doctor(good) == 0
    out = capsys.readouterr().out
    assert "OK    gallery" in out and "1 people" in out and "OK    camera" in out and "640x480" in out
    bad = write_toml(tmp_path / "bad.toml", config_data(state, tmp_path / "gone.mp4"))
    assert run_doctor(bad) == 1
    out = capsys.readouterr().out
    assert "FAIL  camera" in out and "gone.mp4" in out


# ------------------------------------------------------------------- start-up after a kill (issue 16)


def test_start_after_a_kill_relocks_first_cleans_up_and_journals_a_bad_svm_cache(tmp_path, assets, monkeypatch):
    """What a restart after SIGKILL finds: a relay line left energised, a writer's temp file, a torn cache."""
    import numpy as np

    from edge_mfr.identity.gallery import Gallery, TemplateMeta
    from edge_mfr.vision import pipeline as pipeline_mod

    config = make_config(tmp_path, assets.stranger_clip, assets.gallery)
    state = config.device.state_dir
    sha = Gallery.load(state / "gallery.npz").model_sha256
    with Gallery.edit(state / "gallery.npz", sha) as gallery:  # two people: the daemon then uses the SVM cache
        rng = np.random.default_rng(0)

        def unit(dim: int) -> np.ndarray:
            x = rng.normal(size=(2, dim)).astype(np.float32)
            return x / np.linalg.norm(x, axis=1, keepdims=True)

        other = gallery.add_person("Someone Else")
        gallery.add_templates(other.person_id, unit(gallery.dim),
                              [TemplateMeta("a.jpg", 0.9), TemplateMeta("b.jpg", 0.9)],
                              extra={m.name: unit(m.dim) for m in gallery.extra_models})
    (state / "gallery.npz.svm.npz").write_bytes(b"PK\x03\x04 torn by a kill")
    leftover = state / ".gallery.npz.abc123.tmp"
    leftover.write_bytes((state / "gallery.npz").read_bytes())
    factory = MockFactory()
    relay = factory.pin(RELAY)
    relay.function, relay.state = "output", True  # the released line kept its last, unlocked level
    seen_at_model_load = []
    original = pipeline_mod.FacePipeline.__init__

    def loading(self, *args, **kwargs):
        seen_at_model_load.append(relay.state)
        original(self, *args, **kwargs)

    monkeypatch.setattr(pipeline_mod.FacePipeline, "__init__", loading)
    app = Appliance(config, pin_factory=factory, notifier=FakeNotifier())
    assert app.run(max_frames=2) == 0
    assert seen_at_model_load == [False]  # relocked before the seconds of model loading
    assert not leftover.exists()
    warnings = [e for e in journal_events(config) if e["kind"] == "warning"]
    assert len(warnings) == 1 and "SVM weights cache ignored and rebuilt" in warnings[0]["payload"]["problem"]


def test_run_prints_each_decision_and_lock_action_and_a_summary_on_ctrl_c(tmp_path, assets, notify_socket):
    """A person at a terminal sees the camera, the kiosk, every decision and lock action, and a summary."""
    sock, address = notify_socket
    proc, journal = _run_eileen_clip(tmp_path, assets, address)
    try:
        _until_ready(sock, proc)  # the journal exists from READY on

        def unlocked() -> bool:
            with Journal(journal, readonly=True) as j:
                return bool(j.query(kind="unlocked", limit=1))

        assert wait_until(unlocked), "she never unlocked the door"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    lines = [line.split("  ", 1)[-1] for line in out.splitlines()]
    assert any(line.startswith("started: camera ") for line in lines), out
    assert "kiosk: off (kiosk.enabled = false)" in lines
    assert any(line.startswith("door front: GRANTED Eileen Collins") for line in lines), out
    assert any(line.startswith("door front: UNLOCKED (access granted: Eileen Collins") for line in lines), out
    assert any(line.startswith("door front: locked (shutdown: SIGINT)") for line in lines), out
    assert out.splitlines()[-1].startswith("stopped after "), out
    assert "Traceback" not in err
