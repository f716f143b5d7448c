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


def test_chunks_reassemble_in_any_order_and_truncation_is_named(tmp_path: Path) -> None:
    blob = bytes(range(256)) * 50
    msgs = transport.split(blob, 7, "root", chunk_bytes=1024)
    asm = transport.Assembler("root", tmp_path / "spool")
    results = [asm.feed(t, p) for t, p in reversed(msgs)]
    version, spooled, problem = results[-1]
    assert (version, problem) == (7, None) and spooled.read_bytes() == blob and spooled.size == len(blob)
    spooled.discard()
    asm2 = transport.Assembler("root", tmp_path / "spool")
    for t, p in msgs[:-1]:
        asm2.feed(t, p[:-1] if t.endswith("/chunk/3") else p)  # one chunk cut short
    version, got, problem = asm2.feed(*msgs[-1])
    assert got is None and "do not add up" in problem
    clock = iter([0.0, 100.0]).__next__  # read once per new bundle, then by stale()
    asm3 = transport.Assembler("root", tmp_path / "spool", clock=clock)
    asm3.feed(*msgs[0])
    asm3.feed(*msgs[-1])
    assert asm3.stale(60.0) == [(7, "bundle v7: incomplete after 60 s (1 of 13 chunks, index seen)")]
    assert list((tmp_path / "spool").iterdir()) == []  # nothing left after success, failure or abandon


def _spooled(spool: Path) -> list[Path]:
    return sorted(spool.iterdir())


def test_spool_files_are_private_bounded_and_removed_on_restart(tmp_path: Path, monkeypatch) -> None:
    spool = tmp_path / "spool"
    blob = bytes(range(256)) * 40
    msgs = transport.split(blob, 3, "root", chunk_bytes=1024)
    asm = transport.Assembler("root", spool)
    assert stat.S_IMODE(spool.stat().st_mode) == 0o700
    for t, p in msgs[:4]:
        asm.feed(t, p)
    (part,) = _spooled(spool)
    assert stat.S_IMODE(part.stat().st_mode) == 0o600 and part.stat().st_size == 4 * 1024
    assert asm.pending_bytes() == 4 * 1024
    # a door restarted mid-bundle: the new run starts from an empty spool
    transport.Assembler("root", spool)
    assert _spooled(spool) == []
    # the bound on unfinished bundles drops the oldest partial bundle and its file
    monkeypatch.setattr(transport, "MAX_PENDING_BYTES", 6 * 1024)
    clock = iter(range(100)).__next__
    asm = transport.Assembler("root", spool, clock=lambda: float(clock()))
    for t, p in msgs[:4]:
        asm.feed(t, p)
    other = transport.split(blob, 4, "root", chunk_bytes=1024)
    for t, p in other[:3]:
        asm.feed(t, p)
    assert asm.pending_bytes() <= 6 * 1024 and len(_spooled(spool)) == 1
    assert _spooled(spool)[0].name.startswith("bundle-4-")
    asm.discard_all()
    assert _spooled(spool) == [] and asm.pending_bytes() == 0


def test_chunks_out_of_order_and_redelivered_are_assembled_in_chunk_order(tmp_path: Path) -> None:
    blob = bytes(range(251)) * 30
    msgs = transport.split(blob, 5, "root", chunk_bytes=1024)
    chunks, index = msgs[:-1], msgs[-1]
    asm = transport.Assembler("root", tmp_path / "spool")
    for t, p in [chunks[2], chunks[0], chunks[2], *chunks[1:], index]:
        version, spooled, problem = asm.feed(t, p)
    assert problem is None and spooled.read_bytes() == blob
    assert _spooled(tmp_path / "spool") == [spooled.path]  # the out-of-order file was replaced
    spooled.discard()


def test_a_bit_flipped_in_the_spool_file_is_refused(tmp_path: Path, keypair) -> None:
    priv = keys.load_private(keypair[0])
    trusted = keys.load_trusted([keypair[1]])
    src = make_gallery(tmp_path / "admin.npz", ["Alice", "Bob"])
    blob = _full(src, priv)
    msgs = transport.split(blob, 1, "root", chunk_bytes=1024)
    spool = tmp_path / "spool"
    # on disk between chunks: the index's digest no longer matches
    asm = transport.Assembler("root", spool)
    for t, p in msgs[:-1]:
        asm.feed(t, p)
    (part,) = _spooled(spool)
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0x10
    part.write_bytes(bytes(data))
    version, spooled, problem = asm.feed(*msgs[-1])
    assert spooled is None and "do not add up" in problem and _spooled(spool) == []
    # after assembly, before verification: the signature no longer verifies
    for t, p in msgs:
        version, spooled, problem = asm.feed(t, p)
    header, offset, length = bundle.decode_file(spooled.path, trusted)
    assert header.people == ("alice", "bob") and length == header.payload_bytes
    for i in (3, offset + length // 2, len(blob) - 1):
        data = bytearray(blob)
        data[i] ^= 0x01
        spooled.path.write_bytes(bytes(data))
        with pytest.raises(BundleError):
            bundle.decode_file(spooled.path, trusted)
    spooled.discard()


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
