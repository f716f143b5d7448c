"""Shared fixtures: the real face data set, the embedded sample photo, a copy of the models folder."""

from __future__ import annotations

import csv
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("EDGE_MFR_DATA", REPO.parent / "shared" / "data"))


def data_available() -> bool:
    return (DATA_DIR / "labels.csv").is_file()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """../shared/data (or $EDGE_MFR_DATA); tests using it skip when it is absent (CI requires it)."""
    if not data_available():
        pytest.skip(f"real face data not found at {DATA_DIR} (set EDGE_MFR_DATA); .ci/run requires it")
    return DATA_DIR


@pytest.fixture(scope="session")
def labels(data_dir: Path) -> list[dict[str, str]]:
    with open(data_dir / "labels.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    skdata = pytest.importorskip("skimage.data")
    return np.ascontiguousarray(skdata.astronaut())


@pytest.fixture()
def models_copy(tmp_path: Path) -> Path:
    """A private copy of models/ that a test may damage."""
    target = tmp_path / "models"
    shutil.copytree(REPO / "models", target, ignore=shutil.ignore_patterns("*.md"))
    return target


@pytest.fixture(scope="session")
def short_detector():
    from edge_mfr.vision.detector import BlazeFaceDetector

    return BlazeFaceDetector("short")


# The broker fixtures (a real mosquitto on a free loopback port, and its TLS certificates) for every test.
from tests.mosquitto_fixture import broker, certs  # noqa: E402, F401


@dataclass(frozen=True)
class EnrolledCast:
    """Eileen Collins enrolled from scikit-image's astronaut photo, and the faces the walk clips are drawn with."""

    root: Path
    photo: Path  # the astronaut photo as a PNG (for uploads)
    gallery: Path  # a gallery with her enrolled under demo.NAME; copy it before changing it
    cast: Any  # edge_mfr.demo.actors(): .eileen and .stranger face images


@pytest.fixture(scope="session")
def enrolled_cast(tmp_path_factory: pytest.TempPathFactory) -> EnrolledCast:
    """Enrolled once per session through the real enrollment code (test_app, test_app_mqtt, the kiosk)."""
    pytest.importorskip("skimage")  # the sample photos live in its data folder
    from edge_mfr.demo import NAME, actors
    from edge_mfr.identity.enroll import EnrollOptions, enroll
    from edge_mfr.vision.imageio import write_image
    from edge_mfr.vision.pipeline import FacePipeline
    from edge_mfr.vision.samples import sample_image

    root = tmp_path_factory.mktemp("cast")
    pipeline = FacePipeline(num_threads=2)
    photo = root / "eileen.png"
    write_image(photo, sample_image())
    enroll(root / "gallery.npz", NAME, [photo], pipeline, EnrollOptions())
    return EnrolledCast(root, photo, root / "gallery.npz", actors(pipeline))
