"""`edge-mfr bench`: what a user runs on a Pi to see per-stage latency, fps, memory and start-up time.

Each thread count is measured in a fresh worker process so that peak RSS and the cold start (model
load + first result) are those of a real start, not of a process that already holds other models.
Times are reported, never asserted.
"""

from __future__ import annotations

import json
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np


def _frame_640x480(image: np.ndarray) -> np.ndarray:
    """A 640x480 frame with the photo scaled to full height in the middle, as a door camera sees it."""
    h, w = image.shape[:2]
    scale = 480 / h
    resized = cv2.resize(image, (max(1, round(w * scale)), 480), interpolation=cv2.INTER_AREA)[:, :640]
    frame = np.full((480, 640, 3), 90, dtype=np.uint8)
    x0 = (640 - resized.shape[1]) // 2
    frame[:, x0 : x0 + resized.shape[1]] = resized
    return frame


def _stats(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples)
    return {"median_ms": round(float(np.median(a)), 3), "p95_ms": round(float(np.percentile(a, 95)), 3)}


def worker(detector: str, threads: int, iterations: int, models_dir: str | None, image_path: str | None,
           embedders: list[str] | None = None) -> dict:
    """Measure one thread setting in this process (run by run_bench in a subprocess)."""
    t_start = time.perf_counter()
    from edge_mfr.vision.pipeline import FacePipeline

    pipeline = FacePipeline(detector=detector, num_threads=threads,
                            models_dir=Path(models_dir) if models_dir else None, embedders=embedders)
    t_loaded = time.perf_counter()
    if image_path:
        from edge_mfr.vision.imageio import read_image

        source = read_image(image_path)
    else:
        from edge_mfr.vision.samples import sample_image

        source = sample_image()
    frame = _frame_640x480(source)
    t_image = time.perf_counter()
    faces = pipeline.analyze(frame, crop_kind="photo")
    t_first = time.perf_counter()
    if not faces:
        raise SystemExit("bench: no face found in the benchmark frame; pass --image with a one-face photo")

    # Bare FaceNet invoke (input already set, nothing but the interpreter call) is timed inside the same
    # loop as the pipeline, so both see the same machine load.
    model = pipeline.embedder.model
    crop = faces[0].crop.astype(np.float32)
    prepared = ((crop - pipeline.embedder.mean) / pipeline.embedder.std)[None]
    detect, align, embed, frame_total, bare = [], [], [], [], []
    # What identifying one face costs beyond align + primary embed (FacePipeline.embed_for_identity), per path:
    # a face judged masked with the primary alone (today) or with every embedder, a bare face with every
    # embedder (no cascade) or with the cascade deciding on the primary alone (a clear face).
    paths = {"masked_primary": ([True], [False]), "masked_all": ([True], [True]),
             "bare_all": ([False], [True]), "bare_cascade_clear": ([False], [False])}
    extra_ms: dict[str, list[float]] = {k: [] for k in paths}
    per_embedder: dict[str, list[float]] = {e.name: [] for e in pipeline.extra_embedders}
    mesh: list[float] = []  # the face mesh that aligns a masked face for the ArcFace-style embedders
    for _ in range(iterations):
        t0 = time.perf_counter()
        found = pipeline.detect(frame, crop_kind="photo")
        analyzed = pipeline.analyze_faces(frame, found[:1])
        frame_total.append((time.perf_counter() - t0) * 1000)
        detect.append(pipeline.times.detect_ms)
        align.append(pipeline.times.align_ms)
        embed.append(pipeline.times.embed_ms)
        for key, (masked, extra) in paths.items():
            t0 = time.perf_counter()
            pipeline.embed_for_identity(frame, analyzed, masked, extra)
            extra_ms[key].append((time.perf_counter() - t0) * 1000)
            if key == "bare_all":
                for name in per_embedder:
                    per_embedder[name].append(pipeline.times.extra[name])
            if key == "masked_all" and pipeline.landmarker is not None:
                mesh.append(pipeline.times.extra["mesh_ms"])
        model.run(prepared)
        t0 = time.perf_counter()
        model.invoke_again()
        bare.append((time.perf_counter() - t0) * 1000)

    per_face = np.asarray(align) + np.asarray(embed)
    face_paths = {k: _stats(list(per_face + np.asarray(v))) for k, v in extra_ms.items()}
    today = {"bare": float(np.median(per_face)), "masked": face_paths["masked_primary"]["median_ms"]}
    return {
        "embedders": [e.name for e in pipeline.embedders],
        "per_face_paths": face_paths,
        "per_embedder_ms": {pipeline.embedder.name: _stats(embed), **{k: _stats(v) for k, v in per_embedder.items()}},
        "mesh_ms_masked": _stats(mesh) if mesh else None,
        "masked_all_over_primary": round(face_paths["masked_all"]["median_ms"] / today["masked"], 3),
        "bare_cascade_over_primary": round(face_paths["bare_cascade_clear"]["median_ms"] / today["bare"], 3),
        "bare_all_over_primary": round(face_paths["bare_all"]["median_ms"] / today["bare"], 3),
        "threads": threads,
        "detector": pipeline.detector.name,
        "faces_in_frame": len(faces),
        "model_load_ms": round((t_loaded - t_start) * 1000, 1),
        "load_and_first_result_ms": round(((t_loaded - t_start) + (t_first - t_image)) * 1000, 1),
        "detect": _stats(detect),
        "align": _stats(align),
        "embed": _stats(embed),
        "bare_facenet_invoke": _stats(bare),
        "per_face_recognition": _stats(list(per_face)),
        "per_face_over_bare_invoke": round(float(np.median(per_face) / np.median(bare)), 3),
        "frame": _stats(frame_total),
        "fps": round(1000.0 / float(np.median(frame_total)), 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _table(results: list[dict], runtime: str) -> str:
    rows = [
        ("model load (ms)", lambda r: f"{r['model_load_ms']:.0f}"),
        ("load + first result (ms)", lambda r: f"{r['load_and_first_result_ms']:.0f}"),
        ("detect median / p95 (ms)", lambda r: f"{r['detect']['median_ms']:.2f} / {r['detect']['p95_ms']:.2f}"),
        ("align median (ms)", lambda r: f"{r['align']['median_ms']:.2f}"),
        ("embed median / p95 (ms)", lambda r: f"{r['embed']['median_ms']:.1f} / {r['embed']['p95_ms']:.1f}"),
        ("bare FaceNet invoke (ms)", lambda r: f"{r['bare_facenet_invoke']['median_ms']:.1f}"),
        ("per face / bare invoke", lambda r: f"{r['per_face_over_bare_invoke']:.2f}x"),
        *[(f"  embed: {name} (ms)", lambda r, n=name: f"{r['per_embedder_ms'][n]['median_ms']:.1f}")
          for name in results[0]["per_embedder_ms"]],
        ("  face mesh, masked faces (ms)",
         lambda r: f"{r['mesh_ms_masked']['median_ms']:.1f}" if r["mesh_ms_masked"] else "-"),
        ("bare face, primary only (ms)", lambda r: f"{r['per_face_recognition']['median_ms']:.1f}"),
        ("bare face, cascade clear (ms)",
         lambda r: f"{r['per_face_paths']['bare_cascade_clear']['median_ms']:.1f} "
                   f"({r['bare_cascade_over_primary']:.2f}x)"),
        ("bare face, all embedders (ms)",
         lambda r: f"{r['per_face_paths']['bare_all']['median_ms']:.1f} ({r['bare_all_over_primary']:.2f}x)"),
        ("masked face, primary only (ms)", lambda r: f"{r['per_face_paths']['masked_primary']['median_ms']:.1f}"),
        ("masked face, all embedders (ms)",
         lambda r: f"{r['per_face_paths']['masked_all']['median_ms']:.1f} ({r['masked_all_over_primary']:.2f}x)"),
        ("frame, 1 face (ms)", lambda r: f"{r['frame']['median_ms']:.1f}"),
        ("frames per second", lambda r: f"{r['fps']:.1f}"),
        ("peak RSS (MiB)", lambda r: f"{r['peak_rss_mib']:.0f}"),
    ]
    head = "| metric | " + " | ".join(f"{r['threads']} thread{'s' if r['threads'] > 1 else ''}" for r in results)
    lines = [f"edge-mfr bench ({results[0]['detector']} + {' + '.join(results[0]['embedders'])}, {runtime}, "
             "640x480 frame, one face)",
             head + " |", "|---|" + "---|" * len(results)]
    lines += [f"| {name} | " + " | ".join(fmt(r) for r in results) + " |" for name, fmt in rows]
    return "\n".join(lines)


def run_bench(detector: str = "blazeface", threads: str = "1,2", iterations: int = 50,
              models_dir: Path | None = None, image_path: Path | None = None,
              embedders: list[str] | None = None) -> dict:
    """Run one worker per thread count and collect a report with a Markdown table."""
    from edge_mfr.vision.runtime import runtime_name

    counts = [int(t) for t in str(threads).split(",") if t.strip()]
    results = []
    for n in counts:
        cmd = [sys.executable, "-m", "edge_mfr.bench", json.dumps({
            "detector": detector, "threads": n, "iterations": iterations,
            "models_dir": str(models_dir) if models_dir else None,
            "image_path": str(image_path) if image_path else None, "embedders": embedders})]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            from edge_mfr.errors import EdgeMfrError

            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise EdgeMfrError(f"bench worker for {n} thread(s) failed: {tail}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    report = {"runtime": runtime_name(), "machine": _machine(), "results": results}
    report["table"] = _table(results, report["runtime"])
    return report


def _machine() -> str:
    import platform

    model = ""
    try:
        model = Path("/proc/device-tree/model").read_text().strip("\x00 \n")
    except OSError:
        pass
    return model or f"{platform.machine()} {platform.processor() or ''}".strip()




def stream_worker(source: str, reembed_every: int, threads: int, gallery: str | None,
                  embedders: list[str] | None = None, liveness: str = "off") -> dict:
    """Run the real appliance loop on a video as fast as it goes (simulated GPIO); report fps and memory."""
    import tempfile

    from edge_mfr.app import Appliance
    from edge_mfr.config import load_config

    with tempfile.TemporaryDirectory(prefix="edge-mfr-bench-") as state:
        env = {"EDGE_MFR__DEVICE__STATE_DIR": state, "EDGE_MFR__DEVICE__GPIO": "mock",
               "EDGE_MFR__CAMERA__SOURCE": source,
               "EDGE_MFR__RECOGNITION__REEMBED_EVERY": str(reembed_every),
               "EDGE_MFR__MODELS__THREADS": str(threads), "EDGE_MFR__DOORS__0__LIVENESS": liveness}
        if gallery:
            env["EDGE_MFR__RECOGNITION__GALLERY"] = gallery
        config = load_config(None, environ=env)
        if embedders:
            config.recognition.embedders = list(embedders)
        app = Appliance(config)
        t0, c0 = time.perf_counter(), time.process_time()
        app.run()
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        stats = app.stats
        measured = app.liveness.measured if app.liveness is not None else 0
        return {"reembed_every": reembed_every, "threads": threads, "frames": stats.frames,
                "faces": stats.faces, "embeddings": stats.embeddings, "extra_embeddings": stats.extra_embeddings,
                "liveness": liveness, "eye_measurements": measured,
                "liveness_ms_per_measurement": round(stats.liveness_ms / measured, 2) if measured else 0.0,
                "fps": round(stats.frames / elapsed, 1) if elapsed > 0 else 0.0,
                # frames per second of this process's own CPU time: what a busy machine's other jobs move
                # far less than the wall-clock fps, so two configurations compare across separate runs
                "cpu_fps": round(stats.frames / cpu, 1) if cpu > 0 else 0.0,
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def resolve_gallery(gallery: Path | None) -> Path | None:
    """The gallery as an absolute path that exists: the workers run in a temporary state folder, where a
    relative path would name nothing and the bench would silently measure with nobody enrolled."""
    from edge_mfr.errors import InputNotFoundError

    if gallery is None:
        return None
    path = Path(gallery).expanduser().absolute()
    if not path.is_file():
        raise InputNotFoundError(f"{path}: no gallery file (enroll someone first, or leave out --gallery)")
    return path


def run_stream_bench(source: Path, threads: int = 1, gallery: Path | None = None, viewer: bool = False,
                     embedders: list[str] | None = None) -> dict:
    """Stream fps with the tracker's embedding reuse on (default K) and off (every face, every frame), and
    with a ``gallery``, once more with the blink liveness check (tracker on): its eye models run only on
    tracks voted an enrolled person, so without a gallery it would cost nothing and is not run."""
    from edge_mfr.config import load_config
    from edge_mfr.errors import EdgeMfrError

    gallery = resolve_gallery(gallery)
    default_k = load_config(None, environ={}).recognition.reembed_every
    runs = []
    modes = (("tracker on", default_k, "off"), ("tracker off (embed every face, every frame)", 1, "off"),
             ("tracker on, liveness blink", default_k, "blink"))
    for label, k, liveness in modes if gallery else modes[:2]:
        params = {"source": str(source), "reembed_every": k, "threads": threads,
                  "gallery": str(gallery) if gallery else None, "embedders": embedders, "liveness": liveness}
        proc = subprocess.run([sys.executable, "-m", "edge_mfr.bench", "--stream", json.dumps(params)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise EdgeMfrError(f"stream bench ({label}) failed: {tail}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["mode"] = label
        runs.append(result)
    report: dict = {"source": str(source), "runs": runs,
                    "tracker_speedup": round(runs[0]["fps"] / max(runs[1]["fps"], 1e-9), 2)}
    lines = [f"edge-mfr bench --source {source.name} ({threads} thread{'s' if threads > 1 else ''}, "
             "the real `edge-mfr run` loop, GPIO simulated, unpaced)",
             "| mode | frames | faces | embeddings (+ extra embedders) | eye measurements (ms each) | fps | "
             "fps per CPU second | peak RSS (MiB) |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['mode']} | {r['frames']} | {r['faces']} | {r['embeddings']} (+{r['extra_embeddings']}) | "
              f"{r['eye_measurements']} ({r['liveness_ms_per_measurement']:.1f}) | {r['fps']:.1f} | "
              f"{r['cpu_fps']:.1f} | {r['peak_rss_mib']:.0f} |" for r in runs]
    lines.append(f"tracker speed-up: {report['tracker_speedup']:.2f}x")
    if viewer:
        report["viewer"] = _viewer_cost(source, gallery)
        v = report["viewer"]
        lines.append(f"kiosk viewer: {v['fps_without']:.1f} fps without, {v['fps_with']:.1f} fps with one MJPEG "
                     f"viewer (slowdown {v['slowdown_pct']}%, CPU per frame {v['cpu_increase_pct']:+}%)")
    report["table"] = "\n".join(lines)
    return report


def _viewer_cost(source: Path, gallery: Path | None) -> dict:
    import tempfile

    from edge_mfr.config import load_config
    from edge_mfr.stream.sources import make_source

    with tempfile.TemporaryDirectory(prefix="edge-mfr-bench-") as state:
        env = {"EDGE_MFR__DEVICE__STATE_DIR": state, "EDGE_MFR__DEVICE__GPIO": "mock",
               "EDGE_MFR__CAMERA__SOURCE": str(source)}
        if gallery:
            env["EDGE_MFR__RECOGNITION__GALLERY"] = str(gallery)
        config = load_config(None, environ=env)
        return measure_viewer_cost(config, lambda: make_source(str(source)))


# ------------------------------------------------------------------------ kiosk viewer cost

_VIEWER = """
import sys, time, urllib.request
url, seconds = sys.argv[1], float(sys.argv[2])
frames, end = 0, time.monotonic() + seconds
try:
    with urllib.request.urlopen(url, timeout=10) as r:
        while time.monotonic() < end:
            line = r.readline()
            if not line:
                break
            if line.startswith(b"--edgemfrframe"):
                frames += 1
except OSError:
    pass
print(frames)
"""


def measure_viewer_cost(config: Any, make_source: Callable[[], Any], frames: int = 120, viewers: int = 1,
                        rounds: int = 2, models_dir: Path | None = None) -> dict[str, Any]:
    """Frame-loop fps on the same input without and with ``viewers`` MJPEG viewers, in alternating order.

    ``config`` should point at a scratch state folder (the runs journal there); ``make_source()`` returns
    a fresh finite source (a video file) per run, which is read as fast as the loop can go. Each viewer
    is a separate process (as a browser would be) that reads the stream for the duration of the run.
    GPIO is simulated. Returns the mean fps of each mode, the slowdown in percent, the frames encoded for
    the viewers, and this process's CPU time per frame (all threads: the loop plus the kiosk's drawing and
    encoding), which other programs on a busy machine disturb far less than the fps.
    """
    from gpiozero.pins.mock import MockFactory  # imported here: the bench workers measure a cold start

    def cpu_s() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    from edge_mfr.app import Appliance
    from edge_mfr.errors import EdgeMfrError

    class _Quiet:  # no sd_notify from a measurement
        def ready(self, status: str | None = None) -> bool:
            return True

        status = ready
        watchdog = ready
        stopping = ready

        def watchdog_interval(self) -> None:
            return None

    runs: dict[int, list[float]] = {0: [], viewers: []}
    cpu_ms: dict[int, list[float]] = {0: [], viewers: []}
    encoded: list[int] = []
    for round_no in range(rounds):
        for n in (0, viewers) if round_no % 2 == 0 else (viewers, 0):  # alternate: no order advantage
            cfg = config.model_copy(deep=True)
            update = {"enabled": True, "port": _free_port(), "bind": "127.0.0.1"}
            cfg.kiosk = cfg.kiosk.model_copy(update=update)
            app = Appliance(cfg, source=make_source(), pin_factory=MockFactory(), notifier=_Quiet(),
                            models_dir=models_dir)
            app.start()
            kiosk, procs = app.kiosk, []
            try:
                if kiosk is None:
                    raise EdgeMfrError("measure_viewer_cost: the kiosk did not start (see the log)")
                for _ in range(n):
                    procs.append(subprocess.Popen([sys.executable, "-c", _VIEWER, kiosk.url + "stream.mjpg",
                                                   "600"], stdout=subprocess.DEVNULL))
                _wait_for_viewers(kiosk, len(procs))
                cpu0 = cpu_s()
                app.run(max_frames=frames)
                cpu_ms[n].append(1000.0 * (cpu_s() - cpu0) / max(app.stats.frames, 1))
            finally:
                app.stop()
                for p in procs:
                    p.terminate()
                    p.wait()
            if procs:
                encoded.append(kiosk.live.encoded)
            runs[n].append(app.stats.fps_mean)
    without = sum(runs[0]) / len(runs[0])
    with_viewers = sum(runs[viewers]) / len(runs[viewers])
    cpu_without, cpu_with = (sum(cpu_ms[k]) / len(cpu_ms[k]) for k in (0, viewers))
    return {"frames": frames, "viewers": viewers, "rounds": rounds, "fps_without": round(without, 2),
            "fps_with": round(with_viewers, 2),
            "slowdown_pct": round(100.0 * (without - with_viewers) / without, 1) if without else None,
            "runs_without": [round(f, 2) for f in runs[0]], "runs_with": [round(f, 2) for f in runs[viewers]],
            "frames_encoded_with": encoded, "cpu_ms_per_frame_without": round(cpu_without, 2),
            "cpu_ms_per_frame_with": round(cpu_with, 2),
            "cpu_increase_pct": round(100.0 * (cpu_with - cpu_without) / cpu_without, 1) if cpu_without else None}


def _wait_for_viewers(kiosk: Any, n: int, timeout: float = 10.0) -> None:
    """Until ``n`` viewers hold a stream slot (so the measurement starts with them connected)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and kiosk.streaming < n:
        time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    if sys.argv[1] == "--stream":
        print(json.dumps(stream_worker(**json.loads(sys.argv[2]))))
    else:
        print(json.dumps(worker(**json.loads(sys.argv[1]))))
