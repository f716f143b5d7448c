"""Signed gallery bundles: the unit a fleet publisher sends and every door applies.

A bundle is one byte string::

    MAGIC (6 bytes) | header length (4 bytes, big-endian) | header (UTF-8 JSON) | payload | Ed25519 signature (64)

The signature covers everything before it, so neither the header (fleet, version, rules) nor the payload
(a gallery file without face crops) can be changed, truncated or swapped without the check failing. A
device accepts a bundle only when it was signed by one of the fleet keys in its config, names the device's
fleet, and moves its gallery version forward (see :mod:`edge_mfr.interfaces.fleet.follower`).

``kind = "full"`` carries everyone; ``kind = "delta"`` carries only added or changed people plus the ids
to revoke, and applies only on top of exactly ``base_version``. Why both: a revoke must reach every door in
seconds without resending thousands of people, and a door that missed deltas catches up from the latest
full bundle.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_mfr.errors import EdgeMfrError

MAGIC = b"EMFB1\n"
SIGNATURE_BYTES = 64
MAX_HEADER_BYTES = 16 << 20
MAX_BUNDLE_BYTES = 1 << 30
KINDS = ("full", "delta")
_FLEET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_PERSON_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_DOOR_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class BundleError(EdgeMfrError, ValueError):
    """A bundle that must not be applied: bad signature, wrong fleet, malformed, replayed, mismatched."""


@dataclass(frozen=True)
class DoorRule:
    """Where and when one person may enter: ``doors`` None means every door; schedules per door name."""

    doors: tuple[str, ...] | None = None
    schedules: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"doors": None if self.doors is None else list(self.doors), "schedules": self.schedules}

    @classmethod
    def from_json(cls, person_id: str, raw: Any) -> DoorRule:
        if not isinstance(raw, dict) or set(raw) - {"doors", "schedules"}:
            raise BundleError(f"rule of {person_id!r} must be an object with doors and schedules")
        doors = raw.get("doors")
        if doors is not None:
            if not isinstance(doors, list) or not all(isinstance(d, str) and _DOOR_RE.match(d) for d in doors):
                raise BundleError(f"rule of {person_id!r}: doors must be a list of door names or null")
            doors = tuple(doors)
        schedules = raw.get("schedules", {})
        if not isinstance(schedules, dict):
            raise BundleError(f"rule of {person_id!r}: schedules must map door names to windows")
        for door, windows in schedules.items():
            if not isinstance(door, str) or not (door == "*" or _DOOR_RE.match(door)):
                raise BundleError(f"rule of {person_id!r}: bad door name {door!r} in schedules")
            if not isinstance(windows, list) or not windows or not all(isinstance(w, dict) for w in windows):
                raise BundleError(f"rule of {person_id!r}: schedule of door {door!r} needs a list of windows")
        return cls(doors, schedules)


@dataclass(frozen=True)
class BundleHeader:
    """The signed description of one bundle (see the module docstring)."""

    fleet: str
    version: int
    kind: str
    base_version: int | None
    created_at: str
    key_id: str
    models: dict[str, str]
    people: tuple[str, ...]
    revoked: tuple[str, ...]
    rules: dict[str, DoorRule]
    payload_sha256: str
    payload_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "fleet": self.fleet, "version": self.version, "kind": self.kind, "base_version": self.base_version,
            "created_at": self.created_at, "key_id": self.key_id, "models": self.models,
            "people": list(self.people), "revoked": list(self.revoked),
            "rules": {pid: r.to_json() for pid, r in self.rules.items()},
            "payload_sha256": self.payload_sha256, "payload_bytes": self.payload_bytes,
        }

    @classmethod
    def from_json(cls, raw: Any) -> BundleHeader:
        """Strictly typed parse: every field present, of its type, and nothing else."""
        expected = {"fleet", "version", "kind", "base_version", "created_at", "key_id", "models", "people",
                    "revoked", "rules", "payload_sha256", "payload_bytes"}
        if not isinstance(raw, dict) or set(raw) != expected:
            raise BundleError("bundle header has missing or unknown fields")
        fleet, version, kind, base = raw["fleet"], raw["version"], raw["kind"], raw["base_version"]
        if not isinstance(fleet, str) or not _FLEET_RE.match(fleet):
            raise BundleError(f"bundle names an invalid fleet {fleet!r}")
        if not _is_int(version) or version < 1:
            raise BundleError(f"bundle version must be a positive integer, got {version!r}")
        if kind not in KINDS:
            raise BundleError(f"bundle kind must be full or delta, got {kind!r}")
        if kind == "full" and base is not None:
            raise BundleError("a full bundle has no base_version")
        if kind == "delta" and (not _is_int(base) or not 1 <= base < version):
            raise BundleError(f"a delta bundle needs a base_version below its version, got {base!r}")
        models = raw["models"]
        if not isinstance(models, dict) or not models or not all(
                isinstance(k, str) and isinstance(v, str) and _SHA256_RE.match(v) for k, v in models.items()):
            raise BundleError("bundle models must map embedder names to sha256 digests")
        people, revoked = _ids(raw["people"], "people"), _ids(raw["revoked"], "revoked")
        if kind == "full" and revoked:
            raise BundleError("a full bundle revokes nobody (it lists everyone who stays)")
        if set(people) & set(revoked):
            raise BundleError("a bundle cannot both add and revoke the same person")
        rules_raw = raw["rules"]
        if not isinstance(rules_raw, dict) or not set(rules_raw) <= set(people):
            raise BundleError("bundle rules must name people the bundle carries")
        rules = {pid: DoorRule.from_json(pid, r) for pid, r in rules_raw.items()}
        for name in ("created_at", "key_id", "payload_sha256"):
            if not isinstance(raw[name], str):
                raise BundleError(f"bundle {name} must be a string")
        if not _SHA256_RE.match(raw["payload_sha256"]) or not _is_int(raw["payload_bytes"]):
            raise BundleError("bundle payload digest or size is malformed")
        return cls(fleet, version, kind, base, raw["created_at"], raw["key_id"], dict(models), people, revoked,
                   rules, raw["payload_sha256"], raw["payload_bytes"])


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ids(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(p, str) and _PERSON_ID_RE.match(p) for p in value):
        raise BundleError(f"bundle {what} must be a list of person ids")
    if len(set(value)) != len(value):
        raise BundleError(f"bundle {what} lists a person twice")
    return tuple(value)


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def encode(header: BundleHeader, payload: bytes, private_key: Any) -> bytes:
    """Sign and serialise. ``private_key``: a cryptography Ed25519PrivateKey."""
    if hashlib.sha256(payload).hexdigest() != header.payload_sha256 or len(payload) != header.payload_bytes:
        raise BundleError("payload does not match its header")
    head = canonical(header.to_json())
    body = MAGIC + struct.pack(">I", len(head)) + head + payload
    return body + private_key.sign(body)


def decode(blob: bytes, public_keys: dict[str, Any]) -> tuple[BundleHeader, bytes]:
    """Verify and parse. ``public_keys`` maps key ids to Ed25519PublicKey; raises BundleError on anything off.

    The signature is checked before the header is parsed, so nothing an attacker wrote is interpreted.
    """
    header, start, end = _verify(memoryview(blob), public_keys)
    return header, blob[start:end]


def decode_file(path: Path, public_keys: dict[str, Any]) -> tuple[BundleHeader, int, int]:
    """:func:`decode` of a bundle file (a door's spooled bundle): (header, payload offset, payload length).

    The signature and the payload digest are checked over an mmap of the file, so a bundle of any size
    costs no copy on the heap (Ed25519 needs the whole message at once).
    """
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            raise BundleError("not an edge-mfr gallery bundle (bad magic or truncated)")
        if size > MAX_BUNDLE_BYTES:
            raise BundleError(f"bundle of {size} bytes is larger than the {MAX_BUNDLE_BYTES} byte limit")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            view = memoryview(mapped)
            try:
                header, start, end = _verify(view, public_keys)
            finally:
                view.release()
    return header, start, end - start


def _verify(blob: memoryview, public_keys: dict[str, Any]) -> tuple[BundleHeader, int, int]:
    """The checks of decode on any buffer, without copying it; returns the header and the payload's range."""
    from cryptography.exceptions import InvalidSignature

    if len(blob) > MAX_BUNDLE_BYTES:
        raise BundleError(f"bundle of {len(blob)} bytes is larger than the {MAX_BUNDLE_BYTES} byte limit")
    if len(blob) < len(MAGIC) + 4 + SIGNATURE_BYTES or blob[:len(MAGIC)] != MAGIC:
        raise BundleError("not an edge-mfr gallery bundle (bad magic or truncated)")
    end = len(blob) - SIGNATURE_BYTES
    sig = bytes(blob[end:])
    with blob[:end] as body:  # released on the way out, even on an error: the caller may close an mmap
        for key in public_keys.values():
            try:
                key.verify(sig, body)
                break
            except InvalidSignature:
                continue
        else:
            raise BundleError("bundle signature does not verify with any trusted fleet key")
        (n,) = struct.unpack(">I", body[len(MAGIC):len(MAGIC) + 4])
        start = len(MAGIC) + 4
        if n > MAX_HEADER_BYTES or start + n > len(body):
            raise BundleError("bundle header length is out of range")
        try:
            header = BundleHeader.from_json(json.loads(bytes(body[start:start + n]).decode("utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise BundleError(f"bundle header is not valid JSON ({type(exc).__name__})") from None
        with body[start + n:] as payload:
            if (len(payload) != header.payload_bytes
                    or hashlib.sha256(payload).hexdigest() != header.payload_sha256):
                raise BundleError("bundle payload does not match its signed digest")
    return header, start + n, end
