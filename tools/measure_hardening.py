"""Measure what issue 16 asks the README to report: how fast the door relocks for each way `edge-mfr run`
can end, and the daemon's peak RSS with MQTT and the kiosk on next to the bare figure (one session).

    python tools/measure_hardening.py [--runs 5] [--frames 300]

Everything runs for real on this machine: `edge-mfr run` subprocesses (GPIO simulated with
EDGE_MFR_GPIO=mock), the synthetic camera, a mosquitto started here on a free loopback port, the kiosk.
Relock times are read from the journal's microsecond timestamps, so they include writing the record
(an upper bound for the relay itself, which is switched off first).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge_mfr.device.journal import Journal, JournalError  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(folder: Path, *, mqtt_port: int | None = None, kiosk: bool = False, source: str = "synthetic",
                 watchdog: float = 10.0) -> Path:
    state = folder / "state"
    state.mkdir(parents=True, exist_ok=True)
    lines = [f"watchdog_seconds = {watchdog}", "[device]", 'id = "measure"', f'state_dir = "{state}"',
             'gpio = "mock"', "[camera]", f'source = "{source}"', "fps = 15.0", "[models]", "threads = 1"]
    if mqtt_port:
        lines += ["[mqtt]", "enabled = true", 'host = "127.0.0.1"', f"port = {mqtt_port}"]
    if kiosk:
        (folder / "admin").write_text("measure-password\n")
        (folder / "admin").chmod(0o600)
        lines += ["[kiosk]", "enabled = true", f"port = {free_port()}", f'admin_password_file = "{folder / "admin"}"']
    path = folder / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def start_run(config: Path, *extra: str, prefix: tuple[str, ...] = ()) -> subprocess.Popen:
    env = {**os.environ, "EDGE_MFR_GPIO": "mock", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([*prefix, sys.executable, "-m", "edge_mfr.cli", "--config", str(config), "run", *extra],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def journal(config: Path) -> list[dict]:
    path = config.parent / "state" / "journal.db"
    if not path.exists():
        return []
    try:
        with Journal(path, readonly=True) as j:
            return j.query(limit=None, newest_first=False)
    except JournalError:  # the daemon is still creating it
        return []


def wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError("condition not reached")


def ts(event: dict) -> float:
    return datetime.fromisoformat(event["ts"]).timestamp()


def relock_after_signal(folder: Path, signum: int) -> float:
    """Seconds from the signal to the journal's shutdown relock record."""
    config = write_config(folder)
    proc = start_run(config)
    wait_for(lambda: any(e["kind"] == "started" for e in journal(config)))
    time.sleep(1.0)  # frames flowing
    sent = time.time()
    proc.send_signal(signum)
    proc.communicate(timeout=60)
    locked = [e for e in journal(config) if e["kind"] == "locked" and ts(e) >= sent]
    return ts(locked[0]) - sent


class StallingMjpeg:
    """An MJPEG server that sends frames for ``frames`` frames, then keeps the connection silent."""

    def __init__(self, frames: int = 45):
        import cv2
        import numpy as np

        ok, jpeg = cv2.imencode(".jpg", np.full((240, 320, 3), 90, np.uint8))
        self.jpeg, self.frames = jpeg.tobytes(), frames
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.last_frame_at = 0.0
        self.release = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=f\r\n\r\n")
        for _ in range(self.frames):
            part = b"--f\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(self.jpeg)
            conn.sendall(part + self.jpeg + b"\r\n")
            self.last_frame_at = time.time()
            time.sleep(1 / 15)
        self.release.wait()
        conn.close()


def relock_after_stall(folder: Path) -> tuple[float, str]:
    """Seconds from the last frame of a stalled stream to the first relock record, and its reason."""
    server = StallingMjpeg()
    config = write_config(folder, source=f"http://127.0.0.1:{server.port}/stream.mjpg")
    proc = start_run(config)
    try:
        wait_for(lambda: server.last_frame_at and time.time() - server.last_frame_at > 1.0)
        stalled_at = server.last_frame_at
        wait_for(lambda: any(e["kind"] in ("source_lost", "watchdog_tripped") for e in journal(config)), 60)
        first = next(e for e in journal(config) if e["kind"] in ("source_lost", "watchdog_tripped"))
        return ts(first) - stalled_at, first["kind"]
    finally:
        server.release.set()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)


def relock_after_sigkill(folder: Path) -> tuple[float, float]:
    """(seconds `edge-mfr relock` takes as ExecStopPost, seconds from a restart's exec to its start-up relock)."""
    config = write_config(folder)
    proc = start_run(config)
    wait_for(lambda: any(e["kind"] == "started" for e in journal(config)))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    env = {**os.environ, "EDGE_MFR_GPIO": "mock", "PYTHONPATH": str(REPO)}
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "edge_mfr.cli", "--config", str(config), "relock"], cwd=REPO, env=env,
                   check=True, capture_output=True)
    relock_s = time.monotonic() - t0
    before = len(journal(config))
    started = time.time()
    proc = start_run(config)
    wait_for(lambda: len(journal(config)) > before and any(
        e["kind"] == "locked" and e["payload"].get("reason") == "startup" for e in journal(config)[before:]))
    first = next(e for e in journal(config)[before:] if e["kind"] == "locked")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    return relock_s, ts(first) - started


def peak_rss(folder: Path, frames: int, mqtt_port: int | None, kiosk: bool) -> float:
    """Peak RSS (MiB) of `edge-mfr run --max-frames N` on the synthetic camera, from GNU time."""
    config = write_config(folder, mqtt_port=mqtt_port, kiosk=kiosk)
    proc = start_run(config, "--max-frames", str(frames), prefix=("/usr/bin/time", "-f", "MAXRSS %M"))
    _, err = proc.communicate(timeout=600)
    line = [x for x in err.splitlines() if x.startswith("MAXRSS ")][-1]
    return int(line.split()[1]) / 1024


def start_mosquitto(folder: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    conf = folder / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    binary = next(p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if Path(p).exists())
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 10)
    return proc, port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--frames", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edge-mfr-measure-") as tmp:
        root = Path(tmp)
        results: dict[str, list[float]] = {"SIGTERM": [], "SIGINT": [], "relock command": [],
                                           "restart start-up": [], "stalled stream": []}
        for i in range(args.runs):
            results["SIGTERM"].append(relock_after_signal(root / f"term{i}", signal.SIGTERM))
            results["SIGINT"].append(relock_after_signal(root / f"int{i}", signal.SIGINT))
            relock_s, startup_s = relock_after_sigkill(root / f"kill{i}")
            results["relock command"].append(relock_s)
            results["restart start-up"].append(startup_s)
            stall_s, kind = relock_after_stall(root / f"stall{i}")
            results["stalled stream"].append(stall_s)
            print(f"run {i + 1}: " + ", ".join(f"{k} {v[-1] * 1000:.0f} ms" for k, v in results.items())
                  + f" (stall relock by {kind})", flush=True)
        for name, values in results.items():
            print(f"{name}: median {statistics.median(values) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms "
                  f"over {len(values)} runs")
        broker, port = start_mosquitto(root)
        try:
            bare = peak_rss(root / "rss-bare", args.frames, None, False)
            full = peak_rss(root / "rss-full", args.frames, port, True)
        finally:
            broker.terminate()
            broker.wait()
        print(f"peak RSS, {args.frames} frames: bare {bare:.0f} MiB, MQTT + kiosk {full:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
