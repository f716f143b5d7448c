"""One measurement in a fresh process (``python -m tools.bench.worker JSON``); prints one JSON line.

A fresh process per system and thread count means peak RSS and cold start belong to that system alone,
and TensorFlow's or dlib's libraries never share a process with edge-mfr's.

- ``accuracy``: the EVALUATION.md protocol on a data view; saves the enrolled gallery for ``speed``.
- ``speed``: process start -> models loaded -> gallery loaded -> first result (cold start); then, after
  a warm-up, per-frame latency on a 640x480 frame, images/s over a folder and fps over a video, every
  face detected, embedded and classified; peak RSS at the end.
"""

from __future__ import annotations

import json
import logging
import pickle
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def _peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"median_ms": round(float(np.median(a)), 2), "p95_ms": round(float(np.percentile(a, 95)), 2),
            "n": len(ms)}


def accuracy(system: str, threads: int, view: str, subsets: list[str], strangers: list[str], work: str) -> dict:
    from tools.bench.systems import limit_threads, load_system

    limit_threads(threads)
    view_dir, work_dir = Path(view), Path(work)
    work_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if system == "edge-mfr":
        report = _edge_accuracy(threads, view_dir, subsets, strangers, work_dir)
    else:
        from tools.bench.protocol import evaluate_baseline

        impl = load_system(system, threads)
        report, gallery = evaluate_baseline(impl, view_dir, subsets, strangers)
        np.savez(work_dir / "gallery.npz", embeddings=gallery["embeddings"], labels=gallery["labels"],
                 synthetic=np.zeros(len(gallery["labels"]), bool))
        if system == "seed":
            (work_dir / "svc.pkl").write_bytes(pickle.dumps(impl.svc))
    report["no_face_total"] = int(sum(report["no_face"].values()))
    report["accuracy_run_s"] = round(time.perf_counter() - t0, 1)
    return report


def _edge_accuracy(threads: int, view_dir: Path, subsets: list[str], strangers: list[str], work_dir: Path) -> dict:
    """run_eval as `edge-mfr eval` runs it; then the same enrollment again to save a gallery for speed runs."""
    from edge_mfr.errors import EnrollmentError
    from edge_mfr.eval import read_labels, run_eval
    from edge_mfr.identity.enroll import EnrollOptions, prepare_enrollment
    from edge_mfr.vision.pipeline import FacePipeline
    from tools.bench.protocol import split

    # The default embedder set, as systems.EdgeMfr's speed runs (their gallery comes from this enrollment).
    pipeline = FacePipeline("blazeface", num_threads=threads)
    report = run_eval(view_dir, subsets, strangers, pipeline)
    report = {k: v for k, v in report.items() if not k.startswith("_")}
    names = [e.name for e in pipeline.embedders]
    embeddings: dict[str, list[np.ndarray]] = {n: [] for n in names}
    labels, synthetic = [], []
    for identity, rows in split(read_labels(view_dir), subsets, strangers).enroll.items():
        if not rows:
            continue
        try:
            result = prepare_enrollment(pipeline, [view_dir / r.path for r in rows], EnrollOptions())
        except EnrollmentError:
            continue
        embeddings[names[0]].append(result.embeddings)
        for n in names[1:]:
            embeddings[n].append(result.extra_embeddings[n])
        labels += [identity] * len(result.embeddings)
        synthetic += [m.synthetic for m in result.metas]
    np.savez(work_dir / "gallery.npz", labels=np.array(labels), synthetic=np.array(synthetic, bool),
             embedders=np.array(names), **{f"{EMBEDDINGS_PREFIX}{i}": np.concatenate(embeddings[n])
                                           for i, n in enumerate(names)})
    return report


EMBEDDINGS_PREFIX = "embeddings_"  # edge-mfr's bench gallery: one array per embedder, in "embedders" order


def _edge_templates(g: Any) -> dict[str, np.ndarray]:
    """Embedder name -> template rows of an edge-mfr bench gallery (see _edge_accuracy)."""
    return {str(n): g[f"{EMBEDDINGS_PREFIX}{i}"] for i, n in enumerate(g["embedders"])}


def _read_rgb(path: str) -> np.ndarray:
    import cv2

    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"bench worker: cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def speed(system: str, threads: int, launched_at: float, work: str, frame_image: str | None,
          folder: list[str], video: str | None, video_frames: int, iterations: int, warmup: int) -> dict:
    from tools.bench.systems import limit_threads, load_system

    limit_threads(threads)
    impl = load_system(system, threads)
    t_loaded = time.time()
    g = np.load(Path(work) / "gallery.npz")
    labels = [str(x) for x in g["labels"]]
    if system == "edge-mfr":
        impl.fit(_edge_templates(g), labels, g["synthetic"])
    elif system == "seed":
        impl.svc = pickle.loads((Path(work) / "svc.pkl").read_bytes())
        impl.ids = [str(c) for c in impl.svc.classes_]
    else:
        impl.fit(g["embeddings"], labels)

    from edge_mfr.bench import _frame_640x480  # the very frame `edge-mfr bench` times

    if frame_image:
        source = _read_rgb(frame_image)
    else:
        from edge_mfr.vision.samples import sample_image

        source = sample_image()
    frame = _frame_640x480(source)
    names = impl.recognize(frame)
    t_first = time.time()

    for _ in range(warmup):
        impl.recognize(frame)
    frame_ms = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        impl.recognize(frame)
        frame_ms.append((time.perf_counter() - t0) * 1000)

    import cv2

    folder_faces = 0
    t0 = time.perf_counter()
    for path in folder:
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is not None:
            folder_faces += len(impl.recognize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
    folder_s = time.perf_counter() - t0

    frames = video_faces = 0
    video_s = 0.0
    if video:
        capture = cv2.VideoCapture(video)
        t0 = time.perf_counter()
        while not video_frames or frames < video_frames:
            ok, bgr = capture.read()
            if not ok:
                break
            video_faces += len(impl.recognize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
            frames += 1
        video_s = time.perf_counter() - t0
        capture.release()

    return {
        "system": system,
        "threads": threads,
        "faces_in_frame": len(names),
        "frame_result": names,
        "models_loaded_s": round(t_loaded - launched_at, 3),
        "cold_start_s": round(t_first - launched_at, 3),
        "frame": _stats(frame_ms),
        "folder": {"images": len(folder), "faces": folder_faces, "seconds": round(folder_s, 2),
                   "images_per_s": round(len(folder) / folder_s, 2) if folder_s > 0 else None},
        "video": {"frames": frames, "faces": video_faces, "seconds": round(video_s, 2),
                  "fps": round(frames / video_s, 2) if video_s > 0 else None},
        "gallery_templates": len(labels),
        "peak_rss_mib": _peak_rss_mib(),
    }


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    params = json.loads(sys.argv[1])
    mode = params.pop("mode")
    result = accuracy(**params) if mode == "accuracy" else speed(**params)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
