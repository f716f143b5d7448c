"""Bundle payloads: people moved between galleries as gallery files without face crops.

Why a gallery file: it already has a validated, versioned, pickle-free format with per-member CRCs, and the
device's loader already refuses a gallery made with other embedding models. This module is the one place
that knows how a gallery names its models and how a person is fingerprinted for deltas.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from edge_mfr.identity.gallery import Gallery, GalleryModelMismatch, Person, read_header


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


def from_bytes(data: bytes, models: dict[str, str], work_dir: Path) -> Gallery:
    """Parse a payload with the device's own loader, refusing other embedding models.

    ``work_dir`` is the device's state folder: the payload is parsed from a private temporary file there
    (same file system, never world-readable) and removed again.
    """
    fd, name = tempfile.mkstemp(prefix=".bundle-", suffix=".npz", dir=work_dir)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        gallery = Gallery.load(name, model_sha256=None, with_crops=False)
    finally:
        os.unlink(name)
    if gallery_models(gallery) != models:
        raise GalleryModelMismatch(
            f"bundle people were made with embedder models {gallery_models(gallery)}, this door runs "
            f"{models}; re-enroll on the admin host with the door's models (never mixes embedding spaces)"
        )
    return gallery
