"""Fleet test helpers: keys, small galleries with real-looking unit vectors, door rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_mfr.identity.gallery import Gallery, TemplateMeta
from edge_mfr.interfaces.fleet import keys

MODEL = "ab" * 32
DIM = 16


def unit_rows(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_gallery(path: Path, names: list[str], seed: int = 0, model: str = MODEL) -> Gallery:
    rng = np.random.default_rng(seed)
    with Gallery.edit(path, model, dim=DIM) as g:
        for name in names:
            p = g.add_person(name)
            g.add_templates(p.person_id, unit_rows(rng, 3), [TemplateMeta(f"{name}-{i}.jpg", 1.0) for i in range(3)])
    return Gallery.load(path, model)


@pytest.fixture()
def keypair(tmp_path: Path) -> tuple[Path, Path]:
    return keys.keygen(tmp_path / "keys")
