"""Gallery file: round trips, atomic 0600 writes, corruption and version errors, names, locking."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import re
import stat
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_mfr.errors import EnrollmentError, GalleryError
from edge_mfr.identity import gallery as gallery_mod
from edge_mfr.identity.gallery import (
    FORMAT_VERSION,
    Gallery,
    GalleryLockedError,
    GalleryModelMismatch,
    GalleryNotFound,
    GalleryVersionError,
    PersonNotFound,
    TemplateMeta,
    source_label,
    validate_name,
)

SHA_A = "a" * 64
SHA_B = "0123456789abcdef" * 4
ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


def unit(n: int, dim: int = 512, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def metas(n: int, synthetic_every: int = 3) -> list[TemplateMeta]:
    out = []
    for i in range(n):
        if i % synthetic_every == synthetic_every - 1:
            out.append(
                TemplateMeta(
                    f"img{i - 1}.jpg", 0.5 + i / 100, synthetic=True, mask_style="surgical", masked=True
                )
            )
        else:
            out.append(TemplateMeta(f"video.mp4#frame={i * 10}", 0.9 - i / 100))
    return out


def crops(n: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(160, 160, 3), dtype=np.uint8) for _ in range(n)]


def sample_gallery(keep_crops: bool = False) -> Gallery:
    g = Gallery.create(SHA_A, keep_crops=keep_crops)
    alice = g.add_person("Alice Liddell")
    g.add_templates(alice.person_id, unit(6, seed=1), metas(6), crops=crops(6))
    bob = g.add_person("Bøb  Ñ", allowed=False)
    g.add_templates(bob.person_id, unit(4, seed=2), metas(4), crops=crops(4, seed=2))
    g.add_person("No Templates Yet")
    return g


def rewrite_header(path: Path, change) -> None:
    """Rewrite the JSON header of a gallery file in place (to fake other versions or damage)."""
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    header = json.loads(np.lib.format.read_array(io.BytesIO(members["header.npy"])).tobytes())
    change(header)
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.frombuffer(json.dumps(header).encode(), np.uint8))
    members["header.npy"] = buf.getvalue()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


# -- round trip ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("keep_crops", [False, True])
def test_round_trip_is_bit_exact(tmp_path: Path, keep_crops: bool) -> None:
    g = sample_gallery(keep_crops)
    path = tmp_path / "gallery.npz"
    g.save(path)
    h = Gallery.load(path, SHA_A)
    assert (h.model_sha256, h.dim, h.keep_crops, h.created_at, h.updated_at) == (
        g.model_sha256,
        g.dim,
        g.keep_crops,
        g.created_at,
        g.updated_at,
    )
    assert h.summary() == g.summary()
    assert len(h) == 3 and h.num_templates == 10
    for a, b in zip(g.people, h.people, strict=True):
        assert (a.person_id, a.name, a.created_at, a.updated_at, a.allowed) == (
            b.person_id,
            b.name,
            b.created_at,
            b.updated_at,
            b.allowed,
        )
        assert a.templates == b.templates
        assert b.embeddings.dtype == np.float32
        assert a.embeddings.tobytes() == b.embeddings.tobytes()
        assert len(b.crops) == len(b.templates)
        for ca, cb in zip(a.crops, b.crops, strict=True):
            assert (ca is None) == (cb is None)
            if ca is not None:
                assert np.array_equal(ca, cb)
    x, labels, meta = h.matrix()
    assert x.shape == (10, 512) and list(labels) == ["alice-liddell"] * 6 + ["bob-n"] * 4
    assert meta[2].synthetic and meta[2].mask_style == "surgical" and meta[2].masked
    assert np.array_equal(x[:6], g.people[0].embeddings)


def test_crops_kept_only_for_real_templates(tmp_path: Path) -> None:
    g = sample_gallery(keep_crops=True)
    alice = g.get("alice liddell")
    assert [c is not None for c in alice.crops] == [not t.synthetic for t in alice.templates]
    g.save(tmp_path / "g.npz")
    with np.load(tmp_path / "g.npz", allow_pickle=False) as z:
        assert z["crops"].shape == (sum(p.num_real for p in g.people), 160, 160, 3)


def test_keep_crops_off_by_default_stores_no_images(tmp_path: Path) -> None:
    g = Gallery.create(SHA_A)
    assert not g.keep_crops
    p = g.add_person("Carol")
    g.add_templates(p.person_id, unit(3), metas(3), crops=crops(3))
    assert all(c is None for c in g.get("carol").crops)
    path = tmp_path / "gallery.npz"
    g.save(path)
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["embeddings.npy", "header.npy"]
    with np.load(path, allow_pickle=False) as z:
        assert all(z[k].ndim <= 2 for k in z.files)
        assert not any(z[k].dtype == np.uint8 and z[k].ndim >= 3 for k in z.files)
    assert path.stat().st_size < 3 * 512 * 4 + 8192  # three vectors and a small header, no 76 KB crops


def test_loaded_without_crops_refuses_to_save(tmp_path: Path) -> None:
    path = tmp_path / "g.npz"
    sample_gallery(keep_crops=True).save(path)
    light = Gallery.load(path, SHA_A, with_crops=False)
    assert all(c is None for p in light.people for c in p.crops)
    before = path.read_bytes()
    with pytest.raises(GalleryError, match="without its crops"):
        light.save(path)
    assert path.read_bytes() == before


# -- file mode and atomic writes -----------------------------------------------------------------------


def test_file_mode_0600_even_with_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "fresh.npz"
        sample_gallery().save(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        path.chmod(0o644)  # somebody widened it by hand: the next save narrows it again
        sample_gallery().save(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        with Gallery.edit(tmp_path / "edited.npz", SHA_A) as g:
            g.add_person("Dave")
        assert stat.S_IMODE((tmp_path / "edited.npz").stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "edited.npz.lock").stat().st_mode) == 0o600
    finally:
        os.umask(old)


@pytest.mark.parametrize("fail_at", ["replace", "fsync"])
def test_crash_during_save_keeps_old_file_and_leaves_no_temp(tmp_path: Path, monkeypatch, fail_at) -> None:
    path = tmp_path / "gallery.npz"
    g = sample_gallery()
    g.save(path)
    before = path.read_bytes()
    g.add_person("Eve")

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gallery_mod.os, fail_at, boom)
    with pytest.raises(GalleryError, match="No space left"):
        g.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["gallery.npz"]
    assert len(Gallery.load(path)) == 3


def test_save_interrupted_by_non_os_error_cleans_up(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "gallery.npz"
    sample_gallery().save(path)
    before = path.read_bytes()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(gallery_mod.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sample_gallery().save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["gallery.npz"]


# -- damaged and foreign files -------------------------------------------------------------------------


def _assert_rejected(path: Path, match: str) -> None:
    before = path.read_bytes()
    with pytest.raises(GalleryError, match=match) as info:
        Gallery.load(path, SHA_A)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)
    assert path.read_bytes() == before


@pytest.mark.parametrize("keep_fraction", [0.0001, 0.1, 0.5, 0.9, 0.999])
def test_truncated_file(tmp_path: Path, keep_fraction: float) -> None:
    path = tmp_path / "gallery.npz"
    sample_gallery(keep_crops=True).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep_fraction))])
    _assert_rejected(path, "truncated|corrupt|not an edge-mfr")


def test_flipped_bit_in_embeddings_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "gallery.npz"
    sample_gallery().save(path)
    data = bytearray(path.read_bytes())
    data[data.index(b"embeddings.npy") + 2000] ^= 0x01  # inside the raw float32 block
    path.write_bytes(bytes(data))
    _assert_rejected(path, "corrupt")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "gallery.npz"
    path.write_bytes(b"")
    _assert_rejected(path, "empty")


@pytest.mark.parametrize(
    "content",
    [
        b"hello, I am not a gallery\n" * 10,
        bytes(np.random.default_rng(3).integers(0, 256, 5000, dtype=np.uint8)),
        b"PK\x03\x04" + b"\x00" * 200,
        b"\x93NUMPY\x01\x00" + b"x" * 100,
    ],
)
def test_garbage_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "gallery.npz"
    path.write_bytes(content)
    _assert_rejected(path, "not an edge-mfr gallery|corrupt")


def test_other_npz_is_not_a_gallery(tmp_path: Path) -> None:
    path = tmp_path / "other.npz"
    np.savez(path, weights=np.zeros(3))
    _assert_rejected(path, "not an edge-mfr gallery")


def test_pickled_member_is_refused_not_loaded(tmp_path: Path) -> None:
    path = tmp_path / "evil.npz"
    np.savez(path, header=np.array([{"format": "edge-mfr-gallery"}], dtype=object))
    _assert_rejected(path, "corrupt|malformed")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(GalleryNotFound, match="enroll"):
        Gallery.load(tmp_path / "nope.npz")
    with pytest.raises(GalleryNotFound):
        with Gallery.edit(tmp_path / "nope.npz", None):
            pass


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda h: h.update(format_version=FORMAT_VERSION + 1), "newer edge-mfr"),
        (lambda h: h.update(format_version="1"), "unknown gallery format version"),
        (lambda h: h.update(format="something-else"), "not an edge-mfr gallery"),
        (lambda h: h.update(num_templates=99), "templates"),
        (lambda h: h.update(dim=128), "embeddings"),
        (lambda h: h["people"][0].update(name="../etc"), "must not contain"),
        (lambda h: h["people"][1].update(person_id=h["people"][0]["person_id"]), "duplicate person id"),
        (lambda h: h["people"][0]["templates"][0].update(source="/home/alice/a.jpg"), "absolute path"),
        (lambda h: h.pop("model_sha256"), "corrupt"),
        (lambda h: h["people"][0]["templates"][0].update(crop=42), "bad crop index"),
    ],
)
def test_damaged_or_newer_header(tmp_path: Path, change, match: str) -> None:
    path = tmp_path / "gallery.npz"
    sample_gallery(keep_crops=True).save(path)
    rewrite_header(path, change)
    _assert_rejected(path, match)


def test_newer_version_raises_version_error(tmp_path: Path) -> None:
    path = tmp_path / "gallery.npz"
    sample_gallery().save(path)
    rewrite_header(path, lambda h: h.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(GalleryVersionError, match=f"version {FORMAT_VERSION + 1}.*upgrade"):
        Gallery.load(path)


# -- embedding model -----------------------------------------------------------------------------------


@pytest.mark.parametrize("keep_crops, advice", [(False, "re-enroll"), (True, "people reembed")])
def test_other_model_is_refused(tmp_path: Path, keep_crops: bool, advice: str) -> None:
    path = tmp_path / "gallery.npz"
    sample_gallery(keep_crops).save(path)
    with pytest.raises(GalleryModelMismatch) as info:
        Gallery.load(path, SHA_B)
    message = str(info.value)
    assert SHA_A[:12] in message and SHA_B[:12] in message and advice in message
    with pytest.raises(GalleryModelMismatch):
        with Gallery.edit(path, SHA_B):
            pass


def test_unchecked_load_refuses_new_embeddings_until_reembedded(tmp_path: Path) -> None:
    path = tmp_path / "gallery.npz"
    sample_gallery(keep_crops=True).save(path)
    g = Gallery.load(path)  # no model check: metadata only
    alice = g.get("Alice Liddell")
    with pytest.raises(GalleryError, match="without checking the embedding model"):
        g.add_templates(alice.person_id, unit(1), metas(1))
    new = {p.person_id: unit(len(p), dim=128, seed=7) for p in g.people}
    with pytest.raises(GalleryError, match="missing"):
        g.replace_embeddings(SHA_B, {k: v for k, v in list(new.items())[:1]}, dim=128)
    with pytest.raises(EnrollmentError):
        g.replace_embeddings(SHA_B, new)  # 128-d vectors for a 512-d gallery
    assert g.model_sha256 == SHA_A and g.dim == 512  # all or nothing
    g.replace_embeddings(SHA_B, new, dim=128)
    g.save(path)
    h = Gallery.load(path, SHA_B)
    assert h.dim == 128 and h.matrix()[0].shape == (10, 128)
    assert np.array_equal(h.get(alice.person_id).embeddings, new[alice.person_id])
    h.add_templates(alice.person_id, unit(1, dim=128), metas(1))


# -- names and ids -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "",
        "   ",
        "\t\n",
        "../x",
        "a/b",
        "a\\b",
        ".",
        "..",
        "-rf",
        " -x",
        "bell\x07",
        "nul\x00x",
        "new\nline",
        "esc\x1b[31m",
        "bidi\u202eevil",
        "x" * 65,
        42,
        None,
    ],
)
def test_invalid_names(name) -> None:
    g = Gallery.create(SHA_A)
    with pytest.raises(EnrollmentError):
        g.add_person(name)
    assert len(g) == 0


@pytest.mark.parametrize(
    "name", ["Alice", "  Anne-Marie O'Neil  ", "李雷", "José Núñez", "x" * 64, "زهرا\u200cسادات"]
)
def test_valid_names(name: str) -> None:
    g = Gallery.create(SHA_A)
    p = g.add_person(name)
    assert p.name == name.strip()
    assert ID_RE.match(p.person_id)
    assert g.get(name.strip().upper()).person_id == p.person_id


def test_duplicate_names_need_explicit_flag() -> None:
    g = Gallery.create(SHA_A)
    first = g.add_person("Alice")
    with pytest.raises(EnrollmentError, match="already enrolled"):
        g.add_person("  ALICE ")
    second = g.add_person("alice", allow_duplicate_name=True)
    assert second.person_id != first.person_id and len(g) == 2
    with pytest.raises(GalleryError, match="use an id"):
        g.get("Alice")
    assert g.get(second.person_id) is second
    bob = g.add_person("Bob")
    with pytest.raises(EnrollmentError, match="already enrolled"):
        g.rename(bob.person_id, "ALICE")
    assert g.rename(bob.person_id, "bob").name == "bob"  # changing one's own case is fine


def test_get_unknown_person() -> None:
    with pytest.raises(PersonNotFound, match="nobody"):
        Gallery.create(SHA_A).get("nobody")


def test_ids_are_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "gallery.npz"
    with Gallery.edit(path, SHA_A) as g:
        first = g.add_person("Alice").person_id
        g.remove(first)
    with Gallery.edit(path, SHA_A) as g:
        second = g.add_person("Alice").person_id
    assert first == "alice" and second != first and ID_RE.match(second)


def test_remove_rename_allowed_persist(tmp_path: Path) -> None:
    path = tmp_path / "gallery.npz"
    sample_gallery().save(path)
    with Gallery.edit(path, SHA_A) as g:
        bob = g.get("bøb  ñ").person_id
        g.rename(bob, "Robert")
        g.set_allowed(bob, True)
        g.remove(g.get("Alice Liddell").person_id)
    h = Gallery.load(path, SHA_A)
    assert [p.name for p in h.people] == ["Robert", "No Templates Yet"]
    assert h.get("robert").person_id == bob and h.get(bob).allowed
    assert h.matrix()[0].shape == (4, 512)
    with pytest.raises(PersonNotFound):
        h.get("Alice Liddell")


def test_template_sources_never_absolute() -> None:
    g = Gallery.create(SHA_A)
    p = g.add_person("Alice")
    for bad in ["/home/alice/a.jpg", "C:\\photos\\a.jpg", "~/a.jpg", "", "a\nb"]:
        with pytest.raises(EnrollmentError):
            g.add_templates(p.person_id, unit(1), [TemplateMeta(bad, 0.9)])
    assert source_label("/home/alice/photos/a.jpg") == "a.jpg"
    assert source_label(Path("/videos/door.mp4"), frame=120) == "door.mp4#frame=120"
    g.add_templates(p.person_id, unit(1), [TemplateMeta(source_label("/x/y/z.png"), 0.9)])
    assert g.get("alice").templates[0].source == "z.png" and g.get("alice").templates[0].enrolled_at


# -- embeddings ----------------------------------------------------------------------------------------


def _with_nan() -> np.ndarray:
    x = unit(3)
    x[1, 5] = np.nan
    return x


def _with_inf() -> np.ndarray:
    x = unit(3)
    x[2, 0] = np.inf
    return x


@pytest.mark.parametrize(
    "embeddings, match",
    [
        (_with_nan(), "NaN or inf"),
        (_with_inf(), "NaN or inf"),
        (unit(3, dim=128), r"\(n, 512\)"),
        (unit(3)[0], r"\(n, 512\)"),
        (unit(3) * 2.0, "not L2-normalised"),
        (np.zeros((3, 512), np.float32), "not L2-normalised"),
        (np.ones((3, 512), np.int64), "floating point"),
    ],
)
def test_bad_embeddings_rejected(embeddings: np.ndarray, match: str) -> None:
    g = Gallery.create(SHA_A)
    p = g.add_person("Alice")
    with pytest.raises(EnrollmentError, match=match):
        g.add_templates(p.person_id, embeddings, metas(3))
    assert len(g.get("alice")) == 0 and g.matrix()[0].shape == (0, 512)


def test_metadata_and_crop_mismatches_rejected() -> None:
    g = Gallery.create(SHA_A, keep_crops=True)
    p = g.add_person("Alice")
    with pytest.raises(EnrollmentError, match="metadata"):
        g.add_templates(p.person_id, unit(3), metas(2))
    with pytest.raises(EnrollmentError, match="crops"):
        g.add_templates(p.person_id, unit(3), metas(3), crops=crops(2))
    with pytest.raises(EnrollmentError, match="crop 0"):
        g.add_templates(p.person_id, unit(1), metas(1), crops=[np.zeros((160, 160, 3), np.float32)])
    with pytest.raises(EnrollmentError, match="mask_style"):
        g.add_templates(p.person_id, unit(1), [TemplateMeta("a.jpg", 0.9, synthetic=True, masked=True)])
    with pytest.raises(EnrollmentError, match="quality"):
        g.add_templates(p.person_id, unit(1), [TemplateMeta("a.jpg", float("nan"))])
    assert len(g.get("alice")) == 0


def test_stored_embeddings_returned_read_only() -> None:
    g = sample_gallery()
    with pytest.raises(ValueError):
        g.people[0].embeddings[0, 0] = 1.0


# -- edit() and locking --------------------------------------------------------------------------------


def test_edit_leaves_file_untouched_on_exception(tmp_path: Path) -> None:
    path = tmp_path / "gallery.npz"
    sample_gallery().save(path)
    before, mtime = path.read_bytes(), path.stat().st_mtime_ns
    with pytest.raises(RuntimeError, match="camera unplugged"):
        with Gallery.edit(path, SHA_A) as g:
            g.remove(g.people[0].person_id)
            g.add_person("Mallory")
            raise RuntimeError("camera unplugged")
    assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime
    assert sorted(os.listdir(tmp_path)) == ["gallery.npz", "gallery.npz.lock"]


def test_edit_without_changes_does_not_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "gallery.npz"
    sample_gallery().save(path)
    mtime = path.stat().st_mtime_ns
    with Gallery.edit(path, SHA_A) as g:
        assert len(g) == 3
    assert path.stat().st_mtime_ns == mtime


def test_edit_waits_for_the_lock_then_gives_up(tmp_path: Path) -> None:
    path = tmp_path / "gallery.npz"
    with Gallery.edit(path, SHA_A) as g:
        g.add_person("Alice")
        # flock locks belong to the open file, so a second edit in this same process contends like another one
        with pytest.raises(GalleryLockedError, match="another edge-mfr process"):
            with Gallery.edit(path, SHA_A, timeout=0.1):
                pass
    with Gallery.edit(path, SHA_A, timeout=0.1) as g:
        assert [p.name for p in g.people] == ["Alice"]


def _add_people(path: str, tag: str, count: int) -> None:
    for i in range(count):
        with Gallery.edit(path, SHA_A, timeout=30) as g:
            time.sleep(0.005)  # widen the read-change-write window a lost update would need
            p = g.add_person(f"{tag} {i}")
            g.add_templates(p.person_id, unit(2, seed=i), metas(2))


def test_concurrent_edits_from_two_processes_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "gallery.npz")
    # spawn, not fork: earlier tests in this process may have started model threads, and a forked child of a
    # threaded process can crash (it once exited with SIGSEGV here)
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_add_people, args=(path, tag, 15)) for tag in ("cli", "daemon")]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    g = Gallery.load(path, SHA_A)
    assert sorted(p.name for p in g.people) == sorted(
        f"{t} {i}" for t in ("cli", "daemon") for i in range(15)
    )
    assert g.num_templates == 60 and g.revision == 30
    assert sorted(os.listdir(tmp_path)) == ["gallery.npz", "gallery.npz.lock"]


# -- properties ----------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=80))
def test_names_validate_or_raise_enrollment_error(name: str) -> None:
    try:
        clean = validate_name(name)
    except EnrollmentError:
        return
    assert clean and clean == clean.strip() and len(clean) <= 64
    assert "/" not in clean and "\\" not in clean and not clean.startswith("-")
    assert all(ord(c) >= 32 and c != "\x7f" for c in clean)
    assert ID_RE.match(Gallery.create(SHA_A).add_person(clean).person_id)


@settings(max_examples=25, deadline=None)
@given(
    names=st.lists(
        st.text(
            alphabet=st.characters(codec="utf-8", categories=["L", "N", "Zs", "P"]), min_size=1, max_size=20
        ),
        min_size=1,
        max_size=6,
    ),
    counts=st.lists(st.integers(0, 5), min_size=6, max_size=6),
    allowed=st.lists(st.booleans(), min_size=6, max_size=6),
)
def test_round_trip_property(names: list[str], counts: list[int], allowed: list[bool]) -> None:
    g = Gallery.create(SHA_A)
    for i, name in enumerate(names):
        try:
            p = g.add_person(name, allowed=allowed[i], allow_duplicate_name=True)
        except EnrollmentError:
            continue
        if counts[i]:
            g.add_templates(p.person_id, unit(counts[i], seed=i), metas(counts[i]))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "g.npz"
        g.save(path)
        h = Gallery.load(path, SHA_A)
    assert h.summary() == g.summary()
    ids = [p.person_id for p in h.people]
    assert len(set(ids)) == len(ids) and all(ID_RE.match(i) for i in ids)
    xg, lg, mg = g.matrix()
    xh, lh, mh = h.matrix()
    assert xg.tobytes() == xh.tobytes() and list(lg) == list(lh) and mg == mh


# -- strict field types and hostile headers (issue 16 item 10) ----------------------------------------------


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda h: h["people"][1].update(allowed="false"), "allowed must be true or false"),
        (lambda h: h["people"][1].update(allowed=0), "allowed must be true or false"),
        (lambda h: h.update(keep_crops="no"), "keep_crops must be true or false"),
        (lambda h: h["people"][0]["templates"][0].update(quality="0.9"), "quality must be a number"),
        (lambda h: h["people"][0]["templates"][0].update(masked=1), "masked must be true or false"),
        (lambda h: h.update(revision="7"), "revision must be a whole number"),
        (lambda h: h.update(num_crops=True), "num_crops must be a whole number"),
        (lambda h: h.update(created_at=["x"]), "created_at must be text"),
        (lambda h: h["people"][0].update(updated_at="yesterday"), "not an ISO 8601 time"),
        (lambda h: h.update(people={"a": 1}), "people must be a list"),
        (lambda h: h["people"].append("bob"), "must be an object"),
        (lambda h: h.update(retired_ids=[3]), "retired_ids must be person ids"),
        (lambda h: h["people"][0]["templates"][0].update(crop=True), "bad crop index"),
    ],
)
def test_every_header_field_has_its_exact_type(tmp_path: Path, change, match: str) -> None:
    path = tmp_path / "gallery.npz"
    sample_gallery(keep_crops=True).save(path)
    rewrite_header(path, change)
    _assert_rejected(path, match)


def _replace_member(path: Path, name: str, data: bytes) -> None:
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members[name] = data
    with zipfile.ZipFile(path, "w") as zf:
        for n, d in members.items():
            zf.writestr(n, d)


def test_deeply_nested_header_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "gallery.npz"
    sample_gallery().save(path)
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.frombuffer(b"[" * 200_000 + b"]" * 200_000, np.uint8))
    _replace_member(path, "header.npy", buf.getvalue())
    _assert_rejected(path, "nested too deeply")


@pytest.mark.parametrize("flip", [b"'descr': '", b"(", b"{"])
def test_damaged_npy_array_header_is_one_clear_error(tmp_path: Path, flip: bytes) -> None:
    """A bit flip in an .npy member's own header (a Python literal) made numpy raise TokenError/SyntaxError."""
    path = tmp_path / "gallery.npz"
    sample_gallery().save(path)
    with zipfile.ZipFile(path) as zf:
        member = bytearray(zf.read("embeddings.npy"))
    at = member.index(flip)
    member[at] = ord("'") if flip == b"(" else ord("(")
    _replace_member(path, "embeddings.npy", bytes(member))
    _assert_rejected(path, "corrupt")


# -- leftovers of a killed writer (issue 16 item 11) -----------------------------------------------------------


def test_stale_temp_files_are_removed_unless_a_writer_holds_the_lock(tmp_path: Path) -> None:
    from edge_mfr.identity.gallery import remove_stale_temp_files

    path = tmp_path / "gallery.npz"
    sample_gallery(keep_crops=True).save(path)
    leftover = tmp_path / ".gallery.npz.k1ll3d.tmp"
    leftover.write_bytes(path.read_bytes())  # what a writer killed before os.replace leaves: crops included
    other = tmp_path / ".other.npz.x.tmp"
    other.write_bytes(b"not ours")
    with gallery_mod._writer_lock(path, 1.0):  # a writer at work: its temp file may be live
        assert remove_stale_temp_files(path) == [] and leftover.exists()
    assert remove_stale_temp_files(path) == [leftover]
    assert not leftover.exists() and other.exists() and Gallery.load(path, SHA_A)


def test_embedding_checks_in_blocks_still_name_the_bad_row(monkeypatch) -> None:
    """The loader validates templates a block of rows at a time (bounded memory); the first bad row
    anywhere, in any block, is still found and named."""
    monkeypatch.setattr(gallery_mod, "_CHECK_BLOCK_ROWS", 4)
    x = np.zeros((11, 8), np.float32)
    x[:, 0] = 1.0
    gallery_mod.check_embeddings(x, 8)
    y = x.copy()
    y[9, 0] = 2.0
    with pytest.raises(EnrollmentError, match="row 9 is not L2-normalised"):
        gallery_mod.check_embeddings(y, 8)
    y = x.copy()
    y[6, 3] = np.nan
    with pytest.raises(EnrollmentError, match="row 6 contains NaN"):
        gallery_mod.check_embeddings(y, 8)
