"""Fleet distribution through a real mosquitto: publish, revoke, catch up after being offline, refusals."""

from __future__ import annotations

import json
from pathlib import Path

from edge_mfr.identity.gallery import Gallery
from edge_mfr.interfaces.fleet import keys, link, transport
from edge_mfr.interfaces.fleet.follower import Follower
from edge_mfr.interfaces.fleet.publisher import publish
from edge_mfr.interfaces.mqtt import MqttSettings
from tests.mosquitto_fixture import DEVICE_ID, USERS, Recorder, broker, certs, wait_until  # noqa: F401

from .conftest import MODEL, make_gallery

ROOT = "edge-mfr/fleet/site"


def _factory(b, user: str):
    return link.client_factory(MqttSettings(device_id=user, host=b.host, port=b.port, username=user,
                                            password=USERS[user]), "fleet")


class Door:
    """A follower as a door runs it, with its journal replaced by a list."""

    def __init__(self, b, tmp: Path, user: str, pub: Path):
        self.events: list[tuple[str, dict]] = []
        self.gallery = tmp / user / "gallery.npz"
        self.f = Follower(fleet="site", root=ROOT, trusted=keys.load_trusted([pub]), gallery_path=self.gallery,
                          models=lambda: {"primary": MODEL}, record=lambda k, **p: self.events.append((k, p)),
                          client_factory=_factory(b, user), host=b.host, port=b.port)

    def people(self) -> list[str]:
        try:
            return [p.person_id for p in Gallery.load(self.gallery, MODEL).people]
        except Exception:
            return []

    def refused(self) -> list[str]:
        return [p["reason"] for k, p in self.events if k == "fleet_refused"]


def _publish(b, tmp: Path, gallery: Path, priv: Path, **kw):
    return publish(gallery_path=gallery, private_key_path=priv, fleet="site", root=ROOT,
                   state_path=tmp / "published.json", client_factory=_factory(b, "fleet-admin"), host=b.host,
                   port=b.port, chunk_bytes=2048, **kw)


def test_enroll_revoke_offline_catch_up_and_refusals(broker, tmp_path: Path, keypair) -> None:  # noqa: F811
    priv, pub = keypair
    admin = tmp_path / "admin.npz"
    make_gallery(admin, ["Alice", "Bob"])
    online = Door(broker, tmp_path, DEVICE_ID, pub)
    offline = Door(broker, tmp_path, f"{DEVICE_ID}-b", pub)
    online.f.start()
    try:
        first = _publish(broker, tmp_path, admin, priv)
        assert first["kind"] == "full" and first["chunks"] > 1
        assert wait_until(lambda: online.people() == ["alice", "bob"], 10)
        with Gallery.edit(admin, MODEL) as g:
            g.remove("bob")
        second = _publish(broker, tmp_path, admin, priv)
        assert second["kind"] == "delta" and second["revoked"] == ["bob"]
        assert wait_until(lambda: online.people() == ["alice"], 5)
        # the door that was offline through both changes catches up from the retained bundles
        offline.f.start()
        assert wait_until(lambda: offline.f.state.version == 2, 10)
        assert offline.people() == online.people() == ["alice"]

        attacker = Recorder(broker, "fleet-admin")
        other_priv, _ = keys.keygen(tmp_path / "attacker")
        other = tmp_path / "attacker.npz"
        make_gallery(other, ["Mallory"], seed=5)
        _publish(broker, tmp_path / "attacker", other, other_priv)  # signed by a key the doors do not trust
        assert wait_until(lambda: any("signature" in r for r in online.refused()), 10)
        # a forged bundle on a fresh version number, then a truncated chunk stream
        online.events.clear()
        for t, p in transport.split(b"EMFB1\n" + b"\0" * 5000, 9, ROOT, 2048):
            attacker.publish(t, p)
        assert wait_until(lambda: any("signature" in r for r in online.refused()), 10)
        idx = json.dumps({"version": 10, "chunks": 3, "bytes": 6000, "sha256": "0" * 64})
        attacker.publish(transport.chunk_topic(ROOT, 10, 0), b"x" * 2000)
        attacker.publish(transport.chunk_topic(ROOT, 10, 1), b"x" * 2000)
        attacker.publish(transport.chunk_topic(ROOT, 10, 2), b"x" * 1000)
        attacker.publish(transport.index_topic(ROOT, 10), idx)
        assert wait_until(lambda: any("do not add up" in r for r in online.refused()), 10)
        assert online.people() == ["alice"] and online.f.state.version == 2
        attacker.close()
    finally:
        online.f.stop()
        offline.f.stop()


def test_replayed_older_bundle_is_refused_and_journaled(broker, tmp_path: Path, keypair) -> None:  # noqa: F811
    priv, pub = keypair
    admin = tmp_path / "admin.npz"
    make_gallery(admin, ["Alice"])
    rec = Recorder(broker, "monitor", [f"{ROOT}/#"])
    _publish(broker, tmp_path, admin, priv)
    assert wait_until(lambda: rec.on(transport.index_topic(ROOT, 1)), 10)
    v1 = [(t, p) for t, p, _, _ in rec.messages if t.startswith(f"{ROOT}/bundle/1/")]
    with Gallery.edit(admin, MODEL) as g:
        g.add_person("Dan")
    _publish(broker, tmp_path, admin, priv, force_full=True)
    door = Door(broker, tmp_path, DEVICE_ID, pub)
    door.f.start()
    try:
        assert wait_until(lambda: door.f.state.version == 2, 10)
        attacker = Recorder(broker, "fleet-admin")
        for t, p in v1:  # the genuine, signed v1 again
            attacker.publish(t, p)
        assert wait_until(lambda: any("not newer" in r for r in door.refused()), 10)
        assert door.f.state.version == 2
        attacker.close()
    finally:
        door.f.stop()
        rec.close()
