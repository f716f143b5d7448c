"""deploy/install.sh: syntax, shellcheck, what --dry-run would do (and that it does nothing), 32-bit refusal.

The script is never run for real here. ``EDGE_MFR_INSTALL_ARCH`` stands in for ``uname -m`` (documented
in the script's header); every system-changing command is shadowed by a stub on PATH that records any
call, so a dry run that executed something would be caught even before the file-system snapshot is.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "deploy" / "install.sh"
TARGETS = [Path("/opt/edge-mfr"), Path("/etc/edge-mfr"), Path("/var/lib/edge-mfr"),
           Path("/etc/systemd/system/edge-mfr.service")]
STUBBED = ("apt-get", "install", "useradd", "usermod", "groupadd", "systemctl", "pip", "chown", "chmod")


def snapshot() -> dict[str, object]:
    state: dict[str, object] = {str(p): (p.exists(), p.stat().st_mtime_ns if p.exists() else None)
                                for p in TARGETS}
    state["user"] = subprocess.run(["getent", "passwd", "edge-mfr"], capture_output=True).returncode
    return state


@pytest.fixture()
def stubs(tmp_path):
    """A PATH where every system-changing command only appends its name to calls.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for name in STUBBED:
        stub = bin_dir / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\n')
        stub.chmod(0o755)
    return bin_dir, log


def run_script(*args: str, arch: str = "aarch64", path_prefix: Path | None = None):
    env = {**os.environ, "EDGE_MFR_INSTALL_ARCH": arch}
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}:{env['PATH']}"
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=60)


def test_syntax():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    assert os.access(SCRIPT, os.X_OK)


def test_shellcheck_clean():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt install shellcheck)")
    result = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_dry_run_lists_every_step_and_changes_nothing(stubs):
    bin_dir, log = stubs
    before = snapshot()
    result = run_script("--dry-run", path_prefix=bin_dir)
    assert result.returncode == 0, result.stderr
    assert snapshot() == before
    assert not log.exists(), f"dry run executed: {log.read_text()}"
    out = result.stdout
    commands = [line[2:] for line in out.splitlines() if line.startswith("+ ")]
    joined = "\n".join(commands)

    def ran(*words: str) -> bool:
        return any(all(w in c for w in words) for c in commands)

    assert ran("apt-get install", "python3-venv", "python3-picamera2", "python3-libcamera")
    if not Path("/opt/edge-mfr/venv/bin/python").exists():
        assert ran("/usr/bin/python3 -m venv --system-site-packages /opt/edge-mfr/venv")
    assert ran("/opt/edge-mfr/venv/bin/python -m pip install", str(REPO), "pi")
    assert ran("install -m 0644", "facenet_int8.tflite", "/opt/edge-mfr/venv/share/edge-mfr/models")
    if before["user"] != 0:
        assert ran("useradd --system", "edge-mfr")
    assert ran("usermod --append --groups gpio", "video", "edge-mfr")
    if not Path("/etc/edge-mfr/config.toml").exists():
        assert ran("install -m 0640 -o root -g edge-mfr", "deploy/config.example.toml", "/etc/edge-mfr/config.toml")
    assert ran("install -d -m 0700 -o edge-mfr -g edge-mfr /var/lib/edge-mfr")
    assert ran("install -m 0644", "systemd/edge-mfr.service", "/etc/systemd/system/edge-mfr.service")
    assert ran("systemctl daemon-reload") and ran("systemctl enable edge-mfr.service")
    assert "cp " not in joined and "rm " not in joined  # nothing overwrites blindly or deletes
    # Order matters: the user exists before files are given to it, the unit is enabled last.
    order = [next(i for i, c in enumerate(commands) if key in c) for key in
             ("apt-get install", "pip install", "usermod", "install -d -m 0700", "systemctl enable")]
    assert order == sorted(order)


def test_32_bit_arm_is_refused_with_a_clear_message(stubs):
    bin_dir, log = stubs
    for arch in ("armv7l", "armv6l"):
        result = run_script("--dry-run", arch=arch, path_prefix=bin_dir)
        assert result.returncode == 1
        assert "32-bit" in result.stderr and "64-bit" in result.stderr and arch in result.stderr
        assert not [line for line in result.stdout.splitlines() if line.startswith("+ ")]
    assert not log.exists()


def test_unknown_option_is_an_error():
    result = run_script("--frobnicate")
    assert result.returncode == 2 and "unknown option '--frobnicate'" in result.stderr
