"""Shared fixtures: the real face data set, the embedded sample photo, a copy of the models folder."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

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
