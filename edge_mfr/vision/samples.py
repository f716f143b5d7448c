"""The embedded sample photo: the default input of `recognize`, `bench` and `demo`, and the synthetic camera's face.

It lives down here, beside image reading, so that the command line, the appliance and the benchmark can all
use it without importing each other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_mfr.errors import EdgeMfrError

SAMPLE_NAME = "astronaut (scikit-image sample, public domain)"


def sample_image() -> np.ndarray:
    """The embedded default input: scikit-image's public-domain astronaut photo (Eileen Collins).

    Read straight from the installed package's data folder: importing scikit-image itself would pull in
    SciPy and cost tens of MiB of memory for one photo.
    """
    import importlib.util

    from edge_mfr.vision.imageio import read_image

    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise EdgeMfrError(
            "no input given and the embedded sample needs scikit-image: pip install 'edge-mfr[demo]'"
        )
    path = Path(spec.submodule_search_locations[0]) / "data" / "astronaut.png"
    if not path.is_file():
        raise EdgeMfrError(f"{path}: scikit-image's sample photo is missing from the installed package")
    return read_image(path)
