"""A file cache for XNNPACK's packed weights, so FaceNet's weights are in memory once instead of twice.

XNNPACK repacks every int8 weight tensor into its own layout when a model is prepared. With the classic
``Interpreter`` the packed copy lives on the heap next to the memory-mapped model file, so FaceNet's
24.6 MB of weights cost about twice that in RSS. LiteRT's CompiledModel can write the packed weights to a
file and map that file instead; the model's own weight pages are then never touched. Measured on the
build VM: both device models loaded and run once, peak RSS 77 MiB with the cache against 93 MiB with the
Interpreter, and FaceNet prepares in 6 ms instead of about 50 ms.

XNNPACK notices a cache written for another model or by another version and rebuilds it, but it does not
notice flipped bits in the packed weights: a damaged cache would give wrong embeddings, silently. So a
cache is only used when its sha256 matches the sidecar written right after it was built; otherwise it is
deleted and built again. Builds go to a temporary name and are renamed into place, so two processes
(the daemon and a CLI run) never see a half-written file.
"""

from __future__ import annotations

import logging
import os
import platform
from pathlib import Path

from edge_mfr.paths import cache_dir, sha256_file

log = logging.getLogger(__name__)

ENV_SWITCH = "EDGE_MFR_WEIGHT_CACHE"
SUFFIX = ".xnnpack"


def weight_cache_dir() -> Path | None:
    """Where packed weights are cached; None when ``$EDGE_MFR_WEIGHT_CACHE`` is ``off`` or ``0``.

    ``$EDGE_MFR_WEIGHT_CACHE`` may also name the folder; otherwise it is ``<cache dir>/xnnpack``.
    """
    value = os.environ.get(ENV_SWITCH, "").strip()
    if value.lower() in {"off", "0", "no", "false"}:
        return None
    return Path(value) if value else cache_dir() / "xnnpack"


def cache_path(model_path: Path, model_sha256: str, runtime_version: str, folder: Path) -> Path:
    """One file per model content, runtime version and CPU architecture (packing differs between them)."""
    name = f"{model_path.stem}-{model_sha256[:16]}-litert{runtime_version}-{platform.machine()}{SUFFIX}"
    return folder / name


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def usable(path: Path) -> bool:
    """True when ``path`` exists and matches the sha256 recorded when it was built."""
    try:
        recorded = _sidecar(path).read_text().strip()
        return bool(recorded) and sha256_file(path) == recorded
    except OSError:
        return False


def build_path(path: Path) -> Path:
    """A private name to build a new cache under (removes a damaged or unverified one first)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    for stale in (path, _sidecar(path)):
        if stale.exists():
            log.warning("%s: weight cache does not match its checksum; rebuilding it", path)
            stale.unlink(missing_ok=True)
    return path.with_name(f"{path.name}.tmp{os.getpid()}")


def publish(built: Path, path: Path) -> None:
    """Checksum a freshly built cache and move it into place (the sidecar last, so a crash leaves none)."""
    checksum = sha256_file(built)
    os.replace(built, path)
    sidecar_tmp = _sidecar(built)
    sidecar_tmp.write_text(checksum + "\n")
    os.replace(sidecar_tmp, _sidecar(path))


def discard(built: Path) -> None:
    built.unlink(missing_ok=True)
    _sidecar(built).unlink(missing_ok=True)
