"""The SQLite journal: WAL, round trips, filters, rotation, another process reading, modes, damage, outbox."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from edge_mfr.device.journal import Journal, JournalError, parse_time
from edge_mfr.device.journal_view import events_command, format_events
from edge_mfr.errors import EdgeMfrError, InputNotFoundError

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


class Clock:
    """A settable clock, so age-based behaviour is tested without sleeping."""

    def __init__(self, now: datetime = T0):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture()
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "journal.db"


def side_files(path: Path) -> list[Path]:
    return [path.with_name(path.name + s) for s in ("-wal", "-shm")]


# ---------------------------------------------------------------------------------------------- basics


def test_wal_mode_and_synchronous_normal(path):
    with Journal(path) as journal:
        journal.record("boot")
        assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        other = sqlite3.connect(path)
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        other.close()
        assert all(p.exists() for p in side_files(path))


def test_records_round_trip(path):
    clock = Clock()
    with Journal(path, clock=clock) as journal:
        event = journal.record("grant", door="front", person_id="alice", score=np.float32(0.8125),
                               masked=np.bool_(True), box=np.array([1, 2, 3, 4]), where=Path("/x"))
    assert len(event["event_id"]) == 32 and int(event["event_id"], 16) >= 0
    assert datetime.fromisoformat(event["ts"]) == T0
    assert event["payload"] == {"score": 0.8125, "masked": True, "box": [1, 2, 3, 4], "where": "/x"}
    with Journal(path, clock=clock) as journal:  # reopened: the same row
        (stored,) = journal.query()
    assert stored == event
    assert json.dumps(stored)  # plain JSON types only


def test_record_rejects_bad_kinds(path):
    with Journal(path) as journal:
        for kind in ("", "Grant", "a b", "x" * 65, None):
            with pytest.raises(ValueError):
                journal.record(kind)
        assert journal.count() == 0


def test_query_filters(path):
    clock = Clock()
    with Journal(path, clock=clock) as journal:
        for i in range(12):
            kind = ("grant", "deny", "unknown")[i % 3]
            person = None if kind == "unknown" else f"p{i % 4}"
            journal.record(kind, door=("front", "back")[i % 2], person_id=person, i=i)
            clock.advance(minutes=10)
        now = clock.now
        assert journal.count() == 12 and journal.count("grant") == 4
        assert [e["payload"]["i"] for e in journal.query(kind="grant")] == [9, 6, 3, 0]  # newest first
        assert [e["payload"]["i"] for e in journal.query(kind="grant", newest_first=False)] == [0, 3, 6, 9]
        assert {e["kind"] for e in journal.query(kind=["grant", "deny"], limit=None)} == {"grant", "deny"}
        assert len(journal.query(kind=["grant", "deny"], limit=None)) == 8
        assert {e["kind"] for e in journal.query(exclude=["unknown"], limit=None)} == {"grant", "deny"}
        assert [e["payload"]["i"] for e in journal.query(person_id="p1")] == [9, 1]  # 5 was unknown
        assert [e["payload"]["i"] for e in journal.query(door="back", kind="grant")] == [9, 3]
        # since inclusive, until exclusive; ages are relative to the journal's clock
        since, until = T0 + timedelta(minutes=30), T0 + timedelta(minutes=60)
        assert [e["payload"]["i"] for e in journal.query(since=since, until=until)] == [5, 4, 3]
        assert [e["payload"]["i"] for e in journal.query(since="35m")] == [11, 10, 9]
        iso = (now - timedelta(minutes=35)).isoformat()
        assert [e["payload"]["i"] for e in journal.query(since=iso)] == [11, 10, 9]
        assert len(journal.query(limit=5)) == 5
        assert journal.query(kind="nothing") == []


def test_parse_time():
    now = datetime(2024, 1, 2, tzinfo=UTC)
    assert parse_time("2h", now) == now - timedelta(hours=2)
    assert parse_time("1w", now) == now - timedelta(days=7)
    assert parse_time("2024-01-01T00:00:00Z") == datetime(2024, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="not a time"):
        parse_time("yesterday")


# ------------------------------------------------------------------------------------------ rotation, age


def test_rotation_bound_holds_and_drops_are_counted(path):
    with Journal(path, max_rows=50) as journal:
        for i in range(437):
            journal.record("frame", i=i)
            if i % 50 == 0:
                assert journal.count() <= 50
        assert journal.count() == 50
        assert journal.counters()["events_dropped_rows"] == 437 - 50
        kept = [e["payload"]["i"] for e in journal.query(limit=None, newest_first=False)]
    assert kept == list(range(437 - 50, 437))  # the newest ones survive
    with Journal(path, max_rows=50) as journal:  # the counter is persistent
        journal.record("frame", i=437)
        assert journal.counters()["events_dropped_rows"] == 437 - 50 + 1 and journal.count() == 50
    with Journal(path, max_rows=20) as journal:  # a smaller bound: one insert drops 31 rows at once
        journal.record("frame", i=438)
        assert journal.count() == 20 and journal.counters()["events_dropped_rows"] == 388 + 31
        kept = [e["payload"]["i"] for e in journal.query(limit=None, newest_first=False)]
        assert kept == list(range(419, 439))


def test_pruning_by_age(path):
    clock = Clock()
    with Journal(path, keep_days=30, outbox_max_age_hours=24, clock=clock) as journal:
        for day in range(10):
            journal.record("grant", day=day)
            journal.enqueue("t/events", {"day": day})
            clock.advance(days=5)  # events on days 0, 5, ..., 45
        assert journal.count() == 10 and journal.pending_count() == 10
        clock.now = T0 + timedelta(days=46)
        dropped = journal.prune()
        assert dropped == {"events_dropped_age": 4, "outbox_dropped_age": 9}  # days 0-15; all but day 45
        assert sorted(e["payload"]["day"] for e in journal.query(limit=None)) == [4, 5, 6, 7, 8, 9]
        assert [json.loads(m.payload)["day"] for m in journal.peek()] == [9]
        assert journal.counters() == {"events_dropped_age": 4, "outbox_dropped_age": 9}
    clock.advance(days=10)
    with Journal(path, keep_days=30, clock=clock) as journal:  # pruning also runs on open
        assert sorted(e["payload"]["day"] for e in journal.query(limit=None)) == [6, 7, 8, 9]
        assert journal.counters()["events_dropped_age"] == 6


# ------------------------------------------------------------------------------------------------- outbox


def test_outbox_order_survives_reopen(path):
    with Journal(path) as journal:
        seqs = [journal.enqueue(f"edge-mfr/dev/t{i}", {"i": i}, qos=i % 3, retain=i == 2) for i in range(5)]
        journal.enqueue("edge-mfr/dev/snapshot", b"\xff\xd8binary", qos=0)
        assert seqs == sorted(seqs) and journal.pending_count() == 6
        assert journal.mark_sent(seqs[1]) and not journal.mark_sent(seqs[1])
        journal.mark_attempt(seqs[0])
    with Journal(path) as journal:
        messages = journal.peek(10)
        assert [m.topic for m in messages] == ["edge-mfr/dev/t0", "edge-mfr/dev/t2", "edge-mfr/dev/t3",
                                               "edge-mfr/dev/t4", "edge-mfr/dev/snapshot"]
        assert [json.loads(m.payload)["i"] for m in messages[:4]] == [0, 2, 3, 4]
        assert messages[0].attempts == 1 and messages[1].retain and not messages[0].retain
        assert [m.qos for m in messages] == [0, 2, 0, 1, 0]
        assert messages[-1].payload == b"\xff\xd8binary"
        assert [m.topic for m in journal.peek(2)] == ["edge-mfr/dev/t0", "edge-mfr/dev/t2"]
        new = journal.enqueue("edge-mfr/dev/after", "text")
        assert new > messages[-1].seq  # never reused, even after deletions and reopen
        for m in journal.peek(100):
            journal.mark_sent(m.seq)
        assert journal.pending_count() == 0


def test_outbox_bound_drops_oldest_and_counts(path):
    with Journal(path, outbox_max_messages=10) as journal:
        for i in range(25):
            journal.enqueue("t/x", str(i))
        assert [m.payload for m in journal.peek(100)] == [str(i) for i in range(15, 25)]
        assert journal.counters()["outbox_dropped_full"] == 15


def test_outbox_rejects_bad_messages(path):
    with Journal(path) as journal:
        for topic, qos in (("", 1), ("a/#", 1), ("a/+/b", 1), ("a/b", 3)):
            with pytest.raises(ValueError):
                journal.enqueue(topic, "x", qos=qos)
        assert journal.pending_count() == 0


def test_record_enqueues_in_the_same_transaction(path):
    with Journal(path) as journal:
        event = journal.record("grant", door="front", person_id="bob",
                               publish=lambda e: [(f"edge-mfr/dev/event/{e['kind']}", e, 1, False)])
        (message,) = journal.peek()
        assert message.event_id == event["event_id"] and json.loads(message.payload)["ts"] == event["ts"]

        with pytest.raises(ValueError):  # a bad message aborts the whole event: neither is stored
            journal.record("deny", publish=lambda e: [("bad/#", "x", 1, False)])
        assert journal.count() == 1 and journal.pending_count() == 1


# ----------------------------------------------------------------------------------- processes, files, damage


READER = r"""
import sys
from edge_mfr.device.journal import Journal
journal = Journal(sys.argv[1], readonly=True)
for line in sys.stdin:
    rows = journal.query(limit=1)
    print(journal.count(), rows[0]["payload"]["i"] if rows else -1, flush=True)
"""


def test_reader_in_another_process_sees_committed_rows(path):
    with Journal(path) as journal:
        journal.record("tick", i=0)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        reader = subprocess.Popen([sys.executable, "-c", READER, str(path)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            seen = []
            total = 1
            for batch in (0, 40, 1, 100, 7):
                for _ in range(batch):
                    journal.record("tick", i=total)
                    total += 1
                reader.stdin.write("?\n")
                reader.stdin.flush()
                seen.append(tuple(int(v) for v in reader.stdout.readline().split()))
                journal.record("tick", i=total)  # the writer goes on while the reader holds the file open
                total += 1
            expected, n = [], 1
            for batch in (0, 40, 1, 100, 7):
                n += batch
                expected.append((n, n - 1))
                n += 1
            assert seen == expected
        finally:
            _, errors = reader.communicate(timeout=10)  # closes stdin: the reader's loop ends
        assert reader.returncode == 0, errors
        assert journal.count() == total


def test_files_are_private(path):
    old = os.umask(0o022)
    try:
        with Journal(path) as journal:
            journal.record("boot")
            journal.enqueue("t/x", "y")
            files = [path, *side_files(path)]
            assert all(f.exists() for f in files)
            assert {oct(f.stat().st_mode & 0o777) for f in files} == {"0o600"}
        loose = path.with_name("loose.db")
        loose.touch(mode=0o644)
        loose.chmod(0o644)
        Journal(loose).close()
        assert loose.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_readonly_journal(path, tmp_path):
    with pytest.raises(InputNotFoundError, match="no journal yet"):
        Journal(tmp_path / "absent.db", readonly=True)
    with Journal(path) as journal:
        journal.record("boot")
    assert not any(p.exists() for p in side_files(path))  # a clean close checkpoints and removes them
    with Journal(path, readonly=True) as reader:
        assert reader.count() == 1
        with pytest.raises(JournalError, match="read-only"):
            reader.record("x")
        with pytest.raises(JournalError, match="read-only"):
            reader.enqueue("t/x", "y")
    assert not any(p.exists() for p in side_files(path))  # the reader left nothing behind


def test_garbage_file_gives_a_clear_error_and_is_left_in_place(path):
    path.parent.mkdir(parents=True)
    garbage = b"this is not a database at all\n" * 200
    path.write_bytes(garbage)
    for readonly in (False, True):
        with pytest.raises(JournalError) as info:
            Journal(path, readonly=readonly)
        message = str(info.value)
        assert isinstance(info.value, EdgeMfrError) and "\n" not in message
        assert str(path) in message and "untouched" in message
        assert "damaged or not an SQLite database" in message
    assert path.read_bytes() == garbage


def test_damaged_pages_give_a_clear_error_and_are_left_in_place(path):
    with Journal(path) as journal:
        for i in range(400):
            journal.record("frame", door="front", i=i, note="x" * 100)
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 6 * page
    data[3 * page:5 * page] = os.urandom(2 * page)
    path.write_bytes(bytes(data))
    with pytest.raises(JournalError, match="damaged") as info:
        Journal(path)
    assert str(path) in str(info.value) and "untouched" in str(info.value)
    assert path.read_bytes() == bytes(data)


def test_foreign_or_newer_databases_are_refused(path, tmp_path):
    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE people (name TEXT)")
    db.commit()
    db.close()
    before = other.read_bytes()
    with pytest.raises(JournalError, match="not an edge-mfr journal"):
        Journal(other)
    assert other.read_bytes() == before
    Journal(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    with pytest.raises(JournalError, match="newer"):
        Journal(path)


# ------------------------------------------------------------------------------------------------------ CLI


def test_format_events():
    assert format_events([]) == "no events"
    rows = [{"ts": "2024-03-01T12:00:00.000000+00:00", "kind": "grant", "door": "front", "person_id": "alice",
             "payload": {"score": 0.81234, "masked": True}},
            {"ts": "2024-03-01T12:00:05.000000+00:00", "kind": "unknown", "door": None, "person_id": None,
             "payload": {"note": "y" * 200}}]
    lines = format_events(rows, details_width=40).splitlines()
    assert len(lines) == 3 and lines[0].split() == ["time", "kind", "door", "person", "details"]
    assert "grant" in lines[1] and "alice" in lines[1] and "score=0.812 masked=True" in lines[1]
    assert lines[2].split()[2:5] == ["unknown", "-", "-"] and lines[2].endswith("…")
    assert len(lines[2][lines[2].index("note="):]) == 40
    assert lines[1].index("grant") == lines[2].index("unknown")  # aligned columns


def test_events_command(path, tmp_path, capsys):
    clock = Clock(datetime.now(UTC) - timedelta(hours=3))
    with Journal(path, clock=clock) as journal:
        journal.record("grant", door="front", person_id="alice")
        clock.now = datetime.now(UTC)
        for i in range(5):
            journal.record("deny", door="front", person_id="bob", i=i)
        journal.record("grant", door="front", person_id="carol")
    assert events_command(path, limit=3) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and "deny" in lines[1] and "i=3" in lines[1]
    assert "carol" in lines[3]  # oldest first, like tail
    assert events_command(path, kind="grant", since="1h", as_json=True) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["person_id"] == "carol"
    assert events_command(path, kind="grant,deny", limit=100, as_json=True) == 0
    assert len(capsys.readouterr().out.splitlines()) == 7
    with pytest.raises(InputNotFoundError):
        events_command(tmp_path / "none.db")
    with pytest.raises(JournalError, match="--since"):
        events_command(path, since="last tuesday")


# -- a flood of unauthenticated records cannot wipe the audit trail (issue 16 item 4) ------------------------

AUDIT = ("started", "unlocked", "command")


def _audit_trail(journal: Journal) -> None:
    for kind in AUDIT:
        journal.record(kind, door="front")


def test_rotation_drops_rejections_before_security_records(path: Path) -> None:
    with Journal(path, max_rows=1000) as journal:
        _audit_trail(journal)
        for i in range(1500):
            journal.record("command_rejected", reason="bad signature", n=i)
        assert journal.count() == 1000
        assert all(journal.count(kind) == 1 for kind in AUDIT)
        assert journal.counters()["events_dropped_rows"] == 503


def test_security_records_rotate_only_when_nothing_lower_is_left(path: Path) -> None:
    with Journal(path, max_rows=5) as journal:
        journal.record("command_rejected", reason="x")
        for i in range(6):
            journal.record("unlocked", door="front", n=i)
        assert journal.count("command_rejected") == 0 and journal.count() == 5
        assert [r["payload"]["n"] for r in journal.query(kind="unlocked", limit=10)] == [5, 4, 3, 2, 1]


def test_unauthenticated_flood_is_rate_limited_and_summarised(path: Path) -> None:
    from edge_mfr.device.journal import NOISE_PER_WINDOW

    with Journal(path, max_rows=1000) as journal:
        _audit_trail(journal)
        for i in range(1500):
            journal.record_noise("command_rejected", "bad signature", topic=f"t/{i % 3}")
        assert journal.count("command_rejected") == NOISE_PER_WINDOW
        assert journal.suppressed_pending() == 1500 - NOISE_PER_WINDOW
    with Journal(path, max_rows=1000) as journal:  # the summary was written at close
        (summary,) = journal.query(kind="suppressed")
        assert summary["payload"]["total"] == 1500 - NOISE_PER_WINDOW
        assert summary["payload"]["counts"] == {"command_rejected: bad signature": 1500 - NOISE_PER_WINDOW}
        assert all(journal.count(kind) == 1 for kind in AUDIT)


def test_used_nonces_survive_a_restart_until_they_expire(path: Path) -> None:
    clock = Clock()
    with Journal(path, clock=clock) as journal:
        assert journal.use_nonce("abc", clock.now + timedelta(seconds=60))
        assert not journal.use_nonce("abc", clock.now + timedelta(seconds=60))
    with Journal(path, clock=clock) as journal:
        assert not journal.use_nonce("abc", clock.now + timedelta(seconds=60))
    clock.advance(seconds=120)
    with Journal(path, clock=clock) as journal:  # pruned at open once expired
        assert journal.use_nonce("abc", clock.now + timedelta(seconds=60))


def test_a_state_folder_created_by_the_journal_is_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with Journal(tmp_path / "new-state" / "journal.db"):
            pass
    finally:
        os.umask(old)
    assert (tmp_path / "new-state").stat().st_mode & 0o777 == 0o700
