"""Where edge-mfr keeps its state (gallery, journal) when nothing says otherwise; file checksums."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

SYSTEM_STATE = Path("/var/lib/edge-mfr")


def state_dir() -> Path:
    """``$EDGE_MFR_STATE_DIR``, systemd's ``$STATE_DIRECTORY``, /var/lib/edge-mfr when writable, else XDG."""
    for var in ("EDGE_MFR_STATE_DIR", "STATE_DIRECTORY"):
        value = os.environ.get(var)
        if value:
            return Path(value.split(":")[0])
    if SYSTEM_STATE.is_dir() and os.access(SYSTEM_STATE, os.W_OK):
        return SYSTEM_STATE
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "edge-mfr"


def default_gallery() -> Path:
    return state_dir() / "gallery.npz"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (the models are tens of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cli_command() -> str:
    """How to type `edge-mfr` here: the bare name when it is on PATH and is this installation, else the path
    of this installation's script (relative when under the current folder), so printed hints run as shown.

    Why: after `make demo` the script is .venv/bin/edge-mfr, not on PATH until the venv is activated.
    """
    import shutil
    import sys

    own = Path(sys.executable).parent / "edge-mfr"
    found = shutil.which("edge-mfr")
    if found and (not own.exists() or Path(found).resolve() == own.resolve()):
        return "edge-mfr"
    if not own.exists():
        return "edge-mfr"
    try:
        return str(own.relative_to(Path.cwd()))
    except ValueError:
        return str(own)
