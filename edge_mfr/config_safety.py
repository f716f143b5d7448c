"""Safety rules that need more than one key or a file's content: one check for `config check` and `run`.

`config check` used to say "ok" for settings `run` refused (a 5-byte command secret, a 2-character kiosk
password) or that are unsafe (unsigned Home Assistant unlocks, an anonymous broker in clear text). Both
now call :func:`safety_problems`; `run` refuses to start on any fatal line and logs the warnings.
Ranges of single numbers (inf, huge timers) are the config model's job (edge_mfr/config.py).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from pathlib import Path

from edge_mfr.config import Config, config_warnings, load_config
from edge_mfr.errors import ConfigError

MIN_COMMAND_SECRET_BYTES = 16
MIN_ADMIN_PASSWORD_CHARS = 8
WARNING = "warning: "

log = logging.getLogger(__name__)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def command_secret_problem(path: Path) -> str | None:
    """Why the command secret file is unusable, or None (the daemon's rule: at least 16 bytes)."""
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        return f"mqtt.command_secret_file: {path}: cannot read the command secret ({exc.strerror or exc})"
    if len(secret) < MIN_COMMAND_SECRET_BYTES:
        return (f"mqtt.command_secret_file: {path}: the command secret is {len(secret)} bytes; use at least "
                f"{MIN_COMMAND_SECRET_BYTES} random bytes (e.g. `openssl rand -hex 32`)")
    return None


def admin_password_problem(path: Path) -> str | None:
    """Why the kiosk admin password file is unusable, or None (first line, at least 8 characters)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return f"kiosk.admin_password_file: {path}: no such file"
    except (OSError, UnicodeDecodeError) as exc:
        return f"kiosk.admin_password_file: {path}: cannot read ({exc})"
    password = text.splitlines()[0].strip() if text.strip() else ""
    if len(password) < MIN_ADMIN_PASSWORD_CHARS:
        return (f"kiosk.admin_password_file: {path}: the password must have at least {MIN_ADMIN_PASSWORD_CHARS} "
                "characters")
    return None


def safety_problems(cfg: Config, path: Path | None = None) -> list[str]:
    """Fatal problems first (plain lines), then lines starting with 'warning: '."""
    fatal: list[str] = []
    warnings = list(config_warnings(cfg, path))
    m = cfg.mqtt
    if m.enabled:
        if m.command_secret_file is not None and m.command_secret_file.exists():
            problem = command_secret_problem(m.command_secret_file)
            if problem:
                fatal.append(problem)
        anonymous = m.username is None
        if anonymous and not m.tls:
            if _loopback(m.host):
                warnings.append(f"{WARNING}mqtt: anonymous plain-TCP connection to {m.host}: anyone who can "
                                "reach the broker can publish commands and read events; set mqtt.username and "
                                "a broker ACL")
            else:
                fatal.append(f"mqtt: anonymous connection in clear text to the remote broker {m.host!r}: set "
                             "mqtt.username with password_file, and tls = true")
        if m.protocol == "3.1.1" and (m.command_secret_file is not None or m.allow_unsigned_ha_unlock):
            warnings.append(f"{WARNING}mqtt.protocol = 3.1.1: a command published retained while the device is "
                            "connected arrives without its retain flag and runs once; protocol = 5 refuses it")
        if m.allow_unsigned_ha_unlock:
            warnings.append(f"{WARNING}mqtt.allow_unsigned_ha_unlock = true: anyone allowed to publish Home "
                            "Assistant's unlock topic opens the door without a signature or replay window")
    if cfg.kiosk.enabled and cfg.kiosk.admin_password_file is not None and cfg.kiosk.admin_password_file.exists():
        problem = admin_password_problem(cfg.kiosk.admin_password_file)
        if problem:
            fatal.append(problem)
    if not cfg.watchdog_seconds:
        warnings.append(f"{WARNING}watchdog_seconds = 0: a stalled frame loop leaves an unlocked door to the unlock "
                        "cap alone and systemd never restarts the service")
    return fatal + warnings


def require_safe(cfg: Config, path: Path | None = None) -> None:
    """For `run`: raise ConfigError listing every fatal problem; log the warnings."""
    lines = safety_problems(cfg, path)
    fatal = [line for line in lines if not line.startswith(WARNING)]
    for line in lines:
        if line.startswith(WARNING):
            log.warning("%s", line.removeprefix(WARNING))
    if fatal:
        err = ConfigError("\n".join(fatal))
        err.problems = fatal  # type: ignore[attr-defined]
        raise err


def config_check(path: Path | str | None = None, environ: Mapping[str, str] | None = None) -> list[str]:
    """Problems for ``edge-mfr config check``: errors first, then lines starting with 'warning: '.

    An empty list means the config is valid and complete; any line not starting with 'warning: ' is fatal.
    The same checks as `run` (load_config, then safety_problems).
    """
    try:
        cfg = load_config(path, environ)
    except ConfigError as exc:
        return list(getattr(exc, "problems", [str(exc)]))
    return safety_problems(cfg, Path(path) if path is not None else None)
