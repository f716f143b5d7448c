"""Admin authentication for the kiosk: the password file, login with a failure limit, random session
cookies and a per-session CSRF token. The password is compared in constant time (hmac on sha256 digests)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path

from edge_mfr.errors import ConfigError, EdgeMfrError

log = logging.getLogger(__name__)

LOGIN_FAILURES = 5  # wrong passwords per client within LOGIN_WINDOW_S before logins are refused
LOGIN_WINDOW_S = 300.0
SESSION_S = 8 * 3600.0
ADMIN_OFF = "admin pages are disabled: set kiosk.admin_password_file"


class LoginRefused(EdgeMfrError, PermissionError):
    def __init__(self, message: str, status: int, retry_after: float = 0.0):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def read_password(path: Path) -> str:
    """The admin password: the file's first line. A clear ConfigError when missing, unreadable or empty."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"kiosk.admin_password_file: {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"kiosk.admin_password_file: {path}: cannot read ({exc})") from None
    password = text.splitlines()[0].strip() if text.strip() else ""
    if len(password) < 8:
        raise ConfigError(f"kiosk.admin_password_file: {path}: the password must have at least 8 characters")
    if Path(path).stat().st_mode & 0o044:
        log.warning("%s is readable by other users: chmod 600 it", path)
    return password


class AdminAuth:
    """Password check with a per-client failure limit, and in-memory sessions with a CSRF token each."""

    def __init__(self, password: str | None, clock: Callable[[], float] = time.monotonic):
        self._digest = hashlib.sha256(password.encode()).digest() if password else None
        self.clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, tuple[float, str]] = {}  # token -> (expires, csrf token)
        self._failures: dict[str, list[float]] = {}

    @property
    def enabled(self) -> bool:
        return self._digest is not None

    def login(self, password: str, client: str) -> str:
        """A new session token, or LoginRefused (wrong password, or too many wrong ones lately)."""
        if self._digest is None:
            raise LoginRefused(ADMIN_OFF, HTTPStatus.FORBIDDEN)
        now = self.clock()
        with self._lock:
            recent = [t for t in self._failures.get(client, []) if now - t < LOGIN_WINDOW_S]
            everyone = sum(len(v) for v in self._failures.values())
            if len(recent) >= LOGIN_FAILURES or everyone >= 10 * LOGIN_FAILURES:
                wait = LOGIN_WINDOW_S - (now - recent[0]) if recent else LOGIN_WINDOW_S
                raise LoginRefused(f"too many wrong passwords: try again in {wait:.0f} s",
                                   HTTPStatus.TOO_MANY_REQUESTS, wait)
            given = hashlib.sha256(password.encode("utf-8", "replace")).digest()
            if not hmac.compare_digest(given, self._digest):
                self._failures[client] = recent + [now]
                self._forget_old(now)
                log.warning("kiosk: wrong admin password from %s", client)
                raise LoginRefused("wrong password", HTTPStatus.UNAUTHORIZED)
            self._failures.pop(client, None)
            token = secrets.token_urlsafe(32)
            self._sessions = {k: v for k, v in self._sessions.items() if v[0] > now}
            self._sessions[token] = (now + SESSION_S, secrets.token_urlsafe(24))
            return token

    def _forget_old(self, now: float) -> None:
        for client in list(self._failures):
            kept = [t for t in self._failures[client] if now - t < LOGIN_WINDOW_S]
            if kept:
                self._failures[client] = kept
            else:
                del self._failures[client]

    def csrf(self, token: str | None) -> str | None:
        """The session's CSRF token when ``token`` is a live session, else None."""
        if not token:
            return None
        with self._lock:
            entry = self._sessions.get(token)
            if entry is None or entry[0] <= self.clock():
                self._sessions.pop(token, None)
                return None
            return entry[1]

    def logout(self, token: str | None) -> None:
        with self._lock:
            self._sessions.pop(token or "", None)
