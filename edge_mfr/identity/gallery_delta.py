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

Writing and replaying deltas is gallery.py's (``append_delta``, ``_replay_deltas``); this module only names,
lists and removes the files, so it imports nothing of the gallery (no import cycle).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from pathlib import Path

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
