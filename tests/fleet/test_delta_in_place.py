"""Deltas applied in place: a small file beside the gallery, the same people as a full apply, nothing half-done."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from edge_mfr.identity import gallery as gallery_mod
from edge_mfr.identity import gallery_delta
from edge_mfr.identity.classifier import IdentityClassifier
from edge_mfr.identity.gallery import Gallery, TemplateMeta
from edge_mfr.interfaces.fleet import payload
from edge_mfr.interfaces.fleet.bundle import BundleHeader
from edge_mfr.interfaces.fleet.follower import FleetState, apply_bundle

from .conftest import MODEL

MODELS = {"primary": MODEL}
DIM = 64


def _admin(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    """People whose templates cluster around a centre (so each is recognisable); returns the centres."""
    rng = np.random.default_rng(1)
    centres = {}
    with Gallery.edit(path, MODEL, dim=DIM) as g:
        for name in names:
            p = g.add_person(name)
            c = rng.normal(size=DIM)
            x = c + 0.15 * rng.normal(size=(4, DIM))
            x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
            g.add_templates(p.person_id, x, [TemplateMeta(f"{name}-{i}.jpg", 1.0) for i in range(4)])
            centres[p.person_id] = (c / np.linalg.norm(c)).astype(np.float32)
    return centres


def _bundle(admin: Path, version: int, kind: str, people: list[str], revoked: list[str] = ()):
    src = Gallery.load(admin, MODEL)
    data = payload.to_bytes(src, [src.get(pid) for pid in people])
    base = version - 1 if kind == "delta" else None
    header = BundleHeader("site", version, kind, base, "2026-12-01T00:00:00Z", "k", dict(MODELS), tuple(people),
                          tuple(revoked), {}, hashlib.sha256(data).hexdigest(), len(data))
    return header, data


def _people(path: Path) -> dict[str, tuple]:
    g = Gallery.load(path, MODEL)
    return {p.person_id: (p.name, p.allowed, p.templates, p.embeddings.tobytes()) for p in g.people}


def _door_after_full_then_delta(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    admin = tmp_path / "admin.npz"
    centres = _admin(admin, ["Alice", "Bob", "Carol", "Dan"])
    door = tmp_path / "door" / "gallery.npz"
    state = apply_bundle(*_bundle(admin, 1, "full", ["alice", "bob", "carol", "dan"]), door, MODELS,
                         FleetState("site"))
    before = door.read_bytes()
    with Gallery.edit(admin, MODEL) as g:
        g.remove("bob")
        g.set_allowed("carol", False)
        erin = g.add_person("Erin")
        g.add_templates(erin.person_id, Gallery.load(admin, MODEL).get("alice").embeddings[:2] * -1,
                        [TemplateMeta("erin.jpg", 1.0)] * 2)
    state = apply_bundle(*_bundle(admin, 2, "delta", ["carol", "erin"], ["bob"]), door, MODELS, state)
    assert state.version == 2 and state.people == 4
    assert door.read_bytes() == before, "a delta must not rewrite the gallery"
    assert len(gallery_delta.delta_files(door)) == 1
    return admin, door, centres


def test_delta_in_place_loads_as_the_gallery_a_full_apply_gives(tmp_path: Path) -> None:
    admin, door, _ = _door_after_full_then_delta(tmp_path)
    fresh = tmp_path / "fresh" / "gallery.npz"
    apply_bundle(*_bundle(admin, 2, "full", ["alice", "carol", "dan", "erin"]), fresh, MODELS, FleetState("site"))
    assert _people(door) == _people(fresh)  # what a restarted door reads
    assert not Gallery.load(door, MODEL).get("carol").allowed

    # the next full bundle rewrites the file with the deltas folded in, and the delta files go
    with Gallery.edit(admin, MODEL) as g:
        g.rename("dan", "Daniel")
    apply_bundle(*_bundle(admin, 3, "full", ["alice", "carol", "dan", "erin"]), door, MODELS,
                 FleetState.load(door, "site"))
    assert gallery_delta.delta_files(door) == []
    assert _people(door)["dan"][0] == "Daniel" and set(_people(door)) == {"alice", "carol", "dan", "erin"}


def test_a_local_edit_folds_deltas_in_and_a_stale_delta_is_never_replayed(tmp_path: Path) -> None:
    _, door, _ = _door_after_full_then_delta(tmp_path)
    (_, delta), = gallery_delta.delta_files(door)
    kept = delta.read_bytes()
    with Gallery.edit(door, MODEL) as g:  # e.g. `edge-mfr people rename` on the door
        g.rename("alice", "Alice B")
    assert gallery_delta.delta_files(door) == []
    assert "bob" not in _people(door) and _people(door)["alice"][0] == "Alice B"
    delta.write_bytes(kept)  # a delta a crash left behind names the file before the save: ignored
    people = _people(door)
    assert set(people) == {"alice", "carol", "dan", "erin"} and people["alice"][0] == "Alice B"


def test_a_failure_while_writing_the_delta_keeps_the_previous_gallery(tmp_path: Path, monkeypatch) -> None:
    admin = tmp_path / "admin.npz"
    _admin(admin, ["Alice", "Bob"])
    door = tmp_path / "door" / "gallery.npz"
    state = apply_bundle(*_bundle(admin, 1, "full", ["alice", "bob"]), door, MODELS, FleetState("site"))
    state.save(door)
    before = _people(door)
    with Gallery.edit(admin, MODEL) as g:
        g.remove("bob")
    def crash(*args, **kw):  # the disk fails (or the power goes) while the delta is written
        raise OSError(5, "I/O error")

    monkeypatch.setattr(gallery_mod, "_write_atomic", crash)
    with pytest.raises(OSError):
        apply_bundle(*_bundle(admin, 2, "delta", [], ["bob"]), door, MODELS, state)
    monkeypatch.undo()
    assert gallery_delta.delta_files(door) == []
    assert _people(door) == before and FleetState.load(door, "site").version == 1
    # the retained delta arrives again after the restart and applies
    apply_bundle(*_bundle(admin, 2, "delta", [], ["bob"]), door, MODELS, FleetState.load(door, "site"))
    assert set(_people(door)) == {"alice"}


def test_a_corrupt_delta_refuses_the_gallery_instead_of_dropping_the_revoke(tmp_path: Path) -> None:
    _, door, _ = _door_after_full_then_delta(tmp_path)
    (_, delta), = gallery_delta.delta_files(door)
    raw = bytearray(delta.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    delta.write_bytes(bytes(raw))
    with pytest.raises(gallery_mod.GalleryError):
        Gallery.load(door, MODEL)


def _decide(c: IdentityClassifier, centres: dict[str, np.ndarray]) -> dict[str, str | None]:
    ids = sorted(centres)
    return dict(zip(ids, [d.person_id for d in c.decide(np.stack([centres[i] for i in ids]), [False] * len(ids))],
                    strict=True))


def test_forgetting_in_memory_leaves_the_revoked_unmatchable_and_everyone_else_matched(tmp_path: Path) -> None:
    admin = tmp_path / "admin.npz"
    centres = _admin(admin, ["Alice", "Bob", "Carol", "Dan"])
    g = Gallery.load(admin, MODEL)
    x, labels, metas = g.matrix()
    full = IdentityClassifier().fit(x, labels, np.array([m.synthetic for m in metas]))
    assert _decide(full, centres) == {pid: pid for pid in centres}
    revoked = full.without({"bob"})
    assert _decide(revoked, centres) == {"alice": "alice", "bob": None, "carol": "carol", "dan": "dan"}
    assert "bob" not in revoked.ids and _decide(full, centres)["bob"] == "bob"  # the original is untouched
    # the same answers as a classifier refitted on the gallery without him
    with Gallery.edit(admin, MODEL) as ga:
        ga.remove("bob")
    x, labels, metas = Gallery.load(admin, MODEL).matrix()
    refit = IdentityClassifier().fit(x, labels, np.array([m.synthetic for m in metas]))
    assert _decide(refit, centres) == _decide(revoked, centres)
    assert _decide(revoked.without({"alice", "carol", "dan"}), centres) == dict.fromkeys(centres)
