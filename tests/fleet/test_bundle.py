"""Bundle format: signatures, strict headers, chunk reassembly, and the apply rules on a real gallery file."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from edge_mfr.errors import ConfigError
from edge_mfr.identity.gallery import Gallery
from edge_mfr.interfaces.fleet import bundle, keys, payload, transport
from edge_mfr.interfaces.fleet.bundle import BundleError, BundleHeader, DoorRule
from edge_mfr.interfaces.fleet.follower import FleetState, apply_bundle, load_rules

from .conftest import MODEL, make_gallery

MODELS = {"primary": MODEL}


def _header(data: bytes, version: int = 1, kind: str = "full", base: int | None = None, people=(), revoked=(),
            rules=None, fleet: str = "site", key_id: str = "k") -> BundleHeader:
    return BundleHeader(fleet, version, kind, base, "2026-12-01T00:00:00Z", key_id, dict(MODELS), tuple(people),
                        tuple(revoked), rules or {}, hashlib.sha256(data).hexdigest(), len(data))


def _full(src: Gallery, priv, version: int = 1, **kw) -> bytes:
    data = payload.to_bytes(src, src.people)
    return bundle.encode(_header(data, version, people=[p.person_id for p in src.people], **kw), data, priv)


def test_keygen_modes_and_refuses_overwrite(tmp_path: Path, keypair) -> None:
    priv, pub = keypair
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert pub.read_text().startswith("ed25519 ")
    with pytest.raises(ConfigError, match="already exists"):
        keys.keygen(priv.parent)
    priv.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        keys.load_private(priv)


def test_signed_bundle_round_trip_and_every_tamper_refused(tmp_path: Path, keypair) -> None:
    priv_path, pub_path = keypair
    priv = keys.load_private(priv_path)
    trusted = keys.load_trusted([pub_path])
    src = make_gallery(tmp_path / "admin.npz", ["Alice", "Bob"])
    blob = _full(src, priv)
    header, data = bundle.decode(blob, trusted)
    assert header.people == ("alice", "bob") and header.version == 1
    for i in (3, len(blob) // 2, len(blob) - 70, len(blob) - 1):  # magic, payload, header/payload edge, signature
        flipped = bytearray(blob)
        flipped[i] ^= 0x01
        with pytest.raises(BundleError):
            bundle.decode(bytes(flipped), trusted)
    with pytest.raises(BundleError, match="truncated|signature"):
        bundle.decode(blob[: len(blob) // 3], trusted)
    other = keys.load_private(keys.keygen(tmp_path / "other")[0])
    with pytest.raises(BundleError, match="signature"):
        bundle.decode(_full(src, other), trusted)


def test_header_is_strict() -> None:
    good = _header(b"x", people=["alice"]).to_json()
    BundleHeader.from_json(good)
    for change in ({"version": True}, {"version": 0}, {"kind": "patch"}, {"base_version": 1},
                   {"people": ["Alice"]}, {"people": ["alice", "alice"]}, {"models": {}},
                   {"rules": {"bob": {"doors": None, "schedules": {}}}}, {"extra": 1}):
        with pytest.raises(BundleError):
            BundleHeader.from_json({**good, **change})
    delta = {**good, "kind": "delta", "base_version": None}
    with pytest.raises(BundleError, match="base_version"):
        BundleHeader.from_json(delta)


def test_chunks_reassemble_in_any_order_and_truncation_is_named() -> None:
    blob = bytes(range(256)) * 50
    msgs = transport.split(blob, 7, "root", chunk_bytes=1024)
    asm = transport.Assembler("root")
    results = [asm.feed(t, p) for t, p in reversed(msgs)]
    assert results[-1] == (7, blob, None)
    asm2 = transport.Assembler("root")
    for t, p in msgs[:-1]:
        asm2.feed(t, p[:-1] if t.endswith("/chunk/3") else p)  # one chunk cut short
    version, got, problem = asm2.feed(*msgs[-1])
    assert got is None and "do not add up" in problem
    asm3 = transport.Assembler("root", clock=iter([0.0, 0.0, 100.0]).__next__)
    asm3.feed(*msgs[0])
    asm3.feed(*msgs[-1])
    assert asm3.stale(60.0) == [(7, "bundle v7: incomplete after 60 s (1 of 13 chunks, index seen)")]


def test_apply_full_then_delta_then_refusals(tmp_path: Path, keypair) -> None:
    priv = keys.load_private(keypair[0])
    trusted = keys.load_trusted([keypair[1]])
    src = make_gallery(tmp_path / "admin.npz", ["Alice", "Bob", "Carol"])
    door = tmp_path / "door" / "gallery.npz"
    state = FleetState("site")
    rule = DoorRule(("front",), {"front": [{"days": "mon-fri", "from": "08:00", "to": "18:00"}]})
    h, d = bundle.decode(_full(src, priv, rules={"bob": rule}), trusted)
    state = apply_bundle(h, d, door, MODELS, state)
    g = Gallery.load(door, MODEL)
    assert [p.person_id for p in g.people] == ["alice", "bob", "carol"] and state.version == 1
    assert load_rules(door)["bob"].doors == ("front",)
    assert FleetState.load(door, "site").version == 1
    # delta: revoke carol, change nothing else
    data = payload.to_bytes(src, [])
    h2, d2 = bundle.decode(bundle.encode(_header(data, 2, "delta", 1, revoked=["carol"]), data, priv), trusted)
    state = apply_bundle(h2, d2, door, MODELS, state)
    assert [p.person_id for p in Gallery.load(door, MODEL).people] == ["alice", "bob"]
    assert "bob" in load_rules(door)
    before = door.read_bytes()
    with pytest.raises(BundleError, match="not newer"):
        apply_bundle(h, d, door, MODELS, state)  # replay of v1
    with pytest.raises(BundleError, match="applies on v1"):
        apply_bundle(h2._replace(version=3) if hasattr(h2, "_replace") else
                     BundleHeader(**{**h2.__dict__, "version": 3}), d2, door, MODELS, state)
    with pytest.raises(BundleError, match="embedder models"):
        apply_bundle(BundleHeader(**{**h.__dict__, "version": 5, "models": {"primary": "cd" * 32}}), d, door,
                     MODELS, state)
    with pytest.raises(BundleError, match="fleet"):
        apply_bundle(BundleHeader(**{**h.__dict__, "version": 5, "fleet": "other"}), d, door, MODELS, state)
    assert door.read_bytes() == before


def test_policy_obeys_fleet_door_rules() -> None:
    from datetime import datetime

    from edge_mfr.policy import AccessPolicy, Observation

    class Clock:
        def monotonic(self) -> float:
            return 100.0

        def now(self) -> datetime:
            return datetime(2026, 12, 5, 20, 0)  # a Saturday evening

    policy = AccessPolicy(clock=Clock())
    policy.door_rules = {"bob": DoorRule(("garage",), {}),
                         "ann": DoorRule(None, {"*": [{"days": "mon-fri", "from": "08:00", "to": "18:00"}]})}
    obs = [Observation(1, "bob", "Bob", True, False, 0.9)]
    d = policy.decide(obs, door="front")
    assert d.action == "deny" and "not allowed at door 'front'" in d.reasons[-1]
    assert policy.decide([Observation(2, "bob", "Bob", True, False, 0.9)], door="garage").action == "unlock"
    d = policy.decide([Observation(3, "ann", "Ann", True, False, 0.9)], door="front")
    assert d.action == "deny" and "fleet schedule" in d.reasons[-1]
