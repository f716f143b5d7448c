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
