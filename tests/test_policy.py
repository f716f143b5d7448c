"""Access policy: each rule with a fake clock, schedule edges, lockout and cooldown expiry, and a property:
no input sequence unlocks for an unknown or not-allowed person, during a lockout, or outside a schedule."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_mfr.policy import AccessPolicy, Observation, PolicyConfig, ScheduleWindow, observations
from edge_mfr.schema import ValidationError

MONDAY = datetime(2024, 6, 3, 12, 0)  # a Monday, noon


class FakeClock:
    """Monotonic seconds and a wall clock that move together, unless a test makes the wall clock jump."""

    def __init__(self, start: datetime = MONDAY):
        self.t = 1000.0
        self.wall = start

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.t += seconds
        self.wall += timedelta(seconds=seconds)


def alice(track: int = 1, **kw) -> Observation:
    return Observation(track, "alice", "Alice", True, kw.get("masked", False), kw.get("score", 0.8),
                       kw.get("in_zone", True))


def bob(track: int = 2) -> Observation:
    return Observation(track, "bob", "Bob", False, False, 0.75)


def stranger(track: int, masked: bool = False) -> Observation:
    return Observation(track, None, None, False, masked, 0.3)


def kinds(decision) -> list[str]:
    return [k for k, _ in decision.events]


def make(clock=None, **cfg) -> tuple[AccessPolicy, FakeClock]:
    clock = clock or FakeClock()
    return AccessPolicy(PolicyConfig(**cfg), clock), clock


# ------------------------------------------------------------------------------------------ basic rules


def test_allowed_person_unlocks_with_reasons_and_event():
    policy, _ = make()
    d = policy.decide([alice(masked=True)], door="front")
    assert (d.action, d.door, d.person_id) == ("unlock", "front", "alice")
    assert any("allowed, unlock" in r and "masked" in r for r in d.reasons)
    granted = [p for k, p in d.events if k == "access_granted"]
    assert granted == [{"door": "front", "track_id": 1, "person_id": "alice", "name": "Alice", "masked": True,
                        "score": 0.8}]


def test_nothing_to_decide_is_none():
    policy, _ = make()
    d = policy.decide([])
    assert (d.action, d.person_id, d.events) == ("none", None, [])


@pytest.mark.parametrize(
    ("obs", "action", "reason", "event"),
    [
        ([bob()], "deny", "not allowed", "access_denied"),
        ([stranger(5)], "deny", "unknown face", "unknown_face"),
        ([bob(), alice()], "unlock", "allowed, unlock", "access_granted"),
        ([stranger(5), alice()], "unlock", "unknown face", "unknown_face"),
    ],
)
def test_rule_table(obs, action, reason, event):
    policy, _ = make()
    d = policy.decide(obs)
    assert d.action == action
    assert any(reason in r for r in d.reasons), d.reasons
    assert event in kinds(d)
    if action == "unlock":
        assert d.person_id == "alice"


def test_unknown_face_reported_once_per_track():
    policy, clock = make()
    assert kinds(policy.decide([stranger(7)])) == ["mask_status", "unknown_face"]
    for _ in range(5):
        clock.advance(1)
        d = policy.decide([stranger(7)])
        assert d.action == "none" and d.events == [] and "already reported" in d.reasons[0]
    assert "unknown_face" in kinds(policy.decide([stranger(8)]))  # another track is another report


def test_mask_status_events_on_first_sight_and_change():
    policy, _ = make()
    first = [p for k, p in policy.decide([alice(masked=True)]).events if k == "mask_status"]
    assert first == [{"door": "door", "track_id": 1, "person_id": "alice", "masked": True}]
    assert "mask_status" not in kinds(policy.decide([alice(masked=True)]))
    changed = [p for k, p in policy.decide([alice(masked=False)]).events if k == "mask_status"]
    assert changed and changed[0]["masked"] is False


# ----------------------------------------------------------------------------------------- cooldowns


def test_person_cooldown_blocks_repeats_then_expires():
    policy, clock = make(person_cooldown_seconds=10, door_cooldown_seconds=0)
    assert policy.decide([alice(track=1)]).action == "unlock"
    clock.advance(9.9)
    d = policy.decide([alice(track=2)])  # lost and found again by the tracker: a new track
    assert d.action == "none" and "person cooldown" in d.reasons[-1] and "access_granted" not in kinds(d)
    clock.advance(0.1)
    assert policy.decide([alice(track=2)]).action == "unlock"


@pytest.mark.parametrize(("once", "unlocks"), [(True, 1), (False, 4)])
def test_one_unlock_per_stay_unless_configured_otherwise(once, unlocks):
    policy, clock = make(person_cooldown_seconds=5, door_cooldown_seconds=0, once_per_track=once)
    actions = []
    for _ in range(40):  # alice stands in front of the door for 20 s
        actions.append(policy.decide([alice(track=1)]).action)
        clock.advance(0.5)
    assert actions.count("unlock") == unlocks and actions[0] == "unlock"
    assert policy.decide([alice(track=2)]).action == "unlock"  # she left and came back


def test_person_cooldown_is_per_door():
    policy, _ = make(person_cooldown_seconds=10)
    assert policy.decide([alice()], door="front").action == "unlock"
    assert policy.decide([alice()], door="back").action == "unlock"
    # Each door's camera has its own tracker, so track ids repeat across doors without mixing up.
    assert "unknown_face" in kinds(policy.decide([stranger(1)], door="front"))
    assert "unknown_face" in kinds(policy.decide([stranger(1)], door="back"))


def test_door_cooldown_holds_the_next_person_then_expires():
    policy, clock = make(person_cooldown_seconds=30, door_cooldown_seconds=3)
    carol = Observation(3, "carol", "Carol", True, False, 0.9)
    assert policy.decide([alice()]).person_id == "alice"
    clock.advance(1)
    d = policy.decide([carol])
    assert d.action == "none" and "door cooldown" in d.reasons[-1]
    clock.advance(2)
    assert policy.decide([carol]).person_id == "carol"


def test_two_allowed_people_one_unlock_for_the_best_score():
    policy, _ = make()
    carol = Observation(3, "carol", "Carol", True, False, 0.95)
    d = policy.decide([alice(), carol])
    assert d.action == "unlock" and d.person_id == "carol" and kinds(d).count("access_granted") == 1


def test_denied_person_is_not_spammed():
    policy, clock = make(person_cooldown_seconds=10)
    assert policy.decide([bob()]).action == "deny"
    for _ in range(4):
        clock.advance(2)
        d = policy.decide([bob()])
        assert d.action == "none" and "access_denied" not in kinds(d) and "repeat" in d.reasons[-1]
    clock.advance(2)
    assert policy.decide([bob()]).action == "deny"  # 10 s after the first report


# ------------------------------------------------------------------------------------------- lockout


def test_lockout_after_unknowns_blocks_everyone_then_expires():
    policy, clock = make(lockout_after_unknowns=3, lockout_window_seconds=60, lockout_seconds=120,
                         person_cooldown_seconds=5)
    for track in (11, 12):
        assert "lockout" not in kinds(policy.decide([stranger(track)]))
        clock.advance(10)
    d = policy.decide([stranger(13)])
    lockouts = [p for k, p in d.events if k == "lockout"]
    assert len(lockouts) == 1 and lockouts[0]["unknowns"] == 3 and lockouts[0]["seconds"] == 120
    assert lockouts[0]["door"] == "door" and lockouts[0]["until"] == "2024-06-03T12:02:20"
    assert policy.lockout_remaining() == pytest.approx(120) == policy.lockout_remaining("door")
    assert policy.lockout_remaining("back") == 0
    assert policy.decide([alice(track=30)], door="back").action == "unlock"  # other doors are not locked
    clock.advance(1)
    d = policy.decide([alice(), stranger(14), stranger(15), stranger(16)])
    assert d.action == "deny" and any("lockout active" in r for r in d.reasons)
    assert "lockout" not in kinds(d)  # emitted once
    clock.advance(118.9)
    assert policy.decide([alice(track=20)]).action != "unlock"
    clock.advance(0.1)
    d = policy.decide([alice(track=21)])
    assert d.action == "unlock" and d.events[0] == ("lockout_ended", {"door": "door"})
    assert policy.lockout_remaining() == 0


def test_unknowns_outside_the_window_do_not_lock_out():
    policy, clock = make(lockout_after_unknowns=3, lockout_window_seconds=60)
    for track in range(1, 8):
        assert "lockout" not in kinds(policy.decide([stranger(track)]))
        clock.advance(30.5)  # at most two in any 60 s window
    assert policy.decide([alice(track=99)]).action == "unlock"


def test_one_stranger_lingering_is_counted_once():
    policy, clock = make(lockout_after_unknowns=2)
    for _ in range(50):
        d = policy.decide([stranger(4)])
        assert "lockout" not in kinds(d)
        clock.advance(0.1)


def test_lockout_in_the_same_frame_holds_the_known_face():
    policy, _ = make(lockout_after_unknowns=1)
    d = policy.decide([alice(), stranger(9)])
    assert d.action == "deny" and "lockout" in kinds(d) and "access_granted" not in kinds(d)


def test_lockout_disabled_and_cleared():
    policy, _ = make(lockout_after_unknowns=0)
    for track in range(20):
        assert "lockout" not in kinds(policy.decide([stranger(track)]))
    policy, _ = make(lockout_after_unknowns=1, lockout_seconds=600)
    policy.decide([stranger(1)])
    assert policy.clear_lockout() and policy.decide([alice()]).action == "unlock"


def test_wall_clock_jumps_do_not_stretch_durations():
    clock = FakeClock()
    policy, _ = make(clock, lockout_after_unknowns=1, lockout_seconds=60)
    policy.decide([stranger(1)])
    clock.wall -= timedelta(days=365)  # NTP correction after boot, backwards
    clock.advance(60)
    assert policy.decide([alice()]).action == "unlock"


# ------------------------------------------------------------------------------------------- schedules


SCHEDULE_CASES = [
    # (window, wall time, inside?)
    ({"days": "mon-fri", "start": "08:00", "end": "18:00"}, datetime(2024, 6, 7, 17, 59), True),  # Fri
    ({"days": "mon-fri", "start": "08:00", "end": "18:00"}, datetime(2024, 6, 7, 18, 0), False),
    ({"days": "mon-fri", "start": "08:00", "end": "18:00"}, datetime(2024, 6, 3, 8, 0), True),  # Mon
    ({"days": "mon-fri", "start": "08:00", "end": "18:00"}, datetime(2024, 6, 3, 7, 59), False),
    ({"days": "mon-fri", "start": "08:00", "end": "18:00"}, datetime(2024, 6, 8, 10, 0), False),  # Sat
    ({"days": "fri", "start": "22:00", "end": "06:00"}, datetime(2024, 6, 7, 23, 30), True),  # Fri night
    ({"days": "fri", "start": "22:00", "end": "06:00"}, datetime(2024, 6, 8, 0, 0), True),  # Sat midnight
    ({"days": "fri", "start": "22:00", "end": "06:00"}, datetime(2024, 6, 8, 5, 59), True),
    ({"days": "fri", "start": "22:00", "end": "06:00"}, datetime(2024, 6, 8, 6, 0), False),
    ({"days": "fri", "start": "22:00", "end": "06:00"}, datetime(2024, 6, 7, 5, 0), False),  # Thu night: no
    ({"days": "fri", "start": "22:00", "end": "06:00"}, datetime(2024, 6, 8, 22, 30), False),  # Sat evening
    ({"days": "sun", "start": "20:00", "end": "00:00"}, datetime(2024, 6, 9, 23, 59), True),
    ({"days": "sun", "start": "20:00", "end": "00:00"}, datetime(2024, 6, 10, 0, 0), False),
    ({"days": "mon", "start": "00:00", "end": "06:00"}, datetime(2024, 6, 3, 0, 0), True),
    ({"days": "mon", "start": "00:00", "end": "06:00"}, datetime(2024, 6, 2, 23, 59), False),
    ({"days": "fri-mon"}, datetime(2024, 6, 9, 3, 0), True),  # Sun inside a wrapping day range
    ({"days": "fri-mon"}, datetime(2024, 6, 3, 23, 59), True),  # Mon, all day
    ({"days": "fri-mon"}, datetime(2024, 6, 4, 12, 0), False),  # Tue
    ({"days": ["sat", "sun"], "start": "10:00", "end": "24:00"}, datetime(2024, 6, 9, 23, 59), True),
    ({"days": "Saturday,Sunday", "start": "10:00"}, datetime(2024, 6, 8, 9, 59), False),
    ({"days": "daily", "start": "00:00", "end": "24:00"}, datetime(2024, 6, 5, 0, 0), True),
]


@pytest.mark.parametrize(("window", "when", "inside"), SCHEDULE_CASES)
def test_schedule_windows(window, when, inside):
    assert ScheduleWindow(**window).contains(when) is inside


def test_schedule_window_accepts_the_toml_spelling():
    w = ScheduleWindow.model_validate({"days": "mon-fri", "from": "22:00", "to": "06:00"})
    assert (w.start, w.end) == ("22:00", "06:00") and w.contains(datetime(2024, 6, 8, 5, 0))  # Sat 05:00


def test_schedule_applies_to_that_person_only():
    clock = FakeClock(datetime(2024, 6, 8, 10, 0))  # Saturday
    policy, _ = make(clock, schedules={"alice": [{"days": "mon-fri", "start": "08:00", "end": "18:00"}]})
    d = policy.decide([alice()])
    assert d.action == "deny" and any("outside their schedule (Sat 10:00; allowed mon-fri 08:00-18:00)" in r
                                      for r in d.reasons)
    assert [p["reason"] for k, p in d.events if k == "access_denied"][0].startswith("outside their schedule")
    carol = Observation(3, "carol", "Carol", True, False, 0.9)
    assert policy.decide([carol]).action == "unlock"  # no schedule: always
    clock.wall = datetime(2024, 6, 10, 8, 0)  # Monday morning
    clock.t += 1000
    assert policy.decide([alice()]).action == "unlock"


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"cooldown": 3}, "extra"),
        ({"schedules": {"a": [{"days": "funday"}]}}, "not a list of days"),
        ({"schedules": {"a": [{"start": "25:00"}]}}, "HH:MM"),
        ({"schedules": {"a": [{"start": "08:00", "end": "08:00"}]}}, "empty"),
        ({"schedules": {"a": [{"days": "mon", "begin": "08:00"}]}}, "extra"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"lockout_after_unknowns": -1}, "greater than or equal"),
    ],
)
def test_bad_config_is_refused_with_a_reason(cfg, message):
    with pytest.raises(ValidationError, match=message):
        PolicyConfig(**cfg)


def test_observations_from_tracker_tracks():
    from edge_mfr.identity.classifier import Decision
    from edge_mfr.identity.identify import Identification
    from edge_mfr.stream.tracker import Tracker
    from edge_mfr.vision.types import Face

    def face_at(x: float) -> Face:
        return Face(np.array([x, 100, x + 80, 180], np.float32), 0.9, np.full((6, 2), x + 40, np.float32))

    tr = Tracker(vote_n=2, vote_m=3)
    a, b, c = tr.update([face_at(100), face_at(300), face_at(500)], 0)
    for _ in range(2):
        yes = Decision("alice", "alice", 0.8, 0.2, True, "ok")
        no = Decision(None, "bob", 0.3, 0.1, False, "low")
        a.add_identification(Identification(yes, "Alice", True, 1, True))
        b.add_identification(Identification(no, None, False, -1, False))
    obs = observations([a, b, c])  # c has no vote yet: left out
    assert obs == [Observation(a.id, "alice", "Alice", True, True, 0.8),
                   Observation(b.id, None, None, False, False, 0.3)]
    assert AccessPolicy(PolicyConfig(), FakeClock()).decide(obs).person_id == "alice"


# ------------------------------------------------------------------------------------------- property


PEOPLE = ["alice", "bob", "carol"]  # carol only on weekdays 09:00-17:00
STATS: Counter[str] = Counter()  # coverage of the property run, checked below
step = st.tuples(
    st.floats(0, 40, allow_nan=False),
    st.lists(st.tuples(st.integers(1, 12), st.sampled_from([*PEOPLE, None]), st.booleans(), st.booleans(),
                       st.floats(0, 1, allow_nan=False)), max_size=4),
    st.sampled_from(["front", "back"]),
)


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(step, max_size=40),
    after=st.integers(0, 4),
    window=st.floats(1, 120),
    lockout=st.floats(0, 300),
    person_cd=st.floats(0, 30),
    door_cd=st.floats(0, 10),
    start_hour=st.integers(0, 23),
)
def test_property_no_unlock_for_unknown_denied_locked_or_out_of_schedule(steps, after, window, lockout,
                                                                        person_cd, door_cd, start_hour):
    clock = FakeClock(datetime(2024, 6, 6, start_hour, 0))  # a Thursday
    carol_window = ScheduleWindow(days="mon-fri", start="09:00", end="17:00")
    config = PolicyConfig(lockout_after_unknowns=after, lockout_window_seconds=window,
                          lockout_seconds=lockout, person_cooldown_seconds=person_cd,
                          door_cooldown_seconds=door_cd, schedules={"carol": [carol_window]})
    policy = AccessPolicy(config, clock)
    locked_until: dict[str, float] = {}
    last_unlock: dict[tuple[str, str | None], float] = {}
    for dt, raw, door in steps:
        clock.advance(dt)
        # Inputs may even be inconsistent: an unknown marked allowed, one track changing person.
        obs = [Observation(tid, pid, pid, allowed, masked, score) for tid, pid, allowed, masked, score in raw]
        d = policy.decide(obs, door=door)
        STATS[d.action] += 1
        for kind, _ in d.events:
            if kind == "lockout":
                STATS["lockout"] += 1
                locked_until[door] = clock.t + lockout
        if d.action != "unlock":
            assert "access_granted" not in [k for k, _ in d.events]
            continue
        pid = d.person_id
        assert pid is not None, "unlocked for an unknown face"
        assert any(o.person_id == pid and o.allowed for o in obs), f"unlocked for {pid}, who is not allowed"
        assert not clock.t < locked_until.get(door, float("-inf")), "unlocked during a lockout"
        if pid == "carol":
            assert carol_window.contains(clock.wall)
        assert clock.t - last_unlock.get((door, pid), float("-inf")) >= person_cd
        assert clock.t - last_unlock.get((door, None), float("-inf")) >= door_cd
        last_unlock[(door, pid)] = last_unlock[(door, None)] = clock.t


def test_property_run_exercised_every_outcome():
    """Guards the property above against passing vacuously (runs after it in file order)."""
    if not STATS:
        pytest.skip("the property test did not run in this session")
    assert STATS["unlock"] > 50 and STATS["deny"] > 50 and STATS["lockout"] > 10, dict(STATS)


def test_faces_outside_the_door_zone_neither_count_nor_unlock():
    policy, clock = make(lockout_after_unknowns=2, lockout_window_seconds=60, lockout_seconds=120)
    for track in range(10, 20):
        far = Observation(track, None, in_zone=False)
        assert kinds(policy.decide([far])) == []
        clock.advance(1)
    assert policy.lockout_remaining() == 0
    far = policy.decide([alice(in_zone=False)])
    assert "access_granted" not in kinds(far) and far.refused == {1: "not at the door"}
    assert "access_granted" in kinds(policy.decide([alice(in_zone=True)]))


def test_a_restored_lockout_holds_and_never_outlasts_the_configured_length():
    policy, clock = make(lockout_seconds=120)
    policy.restore_lockout("door", 10_000)  # a wall clock that jumped at boot cannot stretch it
    assert policy.lockout_remaining("door") == pytest.approx(120)
    held = policy.decide([alice()])
    assert "access_granted" not in kinds(held) and held.refused[1].startswith("lockout active for 120 s")
    assert policy.clear_lockout("door") and "access_granted" in kinds(policy.decide([alice(track=3)]))
