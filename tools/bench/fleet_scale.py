"""Fleet scale benchmark: publish a bundle of N synthetic people and apply it on a door, over a real broker.

    python tools/bench/fleet_scale.py --people 10000 [--templates 4] [--dim 512] [--json OUT]

Starts a private mosquitto on a free loopback port (Debian's package), makes a gallery of N people with
random unit templates, signs and publishes it as a full bundle, and measures on the door's side: bundle
size, chunks, time from publish start to applied gallery, time to apply a one-person revoke (delta; both
end to end and the door's own apply_bundle), and peak RSS. The door (its follower: MQTT client, reassembly,
verification, apply) runs in a process of its own, as on a real door, so its peak RSS is the door's alone;
the admin/publisher and the stand-in frame loop below are this process's. It also times the door loop's
in-memory revoke (IdentityClassifier.without on a classifier of N people; SVM weights stand-ins, no fit).

The door loop's side: a stand-in frame loop (15 fps, one face a frame, alternately bare and masked) runs a
real ``IdentityClassifier.decide`` on the admin gallery's classifier (fitted as the door fits it) from
before the publish until the end, through the bundle's transfer and apply, then the door's reload of the
applied gallery on a helper thread (``Identifier`` needs models; here the gallery read and the classifier
fit it does), then a few seconds on the reloaded classifier. It reports each phase's decide times and the
longest gap between frames. Report, not a test: nothing is asserted about time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from edge_mfr.identity.classifier import IdentityClassifier  # noqa: E402
from edge_mfr.identity.gallery import Gallery, TemplateMeta  # noqa: E402
from edge_mfr.interfaces.fleet import follower as follower_mod  # noqa: E402
from edge_mfr.interfaces.fleet import keys, link  # noqa: E402
from edge_mfr.interfaces.fleet.follower import Follower  # noqa: E402
from edge_mfr.interfaces.fleet.publisher import publish  # noqa: E402
from edge_mfr.interfaces.mqtt import MqttSettings  # noqa: E402

MODEL = "ab" * 32


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _make_gallery(path: Path, n: int, templates: int, dim: int) -> None:
    rng = np.random.default_rng(0)
    g = Gallery.create(MODEL, dim=dim)
    meta = [TemplateMeta(f"p-{i}.jpg", 1.0) for i in range(templates)]
    for i in range(n):
        p = g.add_person(f"Person {i:05d}")
        x = rng.normal(size=(templates, dim)).astype(np.float32)
        g.add_templates(p.person_id, x / np.linalg.norm(x, axis=1, keepdims=True), meta)
    g.save(path)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _door_main(port: int, pub: str, gallery: str) -> int:
    """The door process: a follower until stdin closes, then one JSON line of its measurements on stdout."""
    settings = MqttSettings(device_id="bench", host="127.0.0.1", port=port)
    events: list[tuple[str, dict]] = []
    applies = _timed_applies()
    rss0, peak0 = _rss_mib(), _peak_rss_mib()
    follower = Follower(fleet="site", root="edge-mfr/fleet/site", trusted=keys.load_trusted([Path(pub)]),
                        gallery_path=Path(gallery), models=lambda: {"primary": MODEL},
                        record=lambda k, **p: events.append((k, p)),
                        client_factory=link.client_factory(settings, "door"), host="127.0.0.1", port=port)
    follower.start()
    sys.stdin.read()
    follower.stop()
    print(json.dumps({"rss_start_mib": round(rss0, 1), "peak_rss_at_start_mib": round(peak0, 1),
                      "peak_rss_mib": round(_peak_rss_mib(), 1), "applies_s": applies,
                      "refusals": [p for k, p in events if k == "fleet_refused"]}))
    return 0


def _door_version(door: Path) -> int:
    try:
        return int(json.loads(follower_mod.state_path(door).read_text())["version"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def _timed_applies() -> list[float]:
    """Seconds of each apply_bundle on the door (wrapped here; the follower calls it by module name)."""
    times: list[float] = []
    real = follower_mod.apply_bundle

    def timed(*a, **kw):
        t0 = time.perf_counter()
        try:
            return real(*a, **kw)
        finally:
            times.append(time.perf_counter() - t0)

    follower_mod.apply_bundle = timed
    return times


def _forget_s(gallery: Gallery) -> float:
    """The door loop's in-memory revoke of one person on a classifier of the whole gallery."""
    x, labels, _ = gallery.matrix()
    c = IdentityClassifier()
    c.ids = sorted(set(labels.tolist()))
    index = {pid: i for i, pid in enumerate(c.ids)}
    c._templates = {"embedding": x}
    c._owner = np.array([index[p] for p in labels], np.int64)
    c._synthetic = np.zeros(len(labels), bool)
    c._svm_w, c._svm_b = np.zeros((len(c.ids), x.shape[1]), np.float32), np.zeros(len(c.ids), np.float32)
    t0 = time.perf_counter()
    c.without({c.ids[0]})
    return time.perf_counter() - t0


def _fit(gallery: Gallery) -> IdentityClassifier:
    """The classifier the door's Identifier fits on this gallery (no SVM cache here)."""
    x, labels, meta = gallery.matrix()
    return IdentityClassifier().fit(x, labels, np.array([m.synthetic for m in meta], bool))


class FrameLoop(threading.Thread):
    """15 fps, one decide a frame on ``self.classifier``; decide seconds and frame gaps per ``self.phase``."""

    def __init__(self, classifier: IdentityClassifier, probes: np.ndarray):
        super().__init__(name="frame-loop", daemon=True)
        self.classifier, self.probes, self.phase = classifier, probes, "before"
        self.decide_s: dict[str, list[float]] = {}
        self.gaps: dict[str, list[float]] = {}
        self.stop_event = threading.Event()

    def run(self) -> None:
        last, i = time.perf_counter(), 0
        while not self.stop_event.is_set():
            phase, clf = self.phase, self.classifier
            t0 = time.perf_counter()
            clf.decide(self.probes[i % len(self.probes)][None], [bool(i % 2)])
            t1 = time.perf_counter()
            self.decide_s.setdefault(phase, []).append(t1 - t0)
            time.sleep(max(0.0, 1 / 15 - (t1 - t0)))
            now = time.perf_counter()
            self.gaps.setdefault(phase, []).append(now - last)
            last, i = now, i + 1

    def report(self) -> dict[str, dict[str, float]]:
        out = {}
        for phase, times in self.decide_s.items():
            ms = 1000 * np.array(times)
            out[phase] = {"decides": len(ms), "decide_median_ms": round(float(np.median(ms)), 1),
                          "decide_max_ms": round(float(ms.max()), 1),
                          "longest_frame_gap_ms": round(1000 * max(self.gaps.get(phase, [0.0])), 1)}
        return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", type=int, default=10000)
    ap.add_argument("--templates", type=int, default=4, help="templates per person")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--chunk-kib", type=int, default=128)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--door", nargs=3, metavar=("PORT", "PUB", "GALLERY"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.door:
        return _door_main(int(args.door[0]), args.door[1], args.door[2])
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp_s:
        tmp = Path(tmp_s)
        port = _free_port()
        conf = tmp / "mosquitto.conf"
        root_user = "user root\n" if os.geteuid() == 0 else ""  # as root, mosquitto would switch users
        conf.write_text(f"{root_user}listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        broker = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            settings = MqttSettings(device_id="bench", host="127.0.0.1", port=port)
            priv, pub = keys.keygen(tmp / "keys")
            admin = tmp / "admin.npz"
            t0 = time.perf_counter()
            _make_gallery(admin, args.people, args.templates, args.dim)
            make_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            before = _fit(Gallery.load(admin, MODEL, with_crops=False))
            first_fit_s = time.perf_counter() - t0
            rng = np.random.default_rng(1)
            probes = rng.normal(size=(16, args.dim)).astype(np.float32)
            frames = FrameLoop(before, probes / np.linalg.norm(probes, axis=1, keepdims=True))
            frames.start()
            time.sleep(2)
            door = tmp / "door" / "gallery.npz"
            rss0 = _rss_mib()
            door_proc = subprocess.Popen([sys.executable, __file__, "--door", str(port), str(pub), str(door)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            time.sleep(2)  # imports and the broker connection, before the publish starts
            common = dict(gallery_path=admin, private_key_path=priv, fleet="site", root="edge-mfr/fleet/site",
                          state_path=tmp / "published.json", client_factory=link.client_factory(settings, "admin"),
                          host="127.0.0.1", port=port, chunk_bytes=args.chunk_kib * 1024, progress=lambda s: None)
            t0 = time.perf_counter()
            frames.phase = "publish_and_apply"
            full = publish(**common)
            while _door_version(door) < full["version"]:
                time.sleep(0.01)
            full_s = time.perf_counter() - t0
            rss_peak = _peak_rss_mib()

            # The door loop's side: reading the applied gallery and fitting its classifier on a helper thread
            # while frames go on with the old classifier, then frames on the new one.
            frames.phase = "reload"
            t0 = time.perf_counter()
            g = Gallery.load(door, MODEL, with_crops=False)
            read_s = time.perf_counter() - t0
            reloaded = _fit(g)
            reload_s = time.perf_counter() - t0
            frames.classifier, frames.phase = reloaded, "after"
            time.sleep(3)
            frames.stop_event.set()
            frames.join()

            with Gallery.edit(admin, MODEL) as ga:
                ga.remove(ga.people[0].person_id)
            t0 = time.perf_counter()
            delta = publish(**common)
            while _door_version(door) < delta["version"]:
                time.sleep(0.005)
            revoke_s = time.perf_counter() - t0
            door_out, _ = door_proc.communicate("", timeout=60)
            door_report = json.loads(door_out.strip().splitlines()[-1])
            forget_s = _forget_s(g)
        finally:
            broker.terminate()
            broker.wait(10)
    report = {
        "people": args.people, "templates_per_person": args.templates, "dim": args.dim,
        "bundle_bytes": full["bytes"], "chunks": full["chunks"], "make_gallery_s": round(make_s, 2),
        "publish_to_applied_s": round(full_s, 2), "door_gallery_read_s": round(read_s, 2),
        "door_reload_read_and_fit_s": round(reload_s, 2), "classifier_fit_before_s": round(first_fit_s, 2),
        "classifier_ranks_by_svm": reloaded.ranks_by_svm, "frame_loop": frames.report(),
        "revoke_delta_bytes": delta["bytes"], "revoke_publish_to_applied_s": round(revoke_s, 3),
        "door_full_apply_s": round(door_report["applies_s"][0], 3),
        "door_revoke_apply_s": round(door_report["applies_s"][-1], 3),
        "door_loop_forget_one_s": round(forget_s, 4),
        "door_process_rss_start_mib": door_report["rss_start_mib"],
        "door_process_peak_rss_mib": door_report["peak_rss_mib"],
        "admin_and_frame_loop_rss_before_mib": round(rss0, 1),
        "admin_and_frame_loop_peak_rss_mib": round(rss_peak, 1),
        "people_applied": len(g), "refusals": door_report["refusals"],
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
