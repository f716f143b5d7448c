"""The door's side of a fleet: receive signed bundles from the broker and apply them to the local gallery.

A bundle is applied only when, in this order: its chunks reassemble to the indexed digest, its Ed25519
signature verifies with a configured fleet key, it names this door's fleet, it moves the gallery version
forward (full: any newer version; delta: exactly on top of the version the door runs), and its people were
made with this door's embedder models. Anything else is refused with a journaled reason and the gallery is
left as it was. A full bundle rewrites the gallery through :meth:`Gallery.edit` (locked, atomic); a delta
is written as a small change file beside it (:mod:`edge_mfr.identity.gallery_delta`, same lock, atomic,
replayed by every load), so a revoke costs milliseconds whatever the gallery's size. Then the per-door
rules, then the applied version: a crash in between re-applies the same bundle at the next start, which is
harmless. The running door loop notices the changed gallery and switches between frames, exactly as after
a local enrollment; ``on_applied`` hooks (the appliance's in-memory revoke) hear of each bundle first.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_mfr.errors import EdgeMfrError
from edge_mfr.identity import gallery_delta
from edge_mfr.identity.gallery import Gallery, GalleryModelMismatch, append_delta
from edge_mfr.interfaces.fleet import bundle as bundle_mod
from edge_mfr.interfaces.fleet import payload as payload_mod
from edge_mfr.interfaces.fleet import transport
from edge_mfr.interfaces.fleet.bundle import BundleError, BundleHeader, DoorRule

log = logging.getLogger(__name__)

INCOMPLETE_TIMEOUT_S = 60.0
Record = Callable[..., None]


def state_path(gallery: Path) -> Path:
    return gallery.with_name(gallery.name + ".fleet.json")


def rules_path(gallery: Path) -> Path:
    return gallery.with_name(gallery.name + ".rules.json")


def spool_dir(gallery: Path) -> Path:
    """Where incoming bundles are spooled (private to the door, beside its gallery; emptied at start)."""
    return gallery.with_name(f".{gallery.name}.fleet-spool")


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@dataclass
class FleetState:
    """What this door runs: fleet id and gallery version (0 = never applied a bundle)."""

    fleet: str
    version: int = 0
    key_id: str = ""
    applied_at: str = ""
    people: int = 0
    #: version -> sha256 of the bundles applied lately: their retained copies arrive again after every
    #: reconnect and are ignored quietly; any other bundle at or below ``version`` is a replay.
    applied: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, gallery: Path, fleet: str) -> FleetState:
        try:
            raw = json.loads(state_path(gallery).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(fleet)
        except (OSError, ValueError) as exc:
            raise EdgeMfrError(f"{state_path(gallery)}: unreadable fleet state ({exc}); remove it to re-apply "
                               "the latest bundle") from None
        if not isinstance(raw, dict) or raw.get("fleet") != fleet or not isinstance(raw.get("version"), int):
            return cls(fleet)  # another fleet's state: start over from the next full bundle
        applied = raw.get("applied", {})
        return cls(fleet, raw["version"], str(raw.get("key_id", "")), str(raw.get("applied_at", "")),
                   int(raw.get("people", 0)), {str(k): str(v) for k, v in applied.items()}
                   if isinstance(applied, dict) else {})

    def save(self, gallery: Path) -> None:
        _write_json(state_path(gallery), self.__dict__)


def load_rules(gallery: Path) -> dict[str, DoorRule]:
    """Per-person door rules last applied from the fleet ({} when none: no extra restriction)."""
    try:
        raw = json.loads(rules_path(gallery).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.error("%s: unreadable fleet rules (%s): refusing everyone with a rule until the next bundle",
                  rules_path(gallery), exc)
        raise EdgeMfrError(f"{rules_path(gallery)}: unreadable fleet rules") from None
    if not isinstance(raw, dict):
        raise EdgeMfrError(f"{rules_path(gallery)}: malformed fleet rules")
    try:
        return {pid: DoorRule.from_json(pid, r) for pid, r in raw.items()}
    except BundleError as exc:
        raise EdgeMfrError(f"{rules_path(gallery)}: {exc}") from None


KEEP_APPLIED = 256
MAX_DELTA_FILES = 64  # deltas beside the gallery before the next one rewrites it (the publisher sends a
                      # full bundle every 32, so this only bounds a door that missed those)


def _rewrite(header: BundleHeader, incoming: Gallery, gallery_path: Path) -> int:
    """Apply by rewriting the whole gallery (a full bundle; a delta that folds many in): locked, atomic."""
    with Gallery.edit(gallery_path, incoming.model_sha256, dim=incoming.dim,
                      extra_models=incoming.extra_models) as gallery:
        if header.kind == "full":
            keep = set(header.people)
            for person in gallery.people:
                if person.person_id not in keep:
                    gallery.remove(person.person_id)
        present = {p.person_id for p in gallery.people}
        for pid in header.revoked:
            if pid in present:
                gallery.remove(pid)
        for person in incoming.people:
            gallery.put_person(person)
        return len(gallery)


def apply_bundle(header: BundleHeader, data: bytes | payload_mod.FileSlice, gallery_path: Path, models: dict[str, str],
                 state: FleetState, digest: str = "") -> FleetState:
    """Apply one verified bundle; BundleError (gallery untouched) when it must not be applied.

    ``data``: the payload, as bytes or where it lies in a spooled bundle file."""
    if header.fleet != state.fleet:
        raise BundleError(f"bundle v{header.version} is for fleet {header.fleet!r}, this door is in "
                          f"{state.fleet!r}")
    if header.version <= state.version:
        raise BundleError(f"bundle v{header.version} is not newer than the running v{state.version} "
                          "(replayed or stale bundle)")
    if header.kind == "delta" and header.base_version != state.version:
        raise BundleError(f"delta v{header.version} applies on v{header.base_version}, this door runs "
                          f"v{state.version}")
    if header.models != models:
        raise BundleError(f"bundle v{header.version} was made with embedder models {header.models}, this door "
                          f"runs {models}; refused (embedding spaces are never mixed)")
    gallery_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        incoming = payload_mod.load(data, models)
    except EdgeMfrError as exc:
        raise BundleError(f"bundle v{header.version}: {exc}") from None
    if sorted(p.person_id for p in incoming.people) != sorted(header.people):
        raise BundleError(f"bundle v{header.version}: payload people differ from the signed list")
    rules = load_rules(gallery_path) if header.kind == "delta" else {}
    other = f"delta v{header.version} cannot apply to a gallery of other embedders"
    if header.kind == "full" and gallery_path.exists() and payload_mod.file_models(gallery_path) != models:
        gallery_path.unlink()  # made with other embedders (unusable here): the fleet's full gallery replaces it
    if (header.kind == "delta" and gallery_path.exists()
            and len(gallery_delta.delta_files(gallery_path)) < MAX_DELTA_FILES):
        try:  # checks the gallery's models from its header under the lock, then writes the small delta file
            people = append_delta(gallery_path, incoming.people, header.revoked, incoming)
        except GalleryModelMismatch:
            raise BundleError(other) from None
    else:
        if header.kind == "delta" and gallery_path.exists() and payload_mod.file_models(gallery_path) != models:
            raise BundleError(other)
        people = _rewrite(header, incoming, gallery_path)
    for pid in [*header.revoked, *(p.person_id for p in incoming.people)]:
        rules.pop(pid, None)
    rules.update(header.rules)
    _write_json(rules_path(gallery_path), {pid: r.to_json() for pid, r in rules.items()})
    applied = {**state.applied, str(header.version): digest}
    applied = dict(sorted(applied.items(), key=lambda kv: int(kv[0]))[-KEEP_APPLIED:])
    new = FleetState(state.fleet, header.version, header.key_id,
                     time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), people, applied)
    new.save(gallery_path)
    return new


class Follower:
    """Receives bundles over MQTT in the background and applies them in version order.

    ``client_factory()`` returns an unstarted paho client (TLS and credentials set up like the device's own
    connection); ``record(kind, **payload)`` journals; ``publish_state(dict)`` reports the running version.
    """

    def __init__(self, *, fleet: str, root: str, trusted: dict[str, Any], gallery_path: Path,
                 models: Callable[[], dict[str, str]], record: Record, client_factory: Callable[[], Any],
                 host: str, port: int, publish_state: Callable[[dict[str, Any]], None] | None = None,
                 keepalive: int = 30):
        self.fleet, self.root, self.trusted = fleet, root, trusted
        self.gallery_path = Path(gallery_path)
        self.models, self.record, self.publish_state = models, record, publish_state
        self.state = FleetState.load(self.gallery_path, fleet)
        self.gallery_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.assembler = transport.Assembler(root, spool_dir(self.gallery_path))
        self._client_factory, self._host, self._port, self._keepalive = client_factory, host, port, keepalive
        self._inbox: queue.Queue[tuple[str, bytes] | None] = queue.Queue(maxsize=100000)
        #: verified bundles waiting for their turn: header, the payload in its spool file, the spool, digest
        self._ready: dict[int, tuple[BundleHeader, payload_mod.FileSlice, transport.Spooled, str]] = {}
        self._client: Any = None
        self._thread: threading.Thread | None = None
        self.applied = threading.Event()  # set after each apply (tests)
        #: called with each applied bundle's header, after it is on disk and before it is journaled
        self.on_applied: list[Callable[[BundleHeader], None]] = []

    def start(self) -> None:
        client = self._client_factory()
        client.on_connect = self._on_connect
        client.on_message = lambda c, u, msg: self._inbox.put((msg.topic, bytes(msg.payload)))
        client.connect_async(self._host, self._port, keepalive=self._keepalive)
        client.loop_start()
        self._client = client
        self._thread = threading.Thread(target=self._work, name="fleet-follower", daemon=True)
        self._thread.start()
        self._report()

    def stop(self) -> None:
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.join(5)
        if self._client is not None:
            self._client.loop_stop()
            self._client.disconnect()
        if self._thread is None or not self._thread.is_alive():
            self.assembler.discard_all()
            for _, _, spooled, _ in self._ready.values():
                spooled.discard()
            self._ready.clear()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if getattr(reason_code, "is_failure", False):
            return
        for topic in transport.subscriptions(self.root):
            client.subscribe(topic, qos=1)

    def _work(self) -> None:
        while True:
            try:
                item = self._inbox.get(timeout=1.0)
            except queue.Empty:
                item = ()
            if item is None:
                return
            try:
                if item:
                    self._handle(*item)
                for version, reason in self.assembler.stale(INCOMPLETE_TIMEOUT_S):
                    self._refuse(version, reason)
            except Exception:  # noqa: BLE001 - one bad message must never stop the follower
                log.exception("fleet follower: unexpected failure")

    def _handle(self, topic: str, data: bytes) -> None:
        version, spooled, problem = self.assembler.feed(topic, data)
        if problem:
            self._refuse(version, problem)
            return
        if spooled is None:
            return
        digest = spooled.sha256  # of the whole bundle, checked against the index while it was assembled
        if version <= self.state.version and self.state.applied.get(str(version)) == digest:
            spooled.discard()
            return  # the retained copy of a bundle this door already applied
        try:
            header, offset, length = bundle_mod.decode_file(spooled.path, self.trusted)
            if header.version != version:
                raise BundleError(f"bundle published as v{version} says it is v{header.version}")
        except (BundleError, OSError) as exc:
            spooled.discard()
            self._refuse(version, str(exc))
            return
        previous = self._ready.pop(version, None)
        if previous is not None:
            previous[2].discard()
        self._ready[version] = (header, payload_mod.FileSlice(spooled.path, offset, length), spooled, digest)
        self._advance()

    def _advance(self) -> None:
        """Apply what can be applied: the newest full bundle, then deltas chained on the running version."""
        while True:
            current = self.state.version
            for v in [v for v in self._ready if v <= current]:
                self._ready.pop(v)[2].discard()
                self._refuse(v, f"bundle v{v} is not newer than the running v{current} (replayed or stale)")
            fulls = [v for v, (h, *_) in self._ready.items() if h.kind == "full"]
            chained = [v for v, (h, *_) in self._ready.items()
                       if h.kind == "delta" and h.base_version == current]
            pick = max(fulls) if fulls else (min(chained) if chained else None)
            if pick is None:
                return
            header, body, spooled, digest = self._ready.pop(pick)
            try:
                self.state = apply_bundle(header, body, self.gallery_path, self.models(), self.state, digest)
            except (BundleError, EdgeMfrError) as exc:
                self._refuse(pick, str(exc))
                continue
            finally:
                spooled.discard()
            log.info("fleet: applied %s bundle v%d (%d people)", header.kind, header.version, self.state.people)
            for hook in self.on_applied:
                try:
                    hook(header)
                except Exception:  # noqa: BLE001 - the bundle is applied; the door loop re-reads it anyway
                    log.exception("fleet: on_applied hook failed")
            self.record("fleet_applied", version=header.version, bundle_kind=header.kind,
                        people=self.state.people, revoked=list(header.revoked), key_id=header.key_id)
            self._report()
            self.applied.set()

    def _refuse(self, version: int, reason: str) -> None:
        # Nothing is remembered of a refused version: a forged "v9" must not make the real v9 unwelcome.
        log.warning("fleet: refused bundle v%s: %s", version, reason)
        self.record("fleet_refused", version=version, reason=reason)

    def _report(self) -> None:
        if self.publish_state is not None:
            try:
                self.publish_state({"fleet": self.fleet, "version": self.state.version,
                                    "people": self.state.people, "applied_at": self.state.applied_at})
            except Exception:  # noqa: BLE001 - a status report is never worth a failure
                log.exception("fleet: cannot publish state")
