"""Galleries and embedder sets (issue 11): an old gallery with crops migrates, anything else is refused, unchanged."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_mfr.identity.enroll import enroll, reembed
from edge_mfr.identity.gallery import Gallery, GalleryModelMismatch
from edge_mfr.identity.identify import Identifier
from edge_mfr.vision.pipeline import FacePipeline

REPO = Path(__file__).resolve().parents[2]
FACENET_ONLY = ["facenet_int8.tflite"]


@pytest.fixture(scope="module")
def fused() -> FacePipeline:
    return FacePipeline(num_threads=2)  # the default set


@pytest.fixture(scope="module")
def facenet() -> FacePipeline:
    return FacePipeline(num_threads=2, embedders=FACENET_ONLY)


def _photo(tmp_path: Path, rgb: np.ndarray) -> Path:
    path = tmp_path / "eileen.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def _as_format_1(path: Path) -> None:
    """Rewrite a FaceNet-only gallery exactly as the previous release wrote it (format 1, no extra_models)."""
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    header = np.lib.format.read_array(io.BytesIO(members["header.npy"]))
    data = json.loads(header.tobytes())
    assert data.pop("extra_models") == []
    data["format_version"] = 1
    buf = io.BytesIO()
    np.save(buf, np.frombuffer(json.dumps(data).encode(), np.uint8))
    members["header.npy"] = buf.getvalue()
    with zipfile.ZipFile(path, "w") as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    full = {**os.environ, "EDGE_MFR_STATE_DIR": "/nonexistent-state", **(env or {})}
    return subprocess.run([sys.executable, "-m", "edge_mfr.cli", *args], capture_output=True, text=True, env=full,
                          cwd=REPO, timeout=300)


def _one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and needle in errors[0], proc.stderr


def test_old_gallery_with_crops_is_migrated_by_reembed(tmp_path, facenet, fused, astronaut):
    gallery = tmp_path / "gallery.npz"
    enroll(gallery, "Eileen Collins", [_photo(tmp_path, astronaut)], facenet, keep_crops=True)
    _as_format_1(gallery)
    with pytest.raises(GalleryModelMismatch, match="people reembed"):
        Identifier.from_files(gallery, fused.embedder_ids)
    n = len(Gallery.load(gallery).people[0].templates)
    assert reembed(gallery, fused) == n
    g = Gallery.load(gallery, fused.embedder.model_sha256, extra_models=fused.embedder_ids[1:])
    assert [(m.name, m.dim) for m in g.extra_models] == [(e.name, e.dim) for e in fused.extra_embedders]
    assert all(x.shape == (n, m.dim) for x, m in zip(g.people[0].extra, g.extra_models, strict=True))

    identifier = Identifier.from_files(gallery, fused.embedder_ids)
    analyzed = fused.analyze(astronaut)
    ident = identifier.identify(analyzed, lambda f, m, x: fused.embed_for_identity(astronaut, f, m, x))[0]
    assert ident.name == "Eileen Collins" and ident.decision.accepted


def test_gallery_without_crops_or_of_other_embedders_is_refused_and_kept(tmp_path, facenet, fused, astronaut):
    photo = _photo(tmp_path, astronaut)
    plain = tmp_path / "plain.npz"
    enroll(plain, "Eileen Collins", [photo], facenet)
    before = plain.read_bytes()
    _one_line_error(_cli("recognize", str(photo), "--gallery", str(plain)), "re-enroll everyone")
    _one_line_error(_cli("people", "reembed", "--gallery", str(plain)), "re-enroll")
    assert plain.read_bytes() == before

    fused_gallery = tmp_path / "fused.npz"
    enroll(fused_gallery, "Eileen Collins", [photo], fused)
    before = fused_gallery.read_bytes()
    proc = _cli("--embedders", ",".join(FACENET_ONLY), "recognize", str(photo), "--gallery", str(fused_gallery))
    _one_line_error(proc, "made with extra embedders fr_feature_dynamic.tflite, mobilefacenet.tflite")
    assert fused_gallery.read_bytes() == before


def test_an_extra_embedder_with_the_wrong_hash_is_refused(tmp_path, astronaut):
    models = tmp_path / "models"
    shutil.copytree(REPO / "models", models)
    target = models / "mobilefacenet.tflite"
    data = bytearray(target.read_bytes())
    data[-100] ^= 0x55
    target.write_bytes(bytes(data))
    gallery = tmp_path / "gallery.npz"
    proc = _cli("enroll", "Eileen", str(_photo(tmp_path, astronaut)), "--gallery", str(gallery),
                env={"EDGE_MFR_MODELS": str(models)})
    _one_line_error(proc, "mobilefacenet.tflite: sha256")
    assert not gallery.exists()
