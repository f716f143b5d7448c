"""The door zone and lockouts on the real Hamilton clip: passers-by never lock the door; a lockout survives
a restart and an operator can clear it (here: the CLI; the kiosk and MQTT paths are tested with them).

Nobody is enrolled, so every face is unknown. The clip shows a performer in close-up (faces 30-35 % of
the frame width) and an audience (faces 11-16 %): only the close-ups are at the door.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from edge_mfr.app import Appliance
from edge_mfr.config import Config
from edge_mfr.device.journal import Journal
from tests.test_app import REPO, FakeNotifier, config_data, journal_events, write_toml

pytestmark = pytest.mark.data
WHOLE_FRAME = {"door_zone": [0.0, 0.0, 1.0, 1.0], "door_zone_min_face": 0.0}  # the old behaviour


def _config(tmp_path: Path, clip: Path, **camera) -> tuple[Config, Path]:
    state = tmp_path / "state"
    state.mkdir(parents=True, exist_ok=True)
    data = config_data(state, clip, camera={"source": str(clip), **camera})
    path = write_toml(tmp_path / "config.toml", data)
    return Config.model_validate(data), path


def _run(config: Config, max_frames: int | None = None) -> tuple[Appliance, list]:
    app = Appliance(config, pin_factory=MockFactory(), notifier=FakeNotifier())
    reports: list = []
    app.on_frame.append(reports.append)
    app.run(max_frames=max_frames)
    return app, reports


@pytest.fixture(scope="module")
def clip(data_dir: Path) -> Path:
    return data_dir / "video" / "short_hamilton_clip.mp4"


def test_faces_outside_the_door_zone_never_count_towards_a_lockout(tmp_path, clip):
    config, _ = _config(tmp_path, clip)
    _, reports = _run(config)
    events = journal_events(config)
    in_zone = {t.track_id for r in reports for t in r.tracks if t.in_zone}
    outside = {t.track_id for r in reports for t in r.tracks if not t.in_zone}
    unknown = [e["payload"]["track_id"] for e in events if e["kind"] == "unknown_face"]
    assert outside, "the audience should be seen, outside the door zone"
    assert unknown and set(unknown) <= in_zone
    assert not any(e["kind"] == "lockout" for e in events)  # counted over the whole frame it does: below


@pytest.fixture(scope="module")
def locked_state(tmp_path_factory, clip) -> Path:
    """A state folder whose journal holds a running lockout: the clip counted over the whole frame, as before
    the door zone, where the audience locks the door."""
    root = tmp_path_factory.mktemp("locked")
    config, _ = _config(root, clip, **WHOLE_FRAME)
    first, _ = _run(config)
    assert [e["kind"] for e in journal_events(config)].count("lockout") == 1
    assert first.policy.lockout_remaining("front") > 0
    return root / "state"


@contextmanager
def _restarted(tmp_path: Path, clip: Path, locked_state: Path) -> Iterator[tuple[Appliance, Config, Path]]:
    """The appliance started again on a copy of the locked state: the lockout is back before any frame."""
    shutil.copytree(locked_state, tmp_path / "state")
    config, toml = _config(tmp_path, clip, **WHOLE_FRAME)
    app = Appliance(config, pin_factory=MockFactory(), notifier=FakeNotifier())
    app.start()
    try:
        assert app.policy.lockout_remaining("front") > 0
        assert [e["kind"] for e in journal_events(config)].count("lockout_restored") == 1
        yield app, config, toml
    finally:
        app.stop()
        app.run(max_frames=0)


def _steps_until_cleared(app: Appliance, frames: int = 200) -> bool:
    """Run the loop until the lockout is gone (the service looks at the journal once a second)."""
    for _ in range(frames):
        if app.policy.lockout_remaining("front") == 0:
            return True
        if not app.step():
            break
    return app.policy.lockout_remaining("front") == 0


def _cli(toml: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_mfr.cli", "--config", str(toml), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


def test_a_lockout_survives_a_restart_and_the_cli_clears_it(tmp_path, clip, locked_state):
    with _restarted(tmp_path, clip, locked_state) as (app, config, toml):
        status = _cli(toml, "lockout", "status")
        assert status.returncode == 0 and "front: locked out for" in status.stdout, status.stderr
        cleared = _cli(toml, "lockout", "clear")
        assert cleared.returncode == 0 and "lockout cleared for every door" in cleared.stdout, cleared.stderr
        assert _steps_until_cleared(app)  # the running service picks the CLI's clear up from the journal
    with Journal(config.journal.path, readonly=True) as journal:
        assert journal.query(kind="lockout_cleared", limit=1)[0]["payload"]["by"] == "cli"
    again = Appliance(config, pin_factory=MockFactory(), notifier=FakeNotifier())
    again.start()
    try:
        assert again.policy.lockout_remaining("front") == 0  # a cleared lockout is not restored
    finally:
        again.run(max_frames=0)


def test_a_signed_mqtt_command_clears_a_lockout_and_an_unsigned_one_does_not(tmp_path, clip, locked_state):
    from edge_mfr.interfaces.mqtt_commands import CommandHandler, sign_command

    secret = b"door-zone-test-secret-0123456789"
    topic = "edge-mfr/test/command/clear_lockout"
    with _restarted(tmp_path, clip, locked_state) as (app, _, _):
        handler = CommandHandler("edge-mfr/test", list(app.bank), secret=secret, journal=app.journal)
        refused = handler.handle(topic, json.dumps({"door": "front"}).encode())
        assert not refused.ok and "sig" in refused.reason
        assert app.step() and app.policy.lockout_remaining("front") > 0
        done = handler.handle(topic, json.dumps(sign_command(secret, topic, {"door": "front"})).encode())
        assert done.ok, done.reason
        assert _steps_until_cleared(app)


def test_a_bad_door_zone_is_one_clear_config_error(tmp_path, clip):
    with pytest.raises(ValueError, match="door_zone"):
        _config(tmp_path, clip, door_zone=[0.9, 0.0, 0.1, 1.0])


def test_the_kiosk_clears_a_lockout(tmp_path, clip, locked_state):
    from edge_mfr.interfaces.kiosk.server import Kiosk

    with _restarted(tmp_path, clip, locked_state) as (app, config, _):
        assert "lockout cleared" in Kiosk(app, config.kiosk).clear_lockout()
        assert _steps_until_cleared(app)
    with Journal(config.journal.path, readonly=True) as journal:
        assert journal.query(kind="lockout_cleared", limit=1)[0]["payload"]["by"] == "kiosk"
