"""The appliance configuration: one tree of validated sections read from a TOML file plus environment overrides.

Why one strict tree: a typo in a door-lock config must stop the daemon with a message that names the key,
not be silently ignored. Every section forbids unknown keys, every field has a description (for readers of
this file; tests/test_config.py checks there is one), ``deploy/config.example.toml`` spells out the defaults
(checked too), and every default works off a Pi, so an empty file is a valid configuration.

Sources, later ones winning:

1. the defaults below;
2. the TOML file (``--config``, else ``/etc/edge-mfr/config.toml`` when it exists);
3. environment variables ``EDGE_MFR__<SECTION>__<KEY>=value`` (double underscores separate the path; names
   are case-insensitive; a list item is addressed by its index, e.g. ``EDGE_MFR__DOORS__0__RELAY_PIN=27``;
   top-level keys take one part: ``EDGE_MFR__WATCHDOG_SECONDS=0``). A value is parsed as JSON when it is
   valid JSON (``8883``, ``true``, ``[...]``), else taken as a string (``broker.lan``).

Relative paths: ``journal.path`` and ``recognition.gallery`` are relative to ``device.state_dir``; every other
path is relative to the folder holding the config file.

The sections are declared with edge_mfr/schema.py (typed fields, bounds, validators, every problem reported at
once): it takes the lenient spellings TOML and JSON values need (``"8883"`` for a port, ``123`` for an id),
never a bool for a number, and never ``inf`` or ``nan`` (an infinite unlock or watchdog time would never end).

Why one file: it is one section tree (sections reference each other's types and validators) and the
loader that walks it; split, a reader could no longer see every key and its default in one place, which is
what `config check` and deploy/config.example.toml mirror.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
import socket
import stat
import tomllib
import types
import typing
from collections.abc import Mapping
from datetime import datetime, time
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edge_mfr.errors import ConfigError
from edge_mfr.identity.classifier import Thresholds
from edge_mfr.paths import state_dir as default_state_dir
from edge_mfr.schema import After, Plain, Section, ValidationError, field, field_validator, section_validator
from edge_mfr.vision.embedder import DEFAULT_EMBEDDERS

DEFAULT_CONFIG_PATH = Path("/etc/edge-mfr/config.toml")
ENV_PREFIX = "EDGE_MFR__"

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_PERSON_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")  # same rule as identity/gallery.py
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SECRET_WORDS = ("password", "secret", "key")
MAX_UNLOCK_CAP_S = 300.0  # no unlock, local or remote, may last longer than 5 minutes
MAX_COMMAND_WINDOW_S = 120.0  # a signed command older than this is a replay, whatever NTP says

# Raspberry Pi 40-pin header: physical pin -> BCM GPIO number (the other pins are power and ground).
_BOARD_TO_BCM = {
    3: 2, 5: 3, 7: 4, 8: 14, 10: 15, 11: 17, 12: 18, 13: 27, 15: 22, 16: 23, 18: 24, 19: 10, 21: 9,
    22: 25, 23: 11, 24: 8, 26: 7, 27: 0, 28: 1, 29: 5, 31: 6, 32: 12, 33: 13, 35: 19, 36: 16, 37: 26,
    38: 20, 40: 21,
}


# ---------------------------------------------------------------------------------------------- value types


def pin_number(pin: int | str) -> int:
    """BCM GPIO number of a pin given as gpiozero accepts it: 17, "GPIO17", "BCM17", "BOARD11", "J8:11"."""
    if isinstance(pin, bool) or not isinstance(pin, int | str):
        raise ValueError(f"a pin is a BCM number or a gpiozero pin name, not {type(pin).__name__}")
    if isinstance(pin, int):
        bcm = pin
    else:
        text = pin.strip().upper()
        if m := re.fullmatch(r"(?:GPIO|BCM)(\d{1,2})", text):
            bcm = int(m.group(1))
        elif m := re.fullmatch(r"(?:BOARD|J8:)(\d{1,2})", text):
            physical = int(m.group(1))
            if physical not in _BOARD_TO_BCM:
                raise ValueError(f"header pin {physical} is power or ground, not a GPIO")
            bcm = _BOARD_TO_BCM[physical]
        elif text.isdigit():
            bcm = int(text)
        else:
            raise ValueError(f"{pin!r} is not a pin: use a BCM number (17) or a name like 'GPIO17'")
    if not 0 <= bcm <= 27:
        raise ValueError(f"GPIO{bcm} does not exist on the 40-pin header (GPIO0-GPIO27)")
    return bcm


def _check_pin(value: Any) -> int | str:
    pin_number(value)
    return value


def _check_id(value: str) -> str:
    if not _ID_RE.fullmatch(value):
        raise ValueError(f"{value!r} must be 1-64 lowercase letters, digits, '-' or '_' (for MQTT topics)")
    return value


def _check_topic(value: str) -> str:
    if not value or value.startswith("/") or value.endswith("/") or any(c in value for c in "+#\0"):
        raise ValueError(f"{value!r} is not a valid MQTT topic prefix (no '+', '#', leading or trailing '/')")
    return value


def _resolve_path(value: Path, context: Mapping[str, Any]) -> Path:
    """Relative paths are taken relative to the config file's folder (``context['config_dir']``)."""
    value = value.expanduser()
    base = context.get("config_dir")
    if not value.is_absolute() and base is not None:
        value = Path(base) / value
    return value


Pin = Annotated[int | str, Plain(_check_pin)]
Ident = Annotated[str, After(_check_id)]
TopicPrefix = Annotated[str, After(_check_topic)]
ConfigPath = Annotated[Path, After(_resolve_path, context=True)]


def default_device_id() -> str:
    """The hostname, lower-cased, with what MQTT topics and Home Assistant ids dislike replaced by '-'."""
    name = re.sub(r"[^a-z0-9_-]+", "-", socket.gethostname().split(".")[0].lower()).strip("-_")
    return name[:64] or "edge-mfr"


def _parse_hhmm(text: str) -> time:
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", text.strip())
    if m and int(m.group(1)) == 24 and m.group(2) == "00":
        return time.max
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ValueError(f"{text!r} is not a time of day as HH:MM (00:00-24:00)")
    return time(int(m.group(1)), int(m.group(2)))


def parse_days(text: str | list[str]) -> frozenset[int]:
    """'mon-fri', 'sat,sun', 'mon,wed-fri', 'daily' -> weekday numbers (Monday = 0); ranges may wrap."""
    text = (",".join(text) if isinstance(text, list) else text).strip().lower()
    if text in ("daily", "all", "*"):
        return frozenset(range(7))
    days: set[int] = set()
    for part in text.split(","):
        ends = [p.strip()[:3] for p in part.split("-")]
        if len(ends) > 2 or any(e not in _DAYS for e in ends):
            raise ValueError(f"{text!r} is not a list of days like 'mon-fri' or 'sat,sun' "
                             f"(days: {', '.join(_DAYS)})")
        a, b = _DAYS.index(ends[0]), _DAYS.index(ends[-1])
        days.update(((a + i) % 7) for i in range((b - a) % 7 + 1))
    return frozenset(days)


# ------------------------------------------------------------------------------------------------- sections


class DeviceConfig(Section):
    id: Ident = field(
        default_factory=default_device_id, description="name of this device in MQTT topics and Home "
                                                       "Assistant (default: the hostname)")
    state_dir: ConfigPath = field(
        default_factory=default_state_dir, description="folder for the gallery and journal (default: "
                                                       "$EDGE_MFR_STATE_DIR, $STATE_DIRECTORY, "
                                                       "/var/lib/edge-mfr when writable, else XDG data)")
    gpio: Literal["auto", "mock", "real"] = field(
        "auto", description="GPIO for the doors: 'auto' (real on a Raspberry Pi, simulated elsewhere), 'mock' "
                            "(always simulated: no relay switches), 'real' (required; an error without it)")


class CameraConfig(Section):
    source: str = field(
        "picamera2", min_length=1, description="'picamera2', a V4L2 device '/dev/videoN', a stream URL "
                                               "(rtsp://, http://), a video file, a folder of images, or "
                                               "'synthetic' (generated test frames)")
    width: int = field(640, ge=64, le=4096, description="capture width in pixels")
    height: int = field(480, ge=64, le=4096, description="capture height in pixels")
    fps: float = field(15.0, gt=0, le=120, description="frames per second requested from the camera")
    lores_width: int = field(320, ge=64, le=4096,
                             description="picamera2 low-resolution stream width used for detection")
    lores_height: int = field(240, ge=64, le=4096,
                              description="picamera2 low-resolution stream height used for detection")
    retry_min_seconds: float = field(1.0, gt=0, le=3600, description="first wait before reopening a failed camera")
    retry_max_seconds: float = field(
        30.0, gt=0, le=3600, description="longest wait between reopen attempts (back-off cap)")
    door_zone: tuple[float, float, float, float] = field(
        (0.1, 0.0, 0.9, 1.0), description="where a person at the door is seen: [left, top, right, bottom] as "
                                          "fractions of the frame; only faces centred in it can open the door "
                                          "or count towards a lockout (passers-by at the edges do not)")
    door_zone_min_face: float = field(
        0.18, ge=0.0, le=1.0, description="the smallest face, as a fraction of the frame width, of someone "
                                          "standing at the door (0.18: about 0.8 m from a 60-degree camera); "
                                          "smaller, farther faces are shown but never count")

    @field_validator("door_zone")
    @classmethod
    def _zone(cls, value: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        left, top, right, bottom = value
        if not (0.0 <= left < right <= 1.0 and 0.0 <= top < bottom <= 1.0):
            raise ValueError(f"door_zone {list(value)} must be [left, top, right, bottom] with "
                             "0 <= left < right <= 1 and 0 <= top < bottom <= 1")
        return value

    def in_door_zone(self, box: tuple[float, ...] | list[float], frame_width: int, frame_height: int) -> bool:
        """True when a face box (frame pixels) is centred in the door zone and large enough to be at the door."""
        x1, y1, x2, y2 = (float(v) for v in box[:4])
        left, top, right, bottom = self.door_zone
        cx, cy = (x1 + x2) / 2 / frame_width, (y1 + y2) / 2 / frame_height
        return (left <= cx <= right and top <= cy <= bottom
                and (x2 - x1) >= self.door_zone_min_face * frame_width)

    @property
    def kind(self) -> str:
        """Which backend the source names: picamera2, synthetic, v4l2, url or path."""
        if self.source in ("picamera2", "synthetic"):
            return self.source
        if re.fullmatch(r"/dev/video\d+", self.source):
            return "v4l2"
        if re.match(r"^[a-z][a-z0-9+.-]*://", self.source):
            return "url"
        return "path"

    @section_validator
    def _consistent(self) -> None:
        if self.lores_width > self.width or self.lores_height > self.height:
            raise ValueError(f"lores size {self.lores_width}x{self.lores_height} exceeds the capture size "
                             f"{self.width}x{self.height}")
        if self.retry_min_seconds > self.retry_max_seconds:
            raise ValueError("retry_min_seconds must not exceed retry_max_seconds")


class ModelsConfig(Section):
    dir: ConfigPath | None = field(None, description="folder with the TFLite models and manifest.json "
                                                     "(default: $EDGE_MFR_MODELS or the bundled models/)")
    detector: Literal["blazeface", "blazeface-full", "mtcnn"] = field(
        "blazeface", description="face detector: blazeface (short range, door), blazeface-full (kiosk), "
                                 "mtcnn")
    threads: int = field(2, ge=1, le=16, description="TFLite interpreter threads per model")


class RecognitionConfig(Section):
    embedders: list[str] = field(
        default_factory=lambda: list(DEFAULT_EMBEDDERS), min_length=1, max_length=4,
        description="embedding models (file names in models/manifest.json), FaceNet first; several are fused "
                    "(models/fusion.json must have been fitted for exactly this set, `make fusion`); the gallery "
                    "must be enrolled or re-embedded with the same set")
    thresholds: Thresholds | None = field(
        None, description="open-set operating point on the (fused) score; default: the one calibrated for the "
                          "embedder set (FaceNet alone 0.66 / 0.72 / 0.05; fused: models/fusion.json)")
    vote_n: int = field(
        3, ge=1, description="a track is identified when vote_n of its last vote_m frames agree")
    vote_m: int = field(5, ge=1, description="length of the per-track voting window in frames")
    reembed_every: int = field(
        5, ge=1, description="re-embed a stable track only every K frames (reuse the embedding between)")
    min_face_px: int = field(64, ge=16, le=1024, description="ignore faces narrower than this many pixels")
    gallery: Path | None = field(None, description="gallery file (default: <state_dir>/gallery.npz; "
                                                   "relative paths are under state_dir)")

    @section_validator
    def _votes(self) -> None:
        if self.vote_n > self.vote_m:
            raise ValueError(f"vote_n ({self.vote_n}) must not exceed vote_m ({self.vote_m})")


class DoorConfig(Section):
    name: Ident = field("front", description="door name used in events, MQTT topics and commands")
    relay_pin: Pin = field(
        17, description="lock relay output: BCM number or gpiozero name ('GPIO17', 'BOARD11')")
    active_high: bool = field(
        True, description="true when the relay unlocks on a high output; many relay boards are active-low: "
                          "check, or the door is open while idle")
    unlock_seconds: float = field(5.0, gt=0, le=MAX_UNLOCK_CAP_S,
                                  description="how long a granted access keeps the door unlocked")
    max_unlock_seconds: float = field(
        15.0, gt=0, le=MAX_UNLOCK_CAP_S,
        description="upper bound for any unlock, including remote (MQTT/kiosk) ones")
    contact_pin: Pin | None = field(
        None, description="door contact input (closed = door shut); none if not wired")
    contact_closed_is_high: bool = field(
        False, description="true when the contact input reads high with the door shut (default: a switch to "
                           "ground with the pull-up on, so shut reads low)")
    held_open_seconds: float = field(
        30.0, gt=0, le=86400, description="raise a held-open alarm after the door is open this long")
    exit_button_pin: Pin | None = field(None, description="request-to-exit button input; none if not wired")
    green_led_pin: Pin | None = field(
        None, description="green LED output (access granted); none if not wired")
    red_led_pin: Pin | None = field(
        None, description="red LED output (access denied, lockout); none if not wired")
    buzzer_pin: Pin | None = field(
        None, description="buzzer output (denied, held-open alarm); none if not wired")
    liveness: Literal["blink", "off"] = field(
        "off", description="'blink': unlock only after the recognised person blinked within "
                           "liveness_window_seconds (stops printed photos and phones showing a still, not video "
                           "replays); 'off': no liveness check")
    liveness_window_seconds: float = field(
        4.0, gt=0, le=30, description="how recent the blink must be, and how long a recognised face may wait "
                                      "before its refusal is journaled")

    def pins(self) -> dict[str, int | str]:
        """Every wired pin of this door, by field name."""
        names = ("relay_pin", "contact_pin", "exit_button_pin", "green_led_pin", "red_led_pin", "buzzer_pin")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    @section_validator
    def _durations(self) -> None:
        if self.unlock_seconds > self.max_unlock_seconds:
            raise ValueError(f"unlock_seconds ({self.unlock_seconds:g}) must not exceed max_unlock_seconds "
                             f"({self.max_unlock_seconds:g})")


class Window(Section):
    """One weekly time window: on these days, from..to local time (to < from crosses midnight)."""

    days: str | list[str] = field(
        "daily", description="days such as 'mon-fri', 'sat,sun', 'mon,wed-fri', ['sat', 'sun'] or 'daily'")
    start: str = field("00:00", alias="from", description="start of the window, HH:MM local time")
    end: str = field(
        "24:00", alias="to", description="end of the window, HH:MM local time (24:00 = midnight)")

    @field_validator("days")
    @classmethod
    def _days(cls, value: str | list[str]) -> str | list[str]:
        parse_days(value)
        return value

    @field_validator("start", "end")
    @classmethod
    def _time(cls, value: str) -> str:
        _parse_hhmm(value)
        return value

    @section_validator
    def _not_empty(self) -> None:
        if _parse_hhmm(self.start) == _parse_hhmm(self.end):
            raise ValueError(f"window from {self.start} to {self.end} is empty (00:00 to 24:00 is all day)")
        if _parse_hhmm(self.start) == time.max:
            raise ValueError("a window cannot start at 24:00")

    def contains(self, when: datetime) -> bool:
        """Whether local time ``when`` is in this window (one crossing midnight belongs to its start day)."""
        days, now = parse_days(self.days), when.time()
        start, end = _parse_hhmm(self.start), _parse_hhmm(self.end)
        if start < end:
            return when.weekday() in days and start <= now < end
        return (when.weekday() in days and now >= start) or ((when.weekday() - 1) % 7 in days and now < end)

    def describe(self) -> str:
        """'mon-fri 08:00-18:00', for the reasons the policy gives."""
        days = self.days if isinstance(self.days, str) else ",".join(self.days)
        return f"{days} {self.start}-{self.end}"


class PolicyConfig(Section):
    person_cooldown_seconds: float = field(
        10.0, ge=0, le=86400, description="after a grant or denial, ignore the same person at the same door this long")
    door_cooldown_seconds: float = field(3.0, ge=0, le=86400, description="minimum time between two unlocks of a door")
    once_per_track: bool = field(
        True, description="a track (one stay in front of the camera) unlocks once; stepping away and back "
                          "again, after the person cooldown, unlocks again")
    lockout_after_unknowns: int = field(
        5, ge=0, description="lock out a door after this many unknown faces within lockout_window_seconds (0"
                             " = never)")
    lockout_window_seconds: float = field(60.0, gt=0, le=86400, description="window in which unknown faces are counted")
    lockout_seconds: float = field(300.0, ge=0, le=86400, description="how long a lockout refuses everyone")
    schedules: dict[str, list[Window]] = field(
        default_factory=dict,
        description="per-person weekly access windows, e.g. alice = [{days = 'mon-fri', from = '08:00', to = "
                    "'18:00'}]; people without an entry may enter at any time")
    timezone: str | None = field(
        None, description="IANA time zone the schedules are in, e.g. 'Europe/Berlin' (default: the system's)")
    announce_masked: bool = field(
        True, description="say in events, MQTT and the kiosk whether a face wore a mask")

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value!r} (use a name like 'Europe/Berlin')") from None
        return value

    @field_validator("schedules")
    @classmethod
    def _schedules(cls, value: dict[str, list[Window]]) -> dict[str, list[Window]]:
        for person, windows in value.items():
            if not _PERSON_ID_RE.fullmatch(person):
                raise ValueError(f"{person!r} is not a person id (see `edge-mfr people list`)")
            if not windows:
                raise ValueError(f"schedule of {person!r} has no window and would never admit; remove it or "
                                 "use `edge-mfr people deny`")
        return value

    def allows(self, person_id: str, when: datetime) -> bool:
        """Whether the schedule lets ``person_id`` in at local time ``when`` (no schedule: always)."""
        windows = self.schedules.get(person_id)
        return windows is None or any(w.contains(when) for w in windows)


class JournalConfig(Section):
    path: Path | None = field(None, description="SQLite journal file (default: <state_dir>/journal.db; "
                                                "relative paths are under state_dir)")
    max_rows: int = field(
        100_000, ge=100, description="keep at most this many events; the oldest are dropped")
    keep_days: float = field(90.0, gt=0, le=36500, description="drop events older than this many days")
    outbox_max_messages: int = field(
        10_000, ge=10, description="MQTT messages kept while the broker is unreachable; the oldest are "
                                   "dropped beyond this")
    outbox_max_age_hours: float = field(168.0, gt=0, le=87600, description="drop unsent MQTT messages older than this")


class MqttConfig(Section):
    enabled: bool = field(False, description="publish events and state, accept commands over MQTT")
    host: str = field("localhost", min_length=1, description="broker host name or address")
    port: int = field(1883, ge=1, le=65535, description="broker port (usually 1883, or 8883 with TLS)")
    tls: bool = field(False, description="connect with TLS")
    tls_ca: ConfigPath | None = field(None, description="CA certificate file (default: the system CAs)")
    tls_cert: ConfigPath | None = field(None, description="client certificate file for mutual TLS")
    tls_key: ConfigPath | None = field(None, description="client private key file for mutual TLS")
    username: str | None = field(None, description="broker user name")
    password: str | None = field(
        None, description="broker password; prefer password_file so this file can stay world-readable")
    password_file: ConfigPath | None = field(None, description="file holding the broker password")
    client_id: str | None = field(None, description="MQTT client id (default: edge-mfr-<device id>)")
    keepalive_seconds: int = field(30, ge=5, le=3600, description="MQTT keep-alive interval")
    topic_prefix: TopicPrefix | None = field(None, description="root of this device's topics "
                                                               "(default: edge-mfr/<device id>)")
    discovery_prefix: TopicPrefix = field("homeassistant", description="Home Assistant MQTT discovery prefix")
    command_secret_file: ConfigPath | None = field(
        None, description="file holding the shared secret that signs unlock commands; commands are refused "
                          "without it")
    snapshots: bool = field(
        False, description="publish a JPEG of the face with each access decision on <prefix>/snapshot/<kind> "
                           "(privacy: off by default)")
    protocol: Literal["3.1.1", "5"] = field("3.1.1", description="MQTT protocol version: '3.1.1' or '5'")
    discovery: bool = field(
        True, description="publish Home Assistant discovery configs (lock, door, last person, fps, people)")
    allow_unsigned_ha_unlock: bool = field(
        False, description="obey a plain UNLOCK from Home Assistant's lock entity (false: only signed unlock "
                           "commands open the door; LOCK is always obeyed)")
    max_command_bytes: int = field(
        4096, ge=256, le=1024 * 1024, description="largest accepted command message in bytes (except enroll)")
    max_enroll_bytes: int = field(
        2 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024,
        description="largest accepted enroll command in bytes (base64 photos; the broker's max_packet_size "
                    "must allow it too)")
    command_window_seconds: float = field(
        30.0, gt=0, le=MAX_COMMAND_WINDOW_S,
        description="a signed command's ts may differ from the device clock by at most this many seconds (replay "
                    "window; keep NTP running)")

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol(cls, value: Any) -> Any:
        # `protocol = 5` in TOML, or EDGE_MFR__MQTT__PROTOCOL=5 (parsed as JSON), is a number: accept it
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @section_validator
    def _consistent(self) -> None:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if not self.tls and any(p is not None for p in (self.tls_ca, self.tls_cert, self.tls_key)):
            raise ValueError("TLS files are set but tls = false: set tls = true (or remove them)")


class KioskConfig(Section):
    enabled: bool = field(False, description="serve the kiosk web view (live video, events, people)")
    bind: str = field("127.0.0.1", description="address to listen on; keep 127.0.0.1 unless admin access is "
                                               "password-protected")
    port: int = field(8080, ge=1, le=65535, description="TCP port of the kiosk web view")
    admin_password_file: ConfigPath | None = field(None, description="file holding the admin password; admin "
                                                                     "pages are disabled without it")
    stream_fps: float = field(5.0, gt=0, le=30, description="most frames per second sent to each live viewer "
                                                         "(each one is drawn and JPEG-encoded)")
    stream_width: int = field(640, ge=160, le=3840, description="live view width in pixels; larger frames are "
                                                               "scaled down before encoding")
    max_upload_mb: float = field(50.0, gt=0, le=1024, description="largest enrollment upload (photos or a video, "
                                                                 "all files together) in MiB")

    @field_validator("bind")
    @classmethod
    def _bind(cls, value: str) -> str:
        if value != "localhost":
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ValueError(f"{value!r} is not an IP address (e.g. 127.0.0.1, 0.0.0.0, ::)") from None
        return value


class FleetConfig(Section):
    enabled: bool = field(
        False, description="follow a fleet: apply signed gallery bundles published on the MQTT broker (uses the "
                           "[mqtt] broker settings; the fleet then owns this door's gallery)")
    id: TopicPrefix = field("site", description="fleet name; bundles for another fleet are refused")
    public_keys: list[ConfigPath] = field(
        default_factory=list, description="files with the fleet's public keys (fleet.pub from `edge-mfr fleet "
                                          "keygen`); only bundles signed by one of them are applied")
    topic_root: TopicPrefix | None = field(None, description="root of the fleet topics (default: "
                                                             "edge-mfr/fleet/<id>)")
    chunk_kib: int = field(128, ge=1, le=65536, description="publisher: bundle chunk size in KiB (keep below "
                                                            "the broker's message size limit)")

    @section_validator
    def _keys(self) -> None:
        if self.enabled and not self.public_keys:
            raise ValueError("fleet.enabled needs at least one file in fleet.public_keys")
        if self.topic_root is None:
            self.topic_root = f"edge-mfr/fleet/{self.id}"


class Config(Section):
    """The whole appliance configuration (see deploy/config.example.toml)."""

    watchdog_seconds: float = field(
        10.0, ge=0, le=600, description="the door relocks, and systemd restarts the service, when the frame loop "
                                        "stalls this long (match WatchdogSec; below every max_unlock_seconds; "
                                        "0 disables)")
    device: DeviceConfig = field(default_factory=DeviceConfig, description="identity and state folder")
    camera: CameraConfig = field(default_factory=CameraConfig, description="frame source")
    models: ModelsConfig = field(default_factory=ModelsConfig, description="detector and model files")
    recognition: RecognitionConfig = field(default_factory=RecognitionConfig,
                                           description="identification thresholds, voting and gallery")
    doors: list[DoorConfig] = field(default_factory=lambda: [DoorConfig()],
                                    description="doors this device controls ([[doors]] tables)")
    policy: PolicyConfig = field(
        default_factory=PolicyConfig, description="who may enter, when, and lockouts")
    journal: JournalConfig = field(default_factory=JournalConfig, description="audit log and MQTT outbox")
    mqtt: MqttConfig = field(default_factory=MqttConfig, description="MQTT broker, topics and Home Assistant")
    kiosk: KioskConfig = field(default_factory=KioskConfig, description="local web view")
    fleet: FleetConfig = field(default_factory=FleetConfig, description="gallery shared by many doors over MQTT")

    @field_validator("doors")
    @classmethod
    def _doors(cls, doors: list[DoorConfig]) -> list[DoorConfig]:
        if not doors:
            raise ValueError("at least one [[doors]] table is needed")
        names: dict[str, int] = {}
        owners: dict[int, str] = {}
        for i, door in enumerate(doors):
            if door.name in names:
                raise ValueError(f"doors[{i}] and doors[{names[door.name]}] are both named {door.name!r}")
            names[door.name] = i
            for key, pin in door.pins().items():
                bcm, here = pin_number(pin), f"doors[{i}].{key}"
                if bcm in owners:
                    raise ValueError(f"{here} uses GPIO{bcm}, already used by {owners[bcm]}")
                owners[bcm] = here
        return doors

    @section_validator
    def _watchdog_before_unlock_cap(self) -> None:
        """A watchdog no shorter than the unlock cap never relocks anything: the cap always ends it first."""
        if self.watchdog_seconds:
            for i, door in enumerate(self.doors):
                if self.watchdog_seconds >= door.max_unlock_seconds:
                    raise ValueError(
                        f"watchdog_seconds ({self.watchdog_seconds:g}) must be below doors[{i}].max_unlock_seconds "
                        f"({door.max_unlock_seconds:g}), or a stalled frame loop could never relock the door "
                        "before the unlock cap does")

    @section_validator
    def _resolve(self) -> None:
        """Fill the defaults that depend on other sections, so every consumer sees concrete values."""
        state = self.device.state_dir
        self.journal.path = state / (self.journal.path or "journal.db")
        self.recognition.gallery = state / (self.recognition.gallery or "gallery.npz")
        if self.mqtt.topic_prefix is None:
            self.mqtt.topic_prefix = f"edge-mfr/{self.device.id}"
        if self.mqtt.client_id is None:
            self.mqtt.client_id = f"edge-mfr-{self.device.id}"
        if self.fleet.enabled and not self.mqtt.enabled:
            raise ValueError("fleet.enabled needs [mqtt] enabled = true (bundles arrive over the broker)")

    def door(self, name: str) -> DoorConfig:
        for door in self.doors:
            if door.name == name:
                return door
        raise ConfigError(f"no door named {name!r} (doors: {', '.join(d.name for d in self.doors)})")


# -------------------------------------------------------------------------------------------------- loading


def _fail(problems: list[str]) -> ConfigError:
    err = ConfigError("\n".join(problems))
    err.problems = problems  # type: ignore[attr-defined]
    return err


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _nested_model(annotation: Any) -> type[Section] | None:
    """The section class inside an annotation such as ``list[DoorConfig]`` or ``dict[str, list[Window]]``."""
    if isinstance(annotation, type) and issubclass(annotation, Section):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, list, dict, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _nested_model(arg)
            if found is not None:
                return found
    return None


def _keys(model: type[Section]) -> dict[str, str]:
    """Key as written in TOML -> field name."""
    return {(f.alias or name): name for name, f in model.model_fields.items()}


def _model_at(loc: tuple[Any, ...]) -> type[Section]:
    model: type[Section] = Config
    for part in loc:
        keys = _keys(model)
        if isinstance(part, str) and part in keys:
            model = _nested_model(model.model_fields[keys[part]].annotation) or model
    return model


def _table_name(loc: tuple[Any, ...]) -> str:
    if not loc:
        return "at the top level"
    if loc[0] == "doors" and len(loc) >= 2:
        if isinstance(loc[1], int):
            return f"in [[doors]] #{loc[1] + 1} ({_dotted(loc)})"
        return f"in {_dotted(loc)}"
    return f"in [{_dotted(loc)}]"


def _describe(error: Mapping[str, Any], source: str, env_names: Mapping[tuple[Any, ...], str]) -> str:
    loc = tuple(error["loc"])
    prefixes = [loc[:n] for n in range(len(loc), 0, -1) if loc[:n] in env_names]
    origin = f" (from ${env_names[prefixes[0]]})" if prefixes else ""
    if error["type"] == "extra_forbidden":
        key, parent = loc[-1], loc[:-1]
        valid = sorted(_keys(_model_at(parent)))
        close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(valid)}"
        return f"{source}: unknown key '{key}' {_table_name(parent)}{origin}; {hint}"
    msg = str(error["msg"])
    value = error.get("input")
    secret = any(w in str(p) for p in loc for w in _SECRET_WORDS)
    own_message = error["type"] in ("missing", "value_error")  # ours quote the value already
    if not secret and not own_message and isinstance(value, str | int | float | bool):
        msg += f" (got {value!r})"
    where = f"{_dotted(loc)}: " if loc else ""
    return f"{source}: {where}{msg}{origin}"


def _parse_env_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> dict[tuple[Any, ...], str]:
    """Merge ``EDGE_MFR__A__B=value`` variables into ``data`` in place; returns the location each one set."""
    applied: dict[tuple[Any, ...], str] = {}
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX):].split("__")]
        if not all(parts):
            raise _fail([f"${name}: empty part in the variable name (use EDGE_MFR__SECTION__KEY)"])
        node: Any = data
        loc: list[Any] = []
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    where = _dotted(tuple(loc))
                    raise _fail([f"${name}: {where} has {len(node)} item(s); {part!r} is not an index"])
                key: Any = int(part)
            elif isinstance(node, dict):
                key = part
                if not last and key not in node:
                    node[key] = [DoorConfig().model_dump(by_alias=True)] if key == "doors" else {}
            else:
                raise _fail([f"${name}: {_dotted(tuple(loc))} is not a table"])
            loc.append(key)
            if last:
                node[key] = _parse_env_value(environ[name])
            else:
                node = node[key]
        applied[tuple(loc)] = name
    return applied


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise _fail([f"{path}: config file not found"]) from None
    except IsADirectoryError:
        raise _fail([f"{path}: is a folder, not a config file"]) from None
    except PermissionError:
        raise _fail([f"{path}: permission denied (run as the edge-mfr user or with sudo)"]) from None
    except UnicodeDecodeError as exc:
        raise _fail([f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise _fail([f"{path}: TOML syntax error: {exc}"]) from None


def load_config(path: Path | str | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate the config; ``path=None`` uses /etc/edge-mfr/config.toml if present, else defaults.

    Raises ConfigError whose message holds one line per problem (file, dotted key, why).
    """
    environ = os.environ if environ is None else environ
    if path is None:
        try:
            file = DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.is_file() else None
        except OSError:  # /etc/edge-mfr unreadable: read it anyway, for the clear error
            file = DEFAULT_CONFIG_PATH
    else:
        file = Path(path)
    data = read_toml(file) if file is not None else {}
    source = str(file) if file is not None else "config"
    env_names = apply_env(data, environ)
    context = {"config_dir": file.resolve().parent} if file is not None else {}
    try:
        return Config.model_validate(data, context=context)
    except ValidationError as exc:
        raise _fail([_describe(e, source, env_names) for e in exc.errors()]) from None


def config_warnings(cfg: Config, path: Path | None = None) -> list[str]:
    """Valid but risky or incomplete settings, each a line starting with 'warning: '."""
    out = []
    files = []
    if cfg.mqtt.enabled:
        files += [("mqtt.password_file", cfg.mqtt.password_file), ("mqtt.command_secret_file",
                                                                   cfg.mqtt.command_secret_file),
                  ("mqtt.tls_ca", cfg.mqtt.tls_ca), ("mqtt.tls_cert", cfg.mqtt.tls_cert),
                  ("mqtt.tls_key", cfg.mqtt.tls_key)]
        if not cfg.mqtt.tls and cfg.mqtt.host not in ("localhost", "127.0.0.1", "::1"):
            out.append(f"warning: mqtt.tls is off for the remote broker {cfg.mqtt.host!r}: credentials and "
                       "events travel in clear text")
    if cfg.kiosk.enabled:
        files.append(("kiosk.admin_password_file", cfg.kiosk.admin_password_file))
        loopback = cfg.kiosk.bind == "localhost" or ipaddress.ip_address(cfg.kiosk.bind).is_loopback
        if not loopback and cfg.kiosk.admin_password_file is None:
            out.append(f"warning: kiosk listens on {cfg.kiosk.bind} without kiosk.admin_password_file")
    for key, file in files:
        if file is not None and not file.is_file():
            out.append(f"warning: {key}: {file} does not exist")
    if path is not None and cfg.mqtt.password is not None:
        try:
            if os.stat(path).st_mode & (stat.S_IRGRP | stat.S_IROTH):
                out.append(f"warning: {path} holds mqtt.password but is readable by others: chmod 600 it or "
                           "use mqtt.password_file")
        except OSError:
            pass
    return out
