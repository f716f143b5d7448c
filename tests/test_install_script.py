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


# Read-only queries the script makes, answered as 64-bit Raspberry Pi OS with its apt repository would.
QUERIES = {"dpkg": "echo arm64", "getconf": "echo 64", "apt-cache": "exit 0"}


def write_stub(bin_dir: Path, name: str, body: str) -> None:
    stub = bin_dir / name
    stub.write_text(f"#!/bin/sh\n{body}\n")
    stub.chmod(0o755)


@pytest.fixture()
def stubs(tmp_path):
    """A PATH where every system-changing command only appends its name to calls.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for name in STUBBED:
        write_stub(bin_dir, name, f'echo "{name} $*" >> "{log}"')
    for name, body in QUERIES.items():
        write_stub(bin_dir, name, body)
    return bin_dir, log


def run_script(*args: str, arch: str = "aarch64", path_prefix: Path | None = None, systemd: str = "running"):
    env = {**os.environ, "EDGE_MFR_INSTALL_ARCH": arch, "EDGE_MFR_INSTALL_SYSTEMD": systemd}
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
    bookworm = "VERSION_CODENAME=bookworm" in Path("/etc/os-release").read_text()
    assert ran("pip install", "--constraint", "deploy/constraints-bookworm.txt") == bookworm
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


@pytest.mark.parametrize("query, answer", [("dpkg", "echo armhf"), ("getconf", "echo 32")])
def test_32_bit_userland_under_a_64_bit_kernel_is_refused_before_anything(stubs, query, answer):
    """Raspberry Pi OS 32-bit on a Pi 4/5: uname says aarch64, the userland is armhf."""
    bin_dir, log = stubs
    write_stub(bin_dir, query, answer)
    result = run_script("--dry-run", arch="aarch64", path_prefix=bin_dir)
    assert result.returncode == 1
    assert "32-bit userland" in result.stderr and "64-bit" in result.stderr and "nothing was changed" in result.stderr
    assert not [line for line in result.stdout.splitlines() if line.startswith("+ ")]
    assert not log.exists()


def test_missing_raspberry_pi_repository_is_explained(stubs):
    bin_dir, log = stubs
    write_stub(bin_dir, "apt-cache", 'case "$2" in python3-picamera2|python3-libcamera) exit 100;; esac')
    result = run_script("--dry-run", path_prefix=bin_dir)
    assert result.returncode == 0
    assert "apt does not know python3-picamera2 python3-libcamera" in result.stdout
    assert "Raspberry Pi apt repository" in result.stdout and "a real run stops here" in result.stdout
    if os.geteuid() != 0:
        pytest.skip("the real (non-dry) run needs root")
    result = run_script(path_prefix=bin_dir)
    assert result.returncode == 1 and "Raspberry Pi apt repository" in result.stderr
    calls = log.read_text().splitlines()
    assert calls and all(c.startswith("apt-get") and "install" not in c for c in calls), calls


@pytest.mark.parametrize("args, systemd", [(("--image",), "running"), ((), "offline")])
def test_image_builds_enable_the_unit_without_a_running_systemd(stubs, args, systemd):
    bin_dir, log = stubs
    result = run_script("--dry-run", *args, path_prefix=bin_dir, systemd=systemd)
    assert result.returncode == 0, result.stderr
    commands = [line[2:] for line in result.stdout.splitlines() if line.startswith("+ ")]
    assert "env SYSTEMD_OFFLINE=1 systemctl enable edge-mfr.service" in commands
    assert not any("daemon-reload" in c for c in commands)
    assert not log.exists()
