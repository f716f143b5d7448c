"""Compare two `edge-mfr recognize --json` outputs (x86-64 reference, emulated arm64): same images, same
number of faces, boxes and landmarks within 1 px, scores within 0.01. Exit 1 with the first difference."""

from __future__ import annotations

import json
import sys


def load(path: str) -> list[dict]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


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
    return out


def main(argv: list[str]) -> int:
    diffs = differences(load(argv[1]), load(argv[2]))
    for d in diffs[:5]:
        print(d)
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
