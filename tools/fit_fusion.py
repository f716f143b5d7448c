"""Fit the score fusion of several embedders (models/fusion.json) on faces outside the evaluation protocol.

Usage: python tools/fit_fusion.py --embedders facenet_int8.tflite,fr_feature.tflite [--data ../shared/data]

The statistics are those of *strangers*: the mask_status faces (people nobody enrolls, never a probe)
scored against a gallery enrolled from the development subsets' enrollment images, each face routed by
its predicted mask status as at the door. The same faces calibrate the fused thresholds the way the
FaceNet-only ones were (README, "how the default thresholds were calibrated"): mean + Z * sd of the
stranger-vs-person scores, Z = 4.57 (1 in 10,000 strangers per enrolled person). No probe and no reported
stranger (glint_celeb) is looked at. Runs on the device code path, so it needs no TensorFlow.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge_mfr.errors import EdgeMfrError, EnrollmentError  # noqa: E402
from edge_mfr.eval import read_labels, split  # noqa: E402
from edge_mfr.identity.classifier import IdentityClassifier  # noqa: E402
from edge_mfr.identity.enroll import EnrollOptions, prepare_enrollment  # noqa: E402
from edge_mfr.identity.fusion import FUSION_NAME, KINDS, Fusion, Z, fit_stats  # noqa: E402
from edge_mfr.vision.faces import best_face  # noqa: E402
from edge_mfr.vision.imageio import read_image  # noqa: E402
from edge_mfr.vision.mask_status import MaskStatusClassifier, read_mask_labels  # noqa: E402
from edge_mfr.vision.pipeline import FacePipeline  # noqa: E402

DEV_SUBSETS = "mfr2,lfw,face_recognition_examples"
# Cascade: a bare face below the fused unmasked threshold minus this skips the extra embedders; every value
# 0.05-0.4 gave the same open-set outcome on both halves of the MFR2 people (README, fused recognition).
CASCADE_BELOW = 0.1


def enroll_gallery(pipeline: FacePipeline, data_dir: Path, subsets: list[str]):
    """Templates (name -> rows), labels and synthetic flags of every person of ``subsets`` (enrollment images only)."""
    protocol = split(read_labels(data_dir), subsets, [])
    names = [e.name for e in pipeline.embedders]
    rows: dict[str, list[np.ndarray]] = {n: [] for n in names}
    labels: list[str] = []
    synthetic: list[bool] = []
    for identity, items in protocol.enroll.items():
        if not items:
            continue
        try:
            result = prepare_enrollment(pipeline, [data_dir / r.path for r in items], EnrollOptions())
        except EnrollmentError:
            continue
        rows[names[0]].append(result.embeddings)
        for n in names[1:]:
            rows[n].append(result.extra_embeddings[n])
        labels += [identity] * len(result.embeddings)
        synthetic += [m.synthetic for m in result.metas]
    return {n: np.concatenate(r) for n, r in rows.items()}, np.array(labels), np.array(synthetic)


def stranger_embeddings(pipeline: FacePipeline, mask_dir: Path, mask_status: MaskStatusClassifier):
    """name -> (n, dim) embeddings of the mask_status faces as the door would identify them, and their routing."""
    paths, _ = read_mask_labels(mask_dir)
    per_face, routed = [], []
    for path in paths:
        try:
            image = read_image(path)
        except EdgeMfrError:
            continue
        face = best_face(pipeline.detect(image), image.shape)
        if face is None:
            continue
        analyzed = pipeline.analyze_faces(image, [face])[0]
        masked = mask_status.predict(analyzed.embedding[None], [analyzed.crop])[:1].astype(bool)
        per_face.append(pipeline.embed_for_identity(image, [analyzed], masked))
        routed.append(bool(masked[0]))
    names = list(per_face[0])
    return {n: np.concatenate([f[n] for f in per_face]) for n in names}, np.array(routed)


def fit(pipeline: FacePipeline, data_dir: Path, subsets: list[str], weights: dict[str, float]) -> Fusion:
    templates, labels, synthetic = enroll_gallery(pipeline, data_dir, subsets)
    mask_status = MaskStatusClassifier.load(None, pipeline.embedder.model_sha256)
    faces, routed = stranger_embeddings(pipeline, data_dir / "mask_status", mask_status)
    per_kind: dict[str, dict[str, np.ndarray]] = {k: {} for k in KINDS}
    for name, rows in templates.items():
        clf = IdentityClassifier().fit({name: rows}, labels, synthetic)
        scores = clf.similarity({name: faces[name]}, routed)
        per_kind["unmasked"][name], per_kind["masked"][name] = scores[~routed], scores[routed]
    names = tuple(e.name for e in pipeline.embedders)
    fusion = Fusion(names, fit_stats(per_kind), weights)
    fused = IdentityClassifier().fit(templates, labels, synthetic, fusion=fusion).similarity(faces, routed)
    thresholds = {k: round(float(fused[r].mean() + Z * fused[r].std()), 2)
                  for k, r in (("unmasked", ~routed), ("masked", routed))}
    thresholds["margin"] = 0.05  # as for FaceNet alone: the fused scores read on FaceNet's scale
    primary = fusion.stats["unmasked"][names[0]]
    cascade = {"accept": round(max(primary[0] + Z * primary[1], thresholds["unmasked"]), 3),
               "reject": round(thresholds["unmasked"] - CASCADE_BELOW, 3)}
    provenance = {
        "tool": "tools/fit_fusion.py", "fitted_at": dt.date.today().isoformat(),
        "strangers": f"mask_status: {len(routed)} faces ({int(routed.sum())} routed masked), nobody enrolled",
        "gallery": f"enrollment images of {','.join(subsets)}: {len(set(labels.tolist()))} people, "
                   f"{len(labels)} templates",
        "z": Z,
        "cascade_rule": "bare faces: primary score >= accept (primary-only stranger-safe threshold) with the margin, "
                        f"or < reject (fused unmasked threshold - {CASCADE_BELOW}), skip the extra embedders",
    }
    return Fusion(names, fusion.stats, weights, {e.name: e.model_sha256 for e in pipeline.embedders},
                  provenance, cascade, thresholds)



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedders", required=True, help="model file names, primary (FaceNet) first")
    parser.add_argument("--weights", default=None, help="comma-separated weights (default: 1 each)")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--subsets", default=DEV_SUBSETS, help="subsets whose enrollment images form the gallery")
    parser.add_argument("--models", type=Path, default=None, help="models folder (default: the bundled one)")
    args = parser.parse_args(argv)
    names = [n for n in args.embedders.split(",") if n]
    if len(names) < 2:
        parser.error("--embedders: fusion needs at least two embedders")
    weights = [float(w) for w in args.weights.split(",")] if args.weights else [1.0] * len(names)
    if len(weights) != len(names):
        parser.error("--weights: one weight per embedder")
    if not (args.data / "mask_status" / "labels.csv").is_file():
        parser.error(f"{args.data}: no mask_status/labels.csv")
    try:
        pipeline = FacePipeline(num_threads=2, models_dir=args.models, embedders=names)
        subsets = [s for s in args.subsets.split(",") if s]
        fusion = fit(pipeline, args.data, subsets, dict(zip(names, weights, strict=True)))
    except EdgeMfrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = (args.models or REPO / "models") / FUSION_NAME
    fusion.save(out)
    print(f"wrote {out}: thresholds {fusion.thresholds}, cascade {fusion.cascade}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
