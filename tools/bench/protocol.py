"""The EVALUATION.md protocol for the baselines, with exactly the enrollment/probe split of edge_mfr.eval.

edge-mfr itself is scored by ``edge_mfr.eval.run_eval`` (its real code path). The baselines get the
same enrolled people, the same enrollment images (unmasked, minus the held-back one; no synthetic masks:
they have none), the same probes, the same padding rule for stills and the same TAR@FAR computation.
"""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from edge_mfr.eval import identity_metrics, read_labels, split, tar_at_far

log = logging.getLogger(__name__)




def make_view(data_dir: Path, subsets: list[str], strangers: list[str], view_dir: Path,
              quick: bool = False) -> Path:
    """A labels.csv in ``view_dir`` listing the chosen rows with absolute paths (no image is copied).

    It leaves out ``mask_status/`` (not part of this comparison) and, with ``quick``, keeps only the
    first 3 people of each enrolled subset and 3 images of the first 3 strangers.
    """
    src = data_dir / "labels.csv"
    with open(src, newline="") as fh:
        reader = csv.DictReader(fh)
        fields = list(reader.fieldnames or [])
        rows = list(reader)
    read_labels(data_dir)  # validates the columns with the evaluator's own messages
    keep = []
    for subset in subsets + strangers:
        mine = [r for r in rows if r["subset"] == subset and r["identity"] and ";" not in r["identity"]]
        if not mine:
            from edge_mfr.errors import EdgeMfrError

            raise EdgeMfrError(f"{src}: no subset {subset!r}")
        if quick:
            people = sorted({r["identity"] for r in mine})[:3]
            mine = [r for r in mine if r["identity"] in people]
            if subset in strangers:
                per: dict[str, int] = defaultdict(int)
                kept = []
                for r in sorted(mine, key=lambda r: r["path"]):
                    if per[r["identity"]] < 3:
                        per[r["identity"]] += 1
                        kept.append(r)
                mine = kept
        keep += mine
    view_dir.mkdir(parents=True, exist_ok=True)
    with open(view_dir / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for r in keep:
            writer.writerow({**r, "path": str((data_dir / r["path"]).resolve())})
    return view_dir


def _read_rgb(path: Path) -> np.ndarray | None:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def embed_still(system, path: Path) -> np.ndarray | None:
    """The main face's embedding of one still, or None when the detector finds no face."""
    from tools.bench.systems import best_box

    image = _read_rgb(path)
    if image is None:
        log.warning("%s: unreadable image", path)
        return None
    used, boxes = system.detect_still(image)
    i = best_box(boxes, used.shape)
    if i is None:
        return None
    return system.embed(used, boxes[i : i + 1])[0]


def evaluate_baseline(system, data_dir: Path, subsets: list[str], strangers: list[str]) -> tuple[dict, dict]:
    """(report with the EVALUATION.md keys, gallery {embeddings, labels}) for one baseline system."""
    sp = split(read_labels(data_dir), subsets, strangers)
    gallery, labels, enroll_no_face, enroll_failed = [], [], 0, 0
    for identity, items in sp.enroll.items():
        got = [e for e in (embed_still(system, data_dir / r.path) for r in items) if e is not None]
        enroll_no_face += len(items) - len(got)
        if not got:
            enroll_failed += 1
            continue
        gallery += got
        labels += [identity] * len(got)
    x = np.asarray(gallery)
    system.fit(x, labels)
    col = {pid: j for j, pid in enumerate(system.ids)}

    probes = [("masked", r) for r in sp.masked] + [("unmasked", r) for r in sp.unmasked] + \
             [("stranger", r) for r in sp.strangers]
    genuine: dict[str, list[float]] = {"masked": [], "unmasked": []}
    impostor: dict[str, list[float]] = {"masked": [], "unmasked": []}
    stranger_scores: list[float] = []
    rank1: dict[str, list[bool]] = {"masked": [], "unmasked": []}
    alt = {"genuine": {"masked": [], "unmasked": []}, "impostor": {"masked": [], "unmasked": []},
           "stranger": [], "rank1": {"masked": [], "unmasked": []}}
    counts = {"genuine": 0, "accept_correct": 0, "accept_wrong": 0, "strangers": 0, "stranger_accepted": 0}
    no_face: dict[str, int] = defaultdict(int)
    tops: list[tuple[str, str, str, float]] = []  # kind, true identity, top-ranked identity, its score
    for kind, row in probes:
        e = embed_still(system, data_dir / row.path)
        if e is None:
            no_face[row.subset] += 1
        if kind == "stranger":
            counts["strangers"] += 1
            if e is not None:
                s = system.scores(e[None])[0]
                stranger_scores += s.tolist()
                top = system.top(e[None])[0]
                tops.append((kind, row.identity, top, float(s[system.ids.index(top)])))
                counts["stranger_accepted"] += int(system.decide(e[None])[0] is not None)
                a = system.alt_scores(e[None])
                if a is not None:
                    alt["stranger"] += a[0].tolist()
            continue
        counts["genuine"] += 1
        if e is None or row.identity not in col:
            rank1[kind].append(False)
            genuine[kind].append(-np.inf)
            if system.alt_rule:
                alt["rank1"][kind].append(False)
                alt["genuine"][kind].append(-np.inf)
            continue
        s = system.scores(e[None])[0]
        j = col[row.identity]
        top = system.top(e[None])[0]
        rank1[kind].append(top == row.identity)
        tops.append((kind, row.identity, top, float(s[system.ids.index(top)])))
        genuine[kind].append(float(s[j]))
        impostor[kind] += np.delete(s, j).tolist()
        a = system.alt_scores(e[None])
        if a is not None:
            alt["rank1"][kind].append(int(np.argmax(a[0])) == j)
            alt["genuine"][kind].append(float(a[0, j]))
            alt["impostor"][kind] += np.delete(a[0], j).tolist()
        name = system.decide(e[None])[0]
        counts["accept_correct"] += int(name == row.identity)
        counts["accept_wrong"] += int(name is not None and name != row.identity)

    report: dict = identity_metrics(rank1, genuine, impostor, stranger_scores)
    del report["thresholds_at_far"]
    report["open_set"] = {
        "accept_correct": counts["accept_correct"] / max(counts["genuine"], 1),
        "accept_wrong": counts["accept_wrong"] / max(counts["genuine"], 1),
        "stranger_accepted": counts["stranger_accepted"] / max(counts["strangers"], 1),
    }
    if system.alt_rule:
        report["alt_rule"] = {"rule": system.alt_rule}
        for kind in ("masked", "unmasked"):
            report["alt_rule"][f"{kind}_rank1"] = float(np.mean(alt["rank1"][kind])) if alt["rank1"][kind] \
                else float("nan")
            imp = np.array(alt["impostor"][kind] + alt["stranger"])
            report["alt_rule"][f"{kind}_tar_at_far_1e-3"] = tar_at_far(np.array(alt["genuine"][kind]), imp, 1e-3)[0]
    report["open_set_sweep"] = _sweep(system, tops, counts["genuine"], counts["strangers"])
    report["no_face"] = {s: no_face.get(s, 0) for s in sorted({r.subset for _, r in probes})}
    report["counts"] = {
        "enrolled_identities": len(system.ids),
        "enroll_failed": enroll_failed,
        "enrollment_templates": len(labels),
        "enrollment_images_without_face": enroll_no_face,
        "masked_probes": len(sp.masked),
        "unmasked_probes": len(sp.unmasked),
        "stranger_probes": len(sp.strangers),
    }
    return report, {"embeddings": x, "labels": np.array(labels)}


def _sweep(system, tops: list[tuple[str, str, str, float]], genuine: int, strangers: int) -> dict:
    """Open-set figures at other operating points, so the default's choice can be judged."""
    out = {}
    for label, t in system.sweep:
        ok = [top == true for kind, true, top, score in tops if kind != "stranger" and score >= t]
        out[label] = {
            "accept_correct": sum(ok) / max(genuine, 1),
            "accept_wrong": (len(ok) - sum(ok)) / max(genuine, 1),
            "stranger_accepted": sum(kind == "stranger" and score >= t for kind, _, _, score in tops)
            / max(strangers, 1),
        }
    return out
