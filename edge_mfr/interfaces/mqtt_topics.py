"""What the MQTT client puts on the wire: resolved settings, every topic of a device, event and snapshot
payloads and Home Assistant discovery configs. Pure data and functions: no network here, so they are easy to
test and to read next to the topic table in :mod:`edge_mfr.interfaces.mqtt`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edge_mfr import __version__
from edge_mfr.errors import ConfigError

ONLINE, OFFLINE = "online", "offline"
SCHEMA = 1


@dataclass
class MqttSettings:
    """Everything the client needs, resolved (secrets read from their files). See :meth:`from_config`."""

    device_id: str
    host: str = "localhost"
    port: int = 1883
    tls: bool = False
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    username: str | None = None
    password: str | None = None
    client_id: str | None = None
    keepalive_seconds: int = 30
    topic_prefix: str | None = None
    discovery_prefix: str = "homeassistant"
    discovery: bool = True
    snapshots: bool = False
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    command_secret: bytes | None = None
    allow_unsigned_ha_unlock: bool = False
    max_command_bytes: int = 4096
    max_enroll_bytes: int = 2 * 1024 * 1024
    command_window_seconds: float = 30.0
    reconnect_min_seconds: int = 1
    reconnect_max_seconds: int = 60

    def __post_init__(self) -> None:
        if self.topic_prefix is None:
            self.topic_prefix = f"edge-mfr/{self.device_id}"
        if self.client_id is None:
            self.client_id = f"edge-mfr-{self.device_id}"
        if self.protocol not in ("3.1.1", "5"):
            raise ConfigError(f"mqtt protocol must be '3.1.1' or '5', not {self.protocol!r}")

    @classmethod
    def from_config(cls, cfg: Any) -> MqttSettings:
        """From a :class:`edge_mfr.config.Config`; reads ``password_file`` and ``command_secret_file``.

        Optional keys not (yet) in ``[mqtt]`` fall back to their defaults: ``protocol``,
        ``allow_unsigned_ha_unlock``, ``max_command_bytes``, ``max_enroll_bytes``,
        ``command_window_seconds``, ``discovery``.
        """
        from edge_mfr.interfaces.mqtt_commands import read_secret

        m = cfg.mqtt
        password = m.password
        if m.password_file is not None:
            try:
                password = Path(m.password_file).read_text(encoding="utf-8").rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"mqtt.password_file: {m.password_file}: cannot read "
                                  f"({getattr(exc, 'strerror', None) or exc})") from None
        secret = read_secret(m.command_secret_file) if m.command_secret_file is not None else None
        extra = {k: getattr(m, k) for k in ("protocol", "allow_unsigned_ha_unlock", "max_command_bytes",
                                            "max_enroll_bytes", "command_window_seconds", "discovery")
                 if hasattr(m, k)}
        return cls(device_id=cfg.device.id, host=m.host, port=m.port, tls=m.tls, tls_ca=m.tls_ca,
                   tls_cert=m.tls_cert, tls_key=m.tls_key, username=m.username, password=password,
                   client_id=m.client_id, keepalive_seconds=m.keepalive_seconds, topic_prefix=m.topic_prefix,
                   discovery_prefix=m.discovery_prefix, snapshots=m.snapshots, command_secret=secret, **extra)

    def command_limits(self) -> Any:
        from edge_mfr.interfaces.mqtt_commands import CommandLimits

        return CommandLimits(max_bytes=self.max_command_bytes, max_enroll_bytes=self.max_enroll_bytes,
                             window_s=self.command_window_seconds,
                             allow_unsigned_ha_unlock=self.allow_unsigned_ha_unlock)


@dataclass(frozen=True)
class DoorInfo:
    """What discovery needs to know of a door."""

    name: str
    has_contact: bool = False


class Topics:
    """Every topic of one device, in one place."""

    def __init__(self, prefix: str, discovery_prefix: str = "homeassistant"):
        self.prefix = prefix
        self.discovery_prefix = discovery_prefix
        self.availability = f"{prefix}/availability"
        self.commands = f"{prefix}/command/+"
        self.result = f"{prefix}/command/result"
        self.ha_lock_commands = f"{prefix}/ha/lock/+/set"
        self.ha_status = f"{discovery_prefix}/status"

    def event(self, kind: str) -> str:
        return f"{self.prefix}/event/{kind}"

    def snapshot(self, kind: str) -> str:
        return f"{self.prefix}/snapshot/{kind}"

    def state(self, name: str) -> str:
        return f"{self.prefix}/state/{name}"

    def command(self, name: str) -> str:
        return f"{self.prefix}/command/{name}"

    def ha_lock_set(self, door: str) -> str:
        return f"{self.prefix}/ha/lock/{door}/set"

    def discovery(self, component: str, node_id: str, object_id: str) -> str:
        return f"{self.discovery_prefix}/{component}/{node_id}/{object_id}/config"


# --------------------------------------------------------------------------------------------- payloads


def event_payload(event: Mapping[str, Any], device_id: str) -> dict[str, Any]:
    """The JSON of ``<prefix>/event/<kind>`` for a journal event (as ``Journal.record`` returns it).

    ``event_type`` repeats ``kind`` for Home Assistant's MQTT event entity.
    """
    body = dict(event.get("payload") or {})
    body.update(schema=SCHEMA, event_id=event["event_id"], ts=event["ts"], kind=event["kind"],
                event_type=event["kind"], device=device_id, door=event.get("door"),
                person_id=event.get("person_id"))
    return body


def encode_snapshot(rgb: Any, quality: int = 80) -> bytes:
    """An RGB uint8 image as JPEG bytes for ``<prefix>/snapshot/<kind>``."""
    import cv2

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("cannot encode the snapshot as JPEG")
    return buf.tobytes()


def discovery_configs(settings: MqttSettings, doors: Iterable[DoorInfo],
                      sw_version: str = __version__) -> list[tuple[str, dict[str, Any]]]:
    """(config topic, config) for every Home Assistant entity of this device."""
    t = Topics(settings.topic_prefix or "", settings.discovery_prefix)
    node = settings.device_id
    device = {"identifiers": [f"edge-mfr-{node}"], "name": f"edge-mfr {node}", "manufacturer": "edge-mfr",
              "model": "masked-face door controller", "sw_version": sw_version}
    common = {"availability_topic": t.availability, "payload_available": ONLINE,
              "payload_not_available": OFFLINE, "device": device}
    out: list[tuple[str, dict[str, Any]]] = []

    def add(component: str, object_id: str, config: dict[str, Any]) -> None:
        config = {**config, **common, "unique_id": f"edge-mfr_{node}_{object_id}"}
        out.append((t.discovery(component, node, object_id), config))

    for door in doors:
        # UNLOCK from HA is refused unless allow_unsigned_ha_unlock (see mqtt_commands); LOCK always works.
        add("lock", f"{door.name}_lock", {
            "name": f"{door.name} lock", "state_topic": t.state(f"lock/{door.name}"),
            "command_topic": t.ha_lock_set(door.name), "payload_lock": "LOCK", "payload_unlock": "UNLOCK",
            "state_locked": "LOCKED", "state_unlocked": "UNLOCKED", "optimistic": False, "qos": 1,
            "retain": False})
        if door.has_contact:
            add("binary_sensor", f"{door.name}_contact", {
                "name": f"{door.name} door", "device_class": "door", "state_topic": t.state(f"door/{door.name}"),
                "payload_on": "OPEN", "payload_off": "CLOSED"})
    add("sensor", "last_person", {"name": "Last person", "state_topic": t.state("last_person"),
                                  "value_template": "{{ value_json.name or value_json.person_id }}",
                                  "json_attributes_topic": t.state("last_person"), "icon": "mdi:account"})
    add("sensor", "fps", {"name": "Frame rate", "state_topic": t.state("fps"), "unit_of_measurement": "fps",
                          "state_class": "measurement", "entity_category": "diagnostic"})
    add("sensor", "people_count", {"name": "Enrolled people", "state_topic": t.state("people_count"),
                                   "state_class": "measurement", "icon": "mdi:account-group"})
    # A fleet door publishes the gallery version it runs (edge_mfr/interfaces/fleet); elsewhere it stays unknown.
    add("sensor", "gallery_version", {"name": "Fleet gallery version", "state_topic": t.state("fleet"),
                                      "value_template": "{{ value_json.version }}",
                                      "json_attributes_topic": t.state("fleet"), "icon": "mdi:source-branch",
                                      "entity_category": "diagnostic"})
    add("event", "recognized", {"name": "Recognition", "state_topic": t.event("recognized"),
                                "event_types": ["recognized"], "icon": "mdi:face-recognition"})
    return out
