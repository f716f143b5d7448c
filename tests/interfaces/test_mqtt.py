"""MQTT against a real mosquitto: availability and LWT, HA discovery, state, events from the durable outbox
through a broker outage and a SIGKILL, and TLS verification.

The broker outage lasts 30 s, as the MQTT issue specifies (the publisher keeps retrying every second
meanwhile). Waits poll with a generous timeout; measured times are printed (``pytest -s``), never asserted.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge_mfr.config import load_config
from edge_mfr.device.journal import Journal
from edge_mfr.errors import ConfigError
from edge_mfr.interfaces.mqtt import (
    EVENT_KINDS,
    DoorInfo,
    MqttAuthError,
    MqttClient,
    MqttError,
    MqttSettings,
    MqttTlsError,
    Topics,
)
from tests import mosquitto_fixture as mf

Recorder = mf.Recorder
wait_until = mf.wait_until

REPO = Path(__file__).resolve().parents[2]
DEVICE = mf.DEVICE_ID
PREFIX = f"edge-mfr/{DEVICE}"
T = Topics(PREFIX)
TIMEOUT = 20.0


def settings(b: mf.Mosquitto, **over) -> MqttSettings:
    values = dict(device_id=DEVICE, host=b.host, port=b.port, username=DEVICE, password=mf.USERS[DEVICE],
                  keepalive_seconds=5, reconnect_min_seconds=1, reconnect_max_seconds=1)
    values.update(over)
    return MqttSettings(**values)


def loads(payload: bytes | None) -> dict:
    assert payload is not None
    return json.loads(payload)


# ---------------------------------------------------------------------------------- a device process

DEVICE_SCRIPT = r"""
import json, os, sys, time
from edge_mfr.device.journal import Journal
from edge_mfr.interfaces.mqtt import MqttClient, MqttSettings

cfg = json.loads(sys.argv[1])
journal = Journal(cfg["journal"])
settings = MqttSettings(device_id=cfg["device"], host=cfg["host"], port=cfg["port"], username=cfg["device"],
                        password=cfg["password"], keepalive_seconds=cfg["keepalive"], discovery=False,
                        reconnect_min_seconds=1, reconnect_max_seconds=1)
client = MqttClient(settings, journal=journal)
client.start()
last, to_record = None, cfg.get("record", 0)
while True:
    if client.connected != last:
        last = client.connected
        print("connected" if last else "disconnected", flush=True)
    if to_record and os.path.exists(cfg["go"]):
        for i in range(to_record):
            client.record("access_granted", door="front", person_id=f"p{i:03d}", name=f"Person {i}",
                          score=round(0.5 + i / 1000, 4), masked=bool(i % 2), track_id=i, n=i)
        print(f"recorded {journal.pending_count()}", flush=True)
        to_record = 0
    time.sleep(0.02)
"""


class DeviceProcess:
    """The script above in its own Python process; its stdout lines arrive on a queue."""

    def __init__(self, tmp: Path, b: mf.Mosquitto, journal: Path, *, record: int = 0, keepalive: int = 5):
        script = tmp / "device.py"
        script.write_text(DEVICE_SCRIPT)
        self.go = tmp / "go"
        cfg = {"journal": str(journal), "device": DEVICE, "host": b.host, "port": b.port, "keepalive": keepalive,
               "password": mf.USERS[DEVICE], "record": record, "go": str(self.go)}
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen([sys.executable, str(script), json.dumps(cfg)], cwd=REPO, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.output.append(line.rstrip())
            self.lines.put(line.strip())

    def expect(self, prefix: str, timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if line.startswith(prefix):
                return line
        raise AssertionError(f"device process never printed {prefix!r}; output:\n" + "\n".join(self.output[-30:]))

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill9()


# -------------------------------------------------------------------------------------------- tests


def test_availability_discovery_state_and_events(tmp_path, broker):
    mon = Recorder(broker, "monitor", [f"{PREFIX}/#", "homeassistant/#"])
    journal = Journal(tmp_path / "journal.db")
    client = MqttClient(settings(broker), journal=journal, doors=[DoorInfo("front", has_contact=True)])
    try:
        client.publish_lock_states({"front": {"unlocked": False, "door_open": False}})  # cached before connect
        client.start()
        client.wait_connected(TIMEOUT)
        assert wait_until(lambda: mon.last(T.availability) == b"online", TIMEOUT)

        # Home Assistant discovery: one lock per door, the door contact, sensors, the recognition event
        lock_cfg = loads(wait_until(lambda: mon.last(f"homeassistant/lock/{DEVICE}/front_lock/config"), TIMEOUT))
        assert lock_cfg["state_topic"] == f"{PREFIX}/state/lock/front"
        assert lock_cfg["command_topic"] == f"{PREFIX}/ha/lock/front/set"
        assert (lock_cfg["payload_lock"], lock_cfg["payload_unlock"]) == ("LOCK", "UNLOCK")
        assert (lock_cfg["state_locked"], lock_cfg["state_unlocked"]) == ("LOCKED", "UNLOCKED")
        assert lock_cfg["availability_topic"] == T.availability
        assert lock_cfg["device"]["identifiers"] == [f"edge-mfr-{DEVICE}"]
        contact = loads(wait_until(lambda: mon.last(f"homeassistant/binary_sensor/{DEVICE}/front_contact/config")))
        assert contact["device_class"] == "door" and contact["state_topic"] == f"{PREFIX}/state/door/front"
        person = loads(wait_until(lambda: mon.last(f"homeassistant/sensor/{DEVICE}/last_person/config")))
        assert person["state_topic"] == person["json_attributes_topic"] == f"{PREFIX}/state/last_person"
        fps_cfg = loads(wait_until(lambda: mon.last(f"homeassistant/sensor/{DEVICE}/fps/config")))
        assert fps_cfg["unit_of_measurement"] == "fps"
        fleet_cfg = loads(wait_until(lambda: mon.last(f"homeassistant/sensor/{DEVICE}/gallery_version/config")))
        assert fleet_cfg["state_topic"] == f"{PREFIX}/state/fleet"  # a fleet door's gallery version
        event_cfg = loads(wait_until(lambda: mon.last(f"homeassistant/event/{DEVICE}/recognized/config")))
        assert event_cfg["state_topic"] == f"{PREFIX}/event/recognized"
        assert event_cfg["event_types"] == ["recognized"]
        unique_ids = [loads(mon.last(t))["unique_id"] for t in {t for t, *_ in mon.messages
                                                                if t.startswith("homeassistant/")}]
        assert len(unique_ids) == len(set(unique_ids)) == 7

        # retained state: cached values went out on connect, new ones as they change
        assert wait_until(lambda: mon.last(f"{PREFIX}/state/lock/front") == b"LOCKED", TIMEOUT)
        assert wait_until(lambda: mon.last(f"{PREFIX}/state/door/front") == b"CLOSED", TIMEOUT)
        client.set_state("fps", 12.5)
        client.set_state("people_count", 3)
        client.set_state("models", {"facenet": {"version": "int8", "sha256": "0123456789ab"}})
        client.on_app_event("unlocked", {"door": "front", "reason": "test"})
        client.on_app_event("access_granted", {"door": "front", "person_id": "alice", "name": "Alice",
                                               "masked": True, "score": 0.81})
        assert wait_until(lambda: mon.last(f"{PREFIX}/state/fps") == b"12.5", TIMEOUT)
        assert wait_until(lambda: mon.last(f"{PREFIX}/state/people_count") == b"3", TIMEOUT)
        assert wait_until(lambda: mon.last(f"{PREFIX}/state/lock/front") == b"UNLOCKED", TIMEOUT)
        assert loads(wait_until(lambda: mon.last(f"{PREFIX}/state/models")))["facenet"]["sha256"] == "0123456789ab"
        last = loads(wait_until(lambda: mon.last(f"{PREFIX}/state/last_person")))
        assert (last["person_id"], last["name"], last["masked"], last["door"]) == ("alice", "Alice", True, "front")
        late = Recorder(broker, "monitor", [f"{PREFIX}/state/#"])  # retained: a new subscriber sees them too
        assert wait_until(lambda: late.last(f"{PREFIX}/state/fps") == b"12.5", TIMEOUT)
        late.close()

        # events: journaled first, published from the outbox with the documented JSON
        ev = client.record("recognized", door="front", person_id="alice", name="Alice", score=0.8312,
                           masked=True, track_id=7, snapshot=b"\xff\xd8\xff not sent: snapshots are off")
        client.record("started", source="test")  # not an MQTT event kind: journal only
        denied = client.record("access_denied", door="front", person_id="bob", name="Bob", score=0.7,
                               masked=False, track_id=8, reason="outside their schedule")
        body = loads(wait_until(lambda: mon.last(f"{PREFIX}/event/recognized"), TIMEOUT))
        assert body["schema"] == 1 and body["event_id"] == ev["event_id"]
        assert body["kind"] == body["event_type"] == "recognized"
        assert (body["person_id"], body["name"], body["score"], body["masked"], body["track_id"]) == \
            ("alice", "Alice", 0.8312, True, 7)
        ts = datetime.fromisoformat(body["ts"])
        assert ts.utcoffset().total_seconds() == 0 and abs((datetime.now(UTC) - ts).total_seconds()) < 600
        body = loads(wait_until(lambda: mon.last(f"{PREFIX}/event/access_denied"), TIMEOUT))
        assert body["event_id"] == denied["event_id"] and body["reason"] == "outside their schedule"
        assert wait_until(lambda: journal.pending_count() == 0, TIMEOUT)
        assert mon.on(f"{PREFIX}/event/started") == [] and mon.on(f"{PREFIX}/snapshot/recognized") == []

        # Home Assistant restarted: discovery is sent again
        before = len(mon.on(f"homeassistant/lock/{DEVICE}/front_lock/config"))
        ha = Recorder(broker, "homeassistant")
        ha.publish("homeassistant/status", "online")
        assert wait_until(lambda: len(mon.on(f"homeassistant/lock/{DEVICE}/front_lock/config")) > before, TIMEOUT)
        ha.close()

        # removal: empty retained configs, so a new subscriber finds none
        removed = client.remove_discovery()
        assert len(removed) == 7
        assert all(wait_until(lambda t=t: mon.last(t) == b"", TIMEOUT) for t in removed)
        fresh = Recorder(broker, "monitor", ["homeassistant/#", T.availability])
        assert wait_until(lambda: fresh.last(T.availability) == b"online", TIMEOUT)
        assert [t for t, *_ in fresh.messages if t.startswith("homeassistant/")] == []
        fresh.close()
    finally:
        client.stop()
    assert wait_until(lambda: mon.last(T.availability) == b"offline", TIMEOUT)  # clean stop says offline
    mon.close()
    journal.close()


def test_settings_from_config(tmp_path):
    (tmp_path / "pw").write_text("s3cret pw\n")
    (tmp_path / "secret").write_text("x" * 32 + "\n")
    (tmp_path / "config.toml").write_text('[device]\nid = "door-1"\nstate_dir = "state"\n[mqtt]\nenabled = true\n'
                                          'username = "door-1"\npassword_file = "pw"\n'
                                          'command_secret_file = "secret"\n')
    s = MqttSettings.from_config(load_config(tmp_path / "config.toml", environ={}))
    assert (s.password, s.command_secret, s.username) == ("s3cret pw", b"x" * 32, "door-1")
    assert (s.topic_prefix, s.client_id, s.protocol, s.allow_unsigned_ha_unlock) == \
        ("edge-mfr/door-1", "edge-mfr-door-1", "3.1.1", False)
    (tmp_path / "secret").write_text("short")
    with pytest.raises(ConfigError, match="at least 16"):
        MqttSettings.from_config(load_config(tmp_path / "config.toml", environ={}))
    (tmp_path / "pw").unlink()
    with pytest.raises(ConfigError, match="mqtt.password_file.*cannot read"):
        MqttSettings.from_config(load_config(tmp_path / "config.toml", environ={}))


def test_snapshots_only_when_enabled(tmp_path):
    event = {"event_id": "e1", "ts": "2024-05-01T08:00:00.000000+00:00", "kind": "unknown_face", "door": "front",
             "person_id": None, "payload": {"masked": True, "score": 0.2}}
    off = MqttClient(MqttSettings(device_id=DEVICE))
    on = MqttClient(MqttSettings(device_id=DEVICE, snapshots=True))
    assert [m[0] for m in off.messages_for(event, b"jpeg")] == [f"{PREFIX}/event/unknown_face"]
    assert [m[0] for m in on.messages_for(event, b"jpeg")] == [f"{PREFIX}/event/unknown_face",
                                                                 f"{PREFIX}/snapshot/unknown_face"]
    assert on.messages_for({**event, "kind": "started"}, b"jpeg") == []
    assert {"recognized", "access_denied", "door_forced", "lockout", "mask_status"} <= EVENT_KINDS


OUTAGE_S = 30.0


def test_outbox_survives_broker_outage_and_sigkill(tmp_path, broker):
    n = 200
    journal_path = tmp_path / "journal.db"
    first = DeviceProcess(tmp_path, broker, journal_path, record=n)
    second = None
    mon = None
    try:
        first.expect("connected")
        broker.stop()
        outage_start = time.monotonic()
        first.expect("disconnected")
        first.go.touch()  # record the events while the broker is away
        assert first.expect("recorded") == f"recorded {n}"
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_start)))  # the publisher keeps retrying
        first.kill9()
        with Journal(journal_path) as j:
            assert j.pending_count() == n
            journaled = [e["event_id"] for e in j.query(limit=None, newest_first=False)]
            stored = {e["event_id"]: e for e in j.query(limit=None)}
        assert len(journaled) == n

        broker.start()
        outage = time.monotonic() - outage_start
        mon = Recorder(broker, "monitor", [f"{PREFIX}/event/#"])
        t0 = time.monotonic()
        second = DeviceProcess(tmp_path, broker, journal_path)
        second.expect("connected")

        def unique() -> list[str]:
            seen: dict[str, None] = {}
            for payload in mon.on(f"{PREFIX}/event/access_granted"):
                seen.setdefault(json.loads(payload)["event_id"], None)
            return list(seen)

        assert wait_until(lambda: len(unique()) >= n, 60.0), f"only {len(unique())} of {n} arrived"
        delivered = time.monotonic() - t0
        bodies = [json.loads(p) for p in mon.on(f"{PREFIX}/event/access_granted")]
        assert unique() == journaled  # every event, in journal order
        for body in bodies:  # duplicates (if any) are identical copies of the journaled event
            e = stored[body["event_id"]]
            assert (body["ts"], body["person_id"], body["n"], body["masked"]) == \
                (e["ts"], e["person_id"], e["payload"]["n"], e["payload"]["masked"])
        with Journal(journal_path, readonly=True) as j:
            assert wait_until(lambda: j.pending_count() == 0, TIMEOUT)
        print(f"\noutbox: {n} events after a {outage:.1f} s outage and SIGKILL delivered {delivered:.2f} s after "
              f"the new publisher started ({len(bodies) - n} duplicates)")
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.close()
        if mon is not None:
            mon.close()


def test_reconnects_and_delivers_after_an_outage_in_process(tmp_path, broker):
    journal = Journal(tmp_path / "journal.db")
    client = MqttClient(settings(broker), journal=journal)
    mon = None
    try:
        client.start()
        client.wait_connected(TIMEOUT)
        client.set_state("fps", 9.5)
        broker.stop()
        assert wait_until(lambda: not client.connected, TIMEOUT)
        events = [client.record("unknown_face", door="front", track_id=i, masked=False, score=0.1)["event_id"]
                  for i in range(20)]
        assert journal.pending_count() == 20
        broker.start()  # without persistence: the retained state is gone until the device re-sends it
        mon = Recorder(broker, "monitor", [f"{PREFIX}/#"])
        assert wait_until(lambda: len(mon.on(f"{PREFIX}/event/unknown_face")) >= 20, 30.0)
        got = list(dict.fromkeys(json.loads(p)["event_id"] for p in mon.on(f"{PREFIX}/event/unknown_face")))
        assert got == events
        assert wait_until(lambda: mon.last(T.availability) == b"online", TIMEOUT)
        assert wait_until(lambda: mon.last(f"{PREFIX}/state/fps") == b"9.5", TIMEOUT)
        assert wait_until(lambda: journal.pending_count() == 0, TIMEOUT)
        assert client.stats["connects"] == 2
    finally:
        client.stop()
        if mon is not None:
            mon.close()


def test_last_will_on_kill9(tmp_path, broker):
    mon = Recorder(broker, "monitor", [T.availability])
    device = DeviceProcess(tmp_path, broker, tmp_path / "journal.db", keepalive=2)
    try:
        device.expect("connected")
        assert wait_until(lambda: mon.last(T.availability) == b"online", TIMEOUT)
        t0 = time.monotonic()
        device.kill9()
        assert wait_until(lambda: mon.last(T.availability) == b"offline", TIMEOUT)
        offline_at = next(at for t, p, _, at in reversed(mon.messages) if p == b"offline")
        print(f"\nLWT: offline published {offline_at - t0:.3f} s after SIGKILL (keepalive 2 s)")
        late = Recorder(broker, "monitor", [T.availability])  # and it is retained
        assert wait_until(lambda: late.last(T.availability) == b"offline", TIMEOUT)
        late.close()

        # a device that hangs (or loses its network) keeps its socket open: the keep-alive catches it
        frozen = DeviceProcess(tmp_path, broker, tmp_path / "journal2.db", keepalive=2)
        try:
            frozen.expect("connected")
            assert wait_until(lambda: mon.last(T.availability) == b"online", TIMEOUT)
            t0 = time.monotonic()
            os.kill(frozen.proc.pid, signal.SIGSTOP)
            assert wait_until(lambda: mon.last(T.availability) == b"offline", TIMEOUT)
            offline_at = next(at for t, p, _, at in reversed(mon.messages) if p == b"offline")
            print(f"LWT: offline published {offline_at - t0:.3f} s after SIGSTOP (keep-alive expiry)")
        finally:
            frozen.close()  # SIGKILL works on a stopped process
    finally:
        device.close()
        mon.close()


def test_mqtt5_and_credentials_errors(tmp_path, broker):
    client = MqttClient(settings(broker, protocol="5"), journal=Journal(tmp_path / "j.db"))
    client.start()
    try:
        client.wait_connected(TIMEOUT)
    finally:
        client.stop()
    bad = MqttClient(settings(broker, password="wrong"))
    bad.start()
    try:
        assert wait_until(lambda: bad.last_error is not None, TIMEOUT)
        with pytest.raises(MqttAuthError, match="refused the connection.*(password|authori)"):
            bad.wait_connected(0.1)
    finally:
        bad.stop()
    refused = MqttClient(settings(broker, port=mf.free_port()))
    refused.start()
    try:
        assert wait_until(lambda: refused.last_error is not None, TIMEOUT)
        with pytest.raises(MqttError, match="connection refused"):
            refused.wait_connected(0.1)
    finally:
        refused.stop()


def test_tls_with_the_right_and_a_wrong_ca(tmp_path, broker, certs, caplog):
    good = MqttClient(settings(broker, port=broker.tls_port, tls=True, tls_ca=certs.ca, host="localhost"))
    good.start()
    try:
        good.wait_connected(TIMEOUT)
    finally:
        good.stop()

    wrong = MqttClient(settings(broker, port=broker.tls_port, tls=True, tls_ca=certs.other_ca, host="localhost"))
    caplog.set_level("ERROR", logger="edge_mfr.interfaces.mqtt")
    wrong.start()
    try:
        assert wait_until(lambda: wrong.last_error is not None, TIMEOUT)
        with pytest.raises(MqttTlsError) as err:
            wrong.wait_connected(0.1)
    finally:
        wrong.stop()
    text = str(err.value)
    assert "certificate verification failed" in text and str(certs.other_ca) in text
    assert "\n" not in text and isinstance(err.value, ConnectionError)
    assert any("certificate verification failed" in r.getMessage() for r in caplog.records)

    with pytest.raises(MqttTlsError, match="no such file"):
        MqttClient(settings(broker, tls=True, tls_ca=tmp_path / "missing.crt")).start()
