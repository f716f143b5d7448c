"""Compare two `edge-mfr recognize --json` outputs (x86-64 reference, emulated arm64): same images, same
number of faces, boxes and landmarks within 1 px, detection scores within 0.01; where the reference
identified a face against a gallery (the fused embedders), the same decision (person, candidate), the
similarity and margin within 0.02 and the mask SVM's value within 0.05 with the same mask state, unless
both values lie within 0.05 of the boundary (then the state may flip, and the similarity, computed the
other way, is not compared). Exit 1 with the first differences; --summary prints the largest differences.

The tolerances are measured, not guessed: on arm64 (qemu cortex-a72, 16 faces) the fused similarity moved
by up to 0.0094 (fr_feature_dynamic, dynamic-range int8, reproduces its known answers there only to cosine
0.997-0.998) and the mask SVM's value by up to 0.035; one face at 0.0185 on x86-64 was -0.0023 there.
"""

from __future__ import annotations

import json
import sys

IDENTITY_SAME = ("person_id", "name", "candidate")
IDENTITY_CLOSE = ("score", "margin")
SIMILARITY = 0.02  # fused similarity and decision margin
MASK_NOISE = 0.05  # the mask SVM's signed value ("mask_margin"; > 0: masked)


def load(path: str) -> list[dict]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def borderline_flip(ri: dict, gi: dict) -> bool:
    """The mask state differs, and both sides' SVM values lie within MASK_NOISE of the boundary."""
    a, b = ri.get("mask_margin"), gi.get("mask_margin")
    return (ri.get("masked") != gi.get("masked") and a is not None and b is not None
            and abs(a) <= MASK_NOISE and abs(b) <= MASK_NOISE)


def _identity(where: str, ri: dict | None, gi: dict | None) -> list[str]:
    if ri is None and gi is None:
        return []
    if ri is None or gi is None:
        return [f"{where}: identity {ri} vs {gi}"]
    out = [f"{where}: identity {k} {ri.get(k)!r} vs {gi.get(k)!r}" for k in IDENTITY_SAME if ri.get(k) != gi.get(k)]
    a, b = ri.get("mask_margin"), gi.get("mask_margin")
    if (a is None) != (b is None) or (a is not None and abs(a - b) > MASK_NOISE):
        out.append(f"{where}: identity mask_margin {a} vs {b}")
    if ri.get("masked") != gi.get("masked"):
        if not borderline_flip(ri, gi):
            out.append(f"{where}: identity masked {ri.get('masked')!r} vs {gi.get('masked')!r} "
                       f"(mask_margin {a} vs {b})")
        return out  # a different mask state is identified the other way: its similarity is not comparable
    for k in IDENTITY_CLOSE:
        a, b = ri.get(k), gi.get(k)
        if (a is None) != (b is None) or (a is not None and abs(a - b) > SIMILARITY):
            out.append(f"{where}: identity {k} {a} vs {b}")
    return out


def differences(ref: list[dict], got: list[dict], px: float = 1.0, score: float = 0.01) -> list[str]:
    out = []
    if [r["image"] for r in ref] != [g["image"] for g in got]:
        return [f"images differ: {len(ref)} vs {len(got)} records"]
    for r, g in zip(ref, got, strict=True):
        if len(r["faces"]) != len(g["faces"]):
            out.append(f"{r['image']}: {len(r['faces'])} vs {len(g['faces'])} faces")
            continue
        for fr, fg in zip(r["faces"], g["faces"], strict=True):
            if max(abs(a - b) for a, b in zip(fr["box"], fg["box"], strict=True)) > px:
                out.append(f"{r['image']}: box {fr['box']} vs {fg['box']}")
            if abs(fr["score"] - fg["score"]) > score:
                out.append(f"{r['image']}: score {fr['score']} vs {fg['score']}")
            for k, v in fr["landmarks"].items():
                if max(abs(a - b) for a, b in zip(v, fg["landmarks"][k], strict=True)) > px:
                    out.append(f"{r['image']}: {k} {v} vs {fg['landmarks'][k]}")
            out += _identity(r["image"], fr.get("identity"), fg.get("identity"))
    return out


def summary(ref: list[dict], got: list[dict]) -> str:
    """Faces, identified faces and the largest box/landmark (px), detection-score and similarity differences."""
    faces = identified = flips = 0
    px = det = sim = mask = 0.0
    for r, g in zip(ref, got, strict=False):
        for fr, fg in zip(r["faces"], g["faces"], strict=False):
            faces += 1
            pairs = list(zip(fr["box"], fg["box"], strict=False))
            for k, v in fr["landmarks"].items():
                pairs += zip(v, fg["landmarks"].get(k, v), strict=False)
            px = max([px] + [abs(a - b) for a, b in pairs])
            det = max(det, abs(fr["score"] - fg["score"]))
            ri, gi = fr.get("identity"), fg.get("identity")
            if ri and gi:
                identified += 1
                if ri.get("mask_margin") is not None and gi.get("mask_margin") is not None:
                    mask = max(mask, abs(ri["mask_margin"] - gi["mask_margin"]))
                if ri.get("masked") != gi.get("masked"):
                    flips += 1
                else:
                    sim = max(sim, abs(ri["score"] - gi["score"]))
    return (f"{len(ref)} images, {faces} faces ({identified} identified, {flips} mask state flipped at the "
            f"boundary): largest differences {px:.1f} px, detection score {det:.4f}, similarity {sim:.4f}, "
            f"mask value {mask:.4f}")


def main(argv: list[str]) -> int:
    args = [a for a in argv[1:] if a != "--summary"]
    ref, got = load(args[0]), load(args[1])
    diffs = differences(ref, got)
    for d in diffs[:5]:
        print(d)
    if "--summary" in argv[1:]:
        print(summary(ref, got))
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
