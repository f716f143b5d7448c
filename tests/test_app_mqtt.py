"""The appliance with MQTT on, against a real mosquitto (tests/mosquitto_fixture.py) and gpiozero's MockFactory.

The scene is scripted (SyntheticSource, paced at its frame rate): Eileen Collins, enrolled from scikit-image's
astronaut photo through the real enrollment code, walks up; then the cameraman photo (a stranger); then an
empty door until the test stops the appliance. A monitor client sees what Home Assistant would see; an
operator client sends signed and unsigned commands.

"Broker down at start" is a TCP gate in front of the broker that refuses connections (exactly what a
stopped broker looks like to the device) until the test opens it, so the subscriber is certainly listening
before the device can deliver; waits poll with generous timeouts and nothing asserts on wall-clock time.
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from edge_mfr.app import Appliance
from edge_mfr.config import Config
from edge_mfr.device.journal import Journal
from edge_mfr.interfaces.mqtt import MqttSettings, Topics
from edge_mfr.interfaces.mqtt_commands import sign_command
from tests import mosquitto_fixture as mf

Recorder = mf.Recorder
wait_until = mf.wait_until

DEVICE = mf.DEVICE_ID  # the ACL's device user is the device id
T = Topics(f"edge-mfr/{DEVICE}")
RELAY = 17
EILEEN = "eileen-collins"
SECRET = b"0123456789abcdef0123456789abcdef"
TIMEOUT = 30.0
FPS = 15.0


@dataclass(frozen=True)
class Scene:
    gallery: Path
    faces: list[np.ndarray]
    script: list


@pytest.fixture(scope="module")
def scene(enrolled_cast) -> Scene:
    from edge_mfr.demo import walk

    cast = enrolled_cast.cast
    script = ([None] * 2 + walk(20, cast.eileen.shape[:2], (1.1, 1.5), 0.3, 0) + [None] * 8
              + walk(20, cast.stranger.shape[:2], (1.2, 1.7), 0.3, 1))
    return Scene(enrolled_cast.gallery, [cast.eileen, cast.stranger], script)


def source(scene: Scene, idle_s: float = 40.0):
    """The scripted scene, then an empty door for up to ``idle_s`` (the test stops the appliance first)."""
    from edge_mfr.stream.sources import SyntheticSource

    return SyntheticSource(scene.faces, script=scene.script + [None] * int(idle_s * FPS), fps=FPS)


class Notifier:
    """sd_notify stand-in: the appliance talks to it, nobody listens."""

    def ready(self, status=None) -> bool:
        return True

    def status(self, text) -> bool:
        return True

    def watchdog(self) -> bool:
        return True

    def stopping(self) -> bool:
        return True


def make_config(tmp_path: Path, scene: Scene, port: int, password: str = mf.USERS[DEVICE], **mqtt) -> Config:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    (state / "gallery.npz").write_bytes(scene.gallery.read_bytes())
    (tmp_path / "password").write_text(password + "\n")
    (tmp_path / "secret").write_bytes(SECRET)
    return Config.model_validate({
        "watchdog_seconds": 5.0,
        "device": {"id": DEVICE, "state_dir": str(state)},
        "models": {"threads": 2},
        "doors": [{"name": "front", "relay_pin": RELAY, "unlock_seconds": 0.8, "max_unlock_seconds": 4.0}],
        "policy": {"person_cooldown_seconds": 30.0},
        "mqtt": {"enabled": True, "host": "127.0.0.1", "port": port, "username": DEVICE,
                 "password_file": str(tmp_path / "password"), "command_secret_file": str(tmp_path / "secret"),
                 "keepalive_seconds": 5, **mqtt},
    })


class Running:
    """The appliance's run() in a thread (signals stay with pytest's main thread)."""

    def __init__(self, app: Appliance):
        self.app = app
        self.result: dict = {}
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result["code"] = self.app.run()
        except BaseException as exc:  # shown by stop()
            self.result["error"] = exc

    def stop(self) -> None:
        self.app.stop()
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "the appliance did not stop"
        assert self.result.get("code") == 0, self.result


def events_of(rec: Recorder, kind: str) -> list[dict]:
    return [json.loads(p) for p in rec.on(T.event(kind))]


def relay_states(factory: MockFactory) -> list[bool]:
    return [bool(s.state) for s in factory.pin(RELAY).states]


def journal_rows(config: Config, kind: str | None = None) -> list[dict]:
    with Journal(config.journal.path, readonly=True) as j:
        return j.query(kind=kind, limit=None, newest_first=False)


# ---------------------------------------------------------------------------------------------- the run


def test_events_state_discovery_and_commands_over_a_real_broker(tmp_path, scene, broker):
    monitor = Recorder(broker, "monitor", ["edge-mfr/#", "homeassistant/#"])
    operator = Recorder(broker, f"cmd-{DEVICE}", [T.result])
    ha = Recorder(broker, "homeassistant")
    config = make_config(tmp_path, scene, broker.port)
    factory = MockFactory()
    app = Appliance(config, source=source(scene), pin_factory=factory, notifier=Notifier(), pace=True)
    run = Running(app)
    try:
        assert wait_until(lambda: monitor.on(T.availability), TIMEOUT), broker.log_text()[-2000:]
        assert monitor.on(T.availability)[0] == b"online"
        # Eileen is let in and announced; the stranger is reported unknown.
        assert wait_until(lambda: events_of(monitor, "access_granted") and events_of(monitor, "unknown_face"),
                          TIMEOUT), [t for t, *_ in monitor.messages]
        assert wait_until(lambda: events_of(monitor, "recognized"), TIMEOUT)
        granted, = events_of(monitor, "access_granted")
        assert granted["person_id"] == EILEEN and granted["name"] == "Eileen Collins"
        assert granted["kind"] == "access_granted" and granted["device"] == DEVICE and granted["door"] == "front"
        assert any(e["person_id"] == EILEEN for e in events_of(monitor, "recognized"))
        unknown = events_of(monitor, "unknown_face")
        assert len(unknown) == 1 and unknown[0]["person_id"] is None
        assert not [t for t, *_ in monitor.messages if "/snapshot/" in t]  # mqtt.snapshots is off by default
        # They are the journal's own events (same ids), sent through its outbox.
        journalled = {e["event_id"] for e in journal_rows(config)}
        assert granted["event_id"] in journalled and unknown[0]["event_id"] in journalled

        # Home Assistant discovery and retained state.
        lock_config = json.loads(monitor.last(T.discovery("lock", DEVICE, "front_lock")))
        assert lock_config["state_topic"] == T.state("lock/front")
        assert lock_config["command_topic"] == T.ha_lock_set("front")
        assert monitor.last(T.discovery("sensor", DEVICE, "people_count")) is not None
        lock_states = monitor.on(T.state("lock/front"))
        assert lock_states[:3] == [b"LOCKED", b"UNLOCKED", b"LOCKED"]  # start, her unlock, relock
        assert relay_states(factory) == [False, True, False]
        assert wait_until(lambda: monitor.last(T.state("people_count")) == b"1")
        models = json.loads(monitor.last(T.state("models")))
        assert models["embedder_sha256"] == app.pipeline.embedder.model_sha256
        assert json.loads(monitor.last(T.state("last_person")))["person_id"] == EILEEN
        late = Recorder(broker, "monitor", [T.state("#")])  # a new subscriber gets the retained state
        try:
            assert wait_until(lambda: late.last(T.state("lock/front")) is not None)
            assert [(t, p, r) for t, p, r, _ in late.messages if t == T.state("lock/front")] == [
                (T.state("lock/front"), b"LOCKED", True)]
        finally:
            late.close()

        # A signed unlock energises the relay and is answered.
        topic = T.command("unlock")
        body = sign_command(SECRET, topic, {"door": "front", "seconds": 1.0, "id": "signed-1"})
        operator.publish(topic, json.dumps(body))
        assert wait_until(lambda: operator.on(T.result), TIMEOUT)
        answer = json.loads(operator.on(T.result)[0])
        assert answer["id"] == "signed-1" and answer["ok"] is True, answer
        assert wait_until(lambda: relay_states(factory) == [False, True, False, True, False], TIMEOUT)
        assert wait_until(lambda: monitor.on(T.state("lock/front"))[3:5] == [b"UNLOCKED", b"LOCKED"])

        # An unsigned unlock and Home Assistant's plain UNLOCK are refused: the relay does not move.
        operator.publish(topic, json.dumps({"door": "front", "id": "unsigned-1"}))
        ha.publish(T.ha_lock_set("front"), "UNLOCK")
        assert wait_until(lambda: len(operator.on(T.result)) >= 3, TIMEOUT)
        answers = [json.loads(p) for p in operator.on(T.result)[1:]]
        unsigned = next(a for a in answers if a["id"] == "unsigned-1")
        assert unsigned["ok"] is False and "unsigned" in unsigned["reason"]
        from_ha = next(a for a in answers if a["command"] == "ha_lock")
        assert from_ha["ok"] is False and "allow_unsigned_ha_unlock" in from_ha["reason"]
        assert relay_states(factory) == [False, True, False, True, False]
        rejected = journal_rows(config, "command_rejected")
        assert sorted(str(r["payload"]["request_id"]) for r in rejected) == ["None", "unsigned-1"]
        assert [r["payload"]["request_id"] for r in journal_rows(config, "command")] == ["signed-1"]

        # remove_person edits the gallery file; the running loop reloads it and the people count follows.
        topic = T.command("remove_person")
        operator.publish(topic, json.dumps(sign_command(SECRET, topic, {"person_id": EILEEN, "id": "rm-1"})))
        assert wait_until(lambda: len(operator.on(T.result)) >= 4, TIMEOUT)
        assert json.loads(operator.on(T.result)[3])["ok"] is True, operator.on(T.result)[3]
        assert wait_until(lambda: monitor.last(T.state("people_count")) == b"0", TIMEOUT)
        assert wait_until(lambda: app.journal.count("gallery_reloaded") == 1)
        # reload (unsigned) makes the loop re-read the gallery even though the file did not change.
        operator.publish(T.command("reload"), json.dumps({"id": "reload-1"}))
        assert wait_until(lambda: app.journal.count("gallery_reloaded") == 2, TIMEOUT)
        assert json.loads(operator.on(T.result)[4])["ok"] is True
    finally:
        run.stop()
        for rec in (operator, ha):
            rec.close()
    assert wait_until(lambda: monitor.last(T.availability) == b"offline")
    monitor.close()
    assert app.mqtt.stats["acked"] >= 3
    with Journal(config.journal.path, readonly=True) as j:
        assert j.pending_count() == 0  # every event message was acknowledged by the broker


class Gate:
    """A TCP port in front of the broker: refuses connections (like a stopped broker) until opened."""

    def __init__(self, target: mf.Mosquitto):
        self.target = (target.host, target.port)
        self.port = mf.free_port()
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []

    def open(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                return
            self._sockets += [conn, upstream]
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        for s in [self._listener, *self._sockets]:
            if s is not None:
                s.close()


def test_a_broker_down_at_start_does_not_stop_the_door_and_events_arrive_later(tmp_path, scene, broker):
    gate = Gate(broker)
    config = make_config(tmp_path, scene, gate.port)
    factory = MockFactory()
    app = Appliance(config, source=source(scene), pin_factory=factory, notifier=Notifier(), pace=True)
    run = Running(app)
    monitor = None
    try:
        # The door works without the broker: she is let in, the stranger is refused, all journalled.
        assert wait_until(lambda: app.journal is not None and app.journal.count("unknown_face") == 1, TIMEOUT)
        assert app.journal.count("access_granted") == 1 and True in relay_states(factory)
        assert not app.mqtt.connected
        assert app.mqtt.last_error is not None and "connection refused" in str(app.mqtt.last_error)
        assert app.journal.pending_count() >= 2  # the events wait in the outbox
        ids = {r["kind"]: r["event_id"] for r in journal_rows(config)
               if r["kind"] in ("access_granted", "unknown_face")}

        monitor = Recorder(broker, "monitor", [T.event("#"), T.availability])
        gate.open()  # the broker "starts"
        assert wait_until(lambda: events_of(monitor, "access_granted") and events_of(monitor, "unknown_face"),
                          TIMEOUT), app.mqtt.last_error
        assert events_of(monitor, "access_granted")[0]["event_id"] == ids["access_granted"]
        assert events_of(monitor, "unknown_face")[0]["event_id"] == ids["unknown_face"]
        assert monitor.on(T.availability)[0] == b"online"
        assert wait_until(lambda: app.journal.pending_count() == 0)
    finally:
        run.stop()
        gate.close()
        if monitor is not None:
            monitor.close()


def test_snapshots_show_the_face_each_decision_was_about(tmp_path, scene, broker):
    import cv2

    from edge_mfr.vision.pipeline import FacePipeline

    monitor = Recorder(broker, "monitor", [T.event("#"), f"edge-mfr/{DEVICE}/snapshot/#"])
    config = make_config(tmp_path, scene, broker.port, snapshots=True)
    app = Appliance(config, source=source(scene), pin_factory=MockFactory(), notifier=Notifier(), pace=True)
    run = Running(app)
    try:
        assert wait_until(lambda: monitor.on(T.snapshot("access_granted")) and monitor.on(T.snapshot("unknown_face")),
                          TIMEOUT), [t for t, *_ in monitor.messages]
        detector = FacePipeline(embed=False)
        for kind in ("access_granted", "unknown_face"):
            jpeg, = monitor.on(T.snapshot(kind))
            image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
            assert image is not None, f"{kind}: the snapshot is not a JPEG"
            faces = detector.detect(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), crop_kind="photo")
            assert len(faces) == 1, f"{kind}: expected the one face the decision was about"
            assert faces[0].width > 0.3 * image.shape[1], f"{kind}: the face should fill the snapshot"
    finally:
        run.stop()
        monitor.close()


def test_mqtt_settings_come_from_the_new_config_keys(tmp_path, scene):
    config = make_config(tmp_path, scene, 1883, protocol=5, allow_unsigned_ha_unlock=True,
                         max_command_bytes=1024, max_enroll_bytes=65536, command_window_seconds=5,
                         discovery=False)
    s = MqttSettings.from_config(config)
    assert (s.protocol, s.discovery, s.command_secret, s.password) == ("5", False, SECRET, mf.USERS[DEVICE])
    limits = s.command_limits()
    assert (limits.max_bytes, limits.max_enroll_bytes, limits.window_s, limits.allow_unsigned_ha_unlock) == (
        1024, 65536, 5.0, True)


# ------------------------------------------------------------------------------------------------ doctor


def test_doctor_logs_in_with_the_real_settings(tmp_path, scene, broker, certs):
    from edge_mfr.doctor import FAIL, OK, check_broker

    good = check_broker(make_config(tmp_path, scene, broker.port))
    assert good.status == OK and f"as {DEVICE}" in good.detail, good
    wrong = check_broker(make_config(tmp_path, scene, broker.port, password="not-the-password"))
    assert wrong.status == FAIL and "refused the login" in wrong.detail, wrong
    tls = check_broker(make_config(tmp_path, scene, broker.tls_port, tls=True, tls_ca=str(certs.ca)))
    assert tls.status == OK and "over TLS" in tls.detail, tls
    other = check_broker(make_config(tmp_path, scene, broker.tls_port, tls=True, tls_ca=str(certs.other_ca)))
    assert other.status == FAIL and "certificate verification failed" in other.detail, other
    down = check_broker(make_config(tmp_path, scene, mf.free_port()))
    assert down.status == FAIL and "connection refused" in down.detail, down
    assert not any(mf.USERS[DEVICE] in c.detail for c in (good, wrong, tls, other, down))
