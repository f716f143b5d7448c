"""Does aligning on the MediaPipe face mesh help each embedder? (issue 11 item 5; a measurement, not a test)

MFR2 development people only (the data folder's mfr2/ subset). For every image: BlazeFace (short range,
padded pass: the images are aligned crops), then the face mesh (edge_mfr.vision.landmarks). Each embedder
gets two crops of every face, on its own template:

- ``blazeface``: BlazeFace's eyes, nose tip and mouth point (today's alignment);
- ``mesh``: the mesh's eye centres (mean of the two corners), nose tip and mouth centre (mean of the corners);
- ``mesh_corners``: as ``mesh`` for unmasked faces; masked faces are fitted on the four eye corners, the nose
  bridge and the nose tip, whose template positions are the mean of those points over the unmasked faces
  aligned by ``mesh`` (gallery images only, never a probe).

Masked faces (by the data set's label, standing in for the mask classifier) are fitted on the eyes and nose
only, unmasked ones on all four points, the same similarity fit either way. Scores are plain cosine:

- masked: gallery = the people's unmasked images, probes = their masked images; person score = best image;
- unmasked: each unmasked image against the other unmasked images (people with two or more).

Rank-1 and TAR at FAR 1e-2 / 1e-3 (impostors: the other people of the same set). Designs are chosen on
one half of the identities and confirmed on the other (seeded halvings), as the README does.

    python tools/landmark_align_eval.py --data ../shared/data [--halvings 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from edge_mfr.vision.align import ALIGN_POINTS, MASKED_ALIGN_POINTS, TEMPLATES, similarity_transform  # noqa: E402
from edge_mfr.vision.detector import BlazeFaceDetector  # noqa: E402
from edge_mfr.vision.faces import best_face, detect_faces  # noqa: E402
from edge_mfr.vision.imageio import read_image  # noqa: E402
from edge_mfr.vision.landmarks import CORNER_POINTS, FaceLandmarker, keypoints_like_blazeface  # noqa: E402
from edge_mfr.vision.runtime import TFLiteModel, find_model  # noqa: E402

EMBEDDERS = ("facenet_int8.tflite", "fr_feature_dynamic.tflite", "mobilefacenet.tflite")
METHODS = ("blazeface", "mesh", "mesh_corners")


@dataclass
class Sample:
    identity: str
    masked: bool
    image: np.ndarray
    keypoints: dict[str, np.ndarray]  # method -> (6, 2) keypoints in BlazeFace order
    mesh: np.ndarray  # (468, 3)


class Embedder:
    """One manifest embedder: its template, preprocessing and fixed batch."""

    def __init__(self, name: str):
        path, spec = find_model("embedder", name=name)
        self.name = name
        self.model = TFLiteModel(path, spec)
        align = spec.extra.get("alignment", {"template": "facenet160", "size": 160})
        self.template, native = TEMPLATES[align["template"]]
        self.size = int(align["size"])
        self.scale = self.size / native
        self.mean = float(spec.preprocessing["mean"])
        self.std = float(spec.preprocessing["std"])
        self.batch = int(spec.extra.get("fixed_batch", 1))

        self.corner_template: np.ndarray | None = None

    def fit_corner_template(self, samples: list[Sample]) -> None:
        """Template spots of CORNER_POINTS: their mean over unmasked faces aligned on the mesh's 4 points."""
        spots = []
        for s in samples:
            if s.masked:
                continue
            points = list(ALIGN_POINTS)
            matrix = similarity_transform(s.keypoints["mesh"][points], self.template[points] * self.scale)
            src = s.mesh[list(CORNER_POINTS), :2]
            spots.append(src @ matrix[:, :2].T + matrix[:, 2])
        self.corner_template = np.mean(spots, axis=0).astype(np.float32)

    def crop(self, image: np.ndarray, keypoints: np.ndarray, masked: bool) -> np.ndarray:
        points = list(MASKED_ALIGN_POINTS if masked else ALIGN_POINTS)
        matrix = similarity_transform(keypoints[points], self.template[points] * self.scale)
        return self.warp(image, matrix)

    def warp(self, image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        return cv2.warpAffine(image, matrix, (self.size, self.size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)

    def crop_for(self, s: Sample, method: str) -> np.ndarray:
        if method == "mesh_corners":
            if not s.masked:
                return self.crop(s.image, s.keypoints["mesh"], False)
            assert self.corner_template is not None
            matrix = similarity_transform(s.mesh[list(CORNER_POINTS), :2], self.corner_template)
            return self.warp(s.image, matrix)
        return self.crop(s.image, s.keypoints[method], s.masked)

    def embed(self, crop: np.ndarray) -> np.ndarray:
        x = ((crop.astype(np.float32) - self.mean) / self.std)[None]
        if self.batch > 1:
            x = np.repeat(x, self.batch, axis=0)  # the graph hard-codes its batch: pad with copies
        e = self.model.run(x)[0][0].astype(np.float64).ravel()
        return e / max(np.linalg.norm(e), 1e-12)


def load_samples(data: Path) -> tuple[list[Sample], list[float], list[float]]:
    """MFR2 faces with BlazeFace and mesh keypoints; also per-face mesh and detector times (ms)."""
    detector = BlazeFaceDetector("short")
    landmarker = FaceLandmarker()
    samples, mesh_ms, det_ms = [], [], []
    with open(data / "labels.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["subset"] == "mfr2"]
    for row in rows:
        image = read_image(data / row["path"])
        t0 = time.perf_counter()
        face = best_face(detect_faces(detector, image, crop_kind="aligned_crop"), image.shape)
        det_ms.append((time.perf_counter() - t0) * 1e3)
        if face is None:
            continue
        t0 = time.perf_counter()
        mesh = landmarker.points(image, face)
        mesh_ms.append((time.perf_counter() - t0) * 1e3)
        kps = {"blazeface": face.keypoints, "mesh": keypoints_like_blazeface(mesh, face)}
        samples.append(Sample(row["identity"], row["masked"] == "1", image, kps, mesh))
    return samples, mesh_ms, det_ms


def tar_at_far(genuine: list[float], impostor: list[float], far: float) -> float:
    """Share of genuine scores above the threshold that lets at most ``far`` of impostors through."""
    if not genuine or not impostor:
        return float("nan")
    imp = np.sort(np.asarray(impostor))[::-1]
    allowed = int(np.floor(far * len(imp)))
    threshold = imp[min(allowed, len(imp) - 1)]
    return float(np.mean(np.asarray(genuine) > threshold))


def evaluate(emb: np.ndarray, samples: list[Sample], people: set[str]) -> dict[str, float]:
    """Masked and unmasked rank-1 and TAR@FAR among ``people``."""
    idx = [i for i, s in enumerate(samples) if s.identity in people]
    ident = np.array([samples[i].identity for i in idx])
    masked = np.array([samples[i].masked for i in idx])
    e = emb[idx]
    sims = e @ e.T
    out: dict[str, float] = {}
    for kind in ("masked", "unmasked"):
        probes = np.where(masked)[0] if kind == "masked" else np.where(~masked)[0]
        gallery = np.where(~masked)[0]
        hits, genuine, impostor, n = 0, [], [], 0
        for p in probes:
            g = gallery[gallery != p]
            if kind == "unmasked" and not np.any(ident[g] == ident[p]):
                continue
            scores = {}
            for person in set(ident[g]):
                scores[person] = float(np.max(sims[p, g[ident[g] == person]]))
            if ident[p] not in scores:
                continue
            n += 1
            hits += max(scores, key=scores.get) == ident[p]
            genuine.append(scores[ident[p]])
            impostor.extend(v for k, v in scores.items() if k != ident[p])
        out[f"{kind}_rank1"] = hits / max(n, 1)
        out[f"{kind}_tar_far1e-2"] = tar_at_far(genuine, impostor, 1e-2)
        out[f"{kind}_tar_far1e-3"] = tar_at_far(genuine, impostor, 1e-3)
        out[f"{kind}_probes"] = n
    return out


def objective(m: dict[str, float]) -> float:
    """What a design is chosen on: masked rank-1 plus masked TAR at FAR 1e-2 (1e-3 is too noisy here)."""
    return m["masked_rank1"] + m["masked_tar_far1e-2"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(REPO_ROOT.parent / "shared" / "data"))
    p.add_argument("--halvings", type=int, default=20, help="seeded random halvings of the identities")
    p.add_argument("--json", help="write all figures to this file")
    args = p.parse_args(argv)
    data = Path(args.data)
    samples, mesh_ms, det_ms = load_samples(data)
    people = sorted({s.identity for s in samples})
    print(f"{len(samples)} MFR2 faces of {len(people)} people ({sum(s.masked for s in samples)} masked); "
          f"face mesh median {statistics.median(mesh_ms):.2f} ms/face, BlazeFace detection median "
          f"{statistics.median(det_ms):.2f} ms/image (1 thread, this host)")
    report: dict[str, object] = {"faces": len(samples), "people": len(people),
                                 "mesh_ms_median": statistics.median(mesh_ms),
                                 "detector_ms_median": statistics.median(det_ms), "embedders": {}}
    rng = np.random.default_rng(0)
    halvings = [set(rng.permutation(people)[: len(people) // 2]) for _ in range(args.halvings)]
    for name in EMBEDDERS:
        embedder = Embedder(name)
        embedder.fit_corner_template(samples)
        emb = {m: np.stack([embedder.embed(embedder.crop_for(s, m)) for s in samples]) for m in METHODS}
        full = {m: evaluate(emb[m], samples, set(people)) for m in METHODS}
        gains, chosen = [], {m: 0 for m in METHODS}
        for half in halvings:
            other = set(people) - half
            pick = max(METHODS, key=lambda m: objective(evaluate(emb[m], samples, half)))
            chosen[pick] += 1
            confirm = {m: objective(evaluate(emb[m], samples, other)) for m in METHODS}
            gains.append(confirm[pick] - confirm["blazeface"])
        report["embedders"][name] = {"all_people": full, "halvings": args.halvings,  # type: ignore[index]
                                     "chosen_on_half": chosen, "gain_on_other_half_mean": float(np.mean(gains)),
                                     "corner_template": np.round(embedder.corner_template.astype(float), 2).tolist()}
        print(f"\n{name} (all {len(people)} people)")
        print("| alignment | masked rank-1 | masked TAR@1e-2 | masked TAR@1e-3 | unmasked rank-1 | "
              "unmasked TAR@1e-2 | unmasked TAR@1e-3 |")
        print("|---|---|---|---|---|---|---|")
        for m in METHODS:
            f = full[m]
            print(f"| {m} | {f['masked_rank1']:.3f} | {f['masked_tar_far1e-2']:.3f} | {f['masked_tar_far1e-3']:.3f} | "
                  f"{f['unmasked_rank1']:.3f} | {f['unmasked_tar_far1e-2']:.3f} | {f['unmasked_tar_far1e-3']:.3f} |")
        print(f"mesh_corners template ({embedder.size}px crop; points {CORNER_POINTS}): "
              f"{np.round(embedder.corner_template.astype(float), 2).tolist()}")
        print(f"probes: masked {full['mesh']['masked_probes']}, unmasked {full['mesh']['unmasked_probes']}; "
              f"halvings ({args.halvings}): chosen on the first half {chosen}, mean gain of the choice over "
              f"blazeface on the other half (masked rank-1 + TAR@1e-2) {np.mean(gains):+.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
