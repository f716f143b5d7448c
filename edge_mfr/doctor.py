"""`edge-mfr doctor`: is this device ready to run the door? One line per check, and what to do about it.

Each check is independent and reports OK, WARN (works, but probably not what you want), FAIL (the
service would not start or not work) or SKIP; the exit status is 1 when anything FAILs. Nothing is
changed on the device: the journal and gallery are only read, no GPIO pin is claimed (the running
service may hold them), and the camera is opened just long enough to get one frame.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_mfr.errors import EdgeMfrError

OK, WARN, FAIL, SKIP = "OK", "WARN", "FAIL", "SKIP"


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


def check_config(path: Path | None) -> tuple[Any, list[Check]]:
    from edge_mfr.config import DEFAULT_CONFIG_PATH, config_warnings, load_config

    shown = str(path) if path else (str(DEFAULT_CONFIG_PATH) if DEFAULT_CONFIG_PATH.exists()
                                    else "defaults (no /etc/edge-mfr/config.toml)")
    try:
        cfg = load_config(path)
    except EdgeMfrError as exc:
        problems = getattr(exc, "problems", None) or [str(exc)]
        return None, [Check("config", FAIL, p, "fix the file; `edge-mfr config check` lists every problem")
                      for p in problems]
    out = [Check("config", OK, f"{shown} is valid")]
    out += [Check("config", WARN, w.removeprefix("warning: ")) for w in config_warnings(cfg, path)]
    return cfg, out


def check_runtime() -> Check:
    from edge_mfr.vision.runtime import runtime_name

    try:
        return Check("runtime", OK, f"TFLite runtime: {runtime_name()}")
    except EdgeMfrError as exc:
        return Check("runtime", FAIL, str(exc), "pip install ai-edge-litert into the service's venv")


def check_models(models_dir: Path | None, detector: str,
                 embedders: list[str] | None = None) -> tuple[list[tuple[str, str]] | None, Check]:
    """Every manifest file present and matching its sha256; the detector, the embedders and their fusion load.

    Returns (name, sha256) of the embedders (for the gallery check), or None when the models failed.
    """
    from edge_mfr.identity.fusion import load_fusion
    from edge_mfr.vision.mask_status import MaskStatusClassifier
    from edge_mfr.vision.pipeline import FacePipeline
    from edge_mfr.vision.runtime import default_models_dir, load_manifest, verify_model_file
    from edge_mfr.vision.selftest import SelfTestError, check_all

    folder = Path(models_dir or default_models_dir())
    fix = "reinstall edge-mfr (the wheel ships models/) or run `make models`; set models.dir to the folder"
    try:
        specs = load_manifest(folder)
        for name, spec in specs.items():
            verify_model_file(folder / name, spec)
        pipeline = FacePipeline(detector=detector, num_threads=1, models_dir=folder, embedders=embedders)
        ids = pipeline.embedder_ids
        MaskStatusClassifier.load(folder, ids[0][1])
        if len(ids) > 1:
            load_fusion(ids, folder)
        tested = check_all(folder)
    except SelfTestError as exc:
        return None, Check("models", FAIL, str(exc), "this CPU or TFLite runtime is not trusted: run on a 64-bit "
                                                     "Raspberry Pi OS with the pinned ai-edge-litert, or report it")
    except EdgeMfrError as exc:
        return None, Check("models", FAIL, str(exc), fix)
    names = " + ".join(n for n, _ in ids)
    worst = min(r.worst_cosine for r in tested)
    return ids, Check("models", OK, f"{len(specs)} files in {folder} match manifest.json; {detector} and "
                                    f"{names} load; known-answer self-test of {len(tested)} models passed "
                                    f"(worst cosine {worst:.4f})")


def check_gallery(path: Path, embedder_ids: list[tuple[str, str]] | None) -> Check:
    from edge_mfr.identity.classifier import collapsed
    from edge_mfr.identity.gallery import Gallery

    if not path.exists():
        return Check("gallery", WARN, f"{path}: nobody enrolled yet (every face is refused)",
                     "enroll people: edge-mfr enroll NAME PHOTOS...")
    if embedder_ids is None:
        return Check("gallery", SKIP, f"{path}: not checked (the models failed)")
    try:
        gallery = Gallery.load(path, embedder_ids[0][1], with_crops=False, extra_models=embedder_ids[1:])
        lowest = collapsed(gallery.matrix()[0])
        if lowest is not None:
            return Check("gallery", FAIL, f"{path}: all {gallery.num_templates} templates are the same face to "
                                          f"the embedder (cosine >= {lowest:.3f} to their mean): enrolled with a "
                                          "broken model/runtime", "re-enroll everyone once the models check passes")
    except PermissionError as exc:
        return Check("gallery", FAIL, f"{path}: {exc.strerror}", "run doctor as the edge-mfr user or with sudo")
    except EdgeMfrError as exc:
        return Check("gallery", FAIL, str(exc), "see the message; `edge-mfr people list` shows the gallery")
    allowed = sum(p.allowed for p in gallery.people)
    return Check("gallery", OK, f"{path}: {len(gallery.people)} people ({allowed} allowed), "
                                f"{gallery.num_templates} templates, built with the current model")


def _camera_fix(spec: str) -> str:
    if spec.startswith("picamera2"):
        return ("check the ribbon cable and `rpicam-hello --list-cameras`; python3-picamera2 from apt and a venv "
                "made with --system-site-packages; stop the service first if it holds the camera")
    if spec.startswith("/dev/") or spec.isdigit():
        return "is the webcam plugged in (`v4l2-ctl --list-devices`) and the user in the video group?"
    if "://" in spec:
        return "check the URL, credentials and that the camera is reachable from this device"
    return "check camera.source (a file, a folder of images, picamera2, /dev/videoN or a URL)"


def check_camera(camera: Any, timeout: float) -> Check:
    """Open the configured source and wait up to ``timeout`` seconds for one frame (in a helper thread)."""
    from edge_mfr.stream.camera import make_camera

    result: dict[str, Any] = {}

    def grab() -> None:
        source = None
        try:
            source = make_camera(camera)
            source.open()
            result["frame"] = source.read()
        except Exception as exc:  # any backend failure is this check's FAIL, reported below
            result["error"] = exc
        finally:
            if source is not None:
                try:
                    source.close()
                except Exception:
                    pass

    t0 = time.monotonic()
    worker = threading.Thread(target=grab, name="doctor-camera", daemon=True)
    worker.start()
    worker.join(timeout)
    took = time.monotonic() - t0
    spec = camera.source
    if worker.is_alive():
        return Check("camera", FAIL, f"{spec}: no frame within {timeout:g} s", _camera_fix(spec))
    if "error" in result:
        from edge_mfr.stream.sources import CameraImportError

        error = result["error"]
        if isinstance(error, CameraImportError):  # a software problem: the message names it and the fix
            return Check("camera", FAIL, str(error))
        return Check("camera", FAIL, f"{spec}: {error}", _camera_fix(spec))
    frame = result.get("frame")
    if frame is None:
        return Check("camera", FAIL, f"{spec}: opened but gave no frame", _camera_fix(spec))
    h, w = frame.image.shape[:2]
    return Check("camera", OK, f"{spec}: {w}x{h} frame in {took:.1f} s")


def check_gpio(doors: list[Any], setting: str = "auto") -> Check:
    from edge_mfr.device.lock import is_raspberry_pi, make_pin_factory

    pins = ", ".join(f"{d.name}: relay {d.relay_pin} ({'active high' if d.active_high else 'active low'})"
                     for d in doors)
    if setting == "mock":
        return Check("gpio", WARN, f"device.gpio = \"mock\": GPIO is simulated, no relay switches [{pins}]",
                     "set device.gpio = \"auto\" (or remove it) to drive a real door")
    if not is_raspberry_pi():
        return Check("gpio", WARN, f"not a Raspberry Pi: GPIO would be simulated (gpiozero MockFactory), no relay "
                                   f"switches [{pins}]", "fine for the demo and tests; run on the Pi for a real door")
    try:
        factory = make_pin_factory(mock=False)
    except EdgeMfrError as exc:
        return Check("gpio", FAIL, str(exc), "sudo apt install python3-lgpio; add the service user to gpio")
    return Check("gpio", OK, f"real GPIO through {type(factory).__name__} [{pins}]")


def check_journal(path: Path) -> Check:
    from edge_mfr.device.journal import Journal

    if not path.exists():
        parent = path.parent
        while not parent.exists() and parent != parent.parent:  # the service creates missing folders
            parent = parent.parent
        if parent.is_dir() and os.access(parent, os.W_OK):
            return Check("journal", OK, f"{path}: not created yet; {parent} is writable")
        return Check("journal", FAIL, f"{path}: cannot be created ({parent} is not writable by this user)",
                     "create it (deploy/install.sh makes /var/lib/edge-mfr) or set device.state_dir")
    if not os.access(path, os.W_OK):
        return Check("journal", FAIL, f"{path}: not writable by this user",
                     "run doctor as the service user: sudo -u edge-mfr edge-mfr doctor")
    try:
        with Journal(path, readonly=True) as journal:
            count = journal.count()
    except EdgeMfrError as exc:
        return Check("journal", FAIL, str(exc), "move the file aside; the service starts a new journal")
    return Check("journal", OK, f"{path}: writable, {count} events")


def check_broker(cfg: Any, timeout: float = 5.0) -> Check:
    """Log in to the broker with the service's own settings (TLS, CA, client certificate, user, password).

    It uses its own client id (the service's plus ``-doctor``) so a running service is not disconnected,
    and publishes nothing (no availability, no will), so Home Assistant never sees the device change state.
    """
    mqtt = cfg.mqtt
    if not mqtt.enabled:
        return Check("mqtt", SKIP, "mqtt.enabled = false")
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from edge_mfr.interfaces.mqtt import MqttClient, MqttSettings, _describe_failure

    where = f"{mqtt.host}:{mqtt.port}"
    try:
        s = MqttSettings.from_config(cfg)
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{s.client_id}-doctor",
                             protocol=paho.MQTTv5 if s.protocol == "5" else paho.MQTTv311)
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.tls:
            client.tls_set_context(MqttClient(s)._ssl_context())
    except EdgeMfrError as exc:
        return Check("mqtt", FAIL, str(exc), "fix the [mqtt] files (password_file, command_secret_file, tls_*)")
    answer: dict[str, Any] = {}
    done = threading.Event()

    def on_connect(client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        answer["reason"] = reason_code
        done.set()

    client.on_connect = on_connect
    client.connect_timeout = timeout
    try:
        client.connect(s.host, s.port, keepalive=max(5, int(timeout) + 5))  # TCP and TLS handshake
    except (OSError, ValueError) as exc:  # refused, unreachable, TLS verification (ssl errors are OSErrors)
        text = str(_describe_failure(exc, s)) if isinstance(exc, OSError) else f"MQTT broker {where}: {exc}"
        return Check("mqtt", FAIL, text, "check mqtt.host, mqtt.port and mqtt.tls_ca, that the broker runs, "
                                         "and the firewall")
    client.loop_start()
    try:
        done.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    reason = answer.get("reason")
    if reason is None:
        return Check("mqtt", FAIL, f"broker at {where} accepted the connection but did not answer the login "
                                   f"within {timeout:g} s", "is this port an MQTT listener (TLS or not)?")
    if reason.is_failure:
        return Check("mqtt", FAIL, f"broker at {where} refused the login as {s.username or '(anonymous)'}: "
                                   f"{reason}", "check mqtt.username, the password (file) and the broker's "
                                                "password file")
    how = (" over TLS" if s.tls else "") + (f" as {s.username}" if s.username else " anonymously")
    secret = "" if s.command_secret is not None else "; no command_secret_file, so unlock/enroll are refused"
    return Check("mqtt", OK, f"logged in to the broker at {where}{how} (MQTT {s.protocol}){secret}")


def run_checks(config_path: Path | None, models_dir: Path | None = None,
               camera_timeout: float = 5.0) -> list[Check]:
    cfg, checks = check_config(config_path)
    checks.append(check_runtime())
    detector = cfg.models.detector if cfg is not None else "blazeface"
    folder = models_dir or (cfg.models.dir if cfg is not None else None)
    embedder_ids, models = check_models(folder, detector, cfg.recognition.embedders if cfg is not None else None)
    checks.append(models)
    if cfg is None:
        checks += [Check(n, SKIP, "needs a valid config") for n in ("gallery", "camera", "gpio", "journal", "mqtt")]
        return checks
    checks.append(check_gallery(cfg.recognition.gallery, embedder_ids))
    checks.append(check_camera(cfg.camera, camera_timeout))
    checks.append(check_gpio(cfg.doors, cfg.device.gpio))
    checks.append(check_journal(cfg.journal.path))
    checks.append(check_broker(cfg))
    return checks


def run_doctor(config_path: Path | None, models_dir: Path | None = None, camera_timeout: float = 5.0,
               out: Callable[[str], None] = print) -> int:
    """Print every check; 1 when any FAILs, else 0."""
    checks = run_checks(config_path, models_dir, camera_timeout)
    for c in checks:
        out(f"{c.status:4}  {c.name:8} {c.detail}")
        if c.fix and c.status in (FAIL, WARN):
            out(f"{'':14}-> {c.fix}")
    failed = sum(c.status == FAIL for c in checks)
    warned = sum(c.status == WARN for c in checks)
    out(f"doctor: {len(checks)} checks, {failed} failed, {warned} warnings")
    return 1 if failed else 0
