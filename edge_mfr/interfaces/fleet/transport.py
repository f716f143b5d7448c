"""How bundles travel over the MQTT broker: retained, QoS 1, cut into chunks that fit broker limits.

Topics under the fleet root (``edge-mfr/fleet/<fleet id>`` by default)::

    <root>/bundle/<version>/index      JSON {version, chunks, bytes, sha256}       retained
    <root>/bundle/<version>/chunk/<i>  raw bytes of chunk i                       retained
    <root>/head                        JSON {version, full}: the newest bundle     retained

Retained messages are what lets a door that was offline catch up: on (re)connect the broker hands it the
latest full bundle and every delta after it. The publisher clears the topics of bundles a newer full bundle
has made unnecessary. Nothing here is trusted: the index only says how to reassemble; the signature inside
the bundle decides (see :mod:`edge_mfr.interfaces.fleet.bundle`).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field

DEFAULT_CHUNK_BYTES = 128 * 1024
MAX_CHUNKS = 16384
MAX_PENDING_BYTES = 512 << 20
_VERSION_TOPIC = re.compile(r"/bundle/(\d{1,12})/(index|chunk/(\d{1,6}))$")


def index_topic(root: str, version: int) -> str:
    return f"{root}/bundle/{version}/index"


def chunk_topic(root: str, version: int, i: int) -> str:
    return f"{root}/bundle/{version}/chunk/{i}"


def head_topic(root: str) -> str:
    return f"{root}/head"


def subscriptions(root: str) -> list[str]:
    return [f"{root}/bundle/+/index", f"{root}/bundle/+/chunk/+"]


def split(blob: bytes, version: int, root: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> list[tuple[str, bytes]]:
    """(topic, payload) pairs for one bundle, chunks first and the index last.

    The index goes last so a door that sees it early still waits for the chunks it names (QoS 1 keeps
    the order of one publisher on one connection, so usually every chunk is already there).
    """
    if chunk_bytes < 1024:
        raise ValueError("chunk size must be at least 1024 bytes")
    chunks = [blob[i:i + chunk_bytes] for i in range(0, len(blob), chunk_bytes)] or [b""]
    if len(chunks) > MAX_CHUNKS:
        raise ValueError(f"bundle needs {len(chunks)} chunks (at most {MAX_CHUNKS}); raise the chunk size")
    msgs = [(chunk_topic(root, version, i), c) for i, c in enumerate(chunks)]
    index = {"version": version, "chunks": len(chunks), "bytes": len(blob),
             "sha256": hashlib.sha256(blob).hexdigest()}
    msgs.append((index_topic(root, version), json.dumps(index).encode()))
    return msgs


@dataclass
class _Partial:
    first_seen: float
    index: dict | None = None
    chunks: dict[int, bytes] = field(default_factory=dict)

    def size(self) -> int:
        return sum(len(c) for c in self.chunks.values())


class Assembler:
    """Collects chunks per bundle version; yields a complete blob or a reason it can never complete.

    Memory is bounded: more than ``MAX_PENDING_BYTES`` of unfinished chunks discards the oldest partial
    bundle. Old versions are still assembled: the follower decides whether one is a harmless re-delivery
    or a replay to journal.
    """

    def __init__(self, root: str, clock=time.monotonic):
        self.root = root
        self._clock = clock
        self._partial: dict[int, _Partial] = {}

    def feed(self, topic: str, payload: bytes) -> tuple[int, bytes | None, str | None]:
        """One message in; returns (version, blob when complete, problem text when it failed), version 0
        for messages that are not bundle parts."""
        if not topic.startswith(self.root + "/"):
            return 0, None, None
        m = _VERSION_TOPIC.search(topic[len(self.root):])
        if m is None or not payload:  # an empty retained message clears a topic: nothing to collect
            return 0, None, None
        version = int(m.group(1))
        part = self._partial.setdefault(version, _Partial(self._clock()))
        if m.group(2) == "index":
            try:
                index = json.loads(payload.decode("utf-8"))
                ok = (isinstance(index, dict) and index.get("version") == version
                      and isinstance(index.get("chunks"), int) and 1 <= index["chunks"] <= MAX_CHUNKS
                      and isinstance(index.get("bytes"), int) and isinstance(index.get("sha256"), str))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                ok = False
            if not ok:
                self._partial.pop(version, None)
                return version, None, f"bundle v{version}: malformed index message"
            part.index = index
        else:
            part.chunks[int(m.group(3))] = bytes(payload)
            self._bound()
        return self._complete(version)

    def _complete(self, version: int) -> tuple[int, bytes | None, str | None]:
        part = self._partial.get(version)
        if part is None or part.index is None:
            return version, None, None
        n = part.index["chunks"]
        if any(i >= n for i in part.chunks):
            self._partial.pop(version)
            return version, None, f"bundle v{version}: a chunk number beyond the {n} the index names"
        if len(part.chunks) < n:
            return version, None, None
        blob = b"".join(part.chunks[i] for i in range(n))
        self._partial.pop(version)
        if len(blob) != part.index["bytes"] or hashlib.sha256(blob).hexdigest() != part.index["sha256"]:
            return version, None, (f"bundle v{version}: chunks do not add up to the indexed bundle "
                                   f"({len(blob)} of {part.index['bytes']} bytes, or another digest)")
        return version, blob, None

    def _bound(self) -> None:
        while sum(p.size() for p in self._partial.values()) > MAX_PENDING_BYTES and self._partial:
            oldest = min(self._partial, key=lambda v: self._partial[v].first_seen)
            self._partial.pop(oldest)

    def stale(self, timeout_s: float) -> list[tuple[int, str]]:
        """Partial bundles that have waited longer than ``timeout_s``: dropped, with the reason."""
        now, out = self._clock(), []
        for v, part in list(self._partial.items()):
            if now - part.first_seen > timeout_s:
                have = len(part.chunks)
                want = part.index["chunks"] if part.index else "?"
                out.append((v, f"bundle v{v}: incomplete after {timeout_s:g} s ({have} of {want} chunks, "
                               f"index {'seen' if part.index else 'missing'})"))
                self._partial.pop(v)
        return out
