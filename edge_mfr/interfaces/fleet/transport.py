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
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

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


SPOOL_PREFIX = "bundle-"
_COPY_BYTES = 1 << 20


@dataclass(frozen=True)
class Spooled:
    """A complete bundle reassembled in a spool file, its digest checked against the index.

    The file is the caller's from here: :meth:`discard` it once the bundle is applied or refused.
    """

    version: int
    path: Path
    size: int
    sha256: str

    def read_bytes(self) -> bytes:
        return self.path.read_bytes()

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


@dataclass
class _Partial:
    first_seen: float
    path: Path
    index: dict | None = None
    chunks: dict[int, tuple[int, int]] = field(default_factory=dict)  # chunk number -> (offset, length)
    size: int = 0  # bytes appended to the spool file (a re-delivered chunk counts again)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class Assembler:
    """Collects chunks per bundle version in spool files; yields a complete bundle or a reason it never can.

    Chunks go to a private file per version under ``spool_dir`` (0700, files 0600) as they arrive, so a
    door holds one chunk in memory at a time whatever the bundle's size. Disk is bounded: more than
    ``MAX_PENDING_BYTES`` of unfinished chunks discards the oldest partial bundle and its file. Leftover
    spool files of an earlier run are removed when an Assembler starts. Old versions are still assembled:
    the follower decides whether one is a harmless re-delivery or a replay to journal.
    """

    def __init__(self, root: str, spool_dir: Path, clock=time.monotonic):
        self.root = root
        self.spool_dir = Path(spool_dir)
        self._clock = clock
        self._partial: dict[int, _Partial] = {}
        self._seq = 0
        self.spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.spool_dir, 0o700)
        for leftover in self.spool_dir.glob(SPOOL_PREFIX + "*"):  # a previous run's partial or unapplied bundles
            leftover.unlink(missing_ok=True)

    def _new_path(self, version: int, what: str) -> Path:
        self._seq += 1
        return self.spool_dir / f"{SPOOL_PREFIX}{version}-{os.getpid()}-{self._seq}.{what}"

    def pending_bytes(self) -> int:
        return sum(p.size for p in self._partial.values())

    def feed(self, topic: str, payload: bytes) -> tuple[int, Spooled | None, str | None]:
        """One message in; returns (version, the spooled bundle when complete, problem text when it failed),
        version 0 for messages that are not bundle parts."""
        if not topic.startswith(self.root + "/"):
            return 0, None, None
        m = _VERSION_TOPIC.search(topic[len(self.root):])
        if m is None or not payload:  # an empty retained message clears a topic: nothing to collect
            return 0, None, None
        version = int(m.group(1))
        part = self._partial.get(version)
        if part is None:
            part = self._partial[version] = _Partial(self._clock(), self._new_path(version, "part"))
        if m.group(2) == "index":
            try:
                index = json.loads(payload.decode("utf-8"))
                ok = (isinstance(index, dict) and index.get("version") == version
                      and isinstance(index.get("chunks"), int) and 1 <= index["chunks"] <= MAX_CHUNKS
                      and isinstance(index.get("bytes"), int) and isinstance(index.get("sha256"), str))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                ok = False
            if not ok:
                self._drop(version)
                return version, None, f"bundle v{version}: malformed index message"
            part.index = index
        else:
            try:
                fd = os.open(part.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
                try:
                    _write_all(fd, payload)
                finally:
                    os.close(fd)
            except OSError as exc:  # a full disk: this bundle cannot complete; a later re-delivery may
                self._drop(version)
                return version, None, f"bundle v{version}: cannot spool a chunk ({exc})"
            part.chunks[int(m.group(3))] = (part.size, len(payload))
            part.size += len(payload)
            self._bound()
            if version not in self._partial:
                return version, None, None
        return self._complete(version)

    def _drop(self, version: int) -> None:
        part = self._partial.pop(version, None)
        if part is not None:
            part.path.unlink(missing_ok=True)

    def discard_all(self) -> None:
        """Remove every partial bundle and its file (the follower stops)."""
        for version in list(self._partial):
            self._drop(version)

    def _complete(self, version: int) -> tuple[int, Spooled | None, str | None]:
        part = self._partial.get(version)
        if part is None or part.index is None:
            return version, None, None
        n = part.index["chunks"]
        if any(i >= n for i in part.chunks):
            self._drop(version)
            return version, None, f"bundle v{version}: a chunk number beyond the {n} the index names"
        if len(part.chunks) < n:
            return version, None, None
        self._partial.pop(version)
        try:
            path, size, digest = self._assemble(version, part, n)
        except OSError as exc:
            part.path.unlink(missing_ok=True)
            return version, None, f"bundle v{version}: cannot spool the bundle ({exc})"
        if size != part.index["bytes"] or digest != part.index["sha256"]:
            path.unlink(missing_ok=True)
            return version, None, (f"bundle v{version}: chunks do not add up to the indexed bundle "
                                   f"({size} of {part.index['bytes']} bytes, or another digest)")
        return version, Spooled(version, path, size, digest), None

    def _assemble(self, version: int, part: _Partial, n: int) -> tuple[Path, int, str]:
        """The bundle file in chunk order and its sha256, one chunk or MiB in memory at a time. Chunks that
        arrived in order, once each (the usual case), already are that file; otherwise they are copied."""
        h = hashlib.sha256()
        offset, in_order = 0, True
        for i in range(n):
            in_order = in_order and part.chunks[i][0] == offset
            offset += part.chunks[i][1]
        in_order = in_order and part.size == offset
        if not part.path.exists():  # an index with no chunk yet: nothing was spooled
            part.path.touch(mode=0o600)
        if in_order:
            with open(part.path, "rb") as fh:
                while block := fh.read(_COPY_BYTES):
                    h.update(block)
            return part.path, offset, h.hexdigest()
        out = self._new_path(version, "bundle")
        try:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with open(part.path, "rb") as src, os.fdopen(fd, "wb") as dst:
                for i in range(n):
                    off, length = part.chunks[i]
                    chunk = os.pread(src.fileno(), length, off)
                    h.update(chunk)
                    dst.write(chunk)
        except BaseException:
            out.unlink(missing_ok=True)
            raise
        finally:
            part.path.unlink(missing_ok=True)
        return out, offset, h.hexdigest()

    def _bound(self) -> None:
        while self._partial and self.pending_bytes() > MAX_PENDING_BYTES:
            oldest = min(self._partial, key=lambda v: self._partial[v].first_seen)
            self._drop(oldest)

    def stale(self, timeout_s: float) -> list[tuple[int, str]]:
        """Partial bundles that have waited longer than ``timeout_s``: dropped with their files, and why."""
        now, out = self._clock(), []
        for v, part in list(self._partial.items()):
            if now - part.first_seen > timeout_s:
                have = len(part.chunks)
                want = part.index["chunks"] if part.index else "?"
                out.append((v, f"bundle v{v}: incomplete after {timeout_s:g} s ({have} of {want} chunks, "
                               f"index {'seen' if part.index else 'missing'})"))
                self._drop(v)
        return out
