"""Small change files beside a gallery: a fleet delta lands in milliseconds, not a rewrite of every person.

Why: a door with 10,000 people keeps ~90 MB of templates in ``gallery.npz``; rewriting it for a one-person
revoke took seconds on the critical path (minutes on an SD card). A delta is written instead as its own
crop-free gallery file ``<gallery>.delta.<base key>.<seq>`` holding the added or changed people, with the
revoked ids as its ``retired_ids``; the same atomic writer and validating reader as the gallery itself.

``<base key>`` names the exact gallery file the delta applies on (a digest of that file's header, which
changes with every save), so :meth:`Gallery.load` replays only deltas of the file it read, in sequence
order. Every save of the gallery folds the replayed deltas in and removes the files; one left behind by a
crash names an older file and is never replayed. Readers take no lock: ``Gallery.load`` re-reads when the
gallery was replaced while it read the deltas, so it never sees a new file without its deltas or the reverse.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from edge_mfr.errors import GalleryError

if TYPE_CHECKING:
    from edge_mfr.identity.gallery import Gallery, Person

_NAME_RE = re.compile(r"\.delta\.([0-9a-f]{16})\.(\d{4,})$")


def file_key(header: bytes) -> str:
    """The key deltas name their base by: a digest of the base file's header bytes."""
    return hashlib.sha256(header).hexdigest()[:16]


def delta_files(path: Path, key: str | None = None) -> list[tuple[int, Path]]:
    """(sequence, file) of the deltas beside ``path`` (only those on ``key`` when given), in order."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    out = []
    for f in path.parent.glob(f"{path.name}.delta.*"):
        m = _NAME_RE.search(f.name[len(path.name):])
        if m is not None and (key is None or m.group(1) == key):
            out.append((int(m.group(2)), f))
    return sorted(out)


def signature(path: Path) -> tuple | None:
    """Changes whenever the gallery or its deltas change (the door loop's cue to re-read)."""
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino, tuple(f.name for _, f in delta_files(path))


def clear(path: Path) -> None:
    """Remove every delta beside ``path`` (after a save folded them in: they name an older file now)."""
    for _, f in delta_files(path):
        with contextlib.suppress(FileNotFoundError):
            f.unlink()


def replay(gallery: Gallery, path: Path, key: str) -> int:
    """Apply the deltas written on the file ``key`` to ``gallery`` in order; returns how many.

    A delta of other embedding models (never written by :func:`append`) is refused as a corrupt gallery:
    the door keeps its previous gallery and says why, instead of matching across embedding spaces.
    """
    from edge_mfr.identity.gallery import _read

    files = delta_files(path, key)
    for _, f in files:
        delta = _read(f, with_crops=False)
        if _models(delta) != _models(gallery):
            raise GalleryError(f"{f}: delta made with other embedding models than {path}")
        for pid in sorted(delta._retired):
            gallery._people.pop(pid, None)
            gallery._retired.add(pid)
        for person in delta.people:  # read without crops: one None per template, as put_person keeps them
            gallery._people[person.person_id] = person
            gallery._retired.discard(person.person_id)
        gallery.updated_at = max(gallery.updated_at, delta.updated_at)
    return len(files)


def append(path: Path, people: Sequence[Person], revoked: Sequence[str], like: Gallery) -> int:
    """Write one delta on the current gallery file under the writer lock; returns the people count after it.

    ``like`` gives the embedding models (the delta's payload); a gallery file of other models raises
    GalleryModelMismatch and nothing is written. Only the base file's header is read, never its templates.
    """
    from edge_mfr.identity.gallery import LOCK_TIMEOUT_S, Gallery, GalleryModelMismatch, _writer_lock, read_header

    path = Path(path)
    with _writer_lock(path, LOCK_TIMEOUT_S):
        header, key = read_header(path)
        base = {"model_sha256": header.get("model_sha256"), "dim": header.get("dim"),
                "extra": [(m.get("name"), m.get("sha256"), m.get("dim")) for m in header.get("extra_models", [])]}
        if base != _models(like):
            raise GalleryModelMismatch(f"{path}: made with other embedding models than the delta")
        ids = {str(e.get("person_id")) for e in header.get("people", [])}
        files = delta_files(path, key)
        for _, f in files:
            h, _ = read_header(f)
            ids -= set(h.get("retired_ids", []))
            ids |= {str(e.get("person_id")) for e in h.get("people", [])}
        delta = Gallery.create(like.model_sha256, dim=like.dim, extra_models=like.extra_models)
        for person in people:
            delta.put_person(person)
        delta._retired = set(revoked)
        seq = files[-1][0] + 1 if files else 1
        delta.save(path.with_name(f"{path.name}.delta.{key}.{seq:04d}"))
    return len((ids - set(revoked)) | {p.person_id for p in people})


def _models(g: Gallery) -> dict:
    return {"model_sha256": g.model_sha256, "dim": g.dim, "extra": [(m.name, m.sha256, m.dim) for m in g.extra_models]}

