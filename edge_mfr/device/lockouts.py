"""Lockouts kept in the journal: restored after a restart, cleared by an operator from any process.

The policy holds a lockout in memory on a monotonic clock; the journal's ``lockout`` event (time and
length) is what survives a restart, and ``lockout_ended`` / ``lockout_cleared`` end it. An operator's
clear is a ``lockout_cleared`` event: the CLI writes it to the journal (it runs in another process) and
the running service picks it up within a second; the kiosk and MQTT paths write it through the service.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

LOCKOUT_KINDS = ("lockout", "lockout_ended", "lockout_cleared")
CLEARED = "lockout_cleared"


def active_lockouts(journal: Any, now: datetime | None = None) -> dict[str, float]:
    """Seconds left per door whose latest lockout event is a lockout that has not yet run out."""
    now = now or datetime.now(UTC)
    seen: set[str | None] = set()
    cleared_all = False
    out: dict[str, float] = {}
    for row in journal.query(kind=LOCKOUT_KINDS, limit=500):  # newest first
        door = row["door"]
        if row["kind"] == CLEARED and door is None:
            cleared_all = True  # a clear for every door hides every older lockout
            continue
        if door in seen or cleared_all:
            continue
        seen.add(door)
        if row["kind"] != "lockout":
            continue
        started = datetime.fromisoformat(row["ts"])
        seconds = float(row["payload"].get("seconds", 0.0))
        left = (started + timedelta(seconds=seconds) - now).total_seconds()
        if left > 0:
            out[door] = min(left, seconds)
    return out


def latest_clear_id(journal: Any) -> int:
    """Row id of the newest ``lockout_cleared`` event (0 when none)."""
    rows = journal.query(kind=CLEARED, limit=1)
    return int(rows[0]["id"]) if rows else 0


def clears_since(journal: Any, after_id: int) -> list[dict[str, Any]]:
    """``lockout_cleared`` events newer than row ``after_id``, oldest first."""
    rows = journal.query(kind=CLEARED, limit=50)
    return sorted((r for r in rows if int(r["id"]) > after_id), key=lambda r: int(r["id"]))


def record_clear(journal: Any, door: str | None, by: str, **details: Any) -> dict[str, Any]:
    """Journal an operator's clear (``door`` None: every door); the service applies it."""
    return journal.record(CLEARED, door=door, by=by, **details)
