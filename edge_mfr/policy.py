"""Access decisions: who may open the door, when, and how often; pure logic with an injected clock.

The input is what the tracker has *decided* (after its N-of-M vote): per track a person id with name,
allowed flag, mask status and score, or "unknown". The output is one :class:`PolicyDecision` per call
(per door and frame): unlock, deny or nothing, with the reasons and the events to journal and publish.

Rules, in the order they are checked for a known person: lockout (too many unknown faces at this door
recently: nobody gets in there for a while, which slows down someone trying faces or photos), the
person's allowed flag, the person's weekly schedule, then one unlock per track (a stay in front of the
camera) and cooldowns, so a person standing at the door unlocks it once and does not flood the
journal. Unknown faces are counted once per track; a track is keyed by (door, track id).

Durations use a monotonic clock and schedules the local wall clock, separately: a Pi has no
real-time clock and its wall time jumps when NTP syncs after boot, which must not stretch a lockout.

The rules are configured by ``[policy]`` of the config file itself (:class:`edge_mfr.config.PolicyConfig`),
so the TOML and the engine cannot drift apart.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

from edge_mfr.config import PolicyConfig
from edge_mfr.config import Window as ScheduleWindow

__all__ = ["AccessPolicy", "Observation", "PolicyConfig", "PolicyDecision", "ScheduleWindow", "observations"]

TRACK_MEMORY_SECONDS = 300.0  # per-track state (counted unknown, mask status) kept after a track is last seen

Action = Literal["unlock", "deny", "none"]
Event = tuple[str, dict[str, Any]]


# ------------------------------------------------------------------------------------------------- clock


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def now(self) -> datetime: ...


class SystemClock:
    """time.monotonic for durations, the local wall clock (or ``timezone``) for schedules."""

    def __init__(self, timezone: str | None = None):
        self.tz = ZoneInfo(timezone) if timezone else None

    def monotonic(self) -> float:
        import time

        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(self.tz) if self.tz else datetime.now()


# ---------------------------------------------------------------------------------------------- in / out


@dataclass(frozen=True)
class Observation:
    """A track the tracker has decided on. ``person_id`` None means decided unknown."""

    track_id: int
    person_id: str | None
    name: str | None = None
    allowed: bool = False
    masked: bool = False
    score: float = 0.0
    in_zone: bool = True  # centred in the camera's door zone and close enough (CameraConfig.door_zone)


@dataclass
class PolicyDecision:
    action: Action
    door: str
    person_id: str | None = None
    reasons: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    refused: dict[int, str] = field(default_factory=dict)  # track id -> why this person may not enter now


def observations(tracks: Iterable[Any], unknown: str = "unknown",
                 in_zone: Callable[[Any], bool] | None = None) -> list[Observation]:
    """Observations from decided tracker tracks (``Track.decided``, ``.identification``, ``.masked``,
    ``.best_score``); undecided tracks are left out, as the policy acts only after the vote.
    ``in_zone(track)`` says whether the track's face is in the door zone (all are when None)."""
    out = []
    for t in tracks:
        decided = t.decided
        if decided is None:
            continue
        ident = t.identification
        zone = True if in_zone is None else bool(in_zone(t))
        if decided == unknown:
            out.append(Observation(t.id, None, None, False, bool(t.masked), float(t.best_score), zone))
        else:
            allowed = bool(getattr(ident, "allowed", False))
            out.append(Observation(t.id, decided, getattr(ident, "name", None), allowed, bool(t.masked),
                                   float(t.best_score), zone))
    return out


@dataclass
class _TrackState:
    last_seen: float
    unknown_counted: bool = False
    granted: bool = False
    masked: bool | None = None


# ------------------------------------------------------------------------------------------------ policy


class AccessPolicy:
    """Stateful rule engine; call :meth:`decide` once per door and frame with the decided tracks."""

    def __init__(self, config: PolicyConfig | None = None, clock: Clock | None = None):
        self.config = config or PolicyConfig()
        self.clock: Clock = clock or SystemClock(self.config.timezone)
        self._tracks: dict[tuple[str, int], _TrackState] = {}  # (door, track id): each camera has its tracker
        self._unknowns: dict[str, deque[float]] = {}  # per door: times of unknown faces in the window
        self._locked_until: dict[str, float] = {}  # per door
        self._last_unlock_door: dict[str, float] = {}
        self._last_unlock_person: dict[tuple[str, str], float] = {}
        self._last_deny: dict[tuple[str, str], float] = {}
        #: Per-person door rules from a fleet bundle (edge_mfr.interfaces.fleet.bundle.DoorRule); {} = none.
        self.door_rules: dict[str, Any] = {}

    # -- lockout --------------------------------------------------------------------------------

    def lockout_remaining(self, door: str | None = None) -> float:
        """Seconds of lockout left at ``door`` (any door when None; 0 when none), for the kiosk and MQTT."""
        t = self.clock.monotonic()
        ends = [u for d, u in self._locked_until.items() if door is None or d == door]
        return max([0.0, *(u - t for u in ends)])

    def restore_lockout(self, door: str, seconds: float) -> None:
        """Resume a lockout that was active before a restart, for the ``seconds`` it still had
        (at most ``lockout_seconds``, so a wrong wall clock at boot cannot stretch it)."""
        seconds = min(float(seconds), self.config.lockout_seconds)
        if seconds > 0:
            self._locked_until[door] = self.clock.monotonic() + seconds

    def clear_lockout(self, door: str | None = None) -> bool:
        """End a lockout early (an operator command) at ``door`` or every door; True when one was active."""
        active = self.lockout_remaining(door) > 0
        for d in [d for d in self._locked_until if door is None or d == door]:
            del self._locked_until[d]
        for d in [d for d in self._unknowns if door is None or d == door]:
            del self._unknowns[d]
        return active

    def _count_unknown(self, t: float, door: str, track_id: int, events: list[Event],
                       reasons: list[str]) -> None:
        c = self.config
        if c.lockout_after_unknowns <= 0 or door in self._locked_until:
            return
        times = self._unknowns.setdefault(door, deque())
        times.append(t)
        while times and times[0] <= t - c.lockout_window_seconds:
            times.popleft()
        if len(times) >= c.lockout_after_unknowns:
            self._locked_until[door] = t + c.lockout_seconds
            until = self.clock.now() + timedelta(seconds=c.lockout_seconds)
            events.append(("lockout", {"door": door, "unknowns": len(times), "track_id": track_id,
                                       "window_seconds": c.lockout_window_seconds,
                                       "seconds": c.lockout_seconds,
                                       "until": until.isoformat(timespec="seconds")}))
            reasons.append(f"lockout for {c.lockout_seconds:.0f} s: {len(times)} unknown faces "
                           f"within {c.lockout_window_seconds:.0f} s")
            del self._unknowns[door]

    # -- rules ----------------------------------------------------------------------------------

    def schedule_problem(self, person_id: str, when: datetime) -> str | None:
        windows = self.config.schedules.get(person_id)
        if not windows or any(w.contains(when) for w in windows):
            return None
        allowed = "; ".join(w.describe() for w in windows)
        return f"outside their schedule ({when:%a %H:%M}; allowed {allowed})"

    def door_rule_problem(self, person_id: str, door: str, when: datetime) -> str | None:
        """Why a fleet rule keeps ``person_id`` out of ``door`` now (None: no rule, or it admits)."""
        rule = self.door_rules.get(person_id)
        if rule is None:
            return None
        if rule.doors is not None and door not in rule.doors:
            return f"not allowed at door {door!r} (fleet rule: {', '.join(rule.doors) or 'no door'})"
        raw = rule.schedules.get(door, rule.schedules.get("*"))
        if not raw:
            return None
        windows = [ScheduleWindow.model_validate(w) for w in raw]
        if any(w.contains(when) for w in windows):
            return None
        allowed = "; ".join(w.describe() for w in windows)
        return f"outside their fleet schedule at {door!r} ({when:%a %H:%M}; allowed {allowed})"

    def decide(self, tracks: Iterable[Observation], door: str = "door") -> PolicyDecision:
        c = self.config
        t = self.clock.monotonic()
        now = self.clock.now()
        reasons: list[str] = []
        events: list[Event] = []
        self._expire(t, door, events, reasons)

        # Unknown faces first: if they start a lockout, a known face in the same frame is already held.
        obs = sorted(tracks, key=lambda o: (o.person_id is not None, -o.score, o.track_id))
        fresh_unknown = False
        unlockable: list[Observation] = []
        denied: list[tuple[Observation, str]] = []
        refused: dict[int, str] = {}
        for o in obs:
            if not o.in_zone:  # a passer-by behind the person at the door: neither unlocks nor counts
                reasons.append(f"track {o.track_id}: outside the door zone (ignored)")
                refused[o.track_id] = "not at the door"
                continue
            state = self._tracks.setdefault((door, o.track_id), _TrackState(t))
            state.last_seen = t
            if state.masked != o.masked:
                state.masked = o.masked
                events.append(("mask_status", {"door": door, "track_id": o.track_id, "person_id": o.person_id,
                                               "masked": o.masked}))
            label = f"track {o.track_id}"
            if o.person_id is None:
                if state.unknown_counted:
                    reasons.append(f"{label}: unknown face (already reported)")
                    continue
                state.unknown_counted = True
                fresh_unknown = True
                reasons.append(f"{label}: unknown face")
                events.append(("unknown_face", {"door": door, "track_id": o.track_id, "masked": o.masked,
                                                "score": round(o.score, 4)}))
                self._count_unknown(t, door, o.track_id, events, reasons)
                continue
            who = f"{label}: {o.name or o.person_id} ({o.person_id})"
            problem = None
            if door in self._locked_until:
                problem = f"lockout active for {self._locked_until[door] - t:.0f} s more"
            elif not o.allowed:
                problem = "not allowed"
            else:
                problem = self.schedule_problem(o.person_id, now) or self.door_rule_problem(o.person_id, door, now)
            if problem is not None:
                denied.append((o, problem))
                refused[o.track_id] = problem
                continue
            if c.once_per_track and state.granted:
                reasons.append(f"{who}: already let in during this stay (one unlock per track)")
                continue
            since_person = t - self._last_unlock_person.get((door, o.person_id), float("-inf"))
            if since_person < c.person_cooldown_seconds:
                reasons.append(f"{who}: unlocked {since_person:.0f} s ago (person cooldown)")
                continue
            unlockable.append(o)

        reported: list[Observation] = []
        for o, problem in denied:
            who = f"track {o.track_id}: {o.name or o.person_id} ({o.person_id})"
            key = (door, o.person_id or "")
            if t - self._last_deny.get(key, float("-inf")) < c.person_cooldown_seconds:
                reasons.append(f"{who}: denied, {problem} (repeat, not reported)")
                continue
            self._last_deny[key] = t
            reported.append(o)
            reasons.append(f"{who}: denied, {problem}")
            events.append(("access_denied", {"door": door, "track_id": o.track_id, "person_id": o.person_id,
                                             "name": o.name, "masked": o.masked, "score": round(o.score, 4),
                                             "reason": problem}))

        since_door = t - self._last_unlock_door.get(door, float("-inf"))
        if unlockable and since_door < c.door_cooldown_seconds:
            for o in unlockable:
                reasons.append(f"track {o.track_id}: {o.name or o.person_id} ({o.person_id}): door unlocked "
                               f"{since_door:.1f} s ago (door cooldown)")
            unlockable = []
        if unlockable:
            o = max(unlockable, key=lambda x: x.score)
            self._last_unlock_door[door] = t
            self._last_unlock_person[(door, o.person_id or "")] = t
            self._tracks[(door, o.track_id)].granted = True
            reasons.append(f"track {o.track_id}: {o.name or o.person_id} ({o.person_id}): allowed, unlock "
                           f"({'masked' if o.masked else 'unmasked'}, score {o.score:.3f})")
            events.append(("access_granted", {"door": door, "track_id": o.track_id, "person_id": o.person_id,
                                              "name": o.name, "masked": o.masked,
                                              "score": round(o.score, 4)}))
            return PolicyDecision("unlock", door, o.person_id, reasons, events, refused)
        if reported:
            return PolicyDecision("deny", door, reported[0].person_id, reasons, events, refused)
        if fresh_unknown:
            return PolicyDecision("deny", door, None, reasons, events, refused)
        return PolicyDecision("none", door, None, reasons, events, refused)

    def _expire(self, t: float, door: str, events: list[Event], reasons: list[str]) -> None:
        if door in self._locked_until and t >= self._locked_until[door]:
            del self._locked_until[door]
            events.append(("lockout_ended", {"door": door}))
            reasons.append("lockout ended")
        for key in [k for k, s in self._tracks.items() if t - s.last_seen > TRACK_MEMORY_SECONDS]:
            del self._tracks[key]
        horizon = max(self.config.person_cooldown_seconds, self.config.door_cooldown_seconds)
        for table in (self._last_unlock_person, self._last_deny, self._last_unlock_door):
            for key in [k for k, v in table.items() if t - v > horizon]:
                del table[key]

