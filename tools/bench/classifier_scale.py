"""Classifier scale benchmark: fit and decide time of IdentityClassifier against N synthetic people.

    python tools/bench/classifier_scale.py --people 100 1000 10000 [--real 4] [--synthetic 4] [--json OUT]

Each person gets ``--real`` bare templates and ``--synthetic`` rendered-mask templates (random unit
vectors around a random centre, 512-d like FaceNet). Reports per size: the fit (in-process, no SVM
cache; ``svm`` says whether the linear SVM was fitted), and the median time of one ``decide`` of a
single bare and a single masked face over ``--repeats`` calls. ``--fit-limit-s`` skips fits expected to
take longer (extrapolated from the previous SVM fit, fit time ~ people^2): those sizes get stand-in SVM
weights (zeros, the shape a fit would give) so that decide is still timed. Report, not a test: nothing is
asserted about time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from edge_mfr.identity import classifier as classifier_mod  # noqa: E402
from edge_mfr.identity.classifier import IdentityClassifier  # noqa: E402


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _gallery(n: int, real: int, synthetic: int, dim: int, rng: np.random.Generator):
    centres = _unit(rng.normal(size=(n, dim)))
    per = real + synthetic
    x = _unit(np.repeat(centres, per, axis=0) + 0.6 * _unit(rng.normal(size=(n * per, dim))))
    labels = np.repeat(np.array([f"person-{i:05d}" for i in range(n)]), per)
    synth = np.tile(np.array([False] * real + [True] * synthetic), n)
    return x, labels, synth, centres


def _median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--real", type=int, default=4, help="bare templates per person")
    ap.add_argument("--synthetic", type=int, default=4, help="synthetic-masked templates per person")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--slow", action="store_true", help="one decide per kind above 10,000 templates (old code)")
    ap.add_argument("--fit-limit-s", type=float, default=600.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    last: tuple[int, float] | None = None
    for n in args.people:
        x, labels, synth, centres = _gallery(n, args.real, args.synthetic, args.dim, rng)
        probe = _unit(centres[n // 2] + 0.6 * _unit(rng.normal(size=args.dim)))[None]
        row: dict = {"people": n, "templates": len(x)}
        real_fit = classifier_mod.load_or_fit
        stand_in = last is not None and last[1] * (n / last[0]) ** 2 > args.fit_limit_s
        if stand_in:
            row["svm_fit_expected_s"] = round(last[1] * (n / last[0]) ** 2)
            classifier_mod.load_or_fit = lambda xr, y, k, *a, **kw: (np.zeros((k, xr.shape[1]), np.float32),
                                                                     np.zeros(k, np.float32))
        clf = IdentityClassifier()
        t0 = time.perf_counter()
        try:
            clf.fit(x, labels, synth)
        finally:
            classifier_mod.load_or_fit = real_fit
        fit_s = time.perf_counter() - t0
        row["fit_s"] = round(fit_s, 3)
        row["svm"] = "stand-in" if stand_in and clf._svm_w is not None else clf._svm_w is not None
        if row["svm"] is True:
            last = (n, fit_s)
        repeats = 1 if n * (args.real + args.synthetic) > 10000 and args.slow else args.repeats
        for kind, masked in (("bare", [False]), ("masked", [True])):
            d = clf.decide(probe, masked)[0]
            one = lambda c=clf, p=probe, m=masked: c.decide(p, m)  # noqa: E731
            row[f"decide_{kind}_ms"] = round(1000 * _median_s(one, repeats), 2)
            row[f"decide_{kind}_candidate_ok"] = d.candidate_id == labels[(n // 2) * (args.real + args.synthetic)]
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
