"""One readable time format for people: local time to the second (stored times stay ISO 8601 UTC).

Why one function: the CLI, the people views and the kiosk showed the same event at the same moment in
different forms (local time here, raw UTC with microseconds there).
"""

from __future__ import annotations

from datetime import datetime

FORMAT = "%Y-%m-%d %H:%M:%S"


def local_time(iso: str | None) -> str:
    """``2026-12-01T06:10:20.123456+00:00`` -> ``2026-12-01 07:10:20`` in this machine's time zone; '-' when
    empty, the text unchanged when it is not an ISO time."""
    if not iso:
        return "-"
    try:
        return datetime.fromisoformat(iso).astimezone().strftime(FORMAT)
    except (TypeError, ValueError):
        return str(iso)
