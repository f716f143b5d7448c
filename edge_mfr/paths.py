"""Where edge-mfr keeps its state (gallery, journal) and its rebuildable caches when nothing says otherwise."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

SYSTEM_STATE = Path("/var/lib/edge-mfr")


def _first_of(own_var: str, systemd_var: str, system: Path, xdg_var: str, xdg_default: Path) -> Path:
    """Our variable, then systemd's (first entry), then the system folder when writable, then XDG's."""
    for var in (own_var, systemd_var):
        value = os.environ.get(var)
        if value:
            return Path(value.split(":")[0])
    if system.is_dir() and os.access(system, os.W_OK):
        return system
    return Path(os.environ.get(xdg_var) or str(xdg_default)) / "edge-mfr"


def state_dir() -> Path:
    """``$EDGE_MFR_STATE_DIR``, systemd's ``$STATE_DIRECTORY``, /var/lib/edge-mfr when writable, else XDG."""
    return _first_of("EDGE_MFR_STATE_DIR", "STATE_DIRECTORY", SYSTEM_STATE, "XDG_DATA_HOME",
                     Path.home() / ".local" / "share")


def default_gallery() -> Path:
    return state_dir() / "gallery.npz"


SYSTEM_CACHE = Path("/var/cache/edge-mfr")


def cache_dir() -> Path:
    """Rebuildable files: ``$EDGE_MFR_CACHE_DIR``, systemd's ``$CACHE_DIRECTORY``, /var/cache/edge-mfr, or XDG."""
    return _first_of("EDGE_MFR_CACHE_DIR", "CACHE_DIRECTORY", SYSTEM_CACHE, "XDG_CACHE_HOME", Path.home() / ".cache")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (models and caches are tens of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
