"""systemd/edge-mfr.service: the settings the appliance relies on; ``systemd-analyze verify`` if present."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "edge-mfr.service"
EXEC_START = "/opt/edge-mfr/venv/bin/edge-mfr run --config /etc/edge-mfr/config.toml"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value in order (systemd keys may repeat; an empty value resets a list)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None and "=" in line, (
            f"line {number} is not 'Key=value' inside a section: {raw!r}"
        )
        key, value = line.split("=", 1)
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit(UNIT.read_text())


def one(unit, key: str, section: str = "Service") -> str:
    values = unit[section].get(key)
    assert values, f"{key}= is missing from [{section}]"
    assert len(values) == 1, f"{key}= is set {len(values)} times"
    return values[0]


def test_sections(unit):
    assert set(unit) == {"Unit", "Service", "Install"}
    assert one(unit, "WantedBy", "Install") == "multi-user.target"


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("ExecStart", EXEC_START),
        ("WatchdogSec", "10"),
        ("Restart", "on-failure"),
        ("KillSignal", "SIGTERM"),
        ("User", "edge-mfr"),
        ("Group", "edge-mfr"),
        ("StateDirectory", "edge-mfr"),
        ("StateDirectoryMode", "0700"),
        ("ConfigurationDirectory", "edge-mfr"),
        ("RuntimeDirectory", "edge-mfr"),
        ("UMask", "0077"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "true"),
        ("NoNewPrivileges", "true"),
        ("PrivateTmp", "true"),
        ("ProtectKernelTunables", "true"),
        ("ProtectKernelModules", "true"),
        ("ProtectControlGroups", "true"),
        ("RestrictSUIDSGID", "true"),
        ("LockPersonality", "true"),
        ("RestrictRealtime", "true"),
        ("SystemCallArchitectures", "native"),
    ],
)
def test_service_setting(unit, key, expected):
    assert one(unit, key) == expected


def test_groups_and_address_families(unit):
    assert set(one(unit, "SupplementaryGroups").split()) == {"gpio", "video"}
    assert set(one(unit, "RestrictAddressFamilies").split()) == {
        "AF_UNIX",
        "AF_INET",
        "AF_INET6",
        "AF_NETLINK",
    }


def test_stop_is_short(unit):
    seconds = int(one(unit, "TimeoutStopSec"))
    assert 0 < seconds <= 30


def test_devices_stay_reachable(unit):
    service = unit["Service"]
    # PrivateDevices hides /dev/gpiochip* and the camera; ProtectClock and any DeviceAllow= close the
    # device policy to an allow-list; the unit documents why it leaves DevicePolicy open.
    for key in ("PrivateDevices", "ProtectClock", "DeviceAllow", "DevicePolicy", "ProcSubset"):
        assert key not in service, f"{key}= would cut the service off from GPIO or the camera"


def test_no_logs_directory_and_no_machine_paths():
    text = UNIT.read_text()
    assert "LogsDirectory=" not in re.sub(r"#.*", "", text)
    repo = str(Path(__file__).resolve().parents[2])
    assert repo not in text and "/home/" not in re.sub(r"ProtectHome.*", "", text)


def verify(unit_file: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def complaints(result: subprocess.CompletedProcess, unit_file: Path) -> list[str]:
    # verify exits 0 on unknown keys and bad values and only prints them, so read stderr too.
    lines = (result.stdout + result.stderr).splitlines()
    return [line for line in lines if unit_file.name in line or str(unit_file) in line]


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (apt systemd)"
)
def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    # verify insists the ExecStart binary exists: point it at a stand-in with the same arguments.
    stand_in = tmp_path / "edge-mfr"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    text = UNIT.read_text()
    assert f"ExecStart={EXEC_START}" in text
    copy = tmp_path / "edge-mfr.service"
    copy.write_text(text.replace("/opt/edge-mfr/venv/bin/edge-mfr", str(stand_in)))
    result = verify(copy)
    assert result.returncode == 0 and not complaints(result, copy), result.stdout + result.stderr

    # The control: a misspelt key and a bad value are caught by the same check.
    broken = tmp_path / "broken" / "edge-mfr.service"
    broken.parent.mkdir()
    broken.write_text(copy.read_text().replace("ProtectHome=true", "ProtectHome=sometimes\nProtectHoem=true"))
    assert len(complaints(verify(broken), broken)) == 2


def test_every_end_of_the_service_relocks_and_the_watchdog_fires_before_the_unlock_cap(unit):
    """Issue 16 item 7: after SIGKILL or an OOM kill nothing relocked in software until the restart."""
    assert one(unit, "ExecStopPost") == "/opt/edge-mfr/venv/bin/edge-mfr relock --config /etc/edge-mfr/config.toml"
    from edge_mfr.config import Config

    door_cap = Config().doors[0].max_unlock_seconds
    assert int(one(unit, "WatchdogSec")) == Config().watchdog_seconds < door_cap


def test_relock_command_drives_the_relays_locked(tmp_path):
    """`edge-mfr relock` (systemd's ExecStopPost) runs in a fresh process, as after a SIGKILL."""
    import os
    import subprocess
    import sys

    path = tmp_path / "config.toml"
    path.write_text('[device]\ngpio = "mock"\n[[doors]]\nname = "front"\nrelay_pin = 17\n'
                    '[[doors]]\nname = "back"\nrelay_pin = 27\n')
    proc = subprocess.run([sys.executable, "-m", "edge_mfr.cli", "--config", str(path), "relock"],
                          capture_output=True, text=True, timeout=120, cwd=UNIT.parents[1],
                          env={**os.environ, "EDGE_MFR_STATE_DIR": str(tmp_path / "state")})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "relocked front, back"
