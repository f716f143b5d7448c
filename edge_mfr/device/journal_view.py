"""`edge-mfr events`: the journal as a table or JSON lines, with kinds checked against what is ever written."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from edge_mfr.device.journal import KNOWN_KINDS, Journal, JournalError, parse_time
from edge_mfr.timefmt import local_time


def _details(payload: dict[str, Any], width: int) -> str:
    text = " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in payload.items())
    return text if len(text) <= width else text[: width - 1] + "…"


def check_kinds(kinds: Sequence[str], recorded: Iterable[str]) -> None:
    """Refuse an event kind that the appliance never writes and this journal does not hold: a typo would
    otherwise print "no events" and look like a quiet day. Suggests the closest known kind."""
    import difflib

    known = sorted(set(KNOWN_KINDS) | set(recorded))
    for kind in kinds:
        if kind not in known:
            close = difflib.get_close_matches(kind, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known kinds: {', '.join(known)}"
            raise JournalError(f"--kind: no event kind {kind!r}; {hint}")


def format_events(rows: Sequence[dict[str, Any]], details_width: int = 60) -> str:
    """A compact table of events for a terminal, local time, in the order given."""
    if not rows:
        return "no events"
    table = [("time", "kind", "door", "person", "details")]
    for r in rows:
        when = local_time(r["ts"])
        details = _details(r["payload"], details_width)
        table.append((when, r["kind"], r["door"] or "-", r["person_id"] or "-", details))
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4]
                     for row in table).rstrip()


def events_command(journal_path: Path | str, kind: str | None = None, since: str | None = None,
                   limit: int = 50, as_json: bool = False) -> int:
    """``edge-mfr events``: the latest ``limit`` events, oldest first (like tail), as a table or JSON."""
    try:
        since_dt = parse_time(since) if since else None
    except ValueError as exc:
        raise JournalError(f"--since: {exc}") from None
    with Journal(journal_path, readonly=True) as journal:
        kinds = [k.strip() for k in kind.split(",") if k.strip()] if kind else None
        if kinds:
            check_kinds(kinds, journal.kinds())
        rows = journal.query(kind=kinds, since=since_dt, limit=limit)[::-1]
    if as_json:
        for row in rows:
            sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
    else:
        print(format_events(rows))
    return 0
