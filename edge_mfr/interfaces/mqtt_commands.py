"""Remote commands over MQTT: parsing, authorisation, replay protection and execution, without a broker.

Why a pure handler: everything that arrives on a command topic is hostile until proven otherwise, and the
door must never open because of a malformed, replayed or forged message. :meth:`CommandHandler.handle`
takes ``(topic, payload, retained)`` and returns a :class:`CommandResult`; it never raises, so it can be
fuzzed directly and the MQTT client only has to publish the result.

Two layers of authorisation:

1. **The broker ACL** decides who may publish to ``<prefix>/command/+`` (an operator user per device) and to
   ``<prefix>/ha/lock/<door>/set`` (only the Home Assistant user); see ``deploy/mosquitto/``.
2. **A signature** for the commands that open a door or change who may open it (``unlock``, ``enroll``,
   ``remove_person``, ``clear_lockout``): HMAC-SHA256 with the shared secret of ``mqtt.command_secret_file`` over::

       edge-mfr-command-v1 \\n <full command topic> \\n <canonical JSON of the payload without "sig">

   where canonical JSON is ``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)``
   (use integers for ``ts`` and ``seconds`` when signing from another language). The payload carries
   ``ts`` (Unix seconds; accepted within +-``window_s``), a fresh ``nonce`` (8-64 of ``[A-Za-z0-9_-]``,
   remembered for the window, so a captured message cannot be replayed) and ``sig`` (hex). The topic is
   signed too, so a signature for one device or command is worthless on another.

Retained command messages are always refused: a retained ``unlock`` would otherwise open the door again on
every reconnect. ``lock`` and ``reload`` need no signature (locking is always safe). Home Assistant's lock
entity sends plain ``LOCK``/``UNLOCK``: ``LOCK`` is always obeyed, ``UNLOCK`` only when
``allow_unsigned_ha_unlock`` is true (default false; then only the HA user may write that topic).

Sign a command from a shell: ``python -m edge_mfr.interfaces.mqtt_commands sign --secret-file F --topic
edge-mfr/<id>/command/unlock '{"door": "front", "seconds": 5}'`` prints the payload to publish.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_mfr.errors import ConfigError, DuplicatePersonError, EdgeMfrError

log = logging.getLogger(__name__)

SIGNATURE_CONTEXT = b"edge-mfr-command-v1"
COMMANDS = ("unlock", "lock", "reload", "enroll", "remove_person", "clear_lockout")
SIGNED_COMMANDS = frozenset({"unlock", "enroll", "remove_person", "clear_lockout"})
RESULT_NAME = "result"  # <prefix>/command/result carries the answers; the device ignores it as input
MAX_IMAGES = 20
MAX_DIFFERENT_FROM = 20  # people an enroll command may confirm it is not
MAX_PERSON_REF = 100  # a person id or name in same_as / different_from (names are at most 100 characters)
_NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
_REQUEST_ID_RE = re.compile(r"^[\x21-\x7e]{1,64}$")  # printable ASCII, no spaces
_SIG_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_DOOR_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")  # JPEG, PNG


@dataclass(frozen=True)
class CommandResult:
    """What became of one command message; ``to_payload()`` is what goes to ``<prefix>/command/result``."""

    ok: bool
    command: str
    request_id: str | None
    reason: str
    details: dict[str, Any] = field(default_factory=dict)
    reply: bool = True  # False for messages the device must not answer (its own results)

    def to_payload(self) -> dict[str, Any]:
        return {**self.details, "schema": 1, "id": self.request_id, "command": self.command, "ok": self.ok,
                "reason": self.reason, "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


@dataclass(frozen=True)
class CommandLimits:
    """Bounds on what a command message may be; the defaults suit a door (4 kB, 2 MB for enroll)."""

    max_bytes: int = 4096
    max_enroll_bytes: int = 2 * 1024 * 1024
    window_s: float = 30.0
    max_nonces: int = 4096
    max_unlock_request_s: float = 3600.0  # the lock caps further at the door's max_unlock_seconds
    allow_unsigned_ha_unlock: bool = False


class _Reject(Exception):
    """A refused command; ``reason`` goes to the journal and the result topic."""

    def __init__(self, reason: str, *, failed: bool = False, details: dict[str, Any] | None = None):
        super().__init__(reason)
        self.reason = reason
        self.failed = failed  # a valid command whose execution failed (vs. refused as invalid)
        self.details = details or {}  # added to the answer (e.g. the enrolled person a new face matches)


def canonical_json(body: Mapping[str, Any]) -> bytes:
    """The exact bytes a signature covers for ``body`` (every key except ``sig``)."""
    fields = {k: v for k, v in body.items() if k != "sig"}
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def signature(secret: bytes, topic: str, body: Mapping[str, Any]) -> str:
    """Hex HMAC-SHA256 of a command for ``topic``; see the module docstring for the format."""
    message = SIGNATURE_CONTEXT + b"\n" + topic.encode("utf-8") + b"\n" + canonical_json(body)
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign_command(secret: bytes, topic: str, body: Mapping[str, Any], *, now: float | None = None,
                 nonce: str | None = None) -> dict[str, Any]:
    """``body`` plus fresh ``ts`` and ``nonce`` and its ``sig``: ready to publish as JSON."""
    signed = dict(body)
    signed["ts"] = int(time.time() if now is None else now)
    signed["nonce"] = nonce or secrets.token_hex(12)
    signed.pop("sig", None)
    signed["sig"] = signature(secret, topic, signed)
    return signed


def read_secret(path: Path | str) -> bytes:
    """The shared command secret from a file (surrounding whitespace ignored); at least 16 bytes."""

    try:
        secret = Path(path).read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the command secret ({exc.strerror or exc})") from None
    if len(secret) < 16:
        raise ConfigError(f"{path}: the command secret is {len(secret)} bytes; use at least 16 random bytes "
                          "(e.g. `openssl rand -hex 32`)")
    return secret


class NonceCache:
    """Nonces seen within the replay window; bounded, and full means refuse (never forget early)."""

    def __init__(self, window_s: float, max_entries: int):
        self.window_s = window_s
        self.max_entries = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()  # nonce -> expiry (monotonic order)

    def add(self, nonce: str, now: float) -> str | None:
        """Remember ``nonce``; returns why it is refused (replayed, cache full) or None."""
        while self._seen and next(iter(self._seen.values())) <= now:
            self._seen.popitem(last=False)
        if nonce in self._seen:
            return "replayed command (nonce already used)"
        if len(self._seen) >= self.max_entries:
            return f"too many signed commands within {self.window_s:g} s; try again later"
        # Twice the window: a message may be up to window_s old or in the future when it arrives.
        self._seen[nonce] = now + 2 * self.window_s
        return None

    def __len__(self) -> int:
        return len(self._seen)


def _doors_by_name(doors: Any) -> dict[str, Any]:
    if doors is None:
        return {}
    if isinstance(doors, Mapping):
        return dict(doors)
    return {door.name: door for door in doors}


def _number(body: Mapping[str, Any], key: str, *, required: bool = True) -> float | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _Reject(f"'{key}' must be a number, got {type(value).__name__}")
    return float(value)


def _text(body: Mapping[str, Any], key: str, *, required: bool = True, max_len: int = 200) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise _Reject(f"'{key}' must be a non-empty string of at most {max_len} characters")
    return value


class CommandHandler:
    """Checks and runs one command message at a time (thread-safe; the MQTT client calls it from a worker).

    ``doors``: a LockBank, a mapping name -> DoorLock, or DoorLocks. ``secret``: the shared HMAC secret
    (None refuses every signed command). ``enroll(name, images, add, allowed, *, same_as, different_from) ->
    dict`` and ``remove_person(person_id) -> dict`` change the gallery (see :class:`GalleryCommands`); ``reload()``
    re-reads gallery and settings. ``clock`` gives Unix seconds (for the ``ts`` window).
    """

    def __init__(self, topic_prefix: str, doors: Any, *, secret: bytes | None = None,
                 journal: Any = None, limits: CommandLimits | None = None,
                 enroll: Callable[..., dict[str, Any]] | None = None,
                 remove_person: Callable[[str], dict[str, Any]] | None = None,
                 reload: Callable[[], Any] | None = None, clock: Callable[[], float] = time.time):
        self.prefix = topic_prefix
        self.doors = _doors_by_name(doors)
        self.secret = secret
        self.journal = journal
        self.limits = limits or CommandLimits()
        self._enroll = enroll
        self._remove_person = remove_person
        self._reload = reload
        self._clock = clock
        self._nonces = NonceCache(self.limits.window_s, self.limits.max_nonces)
        self._mutex = threading.Lock()
        self._command_prefix = f"{topic_prefix}/command/"
        self._ha_prefix = f"{topic_prefix}/ha/lock/"

    # --------------------------------------------------------------------------------------------- public

    def handle(self, topic: str, payload: bytes, retained: bool = False) -> CommandResult:
        """Check and run one message; never raises. The result says what happened and why."""
        command, request_id = "?", None
        try:
            with self._mutex:
                command, door = self._route(topic)
                if command == RESULT_NAME:
                    return CommandResult(False, command, None, "own result topic", reply=False)
                request_id = self._peek_request_id(payload)
                if retained:
                    raise _Reject("retained command ignored (a retained command would repeat on reconnect)")
                if door is not None:
                    result = self._ha_lock(door, payload)
                else:
                    body = self._parse(command, payload)
                    request_id = body.get("id") if isinstance(body.get("id"), str) else request_id
                    if command in SIGNED_COMMANDS:
                        self._authenticate(topic, body)
                    result = self._run(command, body)
                result = CommandResult(True, command, request_id, "ok", result)
            self._journal("command", result, topic, retained)
            return result
        except _Reject as exc:
            result = CommandResult(False, command, request_id, exc.reason, exc.details)
            self._journal("command_failed" if exc.failed else "command_rejected", result, topic, retained)
            return result
        except Exception as exc:  # a bug or a failing dependency: report it, never take the client down
            log.exception("command %s on %r failed", command, topic)
            result = CommandResult(False, command, request_id, f"internal error ({type(exc).__name__})")
            self._journal("command_failed", result, topic, retained)
            return result

    def busy(self, topic: str, payload: bytes) -> CommandResult:
        """The answer when the command queue is full (the message was not looked at)."""
        result = CommandResult(False, self._safe_name(topic), self._peek_request_id(payload),
                               "device busy: too many queued commands; try again later")
        self._journal("command_rejected", result, topic, False)
        return result

    # ------------------------------------------------------------------------------------------- checking

    def _safe_name(self, topic: str) -> str:
        name = topic[len(self._command_prefix):] if topic.startswith(self._command_prefix) else "?"
        return name if name in COMMANDS else "?"

    def _route(self, topic: str) -> tuple[str, str | None]:
        """(command name, door for a Home Assistant lock topic else None)."""
        if not isinstance(topic, str):
            raise _Reject("topic is not text")
        if topic.startswith(self._command_prefix):
            name = topic[len(self._command_prefix):]
            if name == RESULT_NAME:
                return name, None
            if name not in COMMANDS:
                raise _Reject(f"unknown command {name[:40]!r} (commands: {', '.join(COMMANDS)})")
            return name, None
        if topic.startswith(self._ha_prefix) and topic.endswith("/set"):
            door = topic[len(self._ha_prefix):-len("/set")]
            if door in self.doors:
                return "ha_lock", door
            raise _Reject(f"no door named {door[:64]!r}")
        raise _Reject("not a command topic of this device")

    @staticmethod
    def _peek_request_id(payload: Any) -> str | None:
        """The request id, when the payload is small JSON carrying a sane one (for the answer only)."""
        if not isinstance(payload, bytes | bytearray) or len(payload) > 4096:
            return None
        try:
            body = json.loads(payload)
        except (ValueError, RecursionError):
            return None
        rid = body.get("id") if isinstance(body, dict) else None
        return rid if isinstance(rid, str) and _REQUEST_ID_RE.fullmatch(rid) else None

    def _parse(self, command: str, payload: Any) -> dict[str, Any]:
        if not isinstance(payload, bytes | bytearray):
            raise _Reject("payload is not bytes")
        limit = self.limits.max_enroll_bytes if command == "enroll" else self.limits.max_bytes
        if len(payload) > limit:
            raise _Reject(f"payload of {len(payload)} bytes exceeds the {limit}-byte limit for {command}")
        if not payload:
            raise _Reject("empty payload (expected a JSON object)")
        try:
            body = json.loads(bytes(payload).decode("utf-8"), parse_constant=_no_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise _Reject(f"malformed JSON ({str(exc).splitlines()[0][:80]})") from None
        if not isinstance(body, dict):
            raise _Reject(f"payload must be a JSON object, not {type(body).__name__}")
        rid = body.get("id")
        if rid is not None and not (isinstance(rid, str) and _REQUEST_ID_RE.fullmatch(rid)):
            raise _Reject("'id' must be 1-64 printable ASCII characters without spaces")
        return body

    def _authenticate(self, topic: str, body: dict[str, Any]) -> None:
        """Signature, freshness and single use; in this order so junk never fills the nonce cache."""
        if self.secret is None:
            raise _Reject("signed commands are disabled: no mqtt.command_secret_file on the device")
        sig = body.get("sig")
        if sig is None:
            raise _Reject("unsigned command ('sig' missing)")
        if not isinstance(sig, str) or not _SIG_RE.fullmatch(sig):
            raise _Reject("'sig' must be 64 hex digits (HMAC-SHA256)")
        ts = body.get("ts")
        if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
            raise _Reject("'ts' (Unix seconds) missing or not a number")
        nonce = body.get("nonce")
        if not isinstance(nonce, str) or not _NONCE_RE.fullmatch(nonce):
            raise _Reject("'nonce' missing or not 8-64 characters of [A-Za-z0-9_-]")
        try:
            expected = signature(self.secret, topic, body)
        except (TypeError, ValueError, RecursionError):  # values JSON cannot write back
            raise _Reject("payload cannot be canonicalised for signing") from None
        if not hmac.compare_digest(expected, sig.lower()):
            raise _Reject("bad signature")
        now = self._clock()
        skew = now - ts
        if abs(skew) > self.limits.window_s:
            raise _Reject(f"stale command: ts is {skew:+.0f} s from the device clock "
                          f"(allowed +-{self.limits.window_s:g} s; check NTP)")
        refused = self._nonces.add(nonce, time.monotonic())
        if refused:
            raise _Reject(refused)
        self._persist_nonce(nonce, now)

    def _persist_nonce(self, nonce: str, now: float) -> None:
        """Refuse a nonce used before a restart: the in-memory cache starts empty, the journal does not.

        Kept until twice the window has passed on the wall clock; a clock stepped back keeps it longer (still
        refused), a clock stepped forward makes the old ``ts`` stale first. Without a journal (tests, tools)
        only the in-memory cache applies; a journal that cannot record it refuses the command (fail closed).
        """
        use = getattr(self.journal, "use_nonce", None)
        if use is None:
            return
        expires = datetime.fromtimestamp(now + 2 * self.limits.window_s, UTC)
        try:
            fresh = use(nonce, expires)
        except Exception as exc:
            log.warning("journal: cannot remember a command nonce (%s); command refused", exc)
            raise _Reject("device journal unavailable; command refused") from None
        if not fresh:
            raise _Reject("replayed command (nonce already used before a restart)")

    def _door(self, body: Mapping[str, Any], *, required: bool) -> str | None:
        door = body.get("door")
        if door is None:
            if not required:
                return None
            if len(self.doors) == 1:
                return next(iter(self.doors))
            raise _Reject(f"'door' is required (doors: {', '.join(self.doors) or 'none'})")
        if not isinstance(door, str) or not _DOOR_RE.fullmatch(door):
            raise _Reject("'door' must be a door name")
        if door not in self.doors:
            raise _Reject(f"no door named {door!r} (doors: {', '.join(self.doors) or 'none'})")
        return door

    # ------------------------------------------------------------------------------------------ executing

    def _run(self, command: str, body: dict[str, Any]) -> dict[str, Any]:
        if command == "unlock":
            return self._unlock(body)
        if command == "lock":
            door = self._door(body, required=False)
            names = [door] if door is not None else list(self.doors)
            changed = [n for n in names if self.doors[n].lock("mqtt command")]
            return {"doors": names, "was_unlocked": changed}
        if command == "reload":
            if self._reload is None:
                raise _Reject("reload is not available on this device", failed=True)
            self._reload()
            return {}
        if command == "enroll":
            return self._do_enroll(body)
        if command == "clear_lockout":
            return self._clear_lockout(body)
        if command == "remove_person":
            person_id = _text(body, "person_id", max_len=40)
            if self._remove_person is None:
                raise _Reject("remove_person is not available on this device", failed=True)
            return self._call(self._remove_person, person_id)
        raise _Reject(f"unknown command {command!r}")  # unreachable: _route checked the name

    def _clear_lockout(self, body: dict[str, Any]) -> dict[str, Any]:
        """End a lockout at ``door`` (every door when absent): a ``lockout_cleared`` journal event, which the
        frame loop applies within a second (edge_mfr.device.lockouts), as for the CLI and the kiosk."""
        door = self._door(body, required=False)
        if self.journal is None:
            raise _Reject("clear_lockout needs the journal, which this device has not opened", failed=True)
        self.journal.record("lockout_cleared", door=door, by="mqtt")
        return {"doors": [door] if door is not None else list(self.doors)}

    def _unlock(self, body: dict[str, Any]) -> dict[str, Any]:
        door = self._door(body, required=True)
        seconds = _number(body, "seconds", required=False)
        if seconds is not None and not 0 < seconds <= self.limits.max_unlock_request_s:
            raise _Reject(f"'seconds' must be in (0, {self.limits.max_unlock_request_s:g}]")
        lock = self.doors[door]
        reason = f"mqtt command {body.get('id') or ''}".strip()
        if not lock.unlock(reason, seconds):
            raise _Reject("the lock refused the unlock (watchdog tripped or closing)", failed=True)
        return {"door": door, "seconds": seconds}

    def _do_enroll(self, body: dict[str, Any]) -> dict[str, Any]:
        name = _text(body, "name", max_len=100)
        images = body.get("images")
        if not isinstance(images, list) or not 1 <= len(images) <= MAX_IMAGES:
            raise _Reject(f"'images' must be a list of 1-{MAX_IMAGES} base64 JPEG/PNG images")
        decoded = []
        for i, item in enumerate(images):
            if not isinstance(item, str):
                raise _Reject(f"images[{i}] must be a base64 string")
            try:
                data = base64.b64decode(item, validate=True)
            except (binascii.Error, ValueError):
                raise _Reject(f"images[{i}] is not valid base64") from None
            if not data.startswith(_MAGIC):
                raise _Reject(f"images[{i}] is not a JPEG or PNG image")
            decoded.append(data)
        add, allowed = body.get("add", False), body.get("allowed", True)
        if not isinstance(add, bool) or not isinstance(allowed, bool):
            raise _Reject("'add' and 'allowed' must be true or false")
        same_as = _text(body, "same_as", required=False, max_len=MAX_PERSON_REF)
        different_from = [] if body.get("different_from") is None else body["different_from"]
        if (not isinstance(different_from, list) or len(different_from) > MAX_DIFFERENT_FROM
                or not all(isinstance(d, str) and d.strip() and len(d) <= MAX_PERSON_REF for d in different_from)):
            raise _Reject(f"'different_from' must be a list of at most {MAX_DIFFERENT_FROM} person ids or names "
                          f"(non-empty strings of at most {MAX_PERSON_REF} characters)")
        if self._enroll is None:
            raise _Reject("enroll is not available on this device", failed=True)
        try:
            return self._call(self._enroll, name, decoded, add, allowed, same_as=same_as,
                              different_from=tuple(different_from))
        except DuplicatePersonError as exc:  # name the match, and how to confirm in this command's terms
            raise _Reject(f"these faces match {exc.name!r} ({exc.person_id}, similarity {exc.score:.2f}), who is "
                          f"already enrolled: to add them to that person send \"same_as\": "
                          f"{json.dumps(exc.person_id)}; if this is someone else send \"different_from\": "
                          f"[{json.dumps(exc.person_id)}]", failed=True,
                          details={"match": {"person_id": exc.person_id, "name": exc.name,
                                             "similarity": round(exc.score, 3)}}) from None

    @staticmethod
    def _call(fn: Callable[..., dict[str, Any]], *args: Any, **kwargs: Any) -> dict[str, Any]:

        try:
            return dict(fn(*args, **kwargs) or {})
        except DuplicatePersonError:
            raise
        except EdgeMfrError as exc:  # expected failures (no face, unknown person, locked gallery)
            raise _Reject(str(exc).splitlines()[0][:300], failed=True) from None

    def _ha_lock(self, door: str, payload: Any) -> dict[str, Any]:
        text = bytes(payload[:16]).strip().upper() if isinstance(payload, bytes | bytearray) else b""
        if text == b"LOCK":
            was = self.doors[door].lock("home assistant")
            return {"door": door, "was_unlocked": was}
        if text == b"UNLOCK":
            if not self.limits.allow_unsigned_ha_unlock:
                raise _Reject("unsigned UNLOCK from Home Assistant refused (allow_unsigned_ha_unlock is false; "
                              "send a signed unlock command instead)")
            if not self.doors[door].unlock("home assistant", None):
                raise _Reject("the lock refused the unlock (watchdog tripped or closing)", failed=True)
            return {"door": door}
        raise _Reject("Home Assistant lock payload must be LOCK or UNLOCK")

    def _journal(self, kind: str, result: CommandResult, topic: str, retained: bool) -> None:
        """Accepted and failed commands are always journaled; rejected ones (anyone can send those) through
        the journal's rate limit, so a flood cannot rotate the audit trail away (issue 16 item 4)."""
        if self.journal is None:
            return
        try:
            door = result.details.get("door") if isinstance(result.details.get("door"), str) else None
            details = {"door": door, "command": result.command, "request_id": result.request_id,
                       "topic": str(topic)[:200], "retained": bool(retained)}
            for key in ("person_id", "outcome"):  # who an enroll added or enrolled, for the audit trail
                if isinstance(result.details.get(key), str):
                    details[key] = result.details[key]
            noise = getattr(self.journal, "record_noise", None)
            if kind == "command_rejected" and noise is not None:
                noise(kind, result.reason, **details)
            else:
                self.journal.record(kind, reason=result.reason, **details)
        except Exception:
            log.exception("journal: cannot record %s", kind)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class GalleryCommands:
    """``enroll`` and ``remove_person`` against the gallery file, with the real enrollment code.

    ``pipeline_factory`` makes the FacePipeline used for enrollment. Give enrollment its own pipeline (the
    default factory builds one on first use): TFLite interpreters must not be shared with the frame loop's
    thread. The running appliance notices the changed gallery file and reloads it.
    """

    def __init__(self, gallery_path: Path | str, pipeline_factory: Callable[[], Any] | None = None):
        self.gallery_path = Path(gallery_path)
        self._factory = pipeline_factory
        self._pipeline: Any = None

    def _get_pipeline(self) -> Any:
        if self._pipeline is None:
            if self._factory is None:
                from edge_mfr.vision.pipeline import FacePipeline

                self._pipeline = FacePipeline()
            else:
                self._pipeline = self._factory()
        return self._pipeline

    def enroll(self, name: str, images: list[bytes], add: bool, allowed: bool, *, same_as: str | None = None,
               different_from: Iterable[str] = ()) -> dict[str, Any]:
        """Enroll with the CLI's meaning: ``same_as`` (id or name) adds the faces to that person, and
        ``different_from`` confirms a match with those people is someone else. The answer says which:
        ``outcome`` is ``"added"`` (to ``person_id``/``name``) or ``"enrolled"`` (a new person)."""
        from edge_mfr.identity.enroll import enroll

        with tempfile.TemporaryDirectory(prefix="edge-mfr-enroll-") as tmp:  # mode 700: faces are private
            paths = []
            for i, data in enumerate(images):
                suffix = ".png" if data.startswith(_MAGIC[1]) else ".jpg"
                path = Path(tmp) / f"mqtt-{i + 1:02d}{suffix}"
                path.write_bytes(data)
                paths.append(path)
            person_id, result = enroll(self.gallery_path, name, paths, self._get_pipeline(),
                                       add_to_existing=add, allowed=allowed, same_as=same_as,
                                       different_from=different_from)
        return {"outcome": "added" if result.added_to_existing else "enrolled", "person_id": person_id,
                "name": result.person_name, "kept": len(result.kept), "dropped": len(result.dropped),
                "templates": len(result.metas)}

    def remove_person(self, person_id: str) -> dict[str, Any]:
        from edge_mfr.identity.gallery import Gallery

        with Gallery.edit(self.gallery_path, None, create=False) as gallery:
            person = gallery.remove(person_id)
        return {"person_id": person.person_id, "name": person.name}


# -------------------------------------------------------------------------------------------------- CLI


def main(argv: Iterable[str] | None = None) -> int:
    """``python -m edge_mfr.interfaces.mqtt_commands sign ...``: print a signed command payload."""
    parser = argparse.ArgumentParser(prog="python -m edge_mfr.interfaces.mqtt_commands",
                                     description="Sign an edge-mfr MQTT command.")
    sub = parser.add_subparsers(dest="action", required=True)
    sign = sub.add_parser("sign", help="print a signed JSON payload for a command topic")
    sign.add_argument("--secret-file", required=True, type=Path)
    sign.add_argument("--topic", required=True, help="e.g. edge-mfr/front-door-pi/command/unlock")
    sign.add_argument("body", nargs="?", default="{}", help="JSON object, e.g. '{\"door\": \"front\"}'")
    args = parser.parse_args(list(argv) if argv is not None else None)

    try:
        body = json.loads(args.body)
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
        secret = read_secret(args.secret_file)
    except (ValueError, EdgeMfrError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(sign_command(secret, args.topic, body), separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
