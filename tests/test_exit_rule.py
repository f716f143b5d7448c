"""One exit-status rule and one error prefix (cli.EXIT_RULES), checked for every bad-input case the README lists."""

from __future__ import annotations

import re
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_mfr.cli import ERROR_PREFIX, EXIT_RULES, build_parser, main

REPO = Path(__file__).resolve().parents[1]


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def _file(name: str, content: bytes) -> Callable[[Path, pytest.MonkeyPatch], list[str]]:
    def make(tmp: Path, _mp: pytest.MonkeyPatch) -> list[str]:
        (tmp / name).write_bytes(content)
        return ["recognize", str(tmp / name)]
    return make


def _one_pixel(tmp: Path, _mp) -> list[str]:
    cv2.imwrite(str(tmp / "one.png"), np.zeros((1, 1, 3), np.uint8))
    return ["recognize", str(tmp / "one.png")]


def _damaged_model(tmp: Path, mp: pytest.MonkeyPatch) -> list[str]:
    shutil.copytree(REPO / "models", tmp / "models", ignore=shutil.ignore_patterns("*.md"))
    target = tmp / "models" / "face_detection_short_range.tflite"
    data = bytearray(target.read_bytes())
    data[-100] ^= 0x55
    target.write_bytes(bytes(data))
    mp.setenv("EDGE_MFR_MODELS", str(tmp / "models"))
    return ["recognize"]


def _bad_name(tmp: Path, _mp) -> list[str]:
    cv2.imwrite(str(tmp / "p.png"), np.zeros((64, 64, 3), np.uint8))
    return ["enroll", "../../etc/x", str(tmp / "p.png"), "--gallery", str(tmp / "g.npz")]


def _truncated_gallery(tmp: Path, _mp) -> list[str]:
    np.savez(tmp / "full.npz", embeddings=np.zeros((40, 512), np.float32), names=np.array(["a"] * 40))
    data = (tmp / "full.npz").read_bytes()
    (tmp / "gallery.npz").write_bytes(data[: len(data) // 2])
    return ["people", "list", "--gallery", str(tmp / "gallery.npz")]


# The README's list, item by item (split at ';'), and the cases that stand for each item.
CASES: dict[str, list[Callable[[Path, pytest.MonkeyPatch], list[str]]]] = {
    "non-images": [_file("notes.jpg", b"just some text"), _file("README.md", (REPO / "README.md").read_bytes())],
    "corrupt, 1x1 or 100-megapixel images": [_file("corrupt.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF" + b"\0" * 40),
                                             _one_pixel, _file("huge.png", _png_header(10000, 10000))],
    "damaged model files": [_damaged_model],
    "bad names": [_bad_name],
    "truncated galleries": [_truncated_gallery],
}


def readme_bad_input_items() -> list[str]:
    text = " ".join((REPO / "README.md").read_text().split())
    inside = re.search(r"Bad input \(([^)]*)\) gives one line", text).group(1)
    return [item.strip() for item in inside.split(";")]


def test_every_bad_input_the_readme_lists_has_a_case_here():
    assert readme_bad_input_items() == list(CASES)


@pytest.mark.parametrize("make", [m for ms in CASES.values() for m in ms],
                         ids=[f"{k}-{i}" for k, ms in CASES.items() for i in range(len(ms))])
def test_bad_input_exits_2_with_one_prefixed_line(make, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EDGE_MFR_STATE_DIR", str(tmp_path / "state"))
    argv = make(tmp_path, monkeypatch)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERROR_PREFIX), err


def test_usage_errors_follow_the_same_rule(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["recognize", "--no-such-option"])
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert errors == [f"{ERROR_PREFIX}unrecognized arguments: --no-such-option"]


def test_help_states_the_rule():
    text = build_parser().format_help()
    assert EXIT_RULES.strip().splitlines()[0] in text
    for code in ("0", "1", "2", "130"):
        assert re.search(rf"^\s+{code}\s+\S", text, re.MULTILINE), code
