"""`edge-mfr eval`: the accuracy protocol of EVALUATION.md, on any folder laid out like ../shared/data.

Enrollment goes through the same code as `edge-mfr enroll` (quality checks, de-duplication, synthetic
masks). Probes are embedded through the same pipeline as the door camera's frames. Labels are read only
to choose what to enroll and to score; no decision looks at a probe's label.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_mfr.errors import EdgeMfrError, EnrollmentError, ImageError
from edge_mfr.identity.classifier import IdentityClassifier, Thresholds
from edge_mfr.identity.enroll import EnrollOptions, prepare_enrollment
from edge_mfr.identity.fusion import load_fusion
from edge_mfr.identity.identify import needs_extras
from edge_mfr.vision.faces import best_face
from edge_mfr.vision.imageio import read_image
from edge_mfr.vision.pipeline import FacePipeline

log = logging.getLogger(__name__)


@dataclass
class Row:
    path: str
    identity: str
    masked: bool
    subset: str
    image_kind: str


def read_labels(data_dir: Path) -> list[Row]:
    path = data_dir / "labels.csv"
    if not path.is_file():
        raise EdgeMfrError(f"{path}: no labels.csv (see EVALUATION.md for the data set format)")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"path", "identity", "masked", "subset", "image_kind"} - set(reader.fieldnames or [])
        if missing:
            raise EdgeMfrError(f"{path}: missing columns {', '.join(sorted(missing))}")
        return [Row(r["path"], r["identity"], r["masked"].strip() == "1", r["subset"], r["image_kind"])
                for r in reader]


def tar_at_far(genuine: np.ndarray, impostor: np.ndarray, far: float) -> tuple[float, float]:
    """(TAR, threshold) with the threshold set so that at most ``far`` of impostor scores pass."""
    if len(genuine) == 0 or len(impostor) == 0:
        return float("nan"), float("nan")
    imp = np.sort(impostor)[::-1]
    allowed = int(np.floor(far * len(imp)))
    threshold = float(imp[allowed]) if allowed < len(imp) else float(imp[-1])
    return float(np.mean(genuine > threshold)), threshold


@dataclass
class Split:
    """Who is enrolled from which images, and which images are probes (EVALUATION.md)."""

    enroll: dict[str, list[Row]]  # identity -> unmasked enrollment images (may be empty)
    masked: list[Row]  # every masked image of an enrolled person
    unmasked: list[Row]  # the held-back unmasked image of each person with two or more
    strangers: list[Row]  # images of the stranger subsets whose identity is not enrolled


def split(rows: list[Row], subsets: list[str], strangers: list[str]) -> Split:
    """The protocol's split; the held-back unmasked probe is each person's last unmasked image by path.

    Shared with tools/bench so the baselines are scored on exactly the same enrollment and probes.
    """
    identity_rows = [r for r in rows if ";" not in r.identity and r.identity]
    enrolled_rows = [r for r in identity_rows if r.subset in subsets]
    by_identity: dict[str, list[Row]] = defaultdict(list)
    for r in enrolled_rows:
        by_identity[r.identity].append(r)
    enroll: dict[str, list[Row]] = {}
    held_back: list[Row] = []
    for identity, items in sorted(by_identity.items()):
        unmasked = sorted((r for r in items if not r.masked), key=lambda r: r.path)
        if len(unmasked) >= 2:
            held_back.append(unmasked[-1])
            unmasked = unmasked[:-1]
        enroll[identity] = unmasked
    return Split(enroll, [r for r in enrolled_rows if r.masked], held_back,
                 [r for r in identity_rows if r.subset in strangers and r.identity not in by_identity])


def identity_metrics(rank1: dict[str, list[bool]], genuine: dict[str, list[float]],
                     impostor: dict[str, list[float]], stranger_scores: list[float]) -> dict:
    """The rank-1 and TAR@FAR keys of the report, plus the threshold behind each TAR.

    Impostor scores for a kind are its probes against every other enrolled person plus every stranger
    against every enrolled person. Shared with tools/bench so the baselines are scored the same way.
    """
    report: dict = {"thresholds_at_far": {}}
    for kind in ("masked", "unmasked"):
        report[f"{kind}_rank1"] = float(np.mean(rank1[kind])) if rank1[kind] else float("nan")
    for kind, fars in (("masked", (1e-2, 1e-3)), ("unmasked", (1e-3,))):
        imp = np.array(impostor[kind] + stranger_scores)
        for far in fars:
            tar, thr = tar_at_far(np.array(genuine[kind]), imp, far)
            key = f"{kind}_tar_at_far_{far:.0e}".replace("e-0", "e-")
            report[key] = tar
            report["thresholds_at_far"][key] = thr
    return report


@dataclass
class ProbeResult:
    row: Row
    found: bool
    embeddings: dict[str, np.ndarray] | None = None  # embedder name -> (dim,) as the door would identify it
    predicted_masked: bool = False
    extras_run: bool = False


def _embed_probe(pipeline: FacePipeline, data_dir: Path, row: Row, mask_classifier,
                 classifier: IdentityClassifier) -> ProbeResult:
    """One probe as at the door (Identifier.identify): mask status, then embed_for_identity with the cascade."""
    try:
        image = read_image(data_dir / row.path)
    except ImageError as exc:
        log.warning("%s", exc)
        return ProbeResult(row, False)
    face = best_face(pipeline.detect(image), image.shape)
    if face is None:
        return ProbeResult(row, False)
    analyzed = pipeline.analyze_faces(image, [face])[0]
    masked = mask_classifier.predict(analyzed.embedding[None], [analyzed.crop])[:1].astype(bool)
    extra = needs_extras(classifier, analyzed.embedding[None], masked)
    rows = pipeline.embed_for_identity(image, [analyzed], masked, extra)
    return ProbeResult(row, True, {k: v[0] for k, v in rows.items()}, bool(masked[0]), bool(extra[0]))


def run_eval(data_dir: Path, subsets: list[str], strangers: list[str], pipeline: FacePipeline,
             thresholds: Thresholds | None = None, enroll_options: EnrollOptions | None = None,
             mask_classifier=None, progress=None, models_dir: Path | None = None) -> dict:
    """Run the protocol; returns the report dict with the keys EVALUATION.md defines.

    ``progress(stage, done, total)``, when given, is called as each stage advances (the CLI shows it).
    """
    from edge_mfr.vision.mask_status import MaskStatusClassifier, cross_validated_accuracy

    rows = read_labels(data_dir)
    known = {r.subset for r in rows}
    for name in subsets + strangers:
        if name not in known:
            raise EdgeMfrError(f"{data_dir}: no subset {name!r} in labels.csv (has {', '.join(sorted(known))})")
    mask_classifier = mask_classifier or MaskStatusClassifier.load()
    protocol = split(rows, subsets, strangers)
    enroll_sets, masked_probes = protocol.enroll, protocol.masked
    unmasked_probes, stranger_probes = protocol.unmasked, protocol.strangers
    by_identity = enroll_sets  # every enrolled identity has a key, even one with no unmasked image

    # Enroll through the enrollment code path.
    options = enroll_options or EnrollOptions()
    names = [e.name for e in pipeline.embedders]
    templates: dict[str, list[np.ndarray]] = {n: [] for n in names}
    labels, synthetic, enroll_failed, dropped = [], [], [], 0
    for done, (identity, items) in enumerate(enroll_sets.items(), 1):
        if progress:
            progress("enrolling people", done, len(enroll_sets))
        if not items:
            enroll_failed.append(identity)
            continue
        try:
            result = prepare_enrollment(pipeline, [data_dir / r.path for r in items], options)
        except EnrollmentError as exc:
            log.warning("could not enroll %s: %s", identity, exc)
            enroll_failed.append(identity)
            continue
        dropped += len(result.dropped)
        templates[names[0]].append(result.embeddings)
        for n in names[1:]:
            templates[n].append(result.extra_embeddings[n])
        labels += [identity] * len(result.embeddings)
        synthetic += [m.synthetic for m in result.metas]
    if not labels:
        raise EdgeMfrError("nobody could be enrolled from the given subsets")
    fusion = load_fusion(pipeline.embedder_ids, models_dir)
    if thresholds is None and fusion.thresholds is not None:  # as the daemon: the set's calibrated point
        thresholds = Thresholds(**fusion.thresholds)
    classifier = IdentityClassifier(thresholds).fit({n: np.concatenate(t) for n, t in templates.items()},
                                                    np.array(labels), np.array(synthetic), fusion=fusion)

    # Probes.
    probes = [*masked_probes, *unmasked_probes, *stranger_probes]
    results = []
    for r in probes:
        results.append(_embed_probe(pipeline, data_dir, r, mask_classifier, classifier))
        if progress:
            progress("probes", len(results), len(probes))
    found = [p for p in results if p.found]

    ids = classifier.ids
    col = {pid: j for j, pid in enumerate(ids)}
    # Every probe is scored by the rule its *predicted* mask status routes it to, as at the door.
    e = {n: np.stack([p.embeddings[n] for p in found]) if found else np.zeros((0, 1), np.float32) for n in names}
    routed = np.array([p.predicted_masked for p in found], dtype=bool)
    sims = classifier.similarity(e, routed)
    ranks = classifier.rank_scores(e, routed)
    decisions = classifier.decide(e, routed) if found else []
    info = {id(p): (sims[i], ranks[i], decisions[i]) for i, p in enumerate(found)}

    def kind_of(p: ProbeResult) -> str:
        if p.row.identity not in by_identity:
            return "stranger"
        return "masked" if p.row.masked else "unmasked"

    genuine: dict[str, list[float]] = {"masked": [], "unmasked": []}
    impostor: dict[str, list[float]] = {"masked": [], "unmasked": []}
    stranger_scores: list[float] = []
    rank1 = {"masked": [], "unmasked": []}
    open_set = {"genuine": 0, "accept_correct": 0, "accept_wrong": 0, "strangers": 0, "stranger_accepted": 0}
    for p in results:
        kind = kind_of(p)
        if kind == "stranger":
            open_set["strangers"] += 1
            if p.found:
                s, _, d = info[id(p)]
                stranger_scores += s.tolist()
                open_set["stranger_accepted"] += int(d.accepted)
            continue
        open_set["genuine"] += 1
        if not p.found or p.row.identity not in col:
            rank1[kind].append(False)  # a missed face or an identity that failed to enroll is a miss
            genuine[kind].append(-1.0)
            continue
        s, rk, d = info[id(p)]
        j = col[p.row.identity]
        rank1[kind].append(int(np.argmax(rk)) == j)
        genuine[kind].append(float(s[j]))
        impostor[kind] += np.delete(s, j).tolist()
        open_set["accept_correct"] += int(d.person_id == p.row.identity)
        open_set["accept_wrong"] += int(d.accepted and d.person_id != p.row.identity)

    report: dict = identity_metrics(rank1, genuine, impostor, stranger_scores)
    n_gen = max(open_set["genuine"], 1)
    report["open_set"] = {
        "accept_correct": open_set["accept_correct"] / n_gen,
        "accept_wrong": open_set["accept_wrong"] / n_gen,
        "stranger_accepted": open_set["stranger_accepted"] / max(open_set["strangers"], 1),
        "thresholds": classifier.thresholds.model_dump(),
    }
    masked_ok = [p.predicted_masked == p.row.masked for p in found if kind_of(p) != "stranger"]
    report["probe_mask_routing_accuracy"] = float(np.mean(masked_ok)) if masked_ok else float("nan")
    if (data_dir / "mask_status" / "labels.csv").is_file():
        if progress:
            progress("mask status, 5-fold", 0, 1)
        report["mask_status_accuracy"], report["mask_status_detail"] = cross_validated_accuracy(
            pipeline, data_dir / "mask_status")
        if progress:
            progress("mask status, 5-fold", 1, 1)
    no_face: dict[str, int] = defaultdict(int)
    for p in results:
        if not p.found:
            no_face[p.row.subset] += 1
    report["no_face"] = {s: no_face.get(s, 0) for s in sorted({r.subset for r in probes})}
    report["counts"] = {
        "enrolled_identities": len(ids),
        "enroll_failed": len(enroll_failed),
        "enrollment_templates": int(len(labels)),
        "enrollment_frames_dropped": dropped,
        "masked_probes": len(masked_probes),
        "unmasked_probes": len(unmasked_probes),
        "stranger_probes": len(stranger_probes),
    }
    report["model"] = {"embedder_sha256": pipeline.embedder.model_sha256, "detector": pipeline.detector.name,
                       "embedders": {n: sha for n, sha in pipeline.embedder_ids}}
    report["cascade"] = {"faces": len(found), "extra_embedders_run": sum(p.extras_run for p in found)}
    report["_scores"] = {"genuine_masked": genuine["masked"], "genuine_unmasked": genuine["unmasked"],
                         "impostor": impostor["masked"] + impostor["unmasked"] + stranger_scores}
    return report


def summary(report: dict) -> str:
    o = report["open_set"]
    lines = [
        f"masked rank-1 {report['masked_rank1']:.3f}   unmasked rank-1 {report['unmasked_rank1']:.3f}",
        f"masked TAR@FAR1e-2 {report['masked_tar_at_far_1e-2']:.3f}   masked TAR@FAR1e-3 "
        f"{report['masked_tar_at_far_1e-3']:.3f}   unmasked TAR@FAR1e-3 {report['unmasked_tar_at_far_1e-3']:.3f}",
        f"at the operating point: accept_correct {o['accept_correct']:.3f}  accept_wrong {o['accept_wrong']:.3f}  "
        f"stranger_accepted {o['stranger_accepted']:.4f}",
    ]
    if "mask_status_accuracy" in report:
        lines.append(f"mask status accuracy {report['mask_status_accuracy']:.3f}")
    c = report["counts"]
    lines.append(f"enrolled {c['enrolled_identities']} people ({c['enrollment_templates']} templates); probes: "
                 f"{c['masked_probes']} masked, {c['unmasked_probes']} unmasked, {c['stranger_probes']} strangers; "
                 f"no face: {report['no_face']}")
    return "\n".join(lines)


def public_report(report: dict) -> str:
    return json.dumps({k: v for k, v in report.items() if not k.startswith("_")}, indent=2)
