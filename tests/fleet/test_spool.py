"""A door's follower spools bundles to disk: nothing left behind after an apply, a refusal, or a restart."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from edge_mfr.identity.gallery import Gallery
from edge_mfr.interfaces.fleet import bundle, keys, payload, transport
from edge_mfr.interfaces.fleet.bundle import BundleHeader
from edge_mfr.interfaces.fleet.follower import Follower, spool_dir

from .conftest import MODEL, make_gallery

ROOT = "edge-mfr/fleet/site"


def _bundle(src: Gallery, priv, version: int) -> bytes:
    data = payload.to_bytes(src, src.people)
    header = BundleHeader("site", version, "full", None, "2026-12-01T00:00:00Z", "k", {"primary": MODEL},
                          tuple(p.person_id for p in src.people), (), {}, hashlib.sha256(data).hexdigest(),
                          len(data))
    return bundle.encode(header, data, priv)


def _door(tmp: Path, pub: Path, events: list) -> Follower:
    return Follower(fleet="site", root=ROOT, trusted=keys.load_trusted([pub]), gallery_path=tmp / "door" / "g.npz",
                    models=lambda: {"primary": MODEL}, record=lambda k, **p: events.append((k, p)),
                    client_factory=lambda: None, host="", port=0)


def test_follower_spools_applies_refuses_and_cleans_up(tmp_path: Path, keypair) -> None:
    priv = keys.load_private(keypair[0])
    src = make_gallery(tmp_path / "admin.npz", ["Alice", "Bob"])
    events: list = []
    door = _door(tmp_path, keypair[1], events)
    spool = spool_dir(door.gallery_path)
    for t, p in transport.split(_bundle(src, priv, 1), 1, ROOT, 1024):
        door._handle(t, p)
    assert door.state.version == 1 and list(spool.iterdir()) == []
    assert [p.person_id for p in Gallery.load(door.gallery_path, MODEL).people] == ["alice", "bob"]
    before = door.gallery_path.read_bytes()

    # a bit flipped in one chunk, the index recomputed to match (an attacker with broker write access)
    blob = bytearray(_bundle(src, priv, 2))
    blob[len(blob) // 2] ^= 0x04
    for t, p in transport.split(bytes(blob), 2, ROOT, 1024):
        door._handle(t, p)
    assert "signature" in events[-1][1]["reason"] and events[-1][1]["version"] == 2
    assert list(spool.iterdir()) == [] and door.gallery_path.read_bytes() == before

    # a truncated stream: one chunk never comes; dropped with its file after the timeout
    msgs = transport.split(_bundle(src, priv, 3), 3, ROOT, 1024)
    for t, p in msgs[:2] + msgs[3:]:
        door._handle(t, p)
    assert len(list(spool.iterdir())) == 1
    door.assembler._clock = lambda: 1e9
    assert [v for v, _ in door.assembler.stale(60.0)] == [3] and list(spool.iterdir()) == []

    # a door stopped mid-bundle starts again with an empty spool
    for t, p in msgs[:2]:
        door._handle(t, p)
    assert len(list(spool.iterdir())) == 1
    events.clear()
    restarted = _door(tmp_path, keypair[1], events)
    assert list(spool.iterdir()) == [] and restarted.state.version == 1
    for t, p in msgs:
        restarted._handle(t, p)
    assert restarted.state.version == 3 and list(spool.iterdir()) == []
    assert json.loads((tmp_path / "door" / "g.npz.fleet.json").read_text())["version"] == 3
