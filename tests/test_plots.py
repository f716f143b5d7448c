"""`eval --plots` draws with OpenCV, so it works where `make demo` installs edge-mfr (no matplotlib)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from edge_mfr.errors import EdgeMfrError
from edge_mfr.plots import det_points, operating_point, write_plots
from edge_mfr.vision.imageio import read_image


def _report(rng: np.random.Generator) -> dict:
    return {"_scores": {"genuine_masked": rng.normal(0.6, 0.15, 85).tolist(),
                        "genuine_unmasked": rng.normal(0.8, 0.1, 39).tolist(),
                        "impostor": rng.normal(0.1, 0.1, 3000).tolist()},
            "open_set": {"thresholds": {"masked": 0.55, "unmasked": 0.45}}}


def test_plots_are_written_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # importing it now raises ImportError
    paths = write_plots(_report(np.random.default_rng(0)), tmp_path / "plots")
    assert [p.name for p in paths] == ["score_distributions.png", "det.png"]
    for path in paths:
        image = read_image(path)
        assert image.shape[0] >= 400 and image.shape[1] >= 600
        assert image.std() > 10  # something was drawn on the white canvas


def test_det_points_match_the_definition():
    genuine, impostor = np.array([0.2, 0.5, 0.9]), np.array([0.1, 0.3, 0.6, 0.7])
    far, frr = det_points(genuine, impostor)
    thresholds = np.unique(np.concatenate([genuine, impostor]))
    assert far.tolist() == [np.mean(impostor >= t) for t in thresholds]
    assert frr.tolist() == [np.mean(genuine < t) for t in thresholds]
    assert operating_point(genuine, impostor, 0.55) == (0.5, 2 / 3)


def test_plot_folder_that_cannot_be_made_fails_with_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(EdgeMfrError, match="cannot create the plot folder"):
        write_plots(_report(np.random.default_rng(1)), blocker / "plots")
