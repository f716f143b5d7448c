"""Where edge-mfr keeps its state (gallery, journal) when no config or flag says otherwise."""

from __future__ import annotations

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


SYSTEM_CACHE = Path("/var/cache/edge-mfr")


def cache_dir() -> Path:
    """Rebuildable files: ``$EDGE_MFR_CACHE_DIR``, systemd's ``$CACHE_DIRECTORY``, /var/cache/edge-mfr, or XDG."""
    for var in ("EDGE_MFR_CACHE_DIR", "CACHE_DIRECTORY"):
        value = os.environ.get(var)
        if value:
            return Path(value.split(":")[0])
    if SYSTEM_CACHE.is_dir() and os.access(SYSTEM_CACHE, os.W_OK):
        return SYSTEM_CACHE
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "edge-mfr"
