"""systemd ``sd_notify``: tell the service manager we are ready, alive and stopping.

A tiny stdlib client rather than the ``sdnotify`` package: the protocol is one datagram per message to
``$NOTIFY_SOCKET`` (a leading ``@`` means the Linux abstract namespace), and owning those few lines lets
us send each message with ``sendto`` (no connection made once at start-up and silently lost for good if
the socket was not there yet), report send failures to the log once instead of swallowing every exception,
honour ``$WATCHDOG_PID``, and keep the package free of one more dependency. Without ``$NOTIFY_SOCKET``
(a terminal, a container, tests) every call is a cheap no-op, so the app calls it unconditionally.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends READY/STATUS/WATCHDOG/STOPPING to systemd; a no-op when not started by systemd."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._env = env
        raw = env.get("NOTIFY_SOCKET", "")
        self._address: str | None = None
        if raw.startswith("@"):
            self._address = "\0" + raw[1:]  # abstract namespace: no file, a leading NUL byte
        elif raw.startswith("/"):
            self._address = raw
        elif raw:
            log.warning("NOTIFY_SOCKET=%r is not a unix socket address: systemd notifications disabled", raw)
        self._socket: socket.socket | None = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        """True when started by systemd with a notification socket."""
        return self._address is not None

    def ready(self, status: str | None = None) -> bool:
        """Start-up is complete (models loaded, camera open): systemd marks the unit active."""
        return self._send("READY=1" if status is None else f"READY=1\nSTATUS={_one_line(status)}")

    def status(self, text: str) -> bool:
        """A short human-readable state shown by ``systemctl status``."""
        return self._send(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        """Still alive: call at least every :meth:`watchdog_interval` seconds from the frame loop."""
        return self._send("WATCHDOG=1")

    def stopping(self) -> bool:
        """Shutdown has begun, so systemd does not mistake a slow stop for a hang."""
        return self._send("STOPPING=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between keep-alives: half of ``$WATCHDOG_USEC``; None when no watchdog is for us."""
        usec = self._env.get("WATCHDOG_USEC")
        if not usec:
            return None
        pid = self._env.get("WATCHDOG_PID")
        if pid and pid != str(os.getpid()):
            return None  # inherited from a parent: the watchdog belongs to another process
        try:
            value = int(usec)
        except ValueError:
            log.warning("WATCHDOG_USEC=%r is not an integer: watchdog keep-alives disabled", usec)
            return None
        return value / 2 / 1_000_000 if value > 0 else None

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _send(self, message: str) -> bool:
        if self._address is None:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto(message.encode(), self._address)
        except OSError as exc:
            if not self._failed:  # once: the watchdog would otherwise log this every few seconds
                log.warning("cannot notify systemd at %r: %s", self._address.replace("\0", "@"), exc)
                self._failed = True
            return False
        self._failed = False
        return True


def _one_line(text: str) -> str:
    """A newline would start a new assignment in the datagram (e.g. a forged READY=1 or MAINPID=)."""
    return " ".join(str(text).split())
