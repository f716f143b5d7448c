"""Bundle payloads: people moved between galleries as gallery files without face crops.

Why a gallery file: it already has a validated, versioned, pickle-free format with per-member CRCs, and the
device's loader already refuses a gallery made with other embedding models. This module is the one place
that knows how a gallery names its models and how a person is fingerprinted for deltas.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_mfr.identity.gallery import Gallery, GalleryModelMismatch, Person, read_header, read_stream


def gallery_models(gallery: Gallery) -> dict[str, str]:
    """Embedder -> model sha256 the gallery's templates were made with ("primary", then extras by file name)."""
    return {"primary": gallery.model_sha256, **{m.name: m.sha256 for m in gallery.extra_models}}


def file_models(path: Path) -> dict[str, str]:
    """gallery_models of a gallery file from its header alone (no templates read: cheap at any size)."""
    header, _ = read_header(path)
    extra = header.get("extra_models", [])
    return {"primary": str(header.get("model_sha256")),
            **{str(m.get("name")): str(m.get("sha256")) for m in extra if isinstance(m, dict)}}


def pipeline_models(embedder_ids: list[tuple[str, str]]) -> dict[str, str]:
    """The same mapping for a door's loaded embedders (FacePipeline.embedder_ids, primary first)."""
    return {"primary": embedder_ids[0][1], **dict(embedder_ids[1:])}


def person_fingerprint(person: Person) -> str:
    """Changes whenever anything a door uses about the person changes (name, allowed, templates)."""
    h = hashlib.sha256()
    meta = [(t.source, t.synthetic, t.masked, t.mask_style) for t in person.templates]
    h.update(json.dumps([person.person_id, person.name, person.allowed, meta]).encode())
    h.update(person.embeddings.tobytes())
    for extra in person.extra:
        h.update(extra.tobytes())
    return h.hexdigest()


def to_bytes(source: Gallery, people: Iterable[Person]) -> bytes:
    """A crop-free gallery file holding exactly ``people`` (with their ids), as bytes."""
    out = Gallery.create(source.model_sha256, dim=source.dim, keep_crops=False, extra_models=source.extra_models)
    for person in people:
        out.put_person(person)
    with tempfile.TemporaryDirectory(prefix="edge-mfr-bundle-") as tmp:
        path = Path(tmp) / "bundle.npz"
        out.save(path)
        return path.read_bytes()


@dataclass(frozen=True)
class FileSlice:
    """``length`` bytes at ``offset`` of the file at ``path``: a verified payload inside a spooled bundle."""

    path: Path
    offset: int
    length: int


class _Window(io.RawIOBase):
    """A read-only, seekable file object over one range of an open file (pread: no shared file position)."""

    def __init__(self, fd: int, offset: int, length: int):
        super().__init__()
        self._fd, self._offset, self._length, self._pos = fd, offset, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        if base + pos < 0:
            raise OSError("negative seek position")
        self._pos = base + pos
        return self._pos

    def readinto(self, buffer: Any) -> int:
        n = max(0, min(len(buffer), self._length - self._pos))
        if n == 0:
            return 0
        with memoryview(buffer) as view, view.cast("B")[:n] as out:
            got = os.preadv(self._fd, [out], self._offset + self._pos)
        self._pos += got
        return got


def load(data: bytes | FileSlice, models: dict[str, str]) -> Gallery:
    """Parse a payload with the device's own loader (every check of a gallery file), refusing other
    embedding models. Bytes are read in place; a FileSlice is read from its file a block at a time, so
    only the parsed gallery is held in memory."""
    if isinstance(data, FileSlice):
        with open(data.path, "rb") as fh:
            window = io.BufferedReader(_Window(fh.fileno(), data.offset, data.length), 1 << 20)
            gallery = read_stream(window, data.path)
    else:
        gallery = read_stream(io.BytesIO(data), Path("<bundle payload>"))
    if gallery_models(gallery) != models:
        raise GalleryModelMismatch(
            f"bundle people were made with embedder models {gallery_models(gallery)}, this door runs "
            f"{models}; re-enroll on the admin host with the door's models (never mixes embedding spaces)"
        )
    return gallery
