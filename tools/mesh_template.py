"""Where the face mesh's eye corners, nose bridge and nose tip sit in an aligned crop: align.MESH_MASKED_TEMPLATES.

Usage: python tools/mesh_template.py [--data ../shared/data] [--template arcface112]

A masked face going to an ArcFace-style embedder is fitted on those six mesh points (landmarks.CORNER_POINTS)
instead of BlazeFace's eyes and nose. For the probe crop to frame the face as the gallery's crops do (the
enrollment photos, aligned on BlazeFace's four points), the six points' template positions are their mean
positions in crops aligned that way. Measured on the bare faces of ``mask_status/without_mask`` (people no
protocol enrolls or probes; never an evaluation image), faces whose mesh presence is at least 0.5, then made
symmetric about the crop's vertical centre line. Prints the constant to paste into align.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge_mfr.vision.align import alignment_matrix, template_points, transform_points  # noqa: E402
from edge_mfr.vision.detector import BlazeFaceDetector  # noqa: E402
from edge_mfr.vision.faces import best_face, detect_faces  # noqa: E402
from edge_mfr.vision.imageio import read_image  # noqa: E402
from edge_mfr.vision.landmarks import CORNER_POINTS, FaceLandmarker  # noqa: E402
from edge_mfr.vision.mask_status import read_mask_labels  # noqa: E402

# CORNER_POINTS order: right eye outer, inner, left eye inner, outer, bridge, tip -> mirror partner index.
MIRROR = (3, 2, 1, 0, 4, 5)


def measure(data: Path, template: str) -> tuple[np.ndarray, int]:
    """(6, 2) mean corner positions in ``template``'s native crop, and how many faces gave them."""
    detector = BlazeFaceDetector("short")
    landmarker = FaceLandmarker()
    spots = []
    paths, masked_labels = read_mask_labels(data / "mask_status")
    for path, masked in zip(paths, masked_labels, strict=True):
        if masked:
            continue
        image = read_image(path)
        face = best_face(detect_faces(detector, image), image.shape)
        if face is None:
            continue
        mesh = landmarker.mesh(image, face)
        if mesh.presence < 0.5:
            continue
        matrix = alignment_matrix(face, template=template)
        spots.append(transform_points(mesh.points[list(CORNER_POINTS), :2], matrix))
    if not spots:
        raise SystemExit("mesh_template: no bare face with a trusted mesh found")
    return np.mean(spots, axis=0), len(spots)


def symmetric(points: np.ndarray, size: int) -> np.ndarray:
    """Average each point with its mirror partner reflected about x = size / 2."""
    mirrored = points[list(MIRROR)].copy()
    mirrored[:, 0] = size - mirrored[:, 0]
    return (points + mirrored) / 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--template", default="arcface112")
    args = parser.parse_args(argv)
    if not (args.data / "mask_status" / "labels.csv").is_file():
        parser.error(f"{args.data / 'mask_status' / 'labels.csv'}: missing")
    _, size = template_points(args.template)
    mean, n = measure(args.data, args.template)
    print(f"# {n} bare mask_status faces; asymmetry before symmetrising: "
          f"{float(np.abs(mean - symmetric(mean, size)).max()):.2f} px")
    rows = ",\n".join(f"    [{x:.2f}, {y:.2f}]" for x, y in symmetric(mean, size))
    print(f"{args.template!r}: np.array([\n{rows},\n], dtype=np.float32),")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
