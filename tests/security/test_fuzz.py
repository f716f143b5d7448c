"""Seeded fuzz loops over everything the device reads from disk or the network (issue 16).

Each loop runs 1,000+ damaged inputs through the real reader and asserts two things: nothing escapes
but the reader's own one-line error (0 tracebacks), and nothing damaged is taken for something else
(0 wrong acceptances). Seeded, so a failure reproduces; a few seconds each.
"""

from __future__ import annotations

import io
import json
import math
import random
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_mfr.config import MAX_COMMAND_WINDOW_S, MAX_UNLOCK_CAP_S, Config, load_config
from edge_mfr.errors import ConfigError, GalleryError, ImageError
from edge_mfr.identity import svm
from edge_mfr.identity.gallery import Gallery, TemplateMeta
from edge_mfr.vision.imageio import MAX_FULL_DECODE_PIXELS, MAX_PIXELS, decode_image, header_size, image_format

CASES = 1000
SHA = "b" * 64


def _mutate(data: bytes, rng: random.Random, region: int | None = None) -> bytes:
    """One of: flip bits, overwrite bytes, truncate, insert or delete a run; within ``region`` bytes if given."""
    buf = bytearray(data)
    end = min(len(buf), region or len(buf))
    op = rng.randrange(5)
    at = rng.randrange(end)
    if op == 0:
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(end)] ^= 1 << rng.randrange(8)
    elif op == 1:
        for i in range(at, min(end, at + rng.randint(1, 8))):
            buf[i] = rng.choice((0x00, 0xFF, 0x7F, 0x80, rng.randrange(256)))
    elif op == 2:
        del buf[max(1, at):]
    elif op == 3:
        buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    else:
        del buf[at:at + rng.randint(1, 16)]
    return bytes(buf)


# ---------------------------------------------------------------------------------------------- gallery


def _gallery_file(tmp_path: Path) -> tuple[Path, Gallery]:
    rng = np.random.default_rng(0)
    g = Gallery.create(SHA, dim=8, keep_crops=True)
    for name, allowed in (("Ada", True), ("Bob", False)):
        p = g.add_person(name, allowed=allowed)
        x = rng.normal(size=(2, 8)).astype(np.float32)
        g.add_templates(p.person_id, x / np.linalg.norm(x, axis=1, keepdims=True),
                        [TemplateMeta("a.jpg", 0.9), TemplateMeta("b.jpg", 0.8)],
                        crops=[rng.integers(0, 256, (160, 160, 3), dtype=np.uint8) for _ in range(2)])
    path = tmp_path / "gallery.npz"
    g.save(path)
    return path, Gallery.load(path, SHA)


def _same(a: Gallery, b: Gallery) -> bool:
    return [(p.person_id, p.name, p.allowed, p.templates, p.embeddings.tobytes()) for p in a.people] == [
        (p.person_id, p.name, p.allowed, p.templates, p.embeddings.tobytes()) for p in b.people]


_WRONG_TYPES = ("false", "true", 0, 1, 1.5, None, [], {}, "", "x" * 70, -1, [[[[]]]], "2024-13-99")


def _kind(value: object) -> str:
    """The JSON type: 1 and 1.5 are both numbers."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    return "number" if isinstance(value, int | float) else type(value).__name__


def _mutate_header(header: dict, rng: random.Random) -> dict:
    """Replace one field anywhere in the header by a value of another JSON type."""
    header = json.loads(json.dumps(header))
    slots: list[tuple[dict | list, str | int]] = []

    def walk(node: dict | list) -> None:
        for key in (node if isinstance(node, dict) else range(len(node))):
            slots.append((node, key))
            if isinstance(node[key], dict | list):
                walk(node[key])

    walk(header)
    node, key = rng.choice(slots)
    old = node[key]
    nullable = key in ("crop", "mask_style")  # null is a valid value there
    new = rng.choice([v for v in _WRONG_TYPES if _kind(v) != _kind(old) and not (nullable and v is None)])
    node[key] = json.loads(json.dumps(new))  # a fresh copy: never share the constants
    return header


def _rewrite_header(path: Path, header: dict) -> bytes:
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.frombuffer(json.dumps(header).encode(), np.uint8))
    members["header.npy"] = buf.getvalue()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return out.getvalue()


def test_fuzz_gallery_files(tmp_path: Path) -> None:
    path, original = _gallery_file(tmp_path)
    good = path.read_bytes()
    with zipfile.ZipFile(path) as zf:
        header = json.loads(np.lib.format.read_array(io.BytesIO(zf.read("header.npy"))).tobytes())
    rng = random.Random(16)
    target = tmp_path / "fuzzed.npz"
    accepted = refused = 0
    for case in range(CASES):
        if case % 2:
            data = _mutate(good, rng)
            typed = False
        else:
            data = _rewrite_header(path, _mutate_header(header, rng))
            typed = True
        target.write_bytes(data)
        try:
            loaded = Gallery.load(target, SHA)
        except GalleryError as exc:
            assert "\n" not in str(exc)
            refused += 1
            continue
        accepted += 1
        assert not typed, f"case {case}: a field of the wrong type was accepted"
        assert _same(loaded, original), f"case {case}: a damaged gallery loaded as different content"
    assert refused > CASES // 2 and accepted + refused == CASES


# ------------------------------------------------------------------------------------------- SVM cache


def test_fuzz_svm_cache(tmp_path: Path) -> None:
    cache = tmp_path / "g.svm.npz"
    rng_np = np.random.default_rng(1)
    w, b = rng_np.normal(size=(3, 8)).astype(np.float32), rng_np.normal(size=3).astype(np.float32)
    svm._write(cache, "k" * 64, w, b)
    good = cache.read_bytes()
    rng = random.Random(6)
    for case in range(CASES):
        cache.write_bytes(_mutate(good, rng))
        try:
            hit = svm._read(cache, "k" * 64)
        except svm.CacheCorrupt as exc:
            assert "\n" not in str(exc)
            continue
        if hit is not None:
            assert np.array_equal(hit[0], w) and np.array_equal(hit[1], b), f"case {case}: damaged weights used"


# ---------------------------------------------------------------------------------------------- config


_VALUES = (0, -1, 1, 0.5, 1e9, 1e308, "inf", "nan", "-inf", '"text"', "true", "[]", "[1, 2]", "{}", '""',
           '"127.0.0.1"', "3600", "16", '"/dev/null"', "999999999999999999999")
_KEYS = {
    "": ["watchdog_seconds"],
    "camera": ["fps", "width", "retry_min_seconds", "retry_max_seconds", "source"],
    "policy": ["door_cooldown_seconds", "person_cooldown_seconds", "lockout_seconds", "lockout_after_unknowns"],
    "journal": ["max_rows", "keep_days"],
    "mqtt": ["enabled", "port", "command_window_seconds", "host", "tls", "max_command_bytes", "username"],
    "kiosk": ["enabled", "bind", "port", "max_upload_mb"],
    "[doors]": ["unlock_seconds", "max_unlock_seconds", "held_open_seconds", "relay_pin", "active_high"],
}


def _random_toml(rng: random.Random) -> str:
    lines: list[str] = []
    for table in rng.sample(sorted(_KEYS), rng.randint(1, 4)):
        keys = rng.sample(_KEYS[table], rng.randint(1, len(_KEYS[table])))
        body = [f"{k} = {rng.choice(_VALUES)}" for k in keys]
        if table == "":
            lines = body + lines
        else:
            lines += [f"[{table}]" if table != "[doors]" else "[[doors]]", *body]
    text = "\n".join(lines) + "\n"
    if rng.random() < 0.2:
        text = _mutate(text.encode(), rng).decode("utf-8", "replace")
    return text


def _sane(cfg: Config) -> None:
    """What an accepted config must never hold."""
    numbers = [cfg.watchdog_seconds, cfg.camera.fps, cfg.policy.lockout_seconds, cfg.journal.keep_days,
               cfg.mqtt.command_window_seconds]
    for door in cfg.doors:
        numbers += [door.unlock_seconds, door.max_unlock_seconds, door.held_open_seconds]
        assert door.max_unlock_seconds <= MAX_UNLOCK_CAP_S and door.unlock_seconds <= door.max_unlock_seconds
        assert not cfg.watchdog_seconds or cfg.watchdog_seconds < door.max_unlock_seconds
    assert all(math.isfinite(n) for n in numbers)
    assert cfg.mqtt.command_window_seconds <= MAX_COMMAND_WINDOW_S


def test_fuzz_config_toml(tmp_path: Path) -> None:
    from edge_mfr.config_safety import safety_problems

    rng = random.Random(9)
    path = tmp_path / "config.toml"
    accepted = 0
    for _ in range(CASES):
        path.write_text(_random_toml(rng), encoding="utf-8")
        try:
            cfg = load_config(path, environ={})
        except ConfigError as exc:
            assert str(exc).strip()
            continue
        accepted += 1
        _sane(cfg)
        assert all(isinstance(line, str) and "\n" not in line for line in safety_problems(cfg, path))
    assert 0 < accepted < CASES


# ------------------------------------------------------------------------------------------ image headers


def _encoded(suffix: str, params: tuple[int, ...] = ()) -> bytes:
    image = np.random.default_rng(2).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(suffix, image, list(params))
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize(("suffix", "params"), [(".jpg", ()), (".png", ()), (".bmp", ()),
                                                (".webp", (cv2.IMWRITE_WEBP_QUALITY, 80)),
                                                (".webp", (cv2.IMWRITE_WEBP_QUALITY, 101))])
def test_fuzz_image_headers(suffix: str, params: tuple[int, ...]) -> None:
    good = _encoded(suffix, params)
    rng = random.Random(2)
    for case in range(CASES):
        data = _mutate(good, rng, region=256)  # the headers (a JPEG's SOF is ~160 bytes in) and the first data
        fmt = image_format(data)
        size = header_size(data, fmt) if fmt else None
        try:
            image = decode_image(data, "fuzzed")
        except ImageError as exc:
            assert "\n" not in str(exc)
            continue
        limit = MAX_PIXELS if fmt == "JPEG" else MAX_FULL_DECODE_PIXELS
        assert fmt is not None and size is not None, f"case {case}: decoded without a checked header"
        assert size[0] * size[1] <= limit, f"case {case}: {size} decoded beyond the limit"
        assert image.ndim == 3 and image.dtype == np.uint8 and image.shape[0] * image.shape[1] <= limit
