"""Native libraries' chatter (LiteRT, FFmpeg) stays out of normal output; anything else they print is kept."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from edge_mfr.native_output import native_chatter_to_log

REPO = Path(__file__).resolve().parents[1]


def test_chatter_goes_to_the_debug_log_and_other_lines_stay(capfd, caplog):
    with caplog.at_level(logging.DEBUG, logger="edge_mfr.native_output"), native_chatter_to_log("test"):
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
                    b"[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55d26d7f8640] moov atom not found\n"
                    b"a real problem\n")
    assert capfd.readouterr().err == "a real problem\n"
    assert "XNNPACK delegate" in caplog.text and "moov atom" in caplog.text


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "EDGE_MFR_STATE_DIR": str(cwd / "state")}
    return subprocess.run([sys.executable, "-m", "edge_mfr.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def test_recognize_prints_no_library_chatter(tmp_path):
    proc = _cli("recognize", cwd=tmp_path)
    assert proc.returncode == 0 and "1 face" in proc.stdout
    assert proc.stderr == ""  # was "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."


def test_a_fake_video_gives_only_the_clean_error(tmp_path):
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"not a video" * 10)
    proc = _cli("recognize", str(fake), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"edge-mfr: error: {fake}: cannot open video (corrupt or unsupported format)"]
