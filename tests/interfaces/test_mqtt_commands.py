"""Remote commands: the real DoorLock on gpiozero's MockFactory, a real mosquitto with the deploy ACL, and a
hypothesis fuzz of CommandHandler.handle. The relay may only move for a valid, fresh, single-use signature.

Signatures are checked here with the test's own implementation of the documented format (HMAC-SHA256 over
``edge-mfr-command-v1\\n<topic>\\n<canonical JSON without sig>``), not with the module's helper.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time

import cv2
import pytest
from gpiozero.pins.mock import MockFactory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_mfr.device.journal import Journal
from edge_mfr.device.lock import DoorConfig, DoorLock
from edge_mfr.identity.gallery import Gallery
from edge_mfr.interfaces.mqtt import MqttClient, MqttSettings, Topics
from edge_mfr.interfaces.mqtt_commands import (
    CommandHandler,
    CommandLimits,
    CommandResult,
    GalleryCommands,
    NonceCache,
    main,
    sign_command,
)
from tests import mosquitto_fixture as mf

wait_until = mf.wait_until

SECRET = b"unit-test-secret-0123456789abcdef"
DEVICE = mf.DEVICE_ID
PREFIX = f"edge-mfr/{DEVICE}"
T = Topics(PREFIX)
UNLOCK = T.command("unlock")
RELAY = 17
TIMEOUT = 20.0


def reference_sig(topic: str, body: dict, secret: bytes = SECRET) -> str:
    text = json.dumps({k: v for k, v in body.items() if k != "sig"}, sort_keys=True, separators=(",", ":"))
    return hmac.new(secret, b"edge-mfr-command-v1\n" + topic.encode() + b"\n" + text.encode(),
                    hashlib.sha256).hexdigest()


def signed(topic: str, body: dict, *, ts: float | None = None, nonce: str | None = None) -> dict:
    out = {**body, "ts": int(time.time() if ts is None else ts), "nonce": nonce or f"n{time.monotonic_ns()}"}
    out["sig"] = reference_sig(topic, out)
    return out


def raw(body: dict) -> bytes:
    return json.dumps(body).encode()


@pytest.fixture()
def door():
    factory = MockFactory()
    lock = DoorLock(DoorConfig("front", relay_pin=RELAY, unlock_seconds=0.3, max_unlock_seconds=1.0), factory)
    lock.pin = factory.pin(RELAY)
    yield lock
    lock.close()


def energised(door: DoorLock) -> int:
    """How often the relay pin has been driven high so far."""
    return sum(1 for s in door.pin.states if s.state)


def handler_for(door, journal=None, **kw) -> CommandHandler:
    return CommandHandler(PREFIX, [door], secret=SECRET, journal=journal, **kw)


# ---------------------------------------------------------------------------------- handler, no broker


def test_signature_format_and_sign_helper():
    body = sign_command(SECRET, UNLOCK, {"door": "front", "seconds": 5}, now=1_700_000_000, nonce="abcdefgh")
    assert body["sig"] == reference_sig(UNLOCK, body)
    assert body["ts"] == 1_700_000_000 and body["nonce"] == "abcdefgh"


def test_signed_fresh_unlock_pulses_the_relay(tmp_path, door):
    journal = Journal(tmp_path / "j.db")
    handler = handler_for(door, journal)
    result = handler.handle(UNLOCK, raw(signed(UNLOCK, {"door": "front", "seconds": 0.3, "id": "r1"})))
    assert result.ok and result.request_id == "r1" and door.is_unlocked
    assert wait_until(lambda: not door.is_unlocked, 5.0)  # relocks on its own: a pulse
    assert [s.state for s in door.pin.states] == [False, True, False]
    assert journal.query(kind="command")[0]["payload"]["request_id"] == "r1"


@pytest.mark.parametrize("case", ["unsigned", "bad_signature", "other_topic_signature", "stale", "future",
                                  "retained", "malformed", "not_object", "oversized", "seconds_text",
                                  "door_number", "unknown_door", "nan", "no_nonce", "bool_ts", "no_secret"])
def test_rejected_unlocks_never_move_the_relay(tmp_path, door, case):
    journal = Journal(tmp_path / "j.db")
    handler = handler_for(door, journal) if case != "no_secret" else CommandHandler(PREFIX, [door], journal=journal)
    good = signed(UNLOCK, {"door": "front", "seconds": 0.3, "id": "r-" + case})
    retained = False
    payload = raw(good)
    if case == "unsigned":
        payload = raw({k: v for k, v in good.items() if k != "sig"})
    elif case == "bad_signature":
        payload = raw({**good, "seconds": 0.9})  # changed after signing
    elif case == "other_topic_signature":
        payload = raw(signed(T.command("lock"), {"door": "front", "seconds": 0.3}))
    elif case == "stale":
        payload = raw(signed(UNLOCK, {"door": "front"}, ts=time.time() - 120))
    elif case == "future":
        payload = raw(signed(UNLOCK, {"door": "front"}, ts=time.time() + 120))
    elif case == "retained":
        retained = True
    elif case == "malformed":
        payload = b'{"door": "front", "seconds": '
    elif case == "not_object":
        payload = b'["unlock"]'
    elif case == "oversized":
        payload = raw(signed(UNLOCK, {"door": "front", "pad": "x" * 5000}))
    elif case == "seconds_text":
        payload = raw(signed(UNLOCK, {"door": "front", "seconds": "5"}))
    elif case == "door_number":
        payload = raw(signed(UNLOCK, {"door": 1}))
    elif case == "unknown_door":
        payload = raw(signed(UNLOCK, {"door": "back"}))
    elif case == "nan":
        payload = raw(good).replace(b'"seconds": 0.3', b'"seconds": NaN')
    elif case == "no_nonce":
        body = {"door": "front", "ts": int(time.time())}
        payload = raw({**body, "sig": reference_sig(UNLOCK, body)})
    elif case == "bool_ts":
        body = {"door": "front", "ts": True, "nonce": "abcdefgh12"}
        payload = raw({**body, "sig": reference_sig(UNLOCK, body)})
    result = handler.handle(UNLOCK, payload, retained)
    assert isinstance(result, CommandResult) and not result.ok and result.reason
    assert energised(door) == 0 and not door.is_unlocked
    rows = journal.query(kind="command_rejected")
    assert len(rows) == 1 and rows[0]["payload"]["reason"] == result.reason
    expected = {"unsigned": "unsigned", "bad_signature": "bad signature", "other_topic_signature": "bad signature",
                "stale": "stale", "future": "stale", "retained": "retained", "malformed": "malformed JSON",
                "not_object": "JSON object", "oversized": "exceeds", "seconds_text": "'seconds' must be a number",
                "door_number": "'door' must be", "unknown_door": "no door named", "nan": "malformed JSON",
                "no_nonce": "'nonce'", "bool_ts": "'ts'", "no_secret": "no mqtt.command_secret_file"}[case]
    assert expected in result.reason


def test_replay_and_nonce_cache_bound(tmp_path, door):
    handler = handler_for(door, Journal(tmp_path / "j.db"))
    payload = raw(signed(UNLOCK, {"door": "front", "seconds": 0.3}))
    assert handler.handle(UNLOCK, payload).ok
    door.lock("test")
    again = handler.handle(UNLOCK, payload)
    assert not again.ok and "replayed" in again.reason and energised(door) == 1

    cache = NonceCache(window_s=30, max_entries=2)
    assert cache.add("a" * 8, now=0) is None and cache.add("b" * 8, now=0) is None
    assert "too many" in cache.add("c" * 8, now=1)  # full: refuse rather than forget a live nonce
    assert cache.add("c" * 8, now=61) is None and len(cache) == 1  # the old ones expired


def test_other_commands_and_home_assistant(tmp_path, door):
    journal = Journal(tmp_path / "j.db")
    reloads = []
    handler = handler_for(door, journal, reload=lambda: reloads.append(1))
    ha = T.ha_lock_set("front")
    assert handler.handle(UNLOCK, raw(signed(UNLOCK, {"seconds": 1.0}))).ok  # one door: 'door' optional
    assert handler.handle(T.command("lock"), raw({"id": "l1"})).ok and not door.is_unlocked  # unsigned lock: ok
    assert handler.handle(T.command("reload"), b"{}").ok and reloads == [1]
    refused = handler.handle(ha, b"UNLOCK")
    assert not refused.ok and "allow_unsigned_ha_unlock" in refused.reason and energised(door) == 1
    assert handler.handle(ha, b"LOCK").ok
    assert not handler.handle(T.ha_lock_set("back"), b"LOCK").ok
    assert not handler.handle(T.command("selfdestruct"), b"{}").ok
    own = handler.handle(T.result, b'{"ok": true}')
    assert not own.reply  # the device's own answers are not answered
    assert not handler.handle(T.command("remove_person"), raw({"person_id": "alice"})).ok  # needs a signature
    permissive = handler_for(door, journal, limits=CommandLimits(allow_unsigned_ha_unlock=True))
    assert permissive.handle(ha, b"UNLOCK").ok and energised(door) == 2
    door.lock("test")


def test_sign_cli(tmp_path, capsys):
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET.decode() + "\n")
    assert main(["sign", "--secret-file", str(secret_file), "--topic", UNLOCK, '{"door": "front"}']) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["door"] == "front" and body["sig"] == reference_sig(UNLOCK, body)
    (tmp_path / "weak").write_text("short")
    assert main(["sign", "--secret-file", str(tmp_path / "weak"), "--topic", UNLOCK]) == 2
    assert "at least 16" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- fuzzing

JSON_LEAF = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
JSON = st.recursive(JSON_LEAF, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
KEYS = st.sampled_from(["door", "seconds", "ts", "nonce", "sig", "id", "name", "images", "person_id", "add"])
TOPICS = st.sampled_from([T.command(c) for c in ("unlock", "lock", "reload", "enroll", "remove_person",
                                                 "result", "nope", "unlock/x")]
                         + [T.ha_lock_set("front"), T.ha_lock_set("back"), "edge-mfr/other/command/unlock",
                            ""]) | st.text(max_size=40)


@st.composite
def messages(draw) -> tuple[str, bytes, bool]:
    """(topic, payload, retained): random bytes and JSON, and signed commands, intact or tampered with."""
    retained = draw(st.booleans())
    kind = draw(st.sampled_from(range(6)))
    if kind == 0:
        return draw(TOPICS), draw(st.binary(max_size=200)), retained
    if kind == 1:
        return draw(TOPICS), json.dumps(draw(st.dictionaries(KEYS, JSON, max_size=7))).encode(), retained
    if kind == 2:
        return draw(TOPICS), json.dumps(draw(JSON)).encode(), retained
    if kind == 5:  # a plausible unlock: mostly valid, so the relay really does move sometimes
        body = {"door": "front", "seconds": draw(st.sampled_from([0.3, 1, None]))}
        signed_for = topic = UNLOCK
        kind = draw(st.sampled_from([3, 3, 4]))
    else:
        body = {"door": draw(st.sampled_from(["front", "front", "back", 1, None])),
                "seconds": draw(st.sampled_from([0.3, 1, None, 0, -1, "1", True]) | JSON_LEAF)}
        signed_for = draw(st.sampled_from([UNLOCK, UNLOCK, T.command("lock"), T.command("enroll")]))
        topic = draw(st.sampled_from([signed_for] * 4) | TOPICS)  # mostly the topic it was signed for
    nonce = draw(st.sampled_from([None, "replay-nonce-1", "replay-nonce-2"]))  # None: a fresh one
    good = signed(signed_for, {k: v for k, v in body.items() if v is not None}, nonce=nonce)
    if kind == 3:  # validly signed (for signed_for): may unlock only when everything fits
        return topic, json.dumps(good).encode(), retained
    key = draw(st.sampled_from(sorted(good)))  # signed, then one field tampered with
    return topic, json.dumps({**good, key: draw(JSON)}).encode(), retained


def test_fuzz_command_handler(tmp_path, door):
    handler = handler_for(door, Journal(tmp_path / "j.db"))
    opened = []

    @settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
    @given(message=messages())
    def check(message: tuple[str, bytes, bool]) -> None:
        topic, payload, retained = message
        before = energised(door)
        result = handler.handle(topic, payload, retained)
        assert isinstance(result, CommandResult) and isinstance(result.reason, str) and result.reason
        json.dumps(result.to_payload())
        if energised(door) > before:  # the relay moved: only for a valid signature on this unlock topic
            body = json.loads(payload)
            assert result.ok and topic == UNLOCK and not retained
            assert hmac.compare_digest(body["sig"], reference_sig(UNLOCK, body))
            opened.append(body["nonce"])
            door.lock("fuzz")
        assert not door.is_unlocked

    check()
    print(f"\nfuzz: the relay opened for {len(opened)} of 1000 messages")
    assert opened and len(opened) == len(set(opened))  # the property was exercised; no nonce opened twice


# ---------------------------------------------------------------------------------- over a real broker


def test_wait_connected_returns_only_once_the_device_listens(tmp_path, broker, door, monkeypatch):
    """A command sent right after wait_connected must be heard, even when the device's SUBSCRIBE reaches the
    broker late (a loaded machine): wait_connected used to return at CONNACK, and such a command was lost."""
    import edge_mfr.interfaces.mqtt as mqtt_mod

    base = mqtt_mod._paho_client_class()

    class SlowSubscribe(base):  # the SUBSCRIBE leaves 1 s after CONNACK, as on a machine too busy to send it
        def subscribe(self, *args, **kwargs):
            def later():
                time.sleep(1.0)
                base.subscribe(self, *args, **kwargs)

            threading.Thread(target=later, daemon=True).start()
            return 0, None

    monkeypatch.setattr(mqtt_mod, "_paho_client_class", lambda: SlowSubscribe)
    op = mf.Recorder(broker, f"cmd-{DEVICE}", [T.result])
    client = MqttClient(MqttSettings(device_id=DEVICE, host=broker.host, port=broker.port, username=DEVICE,
                                     password=mf.USERS[DEVICE], reconnect_min_seconds=1, reconnect_max_seconds=1),
                        journal=Journal(tmp_path / "journal.db"), handler=handler_for(door), doors=["front"])
    try:
        client.start()
        client.wait_connected(TIMEOUT)
        op.publish(UNLOCK, raw(signed(UNLOCK, {"door": "front", "seconds": 0.3, "id": "first"})))
        assert wait_until(lambda: op.on(T.result), 5.0), "the first command after wait_connected was lost"
        assert json.loads(op.on(T.result)[0])["ok"]
    finally:
        client.stop()
        op.close()


def test_unlock_commands_over_mosquitto(tmp_path, broker, door):
    journal = Journal(tmp_path / "journal.db")
    op = mf.Recorder(broker, f"cmd-{DEVICE}", [T.result])
    # a retained unlock waiting on the broker before the device connects: must not open the door
    op.publish(UNLOCK, raw(signed(UNLOCK, {"door": "front", "id": "retained-1"})), retain=True)
    handler = handler_for(door, journal)
    client = MqttClient(MqttSettings(device_id=DEVICE, host=broker.host, port=broker.port, username=DEVICE,
                                     password=mf.USERS[DEVICE], reconnect_min_seconds=1, reconnect_max_seconds=1),
                        journal=journal, handler=handler, doors=["front"])
    results: list[dict] = []

    def answer(n: int) -> dict:
        assert wait_until(lambda: len(op.on(T.result)) >= n, TIMEOUT), f"no result #{n}"
        results[:] = [json.loads(p) for p in op.on(T.result)]
        return results[n - 1]

    try:
        client.start()
        client.wait_connected(TIMEOUT)
        first = answer(1)
        assert (first["id"], first["ok"]) == ("retained-1", False) and "retained" in first["reason"]
        op.publish(UNLOCK, b"", retain=True)  # clear it (the device answers the empty message too)
        assert not answer(2)["ok"]

        replay = raw(signed(UNLOCK, {"door": "front", "seconds": 0.3, "id": "ok-1"}))
        op.publish(UNLOCK, replay)
        ok = answer(3)
        assert ok["ok"] and ok["id"] == "ok-1" and ok["command"] == "unlock"
        assert wait_until(lambda: energised(door) == 1 and not door.is_unlocked, TIMEOUT)  # one pulse

        bad = [
            ("unsigned", raw({"door": "front", "id": "bad-1", "ts": int(time.time()), "nonce": "abcdefgh1"}),
             "unsigned"),
            ("bad signature", raw({**signed(UNLOCK, {"door": "front", "id": "bad-2"}), "seconds": 9}),
             "bad signature"),
            ("replayed", replay, "replayed"),
            ("stale", raw(signed(UNLOCK, {"door": "front", "id": "bad-4"}, ts=time.time() - 300)), "stale"),
            ("malformed JSON", b'{"id": "bad-5", "door": ', "malformed JSON"),
            ("oversized", raw(signed(UNLOCK, {"door": "front", "id": "bad-6", "pad": "x" * 6000})), "exceeds"),
            ("wrong types", raw(signed(UNLOCK, {"door": ["front"], "seconds": "5", "id": "bad-7"})), "'door'"),
        ]
        for i, (_, payload, _) in enumerate(bad):
            op.publish(UNLOCK, payload)
            got = answer(4 + i)
        for i, (label, _, reason) in enumerate(bad):
            got = results[3 + i]
            assert not got["ok"] and reason in got["reason"], (label, got)
        assert [r["id"] for r in results[3:]] == ["bad-1", "bad-2", "ok-1", "bad-4", None, None, "bad-7"]

        # the broker ACL: a read-only user cannot command the door; Home Assistant's plain UNLOCK is refused
        mon = mf.Recorder(broker, "monitor")
        mon.publish(UNLOCK, raw(signed(UNLOCK, {"door": "front", "id": "acl-1"})))
        mon.close()
        ha = mf.Recorder(broker, "homeassistant")
        ha.publish(T.ha_lock_set("front"), "UNLOCK")
        ha_answer = answer(4 + len(bad))
        assert ha_answer["command"] == "ha_lock" and not ha_answer["ok"]
        assert "allow_unsigned_ha_unlock" in ha_answer["reason"]
        ha.publish(T.ha_lock_set("front"), "LOCK")
        assert answer(5 + len(bad))["ok"]
        ha.close()
        assert all(r["id"] != "acl-1" for r in results)  # dropped by the broker, never reached the device
        assert energised(door) == 1 and not door.is_unlocked

        rejected = journal.query(kind="command_rejected", limit=None, newest_first=False)
        assert len(rejected) == 2 + len(bad) + 1  # retained, cleared, the bad ones, HA unlock
        assert [r["payload"]["request_id"] for r in rejected[:2]] == ["retained-1", None]
        assert rejected[0]["payload"]["retained"] is True
    finally:
        client.stop()
        op.close()


def _jpeg(rgb) -> str:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return base64.b64encode(buf.tobytes()).decode()


def test_enroll_and_remove_person_over_mosquitto(tmp_path, broker, door, astronaut):
    from edge_mfr.vision.pipeline import FacePipeline

    gallery_path = tmp_path / "gallery.npz"
    journal = Journal(tmp_path / "journal.db")
    gallery = GalleryCommands(gallery_path, lambda: FacePipeline(num_threads=2))
    handler = handler_for(door, journal, enroll=gallery.enroll, remove_person=gallery.remove_person)
    op = mf.Recorder(broker, f"cmd-{DEVICE}", [T.result])
    client = MqttClient(MqttSettings(device_id=DEVICE, host=broker.host, port=broker.port, username=DEVICE,
                                     password=mf.USERS[DEVICE]), journal=journal, handler=handler)
    enroll_topic, remove_topic = T.command("enroll"), T.command("remove_person")
    try:
        client.start()
        client.wait_connected(TIMEOUT)
        payload = raw(signed(enroll_topic, {"id": "e1", "name": "Eileen Collins", "images": [_jpeg(astronaut)]}))
        assert len(payload) > 4096  # over the plain command limit, under the enroll limit
        op.publish(enroll_topic, payload)
        assert wait_until(lambda: op.on(T.result), 60.0)
        answer = json.loads(op.on(T.result)[0])
        assert answer["ok"], answer
        person_id = answer["person_id"]
        g = Gallery.load(gallery_path, None, with_crops=False)
        assert [p.name for p in g.people] == ["Eileen Collins"] and g.people[0].person_id == person_id
        assert answer["kept"] == 1 and answer["templates"] == len(g.people[0])

        bad = raw(signed(enroll_topic, {"id": "e2", "name": "Nobody",
                                        "images": [base64.b64encode(b"GIF89a not a jpeg").decode()]}))
        op.publish(enroll_topic, bad)
        op.publish(remove_topic, raw({"id": "r0", "person_id": person_id}))  # unsigned: refused
        op.publish(remove_topic, raw(signed(remove_topic, {"id": "r1", "person_id": person_id})))
        assert wait_until(lambda: len(op.on(T.result)) >= 4, TIMEOUT)
        answers = {a["id"]: a for a in map(json.loads, op.on(T.result))}
        assert not answers["e2"]["ok"] and "not a JPEG or PNG" in answers["e2"]["reason"]
        assert not answers["r0"]["ok"] and "unsigned" in answers["r0"]["reason"]
        assert answers["r1"]["ok"] and answers["r1"]["name"] == "Eileen Collins"
        assert Gallery.load(gallery_path, None, with_crops=False).people == []
        assert energised(door) == 0
    finally:
        client.stop()
        op.close()


# ------------------------------------------- enroll integrity: same_as / different_from (issue 13)

ENROLL = T.command("enroll")
_TINY_JPEG = base64.b64encode(b"\xff\xd8\xff\xe0 not decoded by the fake").decode()


def _enroll_handler(door, journal=None):
    calls = []

    def fake_enroll(name, images, add, allowed, *, same_as=None, different_from=()):
        calls.append({"name": name, "add": add, "allowed": allowed, "same_as": same_as,
                      "different_from": different_from})
        return {"outcome": "added" if same_as else "enrolled", "person_id": "p1", "name": name}

    return handler_for(door, journal, enroll=fake_enroll), calls


def test_enroll_passes_same_as_and_different_from_through(door):
    handler, calls = _enroll_handler(door)
    body = {"name": "Colin", "images": [_TINY_JPEG], "same_as": "colin-powell",
            "different_from": ["george-w-bush", "Someone Else"]}
    result = handler.handle(ENROLL, raw(signed(ENROLL, body)))
    assert result.ok, result.reason
    assert calls == [{"name": "Colin", "add": False, "allowed": True, "same_as": "colin-powell",
                      "different_from": ("george-w-bush", "Someone Else")}]
    assert handler.handle(ENROLL, raw(signed(ENROLL, {"name": "Colin", "images": [_TINY_JPEG],
                                                      "same_as": None, "different_from": None}))).ok
    assert calls[-1]["same_as"] is None and calls[-1]["different_from"] == ()


@pytest.mark.parametrize(("change", "reason"), [
    ({"same_as": 7}, "'same_as' must be a non-empty string of at most 100 characters"),
    ({"same_as": ""}, "'same_as' must be a non-empty string"),
    ({"same_as": "x" * 101}, "'same_as' must be a non-empty string of at most 100 characters"),
    ({"same_as": ["colin-powell"]}, "'same_as' must be a non-empty string"),
    ({"different_from": "colin-powell"}, "'different_from' must be a list of at most 20 person ids or names"),
    ({"different_from": [3]}, "'different_from' must be a list"),
    ({"different_from": ["  "]}, "'different_from' must be a list"),
    ({"different_from": ["x" * 101]}, "'different_from' must be a list"),
    ({"different_from": [f"p{i}" for i in range(21)]}, "'different_from' must be a list of at most 20"),
    ({"different_from": {"a": "b"}}, "'different_from' must be a list"),
])
def test_malformed_same_as_or_different_from_is_refused_before_enrolling(door, change, reason):
    handler, calls = _enroll_handler(door)
    result = handler.handle(ENROLL, raw(signed(ENROLL, {"name": "Colin", "images": [_TINY_JPEG], **change})))
    assert not result.ok and result.reason.startswith(reason), result.reason
    assert calls == []


def test_the_signature_covers_same_as_and_different_from(door):
    handler, calls = _enroll_handler(door)
    good = signed(ENROLL, {"name": "Colin", "images": [_TINY_JPEG], "different_from": ["colin-powell"]})
    for tampered in ({**good, "different_from": ["someone-else"]}, {**good, "same_as": "colin-powell"},
                     {k: v for k, v in good.items() if k != "different_from"}):
        result = handler.handle(ENROLL, raw(tampered))
        assert not result.ok and result.reason == "bad signature"
    assert calls == []


def _lfw(data_dir, numbers) -> list[str]:
    folder = data_dir / "lfw" / "ColinPowell"
    return [base64.b64encode(sorted(folder.glob("*.jpg"))[i - 1].read_bytes()).decode() for i in numbers]


@pytest.mark.data
def test_a_duplicate_enroll_over_mosquitto_is_refused_unless_confirmed(tmp_path, broker, door, data_dir):
    """Real photos through the real enrollment code: the same face under another name is refused naming
    the match; ``same_as`` adds it to that person, ``different_from`` enrolls a new person; malformed fields
    change nothing."""
    from edge_mfr.vision.pipeline import FacePipeline

    gallery_path = tmp_path / "gallery.npz"
    journal = Journal(tmp_path / "journal.db")
    gallery = GalleryCommands(gallery_path, lambda: FacePipeline(num_threads=2))
    handler = handler_for(door, journal, enroll=gallery.enroll)
    op = mf.Recorder(broker, f"cmd-{DEVICE}", [T.result])
    client = MqttClient(MqttSettings(device_id=DEVICE, host=broker.host, port=broker.port, username=DEVICE,
                                     password=mf.USERS[DEVICE]), journal=journal, handler=handler)

    def ask(request_id: str, body: dict, *, sign: bool = True) -> dict:
        payload = {"id": request_id, **body}
        op.publish(ENROLL, raw(signed(ENROLL, payload) if sign else payload))

        def answer():
            return next((a for a in map(json.loads, op.on(T.result)) if a["id"] == request_id), None)

        assert wait_until(answer, 300.0), f"no answer to {request_id}"
        return answer()

    try:
        client.start()
        client.wait_connected(TIMEOUT)
        first = ask("e1", {"name": "Colin Powell", "images": _lfw(data_dir, range(1, 4))})
        assert first["ok"] and first["outcome"] == "enrolled" and first["name"] == "Colin Powell", first
        colin_id = first["person_id"]
        before = gallery_path.read_bytes()

        dup = ask("e2", {"name": "Someone Else", "images": _lfw(data_dir, range(4, 6))})
        assert not dup["ok"], dup
        assert dup["reason"].startswith(f"these faces match 'Colin Powell' ({colin_id}, similarity ")
        assert f'"same_as": "{colin_id}"' in dup["reason"] and f'"different_from": ["{colin_id}"]' in dup["reason"]
        assert "--same-as" not in dup["reason"]  # the CLI's wording is no use to an MQTT sender
        assert dup["match"]["person_id"] == colin_id and dup["match"]["name"] == "Colin Powell"
        assert 0 < dup["match"]["similarity"] <= 1
        assert gallery_path.read_bytes() == before

        for i, bad in enumerate(({"same_as": 12}, {"different_from": colin_id},
                                 {"different_from": [colin_id] * 21}, {"same_as": ""})):
            answer = ask(f"bad{i}", {"name": "Someone Else", "images": _lfw(data_dir, range(4, 6)), **bad})
            assert not answer["ok"] and ("'same_as' must be" in answer["reason"]
                                         or "'different_from' must be" in answer["reason"]), answer
        unknown = ask("e3", {"name": "Someone Else", "images": _lfw(data_dir, range(4, 6)), "same_as": "nobody"})
        assert not unknown["ok"] and "no enrolled person with id or name 'nobody'" in unknown["reason"], unknown
        assert gallery_path.read_bytes() == before

        added = ask("e4", {"name": "Colin", "images": _lfw(data_dir, range(4, 6)), "same_as": colin_id})
        assert added["ok"] and added["outcome"] == "added", added
        assert added["person_id"] == colin_id and added["name"] == "Colin Powell"
        g = Gallery.load(gallery_path, None, with_crops=False)
        assert [p.name for p in g.people] == ["Colin Powell"] and g.get(colin_id).num_real == first["kept"] + 2

        other = ask("e5", {"name": "Colin Twin", "images": _lfw(data_dir, range(8, 9)),
                           "different_from": [colin_id]})
        assert other["ok"] and other["outcome"] == "enrolled" and other["person_id"] != colin_id, other
        g = Gallery.load(gallery_path, None, with_crops=False)
        assert sorted(p.name for p in g.people) == ["Colin Powell", "Colin Twin"]

        audited = {e["payload"]["request_id"]: e for e in journal.query(kind="command", limit=None)}
        assert audited["e4"]["person_id"] == colin_id and audited["e4"]["payload"]["outcome"] == "added"
        assert energised(door) == 0
    finally:
        client.stop()
        op.close()
