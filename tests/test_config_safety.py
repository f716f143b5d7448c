"""`config check` and `run` share one safety validation (issue 16 item 9): nothing unsafe is "ok"."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_mfr.cli import main
from edge_mfr.config import ConfigError, load_config

SECRET_OK = "0123456789abcdef0123456789abcdef"


def _config(tmp_path: Path, text: str, files: dict[str, str] | None = None) -> Path:
    for name, content in (files or {}).items():
        (tmp_path / name).write_text(content)
    path = tmp_path / "config.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


MQTT = '[mqtt]\nenabled = true\nusername = "door"\npassword_file = "pw"\n'

FATAL = [
    ("five_byte_secret", MQTT + 'command_secret_file = "secret"\n', {"secret": "12345", "pw": "x"},
     "command secret is 5 bytes"),
    ("two_char_password", '[kiosk]\nenabled = true\nadmin_password_file = "admin"\n', {"admin": "ab\n"},
     "at least 8 characters"),
    ("unlock_inf", "[[doors]]\nunlock_seconds = inf\n", {}, "doors[0].unlock_seconds"),
    ("watchdog_inf", "watchdog_seconds = inf\n", {}, "watchdog_seconds"),
    ("watchdog_nan", "watchdog_seconds = nan\n", {}, "watchdog_seconds"),
    ("huge_window", "[mqtt]\ncommand_window_seconds = 3600\n", {}, "mqtt.command_window_seconds"),
    ("huge_cap", "[[doors]]\nmax_unlock_seconds = 1e9\n", {}, "doors[0].max_unlock_seconds"),
    ("watchdog_after_cap", "watchdog_seconds = 30\n", {}, "must be below doors[0].max_unlock_seconds"),
    ("anonymous_remote_plain", '[mqtt]\nenabled = true\nhost = "broker.lan"\n', {}, "anonymous connection"),
]


@pytest.mark.parametrize(("case", "text", "files", "needle"), FATAL, ids=[c[0] for c in FATAL])
def test_config_check_refuses_what_run_refuses(tmp_path, capsys, case, text, files, needle):
    path = _config(tmp_path, text, files)
    assert main(["--config", str(path), "config", "check"]) == 1
    out = capsys.readouterr().out
    assert needle in out and ": ok" not in out
    from edge_mfr.config_safety import require_safe  # after the check above, which ran on the old code too

    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        require_safe(load_config(path, environ={}), path)


@pytest.mark.parametrize(
    ("text", "needle"),
    [(MQTT + "allow_unsigned_ha_unlock = true\n", "allow_unsigned_ha_unlock = true"),
     ('[mqtt]\nenabled = true\nhost = "127.0.0.1"\n', "anonymous plain-TCP"),
     ("watchdog_seconds = 0\n", "watchdog_seconds = 0"),
     (MQTT + 'command_secret_file = "secret"\n', "mqtt.protocol = 3.1.1")],
)
def test_unsafe_flags_are_warned_about(tmp_path, capsys, text, needle):
    path = _config(tmp_path, text, {"pw": "x", "secret": SECRET_OK})
    assert main(["--config", str(path), "config", "check"]) == 0
    out = capsys.readouterr().out
    assert f"warning: {needle}" in out or needle in out and "warning: " in out
    from edge_mfr.config_safety import require_safe

    require_safe(load_config(path, environ={}), path)  # warnings never stop `run`


def test_safe_settings_pass(tmp_path, capsys):
    path = _config(tmp_path, MQTT + 'command_secret_file = "secret"\nprotocol = "5"\n[kiosk]\nenabled = true\n'
                   'admin_password_file = "admin"\n', {"secret": SECRET_OK, "pw": "x", "admin": "correct horse\n"})
    assert main(["--config", str(path), "config", "check"]) == 0
    assert capsys.readouterr().out.strip().endswith(": ok")
    from edge_mfr.config_safety import require_safe

    require_safe(load_config(path, environ={}), path)

