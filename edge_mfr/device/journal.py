"""The journal: an SQLite audit log of every decision and lock action, and the durable MQTT outbox.

Why SQLite in WAL mode: each event is one small transaction that survives a crash of the daemon, readers
(``edge-mfr events``, the kiosk) never block the writer and see only committed rows, and the file stays
bounded because rotation runs in the same transaction as the insert. ``synchronous=NORMAL`` trades the
last few transactions on power loss for far fewer SD-card writes; the database itself stays consistent.

One process writes (the daemon; a lock serialises its threads); any number of processes may read.
The outbox follows the transactional-outbox pattern: :meth:`Journal.record` can enqueue the MQTT messages
of an event in the same transaction, so an event is never logged without being queued, nor the reverse.

Tables: ``events`` (the audit log), ``outbox`` (MQTT messages not yet acknowledged by the broker) and
``counters`` (how many rows rotation and pruning dropped, by reason).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from edge_mfr.errors import EdgeMfrError, InputNotFoundError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
APPLICATION_ID = 0x65646D66  # "edmf": marks the file as an edge-mfr journal
PRUNE_INTERVAL_S = 3600.0
_RESERVED = frozenset({"kind", "door", "person_id", "publish", "id", "event_id", "ts"})
#: Every event kind the appliance writes (policy decisions, the lock, the loop, the service, MQTT, the kiosk):
#: what `edge-mfr events --kind` accepts besides the kinds a journal already holds.
KNOWN_KINDS = frozenset({
    "access_granted", "access_denied", "unknown_face", "recognized", "mask_status", "lockout", "lockout_ended",
    "unlocked", "locked", "unlock_refused", "watchdog_tripped", "door_opened", "door_closed", "door_forced",
    "door_held_open", "exit_button", "gallery_reloaded", "gallery_error", "source_lost", "source_restored",
    "started", "stopped", "kiosk_error", "admin_login", "login_failed", "command_rejected", "command",
    "command_failed",
    "suppressed", "warning", "liveness_refused", "fleet_applied", "fleet_refused",
    "fault", "lockout_cleared", "lockout_restored",
})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    ts TEXT NOT NULL,
    kind TEXT NOT NULL,
    door TEXT,
    person_id TEXT,
    payload TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE INDEX IF NOT EXISTS events_kind_ts ON events (kind, ts);
CREATE INDEX IF NOT EXISTS events_person_ts ON events (person_id, ts);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL DEFAULT 1,
    retain INTEGER NOT NULL DEFAULT 0,
    created_ts TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_created ON outbox (created_ts);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS nonces (
    nonce TEXT PRIMARY KEY,
    expires_ts TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS nonces_expires ON nonces (expires_ts);
"""
# Kinds anyone can cause without credentials (a junk MQTT command, a wrong kiosk password) or that repeat
# every few seconds: rotation drops these before any other record, so a flood of them can never push the
# audit trail (started, unlocked, command, ...) out of a full journal.
LOW_KINDS = ("command_rejected", "login_failed", "suppressed", "recognized")
NOISE_PER_WINDOW = 20  # unauthenticated records written per window; the rest are counted in one summary
NOISE_WINDOW_S = 60.0


class JournalError(EdgeMfrError, OSError):
    """The journal file is corrupt, not an edge-mfr journal, from a newer version, or unreadable."""


@dataclass(frozen=True)
class OutboxMessage:
    """One MQTT message waiting for the broker; ``seq`` orders delivery."""

    seq: int
    event_id: str | None
    topic: str
    payload: bytes | str
    qos: int
    retain: bool
    created_ts: str
    attempts: int


# A message to enqueue: (topic, payload, qos, retain); a dict payload is sent as JSON.
Message = tuple[str, "bytes | str | dict[str, Any]", int, bool]


def utc_iso(when: datetime) -> str:
    """Fixed-width ISO-8601 UTC text, so string order is time order (naive datetimes are local time)."""
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def parse_time(value: datetime | str, now: datetime | None = None) -> datetime:
    """A datetime, ISO-8601 text (naive = local time) or an age such as '90s', '15m', '2h', '7d', '1w'."""
    if isinstance(value, datetime):
        return value
    text = value.strip()
    if m := re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw])", text.lower()):
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
        return (now or datetime.now(UTC)) - timedelta(seconds=float(m.group(1)) * unit)
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r} is not a time: use ISO-8601 (2024-05-01, 2024-05-01T08:00) "
                         "or an age like 30m, 2h, 7d") from None


def _json_default(obj: Any) -> Any:
    """Numpy scalars and arrays, paths and datetimes appear in event payloads; keep them readable."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, datetime):
        return utc_iso(obj)
    return str(obj)


def _dumps(payload: Any) -> str:
    return json.dumps(payload, default=_json_default, separators=(",", ":"), ensure_ascii=False)


def _create_private(path: Path) -> None:
    """Create ``path`` mode 0600 before SQLite does (SQLite gives -wal and -shm the database's mode).

    A missing folder is created 0700, like the gallery's: the daemon often creates the state folder itself.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class Journal:
    """Audit log plus MQTT outbox in one SQLite file. Thread-safe; one writing process at a time."""

    def __init__(
        self,
        path: Path | str,
        *,
        max_rows: int = 100_000,
        keep_days: float = 90.0,
        outbox_max_messages: int = 10_000,
        outbox_max_age_hours: float = 168.0,
        readonly: bool = False,
        clock: Callable[[], datetime] | None = None,
    ):
        self.path = Path(path)
        self.max_rows = max_rows
        self.keep_days = keep_days
        self.outbox_max_messages = outbox_max_messages
        self.outbox_max_age_hours = outbox_max_age_hours
        self.readonly = readonly
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.RLock()
        self._last_prune = -float("inf")
        self._noise_lock = threading.Lock()
        self._noise_start = time.monotonic()
        self._noise_written = 0
        self._noise_counts: dict[str, int] = {}  # this window's events beyond NOISE_PER_WINDOW
        self._pending_summary: dict[str, int] = {}  # counts of ended windows, not yet written
        self._db = self._open()

    @classmethod
    def from_config(cls, cfg: Any, readonly: bool = False) -> Journal:
        """Open the journal a :class:`edge_mfr.config.Config` names, with its bounds."""
        j = cfg.journal
        return cls(j.path, max_rows=j.max_rows, keep_days=j.keep_days, readonly=readonly,
                   outbox_max_messages=j.outbox_max_messages, outbox_max_age_hours=j.outbox_max_age_hours)

    # ------------------------------------------------------------------------------------------ lifecycle

    def _open(self) -> sqlite3.Connection:
        if self.readonly and not self.path.is_file():
            raise InputNotFoundError(f"{self.path}: no journal yet (the daemon creates it)")
        options = {"timeout": 5.0, "isolation_level": None, "check_same_thread": False}
        try:
            if self.readonly:
                # No -wal file means no writer has the journal open: read it as immutable, so this reader
                # (perhaps root) leaves no -wal/-shm files behind that the daemon's user could not open.
                wal = self.path.with_name(self.path.name + "-wal")
                flags = "mode=ro" if wal.exists() else "mode=ro&immutable=1"
                db = sqlite3.connect(f"file:{quote(str(self.path.resolve()))}?{flags}", uri=True, **options)
            else:
                _create_private(self.path)
                db = sqlite3.connect(self.path, **options)
        except PermissionError as exc:
            raise JournalError(f"{self.path}: {exc.strerror} (run as the edge-mfr user, or sudo)") from None
        except (sqlite3.Error, OSError) as exc:
            raise JournalError(f"{self.path}: cannot open the journal: {exc}") from None
        try:
            self._prepare(db)
        except JournalError:
            db.close()
            raise
        except sqlite3.DatabaseError as exc:
            db.close()
            raise self._corrupt(exc) from None
        return db

    def _corrupt(self, exc: Exception) -> JournalError:
        text = str(exc)
        if "readonly" in text or "unable to open" in text or "locked" in text:
            return JournalError(f"{self.path}: cannot use the journal: {text} (check owner and permissions)")
        return JournalError(f"{self.path}: the journal is damaged or not an SQLite database ({text}); "
                            "it was left untouched: move it aside to start a new journal")

    def _prepare(self, db: sqlite3.Connection) -> None:
        db.execute("PRAGMA busy_timeout = 5000")
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if app_id not in (0, APPLICATION_ID) or (app_id == 0 and tables and "events" not in tables):
            raise JournalError(f"{self.path}: SQLite, but not an edge-mfr journal (left untouched)")
        if version > SCHEMA_VERSION:
            raise JournalError(f"{self.path}: journal format {version} is newer than this "
                               f"edge-mfr understands ({SCHEMA_VERSION}); upgrade edge-mfr")
        problems = [r[0] for r in db.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise JournalError(f"{self.path}: the journal is damaged ({'; '.join(problems)}); it was left "
                               "untouched: move it aside to start a new journal")
        if self.readonly:
            if "events" not in tables:
                raise JournalError(f"{self.path}: the journal has no events table yet")
            return
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise JournalError(f"{self.path}: cannot switch the journal to WAL mode (got {mode}); is it on a "
                               "network file system?")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
        with self._tx(db):
            for statement in _SCHEMA.split(";"):  # not executescript(): it would commit our transaction
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        for suffix in ("-wal", "-shm"):  # SQLite copies the database's mode; make sure of it anyway
            side = self.path.with_name(self.path.name + suffix)
            if side.exists() and side.stat().st_mode & 0o077:
                side.chmod(0o600)
        self._prune(db, self._clock())

    class _Tx:
        def __init__(self, db: sqlite3.Connection):
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type, exc, tb) -> None:
            if exc_type is None:
                self.db.execute("COMMIT")
            elif self.db.in_transaction:  # SQLite may already have rolled back (disk full, damage)
                self.db.execute("ROLLBACK")

    def _tx(self, db: sqlite3.Connection | None = None) -> Journal._Tx:
        return Journal._Tx(db or self._db)

    def _run(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``fn`` under the lock, turning database damage found later into a clear JournalError."""
        with self._lock:
            if self._db is None:
                raise JournalError(f"{self.path}: the journal is closed")
            try:
                return fn(self._db)
            except sqlite3.DatabaseError as exc:
                raise self._corrupt(exc) from None

    def _writable(self) -> None:
        if self.readonly:
            raise JournalError(f"{self.path}: opened read-only")

    def close(self) -> None:
        if not self.readonly and self._db is not None:
            try:
                self._flush_noise(force=True)
            except JournalError as exc:
                log.warning("could not write the suppressed-events summary: %s", exc)
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------- events

    def record(
        self,
        kind: str,
        *,
        door: str | None = None,
        person_id: str | None = None,
        publish: Callable[[dict[str, Any]], Iterable[Message]] | None = None,
        **payload: Any,
    ) -> dict[str, Any]:
        """Append one event and return it as stored (with ``event_id``, ``ts`` and ``id``).

        ``publish(event)`` may return MQTT messages for this event; they are enqueued in the same
        transaction. Rotation (``max_rows``) also runs in that transaction.
        """
        self._writable()
        if not isinstance(kind, str) or not re.fullmatch(r"[a-z][a-z0-9_.-]{0,63}", kind):
            raise ValueError(f"event kind {kind!r} must be 1-64 lowercase letters, digits, '_', '.' or '-'")
        now = self._clock()
        event: dict[str, Any] = {"event_id": uuid.uuid4().hex, "ts": utc_iso(now), "kind": kind, "door": door,
                                 "person_id": person_id, "payload": json.loads(_dumps(payload))}
        messages = list(publish(event)) if publish is not None else []

        def write(db: sqlite3.Connection) -> None:
            with self._tx(db):
                values = (event["event_id"], event["ts"], kind, door, person_id, _dumps(event["payload"]))
                row_id = db.execute("INSERT INTO events (event_id, ts, kind, door, person_id, payload) "
                                    "VALUES (?, ?, ?, ?, ?, ?)", values).lastrowid
                event["id"] = row_id
                if self.max_rows and row_id > self.max_rows:
                    self._rotate(db)
                for topic, body, qos, retain in messages:
                    self._enqueue(db, topic, body, qos, retain, event["event_id"], event["ts"])

        self._run(write)
        self._maybe_prune(now)
        if kind != "suppressed":
            self._flush_noise(force=False)
        return event

    def _rotate(self, db: sqlite3.Connection) -> None:
        """Keep at most max_rows events: the oldest LOW_KINDS rows go first, other rows only when none is left."""
        excess = db.execute("SELECT COUNT(*) FROM events").fetchone()[0] - self.max_rows
        if excess <= 0:
            return
        marks = ",".join("?" * len(LOW_KINDS))
        gone = db.execute(f"DELETE FROM events WHERE id IN (SELECT id FROM events WHERE kind IN ({marks}) "
                          "ORDER BY id LIMIT ?)", (*LOW_KINDS, excess)).rowcount
        if gone < excess:
            gone += db.execute("DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT ?)",
                               (excess - gone,)).rowcount
        self._count(db, "events_dropped_rows", gone)

    def record_noise(self, kind: str, reason: str, **payload: Any) -> dict[str, Any] | None:
        """Record an event an unauthenticated sender can cause, at most NOISE_PER_WINDOW a minute.

        Beyond that, events are counted by (kind, reason) and written as one ``suppressed`` summary when the
        window ends, so a flood costs one row a minute instead of one row per message.
        """
        with self._noise_lock:
            self._roll_noise_window()
            admitted = self._noise_written < NOISE_PER_WINDOW
            if admitted:
                self._noise_written += 1
            else:
                key = f"{kind}: {reason}"[:120]
                self._noise_counts[key] = self._noise_counts.get(key, 0) + 1
        return self.record(kind, reason=reason, **payload) if admitted else None

    def _end_noise_window(self) -> None:  # the caller holds the noise lock
        for key, n in self._noise_counts.items():
            self._pending_summary[key] = self._pending_summary.get(key, 0) + n
        self._noise_counts = {}

    def _roll_noise_window(self) -> None:  # the caller holds the noise lock
        if time.monotonic() - self._noise_start >= NOISE_WINDOW_S:
            self._end_noise_window()
            self._noise_start, self._noise_written = time.monotonic(), 0

    def _flush_noise(self, force: bool) -> None:
        with self._noise_lock:
            if force:
                self._end_noise_window()
            else:
                self._roll_noise_window()
            summary, self._pending_summary = self._pending_summary, {}
        if summary and self._db is not None and not self.readonly:
            self.record("suppressed", window_s=NOISE_WINDOW_S, total=sum(summary.values()), counts=summary)

    def suppressed_pending(self) -> int:
        """Noise events counted but not yet written as a summary."""
        with self._noise_lock:
            return sum(self._noise_counts.values()) + sum(self._pending_summary.values())

    # ----------------------------------------------------------------------------------------- nonces

    def use_nonce(self, nonce: str, expires: datetime) -> bool:
        """Remember a signed command's nonce until ``expires``; False when it was already used.

        Kept in the database, so a replay is refused after a restart too; expired nonces go with pruning.
        """
        self._writable()

        def write(db: sqlite3.Connection) -> bool:
            with self._tx(db):
                try:
                    db.execute("INSERT INTO nonces (nonce, expires_ts) VALUES (?, ?)", (nonce, utc_iso(expires)))
                except sqlite3.IntegrityError:
                    return False
                return True

        return self._run(write)

    def query(
        self,
        kind: str | Sequence[str] | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        person_id: str | None = None,
        door: str | None = None,
        limit: int | None = 100,
        newest_first: bool = True,
        exclude: Sequence[str] = (),
    ) -> list[dict[str, Any]]:
        """Events matching every given filter; ``since`` is inclusive, ``until`` exclusive; ``exclude``
        leaves out kinds (the kiosk hides the per-face mask_status rows unless they are asked for)."""
        where, args = [], []
        if kind is not None:
            kinds = [kind] if isinstance(kind, str) else list(kind)
            where.append(f"kind IN ({','.join('?' * len(kinds))})")
            args += kinds
        if exclude:
            where.append(f"kind NOT IN ({','.join('?' * len(exclude))})")
            args += list(exclude)
        now = self._clock()
        if since is not None:
            where.append("ts >= ?")
            args.append(utc_iso(parse_time(since, now)))
        if until is not None:
            where.append("ts < ?")
            args.append(utc_iso(parse_time(until, now)))
        for column, value in (("person_id", person_id), ("door", door)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = "SELECT id, event_id, ts, kind, door, person_id, payload FROM events"
        sql += f" WHERE {' AND '.join(where)}" if where else ""
        sql += f" ORDER BY ts {'DESC' if newest_first else 'ASC'}, id {'DESC' if newest_first else 'ASC'}"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        rows = self._run(lambda db: db.execute(sql, args).fetchall())
        return [{"id": r[0], "event_id": r[1], "ts": r[2], "kind": r[3], "door": r[4], "person_id": r[5],
                 "payload": json.loads(r[6])} for r in rows]

    def _scalar(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return self._run(lambda db: db.execute(sql, args).fetchone()[0])

    def kinds(self) -> list[str]:
        """The distinct event kinds this journal holds."""
        return self._run(lambda db: [r[0] for r in db.execute("SELECT DISTINCT kind FROM events")])

    def count(self, kind: str | None = None) -> int:
        if kind is None:
            return self._scalar("SELECT COUNT(*) FROM events")
        return self._scalar("SELECT COUNT(*) FROM events WHERE kind = ?", (kind,))

    # ------------------------------------------------------------------------------------------- outbox

    def enqueue(self, topic: str, payload: bytes | str | dict[str, Any], *, qos: int = 1,
                retain: bool = False, event_id: str | None = None) -> int:
        """Queue one MQTT message; returns its sequence number. The oldest are dropped beyond the bound."""
        self._writable()
        ts = utc_iso(self._clock())

        def write(db: sqlite3.Connection) -> int:
            with self._tx(db):
                return self._enqueue(db, topic, payload, qos, retain, event_id, ts)

        return self._run(write)

    def _enqueue(self, db: sqlite3.Connection, topic: str, payload: Any, qos: int, retain: bool,
                 event_id: str | None, ts: str) -> int:
        if not topic or any(c in topic for c in "+#\0"):
            raise ValueError(f"{topic!r} is not a topic to publish to")
        if qos not in (0, 1, 2):
            raise ValueError(f"MQTT qos must be 0, 1 or 2, not {qos!r}")
        body = payload if isinstance(payload, bytes | str) else _dumps(payload)
        seq = db.execute("INSERT INTO outbox (event_id, topic, payload, qos, retain, created_ts) "
                         "VALUES (?, ?, ?, ?, ?, ?)", (event_id, topic, body, qos, int(retain), ts)).lastrowid
        if self.outbox_max_messages:
            # AUTOINCREMENT never reuses a seq, so the newest outbox_max_messages messages are seq > seq - max
            gone = db.execute("DELETE FROM outbox WHERE seq <= ?", (seq - self.outbox_max_messages,)).rowcount
            self._count(db, "outbox_dropped_full", gone)
        return seq

    def peek(self, n: int = 100) -> list[OutboxMessage]:
        """The ``n`` oldest unsent messages, in the order they were queued."""
        rows = self._run(lambda db: db.execute(
            "SELECT seq, event_id, topic, payload, qos, retain, created_ts, attempts FROM outbox "
            "ORDER BY seq LIMIT ?", (int(n),)).fetchall())
        return [OutboxMessage(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6], r[7]) for r in rows]

    def mark_sent(self, seq: int) -> bool:
        """Remove a message the broker acknowledged; False when it was already gone."""
        self._writable()
        return self._run(lambda db: db.execute("DELETE FROM outbox WHERE seq = ?", (seq,)).rowcount) > 0

    def mark_attempt(self, seq: int) -> None:
        """Count one failed or unacknowledged publish of a message (kept for diagnostics)."""
        self._writable()
        self._run(lambda db: db.execute("UPDATE outbox SET attempts = attempts + 1 WHERE seq = ?", (seq,)))

    def pending_count(self) -> int:
        return self._scalar("SELECT COUNT(*) FROM outbox")

    # ------------------------------------------------------------------------------------- maintenance

    @staticmethod
    def _count(db: sqlite3.Connection, name: str, n: int) -> None:
        if n > 0:
            db.execute("INSERT INTO counters (name, value) VALUES (?, ?) "
                       "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value", (name, n))

    def counters(self) -> dict[str, int]:
        """Rows dropped so far, by reason: events_dropped_rows/_age, outbox_dropped_full/_age."""
        rows = self._run(lambda db: db.execute("SELECT name, value FROM counters ORDER BY name").fetchall())
        return dict(rows)

    def _prune(self, db: sqlite3.Connection, now: datetime) -> dict[str, int]:
        events_cut = utc_iso(now - timedelta(days=self.keep_days))
        outbox_cut = utc_iso(now - timedelta(hours=self.outbox_max_age_hours))
        with self._tx(db):
            dropped = {
                "events_dropped_age": db.execute("DELETE FROM events WHERE ts < ?", (events_cut,)).rowcount,
                "outbox_dropped_age": db.execute("DELETE FROM outbox WHERE created_ts < ?",
                                                 (outbox_cut,)).rowcount,
            }
            db.execute("DELETE FROM nonces WHERE expires_ts < ?", (utc_iso(now),))
            for name, n in dropped.items():
                self._count(db, name, n)
        self._last_prune = time.monotonic()
        if any(dropped.values()):
            log.info("journal pruning dropped %s", dropped)
        return dropped

    def prune(self) -> dict[str, int]:
        """Drop events older than ``keep_days`` and messages older than ``outbox_max_age_hours`` now.

        Runs on open and then at most hourly on its own; returns how many rows went, by counter name.
        """
        self._writable()
        return self._run(lambda db: self._prune(db, self._clock()))

    def _maybe_prune(self, now: datetime) -> None:
        if time.monotonic() - self._last_prune >= PRUNE_INTERVAL_S:
            self._run(lambda db: self._prune(db, now))


# ---------------------------------------------------------------------------------------------------- CLI
