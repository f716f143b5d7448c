"""The admin host's side of a fleet: turn the local gallery into signed bundles on the broker.

``edge-mfr fleet publish`` compares the admin gallery with what it published last (fingerprints kept in a
small state file) and sends a delta with only the added/changed people and the revoked ids, or a full bundle
when there is no history, after many deltas, or when asked. Versions only grow: the next version is one more
than the larger of the local state and the broker's retained head, so a lost state file cannot make doors
see an old version number again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_mfr.config import Window
from edge_mfr.errors import ConfigError, EdgeMfrError
from edge_mfr.identity.gallery import Gallery
from edge_mfr.interfaces.fleet import bundle as bundle_mod
from edge_mfr.interfaces.fleet import keys as keys_mod
from edge_mfr.interfaces.fleet import payload as payload_mod
from edge_mfr.interfaces.fleet import transport
from edge_mfr.interfaces.fleet.bundle import BundleError, BundleHeader, DoorRule

log = logging.getLogger(__name__)

FULL_EVERY = 32  # deltas after which the next publish is a full bundle (bounds what a new door replays)
ACK_TIMEOUT_S = 60.0


@dataclass
class Published:
    """What the admin host last published (kept next to its gallery)."""

    fleet: str
    version: int = 0
    full_version: int = 0
    live: list[int] = field(default_factory=list)  # versions whose topics are retained on the broker
    chunks: dict[str, int] = field(default_factory=dict)  # version -> chunk count (to clear them later)
    fingerprints: dict[str, str] = field(default_factory=dict)
    rules: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, fleet: str) -> Published:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(fleet)
        except (OSError, ValueError) as exc:
            raise EdgeMfrError(f"{path}: unreadable publish state ({exc})") from None
        if raw.get("fleet") != fleet:
            return cls(fleet)
        return cls(**{k: raw[k] for k in asdict(cls(fleet)) if k in raw})

    def save(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(asdict(self), fh, sort_keys=True)
        os.replace(tmp, path)


def read_rules(path: Path | None) -> dict[str, DoorRule]:
    """Per-person door rules from a TOML file: ``[people.<id>] doors = [...]`` and
    ``[people.<id>.schedules] <door or '*'> = [{days, from, to}, ...]``."""
    if path is None:
        return {}
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the fleet rules ({exc})") from None
    people = raw.get("people", {})
    if set(raw) - {"people"} or not isinstance(people, dict):
        raise ConfigError(f"{path}: expected only [people.<person id>] tables")
    rules = {}
    for pid, r in people.items():
        try:
            rule = DoorRule.from_json(pid, {"doors": r.get("doors"), "schedules": r.get("schedules", {})})
            for windows in rule.schedules.values():
                for w in windows:
                    Window.model_validate(w)
        except (BundleError, ValueError, AttributeError) as exc:
            raise ConfigError(f"{path}: people.{pid}: {exc}") from None
        rules[pid] = rule
    return rules


def plan(gallery: Gallery, rules: dict[str, DoorRule], prev: Published, force_full: bool,
         ) -> tuple[str, list[Any], list[str]]:
    """(kind, people to send, ids to revoke) for the next bundle."""
    now = {p.person_id: payload_mod.person_fingerprint(p) for p in gallery.people}
    unknown = set(rules) - set(now)
    if unknown:
        raise ConfigError(f"fleet rules name people who are not enrolled: {', '.join(sorted(unknown))}")
    rules_json = {pid: r.to_json() for pid, r in rules.items()}
    deltas = len([v for v in prev.live if v > prev.full_version])
    if force_full or prev.version == 0 or deltas >= FULL_EVERY:
        return "full", gallery.people, []
    changed = [p for p in gallery.people if prev.fingerprints.get(p.person_id) != now[p.person_id]
               or prev.rules.get(p.person_id) != rules_json.get(p.person_id)]
    revoked = sorted(set(prev.fingerprints) - set(now))
    return "delta", changed, revoked


def _wait_head(client: Any, root: str, timeout: float = 2.0) -> int:
    """The retained head's version on the broker (0 when none arrives in ``timeout``)."""
    got: dict[str, int] = {}
    done = threading.Event()

    def on_message(c: Any, u: Any, msg: Any) -> None:
        try:
            got["version"] = int(json.loads(msg.payload.decode())["version"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            got["version"] = 0
        done.set()

    client.on_message = on_message
    client.subscribe(transport.head_topic(root), qos=1)
    done.wait(timeout)
    client.unsubscribe(transport.head_topic(root))
    return got.get("version", 0)


def publish(*, gallery_path: Path, private_key_path: Path, fleet: str, root: str, state_path: Path,
            client_factory: Callable[[], Any], host: str, port: int, rules_path: Path | None = None,
            force_full: bool = False, chunk_bytes: int = transport.DEFAULT_CHUNK_BYTES,
            progress: Callable[[str], None] = log.info) -> dict[str, Any]:
    """Sign and publish the next bundle; returns a summary (version, kind, people, revoked, bytes)."""
    key = keys_mod.load_private(private_key_path)
    gallery = Gallery.load(gallery_path, model_sha256=None, with_crops=False)
    rules = read_rules(rules_path)
    prev = Published.load(state_path, fleet)
    kind, people, revoked = plan(gallery, rules, prev, force_full)

    client = client_factory()
    connected = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: connected.set() if not rc.is_failure else None
    client.connect(host, port, keepalive=30)
    client.loop_start()
    try:
        if not connected.wait(10):
            raise EdgeMfrError(f"MQTT broker {host}:{port}: no connection within 10 s")
        version = max(prev.version, _wait_head(client, root)) + 1
        if kind == "delta" and version != prev.version + 1:
            kind, people, revoked = "full", gallery.people, []  # someone else published: start a new chain
        data = payload_mod.to_bytes(gallery, people)
        header = BundleHeader(
            fleet=fleet, version=version, kind=kind, base_version=prev.version if kind == "delta" else None,
            created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            key_id=keys_mod.key_id(key.public_key()), models=payload_mod.gallery_models(gallery),
            people=tuple(p.person_id for p in people), revoked=tuple(revoked),
            rules={p.person_id: rules[p.person_id] for p in people if p.person_id in rules},
            payload_sha256=hashlib.sha256(data).hexdigest(), payload_bytes=len(data))
        blob = bundle_mod.encode(header, data, key)
        msgs = transport.split(blob, version, root, chunk_bytes)
        progress(f"publishing {kind} bundle v{version}: {len(people)} people, {len(revoked)} revoked, "
                 f"{len(blob)} bytes in {len(msgs) - 1} chunks")
        infos = [client.publish(topic, body, qos=1, retain=True) for topic, body in msgs]
        head = json.dumps({"version": version, "full": version if kind == "full" else prev.full_version})
        infos.append(client.publish(transport.head_topic(root), head, qos=1, retain=True))
        deadline = time.monotonic() + ACK_TIMEOUT_S
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            if not info.is_published():
                raise EdgeMfrError(f"MQTT broker {host}:{port}: bundle v{version} not acknowledged in time; "
                                   "publish again (doors refuse partial bundles)")
        live = [version] if kind == "full" else [*prev.live, version]
        chunks = {str(v): n for v, n in prev.chunks.items() if int(v) in live}
        chunks[str(version)] = len(msgs) - 1
        if kind == "full":  # older bundles are not needed by anyone now: clear their retained topics
            clears = []
            for v in prev.live:
                n = prev.chunks.get(str(v), 0)
                clears += [transport.chunk_topic(root, v, i) for i in range(n)] + [transport.index_topic(root, v)]
            for info in [client.publish(t, b"", qos=1, retain=True) for t in clears]:
                info.wait_for_publish(max(0.1, deadline - time.monotonic()))
        state = Published(fleet, version, version if kind == "full" else prev.full_version, live, chunks,
                          {p.person_id: payload_mod.person_fingerprint(p) for p in gallery.people},
                          {pid: r.to_json() for pid, r in rules.items()})
        state.save(state_path)
    finally:
        client.loop_stop()
        client.disconnect()
    return {"version": version, "kind": kind, "people": len(people), "revoked": revoked, "bytes": len(blob),
            "chunks": len(msgs) - 1}
