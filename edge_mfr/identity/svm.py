"""The linear SVM's weights, fitted by scikit-learn and persisted small next to the gallery.

Importing scikit-learn costs about 97 MiB of memory (it brings SciPy), more than the two models
together. The daemon therefore never imports it: the weights (people x 512 floats plus biases, about
2 KiB a person) are stored in ``<gallery>.svm.npz``, keyed by a hash of the templates they were fitted
on. When the key does not match (the gallery changed), the fit runs in a short-lived child process
whose memory is returned when it exits; the CLI, which already pays for scikit-learn, refreshes the
file in-process after every change.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import tokenize
import warnings
import zipfile
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def cache_path(gallery_path: Path) -> Path:
    return Path(gallery_path).with_name(Path(gallery_path).name + ".svm.npz")


def fit_key(x: np.ndarray, y: np.ndarray) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(x, dtype=np.float32).tobytes())
    digest.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    return digest.hexdigest()


def fit_linear_svm(x: np.ndarray, y: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(W (n_classes, dim), b (n_classes,)) of a one-vs-rest linear SVM; classes absent from y get no votes."""
    from sklearn.svm import LinearSVC

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on tiny galleries
        svm = LinearSVC(C=1.0, class_weight="balanced", max_iter=5000).fit(x, y)
    w, b = svm.coef_.astype(np.float32), svm.intercept_.astype(np.float32)
    classes = svm.classes_
    if len(classes) == 2:  # binary LinearSVC has one hyperplane: make it one per class
        w, b = np.vstack([-w, w]), np.concatenate([-b, b])
    full_w = np.zeros((n_classes, x.shape[1]), np.float32)
    full_b = np.full(n_classes, -1e3, np.float32)
    full_w[classes], full_b[classes] = w, b
    return full_w, full_b


def _write(path: Path, key: str, w: np.ndarray, b: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, key=np.array(key), w=w, b=b)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class CacheCorrupt(Exception):
    """The weights file exists but cannot be read as weights; it is ignored and rebuilt."""


def _read(path: Path, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached weights when they were fitted on ``key``; None when stale or missing; CacheCorrupt when damaged.

    The file is a cache: any damage (a torn write, bit rot, a hostile file) must cost a refit, never the
    daemon's start, so every way numpy can fail on it is caught here.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            w, b = z["w"], z["b"]
            if w.ndim != 2 or b.ndim != 1 or len(w) != len(b) or not (np.isfinite(w).all() and np.isfinite(b).all()):
                raise CacheCorrupt(f"{path}: weights of the wrong shape or not finite")
            return w.astype(np.float32), b.astype(np.float32)
    except FileNotFoundError:
        return None
    except CacheCorrupt:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError, zipfile.BadZipFile, SyntaxError,
            tokenize.TokenError, RecursionError, MemoryError, OverflowError, NotImplementedError) as exc:
        raise CacheCorrupt(f"{path}: {type(exc).__name__}: {str(exc)[:120]}") from None


def load_or_fit(x: np.ndarray, y: np.ndarray, n_classes: int, cache: Path | None,
                out_of_process: bool = False, problems: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weights for (x, y) from the cache when it matches, else fitted (and cached when possible).

    A damaged cache is logged, described in ``problems`` (the daemon journals them) and rebuilt.
    """
    key = fit_key(x, y)
    if cache is not None:
        try:
            hit = _read(cache, key)
        except CacheCorrupt as exc:
            hit = None
            log.warning("SVM weights cache ignored and rebuilt: %s", exc)
            if problems is not None:
                problems.append(f"SVM weights cache ignored and rebuilt: {exc}")
        if hit is not None and hit[0].shape == (n_classes, x.shape[1]):
            return hit
    if out_of_process and cache is not None:
        try:
            return _fit_in_child(x, y, n_classes, cache, key)
        except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
            log.warning("SVM fit in a child process failed (%s); fitting in-process", exc)
    w, b = fit_linear_svm(x, y, n_classes)
    if cache is not None:
        try:
            _write(cache, key, w, b)
        except OSError as exc:
            log.warning("cannot write %s (%s); the SVM will be refitted next time", cache, exc)
    return w, b


def _fit_in_child(x: np.ndarray, y: np.ndarray, n_classes: int, cache: Path, key: str):
    with tempfile.TemporaryDirectory(dir=cache.parent) as tmp:
        data = Path(tmp) / "fit.npz"
        np.savez(data, x=x, y=y, n=np.array(n_classes))
        proc = subprocess.run([sys.executable, "-m", "edge_mfr.identity.svm", str(data), str(cache)],
                              capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError((proc.stderr.strip().splitlines() or ["no output"])[-1])
    try:
        hit = _read(cache, key)
    except CacheCorrupt as exc:
        raise RuntimeError(str(exc)) from None
    if hit is None:
        raise RuntimeError(f"{cache}: child process wrote no matching weights")
    return hit


def _main(data: str, target: str) -> int:
    with np.load(data, allow_pickle=False) as z:
        x, y, n = z["x"], z["y"], int(z["n"])
    w, b = fit_linear_svm(x, y, n)
    _write(Path(target), fit_key(x, y), w, b)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1], sys.argv[2]))
