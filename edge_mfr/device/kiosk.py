"""The kiosk: a small local web server with the live view, the door's status and an admin area.

Why it is shaped like this:

* **The frame loop never waits for us.** The ``on_frame`` hook only stores a reference to the newest
  report (which carries the frame) and wakes the viewers. Drawing and JPEG encoding happen in a viewer's
  server thread, at most ``stream_fps`` times a second, and one encoded frame is shared by all viewers.
  :func:`measure_viewer_cost` measures what a connected viewer costs the loop.
* **Standard library only** (``http.server``): nothing to install on the Pi; one thread per request, a
  bounded number of live streams.
* **Local by default.** It listens on 127.0.0.1 for the Pi's own screen (Chromium in kiosk mode, see
  deploy/kiosk/); while bound to loopback, requests naming another Host are refused (DNS rebinding).
  Listening on the LAN needs ``kiosk.bind``; the live view and status are then visible to the LAN.
* **Admin pages need the password** in ``kiosk.admin_password_file``; without that file they are off.
  Login is a form; the session is a random cookie (HttpOnly, SameSite=Strict) plus a CSRF token in every
  form; the password is compared in constant time and repeated failures are refused for a while. Plain
  HTTP carries the password in clear over a LAN: reach a LAN-bound kiosk through an SSH tunnel, a VPN or
  a TLS reverse proxy.
* **Same code as the CLI.** Enrollment calls :func:`edge_mfr.identity.enroll.enroll` (on its own
  FacePipeline: TFLite interpreters are not shared across threads), people are changed with
  :meth:`Gallery.edit`; the running appliance reloads the gallery file when it changes. Uploads are
  checked by decoding them, never by their file name, and all of them before anything is stored.
  Nothing biometric leaves the device: pages show names, ids, counts and scores, never embeddings.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np

from edge_mfr.device import kiosk_pages as pages
from edge_mfr.errors import ConfigError, EdgeMfrError, EnrollmentError, ImageError

log = logging.getLogger(__name__)

BOUNDARY = "edgemfrframe"
HOLD_S = 5.0  # how long the banner keeps a decision after it was made
MAX_VIEWERS = 4  # concurrent MJPEG streams; more are refused (each one costs encoding time)
MAX_FORM_BYTES = 64 * 1024  # url-encoded forms (login, rename)
MAX_FILES = 40
LOGIN_FAILURES = 5  # wrong passwords per client within LOGIN_WINDOW_S before logins are refused
LOGIN_WINDOW_S = 300.0
SESSION_S = 8 * 3600.0
COOKIE = "edge_mfr_admin"
CAPTURE_FRAMES = 12  # live-camera enrollment: frames collected while the person turns their head
CAPTURE_GAP_S = 0.3  # at least this long between two collected frames
CAPTURE_TIMEOUT_S = 20.0
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
JOURNAL_KINDS = ["access_granted", "access_denied", "unknown_face", "lockout", "lockout_ended", "unlocked",
                 "locked", "unlock_refused", "watchdog_tripped", "door_opened", "door_closed", "door_forced",
                 "door_held_open", "exit_button", "gallery_reloaded", "gallery_error", "source_lost",
                 "source_restored", "started", "stopped"]
EVENT_TEXT = {"access_granted": "granted", "access_denied": "denied", "unknown_face": "unknown face",
              "lockout": "lockout", "lockout_ended": "lockout ended", "unlocked": "door unlocked",
              "locked": "door locked", "watchdog_tripped": "watchdog relocked the door",
              "gallery_reloaded": "people updated"}
ADMIN_OFF = "admin pages are disabled: set kiosk.admin_password_file"
CSP = ("default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")


class UploadError(EdgeMfrError, ValueError):
    """An upload or form the kiosk refuses (too large, malformed, wrong type); the message is shown."""

    def __init__(self, message: str, status: int = HTTPStatus.BAD_REQUEST):
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------------------------- drawing


def track_label(view: Any) -> Any:
    """The same label style as `recognize --annotate`: green name and score, red unknown, amber undecided;
    a recognised person the door refuses (lockout, not allowed, schedule) is red with the reason, and one
    outside the door zone amber: green only when the door would let them in."""
    from edge_mfr.vision.draw import AMBER, GREEN, RED, Label

    mask = " (mask)" if view.masked else ""
    if view.decided is None:
        return Label(f"checking{mask}", AMBER)
    if view.decided == "unknown":
        return Label(f"unknown{mask}", RED)
    who = f"{view.name or view.decided} {view.score:.2f}{mask}"
    refused = getattr(view, "refused", None)
    if refused == "not at the door" or not getattr(view, "in_zone", True):
        return Label(f"{who}: not at the door", AMBER)  # recognised, but the door does not act on it
    if refused:
        return Label(f"{who}: refused, {refused}", RED)  # the same verdict as the door: never green
    return Label(who, GREEN)


def annotate_report(image: np.ndarray, tracks: list[Any], max_width: int | None = None) -> np.ndarray:
    """``image`` (RGB) scaled to at most ``max_width`` with every track's box and label drawn."""
    from edge_mfr.vision.draw import draw_faces
    from edge_mfr.vision.types import Face

    scale = 1.0
    if max_width and image.shape[1] > max_width:
        scale = max_width / image.shape[1]
        size = (max_width, max(1, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    no_points = np.full((6, 2), np.nan, np.float32)
    faces = [Face(np.asarray(t.box, np.float32) * scale, 1.0, no_points) for t in tracks]
    return draw_faces(image, faces, [track_label(t) for t in tracks], keypoints=False)


# ------------------------------------------------------------------------------------------- live view


class LiveView:
    """The newest frame report, stored by the frame loop and encoded lazily, once, for all viewers."""

    def __init__(self, max_width: int = 640, quality: int = 80):
        self.max_width = max_width
        self.quality = quality
        self._cond = threading.Condition()
        self._seq = 0
        self._report: Any = None
        self._encode_lock = threading.Lock()
        self._jpeg: tuple[int, bytes] | None = None
        self.encoded = 0  # frames encoded so far (for measurements)

    def on_frame(self, report: Any) -> None:
        """The frame hook: keep a reference and wake the viewers; nothing else runs in the loop's thread."""
        with self._cond:
            self._report = report
            self._seq += 1
            self._cond.notify_all()

    def latest(self) -> tuple[int, Any]:
        with self._cond:
            return self._seq, self._report

    def wait_newer(self, seq: int, timeout: float) -> int:
        """The newest sequence number once it differs from ``seq`` (or after ``timeout``)."""
        with self._cond:
            self._cond.wait_for(lambda: self._seq != seq, timeout)
            return self._seq

    def jpeg(self) -> tuple[int, bytes] | None:
        """The newest frame, annotated and JPEG-encoded (cached per frame); None before the first frame."""
        seq, report = self.latest()
        if report is None or getattr(report, "image", None) is None:
            return None
        with self._encode_lock:
            if self._jpeg is not None and self._jpeg[0] == seq:
                return self._jpeg
            drawn = annotate_report(report.image, report.tracks, self.max_width)
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            if not ok:
                return self._jpeg
            self._jpeg = (seq, buf.tobytes())
            self.encoded += 1
            return self._jpeg


# ----------------------------------------------------------------------------------------- status board


class StatusBoard:
    """Recent events (from ``on_event``) and the banner they imply; no journal reads in the hot path."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, hold_s: float = HOLD_S, keep: int = 20):
        self.clock = clock
        self.hold_s = hold_s
        self._lock = threading.Lock()
        self._events: deque[dict[str, str]] = deque(maxlen=keep)
        self._grant: tuple[float, str, Any] | None = None  # (time, name, track id)
        self._deny: tuple[float, str] | None = None
        self._unknown_at = -float("inf")

    def on_event(self, kind: str, event: dict[str, Any]) -> None:
        if kind == "mask_status":
            return
        now = self.clock()
        who = event.get("name") or event.get("person_id") or ""
        with self._lock:
            if kind == "access_granted":
                self._grant = (now, who, event.get("track_id"))
            elif kind == "access_denied":
                self._deny = (now, who)
            elif kind == "unknown_face":
                self._unknown_at = now
            text = EVENT_TEXT.get(kind, kind.replace("_", " "))
            if who:
                text += f": {who}"
            if kind in ("access_granted", "access_denied") and isinstance(event.get("score"), int | float):
                text += f" ({event['score']:.2f})"
            if kind in ("locked", "unlocked") and event.get("reason"):
                text += f" ({event['reason']})"
            self._events.appendleft({"time": datetime.now().strftime("%H:%M:%S"), "kind": kind, "text": text})

    def events(self) -> list[dict[str, str]]:
        with self._lock:
            return list(self._events)

    def banner(self, report: Any, unlocked: bool, lockout_s: float) -> dict[str, str]:
        """Welcome, NAME / Access denied / Unknown / Locked out / Door open / Door locked."""
        now = self.clock()
        tracks = report.tracks if report is not None else []
        with self._lock:
            grant, deny, unknown_at = self._grant, self._deny, self._unknown_at
        if lockout_s > 0:
            return {"kind": "lockout", "text": f"Locked out: try again in {lockout_s:.0f} s"}
        if grant and (now - grant[0] < self.hold_s or any(t.track_id == grant[2] for t in tracks)):
            return {"kind": "welcome", "text": f"Welcome, {grant[1]}"}
        if deny and now - deny[0] < self.hold_s:
            return {"kind": "denied", "text": "Access denied"}
        if now - unknown_at < self.hold_s or any(t.decided == "unknown" for t in tracks):
            return {"kind": "unknown", "text": "Unknown"}
        if unlocked:
            return {"kind": "open", "text": "Door unlocked"}
        return {"kind": "idle", "text": "Door locked"}


# ----------------------------------------------------------------------------------------------- admin


class LoginRefused(EdgeMfrError, PermissionError):
    def __init__(self, message: str, status: int, retry_after: float = 0.0):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def read_password(path: Path) -> str:
    """The admin password: the file's first line. A clear ConfigError when missing, unreadable or empty."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"kiosk.admin_password_file: {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"kiosk.admin_password_file: {path}: cannot read ({exc})") from None
    password = text.splitlines()[0].strip() if text.strip() else ""
    if len(password) < 8:
        raise ConfigError(f"kiosk.admin_password_file: {path}: the password must have at least 8 characters")
    if Path(path).stat().st_mode & 0o044:
        log.warning("%s is readable by other users: chmod 600 it", path)
    return password


class AdminAuth:
    """Password check with a per-client failure limit, and in-memory sessions with a CSRF token each."""

    def __init__(self, password: str | None, clock: Callable[[], float] = time.monotonic):
        self._digest = hashlib.sha256(password.encode()).digest() if password else None
        self.clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, tuple[float, str]] = {}  # token -> (expires, csrf token)
        self._failures: dict[str, list[float]] = {}

    @property
    def enabled(self) -> bool:
        return self._digest is not None

    def login(self, password: str, client: str) -> str:
        """A new session token, or LoginRefused (wrong password, or too many wrong ones lately)."""
        if self._digest is None:
            raise LoginRefused(ADMIN_OFF, HTTPStatus.FORBIDDEN)
        now = self.clock()
        with self._lock:
            recent = [t for t in self._failures.get(client, []) if now - t < LOGIN_WINDOW_S]
            everyone = sum(len(v) for v in self._failures.values())
            if len(recent) >= LOGIN_FAILURES or everyone >= 10 * LOGIN_FAILURES:
                wait = LOGIN_WINDOW_S - (now - recent[0]) if recent else LOGIN_WINDOW_S
                raise LoginRefused(f"too many wrong passwords: try again in {wait:.0f} s",
                                   HTTPStatus.TOO_MANY_REQUESTS, wait)
            given = hashlib.sha256(password.encode("utf-8", "replace")).digest()
            if not hmac.compare_digest(given, self._digest):
                self._failures[client] = recent + [now]
                self._forget_old(now)
                log.warning("kiosk: wrong admin password from %s", client)
                raise LoginRefused("wrong password", HTTPStatus.UNAUTHORIZED)
            self._failures.pop(client, None)
            token = secrets.token_urlsafe(32)
            self._sessions = {k: v for k, v in self._sessions.items() if v[0] > now}
            self._sessions[token] = (now + SESSION_S, secrets.token_urlsafe(24))
            return token

    def _forget_old(self, now: float) -> None:
        for client in list(self._failures):
            kept = [t for t in self._failures[client] if now - t < LOGIN_WINDOW_S]
            if kept:
                self._failures[client] = kept
            else:
                del self._failures[client]

    def csrf(self, token: str | None) -> str | None:
        """The session's CSRF token when ``token`` is a live session, else None."""
        if not token:
            return None
        with self._lock:
            entry = self._sessions.get(token)
            if entry is None or entry[0] <= self.clock():
                self._sessions.pop(token, None)
                return None
            return entry[1]

    def logout(self, token: str | None) -> None:
        with self._lock:
            self._sessions.pop(token or "", None)


# -------------------------------------------------------------------------------------------- uploads


@dataclass
class Part:
    name: str
    filename: str | None
    data: bytes


def parse_multipart(body: bytes, content_type: str) -> list[Part]:
    """The parts of a multipart/form-data body (RFC 7578); UploadError when it is malformed.

    Each part's data is copied out of ``body`` once (an upload may be tens of MB on a small Pi).
    """
    m = re.search(r'boundary="?([^";,]+)"?', content_type)
    if not content_type.lower().startswith("multipart/form-data") or not m:
        raise UploadError("the upload is not multipart/form-data")
    delimiter = b"--" + m.group(1).encode("latin-1")
    view = memoryview(body)
    parts: list[Part] = []
    pos = body.find(delimiter)
    while pos >= 0:
        start = pos + len(delimiter)
        if body[start:start + 2] == b"--":
            return parts
        nxt = body.find(b"\r\n" + delimiter, start)
        if nxt < 0:
            break
        head_end = body.find(b"\r\n\r\n", start, nxt)
        if head_end < 0:
            raise UploadError("the upload is malformed (a part has no headers)")
        headers = {}
        for line in body[start:head_end].decode("utf-8", "replace").strip("\r\n").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        params = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', headers.get("content-disposition", "")))
        if "name" not in params:
            raise UploadError("the upload is malformed (a part has no name)")
        parts.append(Part(params["name"], params.get("filename"), bytes(view[head_end + 4:nxt])))
        pos = nxt + 2
    raise UploadError("the upload is malformed or incomplete (no closing boundary)")


def store_upload(folder: Path, index: int, filename: str, data: bytes) -> Path:
    """Decode an uploaded photo or video and store it in ``folder`` under a name of our own choosing.

    Photos are re-encoded as PNG (metadata dropped); videos are kept as uploaded once a frame decodes.
    The client's file name only labels the templates; it never decides the type or the path.
    """
    from edge_mfr.vision.imageio import decode_image, write_image

    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(filename or "upload").stem).strip("._")[:40] or "upload"
    shown = filename or f"file {index}"
    if not data:
        raise UploadError(f"{shown}: the file is empty")
    try:
        image = decode_image(data, shown)
    except ImageError as exc:
        if "not a readable image" not in str(exc):
            raise UploadError(str(exc)) from None  # an image, but too small or too large
    else:
        target = folder / f"{index:02d}-{stem}.png"
        write_image(target, image)
        return target
    target = folder / f"{index:02d}-{stem}.mp4"  # the container is probed from the content, not the suffix
    target.write_bytes(data)
    capture = cv2.VideoCapture(str(target))
    try:
        ok, frame = capture.read() if capture.isOpened() else (False, None)
    finally:
        capture.release()
    if not ok or frame is None:
        target.unlink(missing_ok=True)
        raise UploadError(f"{shown}: not a photo or video this device can decode (checked by decoding the "
                          "content, not by the file name)")
    return target


# ----------------------------------------------------------------------------------- live-camera capture


@dataclass
class CaptureJob:
    """One enrollment from the running camera: collect good frames, then enroll them like uploads."""

    name: str
    allowed: bool
    add: bool
    state: str = "capturing"  # capturing, enrolling, done, failed
    captured: int = 0
    message: str = "look at the camera and turn your head slowly left and right"
    report: list[list[str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "captured": self.captured, "wanted": CAPTURE_FRAMES,
                "message": self.message, "report": self.report}


def report_rows(result: Any) -> list[list[str]]:
    rows = [["kept", c.source, f"quality {c.quality:.2f}"] for c in result.kept]
    return rows + [["dropped", src, why] for src, why in result.dropped]


# ------------------------------------------------------------------------------------------------ kiosk


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    kiosk: Kiosk


class Kiosk:
    """The web view of one appliance. ``start()`` listens and attaches the hooks; ``close()`` undoes it."""

    def __init__(self, app: Any, config: Any = None):
        self.app = app
        self.cfg = config if config is not None else app.config.kiosk
        password = read_password(self.cfg.admin_password_file) if self.cfg.admin_password_file else None
        self.auth = AdminAuth(password)
        self.live = LiveView(max_width=self.cfg.stream_width)
        self.board = StatusBoard()
        self.max_upload = int(self.cfg.max_upload_mb * 1024 * 1024)
        self.closing = threading.Event()
        self.viewers = threading.BoundedSemaphore(MAX_VIEWERS)
        self.streaming = 0  # live viewers connected now
        self.count_lock = threading.Lock()
        self._enroll_lock = threading.Lock()
        self.capture: CaptureJob | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def loopback(self) -> bool:
        return self.cfg.bind == "localhost" or ipaddress.ip_address(self.cfg.bind).is_loopback

    @property
    def url(self) -> str:
        host = self.cfg.bind if self.cfg.bind not in ("0.0.0.0", "::") else "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        port = self._server.server_address[1] if self._server else self.cfg.port
        return f"http://{host}:{port}/"

    def start(self) -> Kiosk:
        """Listen (OSError when the port is taken) and attach to the appliance's hooks."""
        server_class = _Server
        if ":" in self.cfg.bind:
            server_class = type("_Server6", (_Server,), {"address_family": __import__("socket").AF_INET6})
        self._server = server_class((self.cfg.bind, self.cfg.port), _Handler)
        self._server.kiosk = self
        self.app.on_frame.append(self.live.on_frame)
        self.app.on_event.append(self.board.on_event)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="kiosk", daemon=True)
        self._thread.start()
        where = "" if self.loopback else " (LAN: live view visible to the network)"
        log.info("kiosk on %s%s; admin pages %s", self.url, where, "on" if self.auth.enabled else "off")
        return self

    def close(self) -> None:
        self.closing.set()
        if self.live.on_frame in self.app.on_frame:
            self.app.on_frame.remove(self.live.on_frame)
        if self.board.on_event in self.app.on_event:
            self.app.on_event.remove(self.board.on_event)
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # ------------------------------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        app = self.app
        _, report = self.live.latest()
        doors: dict[str, Any] = {}
        lockout = 0.0
        try:
            doors = app.bank.state() if app.bank is not None else {}
            lockout = app.policy.lockout_remaining() if app.policy is not None else 0.0
        except RuntimeError:  # a dict changed under us in the loop's thread: report what we have
            pass
        unlocked = any(d.get("unlocked") for d in doors.values())
        people = len(app.identifier.gallery.people) if app.identifier is not None else 0
        return {"banner": self.board.banner(report, unlocked, lockout),
                "lock": "unlocked" if unlocked else "locked",
                "doors": {name: {"unlocked": d.get("unlocked"), "door_open": d.get("door_open")}
                          for name, d in doors.items()},
                "fps": round(app.stats.fps, 2), "frames": app.stats.frames, "people": people,
                "lockout_s": round(lockout, 1), "events": self.board.events()[:8]}

    # --------------------------------------------------------------------------------------- gallery

    @property
    def gallery_path(self) -> Path:
        return Path(self.app.config.recognition.gallery)

    def people(self) -> list[dict[str, Any]]:
        from edge_mfr.identity.gallery import Gallery

        if not self.gallery_path.exists():
            return []
        return Gallery.load(self.gallery_path, None, with_crops=False).summary()

    def change_person(self, action: str, person: str, new_name: str = "") -> str:
        """rename / allow / deny / remove with Gallery.edit, as `edge-mfr people` does; says what was done."""
        from edge_mfr.identity.gallery import Gallery

        with Gallery.edit(self.gallery_path, None, create=False) as g:
            p = g.get(person)
            if action == "rename":
                g.rename(p.person_id, new_name)
                return f"renamed {p.person_id}: {p.name} -> {g.get(p.person_id).name}"
            if action == "remove":
                g.remove(p.person_id)
                return f"removed {p.name} ({p.person_id})"
            g.set_allowed(p.person_id, action == "allow")
            return f"{p.name} ({p.person_id}) is now {'allowed' if action == 'allow' else 'denied'}"

    def _check_name(self, name: str, add: bool) -> str:
        from edge_mfr.identity.gallery import validate_name

        name = validate_name(name)
        taken = {p["name"].casefold() for p in self.people()}
        if add and name.casefold() not in taken:
            raise EnrollmentError(f"nobody called {name!r} is enrolled yet: untick 'add to a person already "
                                  "enrolled'")
        if not add and name.casefold() in taken:
            raise EnrollmentError(f"{name!r} is already enrolled: tick 'add to a person already enrolled' or "
                                  "choose another name")
        return name

    def enroll_files(self, name: str, paths: list[Path], allowed: bool, add: bool,
                     different_from: tuple[str, ...] = ()) -> tuple[str, Any]:
        """Enroll through the CLI's code on a private pipeline; one enrollment at a time."""
        from edge_mfr.identity.enroll import EnrollOptions, enroll
        from edge_mfr.vision.pipeline import FacePipeline

        if not self._enroll_lock.acquire(blocking=False):
            raise EnrollmentError("another enrollment is running; try again when it has finished")
        try:
            cfg = self.app.config
            pipeline = FacePipeline(detector=cfg.models.detector, num_threads=cfg.models.threads,
                                    models_dir=self.app.models_dir)
            return enroll(self.gallery_path, name, paths, pipeline, EnrollOptions(), add_to_existing=add,
                          allowed=allowed, different_from=different_from)
        finally:
            self._enroll_lock.release()

    def enroll_uploads(self, name: str, files: list[Part], allowed: bool, add: bool,
                       different_from: str = "") -> tuple[str, str, Any]:
        """(name, person_id, EnrollmentResult); every file is decoded before anything is stored."""
        name = self._check_name(name, add)
        files = [f for f in files if f.filename or f.data]
        if not files:
            raise UploadError("choose at least one photo or video")
        if len(files) > MAX_FILES:
            raise UploadError(f"{len(files)} files: at most {MAX_FILES} per enrollment")
        with tempfile.TemporaryDirectory(prefix="edge-mfr-upload-") as tmp:
            paths, bad = [], []
            for i, f in enumerate(files):  # the CLI's rule: enroll the good files, report the bad ones
                try:
                    paths.append(store_upload(Path(tmp), i + 1, f.filename or "", f.data))
                except UploadError as exc:
                    bad.append((f.filename or f"file {i + 1}", str(exc).split(": ", 1)[-1]))
            if not paths:
                raise UploadError("; ".join(f"{src}: {why}" for src, why in bad))
            others = tuple(p.strip() for p in different_from.split(",") if p.strip())
            person_id, result = self.enroll_files(name, paths, allowed, add, others)
        result.dropped[:0] = bad
        return name, person_id, result

    def clear_lockout(self) -> str:
        """An operator ends the lockout: a journal event the frame loop applies within a second (as for the
        CLI and MQTT), so the HTTP thread never touches the policy."""
        journal = self.app.journal
        if journal is None:
            raise UploadError("the journal is not open; the lockout cannot be cleared", HTTPStatus.CONFLICT)
        journal.record("lockout_cleared", door=None, by="kiosk")
        return "lockout cleared: the door accepts faces again within a second"

    def start_capture(self, name: str, allowed: bool, add: bool) -> CaptureJob:
        name = self._check_name(name, add)
        if self.capture is not None and self.capture.state in ("capturing", "enrolling"):
            raise EnrollmentError("a live-camera enrollment is already running")
        job = CaptureJob(name, allowed, add)
        self.capture = job
        threading.Thread(target=self._run_capture, args=(job,), name="kiosk-capture", daemon=True).start()
        return job

    def _run_capture(self, job: CaptureJob) -> None:
        """Collect frames with exactly one large enough face from the running loop, then enroll them."""
        from edge_mfr.vision.imageio import write_image

        min_px = self.app.config.recognition.min_face_px
        frames: list[np.ndarray] = []
        seq = -1
        tracked: int | None = None  # the one track every kept frame must show: a scene change is someone else
        deadline = time.monotonic() + CAPTURE_TIMEOUT_S
        try:
            while len(frames) < CAPTURE_FRAMES and time.monotonic() < deadline and not self.closing.is_set():
                seq = self.live.wait_newer(seq, timeout=1.0)
                _, report = self.live.latest()
                if report is None or getattr(report, "image", None) is None:
                    continue
                faces = [t for t in report.tracks if t.box[2] - t.box[0] >= min_px]
                if len(faces) == 1 and len(report.tracks) == 1 and tracked in (None, faces[0].track_id):
                    tracked = faces[0].track_id
                    frames.append(report.image.copy())
                    job.captured = len(frames)
                    job.message = f"captured {len(frames)} of {CAPTURE_FRAMES} frames: keep turning slowly"
                    time.sleep(CAPTURE_GAP_S)
            if not frames:
                raise EnrollmentError("no frame with exactly one face was seen: stand alone in front of the "
                                      "camera and try again")
            job.state, job.message = "enrolling", f"enrolling {len(frames)} frames..."
            with tempfile.TemporaryDirectory(prefix="edge-mfr-capture-") as tmp:
                paths = []
                for i, frame in enumerate(frames):
                    paths.append(Path(tmp) / f"camera-{i + 1:02d}.png")
                    write_image(paths[-1], frame)
                person_id, result = self.enroll_files(job.name, paths, job.allowed, job.add)
            job.report = report_rows(result)
            job.state = "done"
            job.message = (f"Enrolled {job.name} as {person_id}: kept {len(result.kept)} of {len(frames)} "
                           "frames. The door recognises them within seconds.")
        except EdgeMfrError as exc:
            job.state, job.message = "failed", f"not enrolled: {exc}"
        except Exception as exc:  # a bug: keep the daemon running, say so on the page
            log.exception("kiosk: live-camera enrollment failed")
            job.state, job.message = "failed", f"not enrolled: internal error ({type(exc).__name__})"

    def journal_rows(self, query: dict[str, str]) -> list[dict[str, Any]]:
        from edge_mfr.device.journal import Journal

        try:
            limit = max(1, min(int(query.get("limit") or 100), 1000))
        except ValueError:
            raise UploadError(f"limit {query.get('limit')!r} is not a number") from None
        journal = self.app.journal
        own = journal is None
        if own:
            journal = Journal.from_config(self.app.config, readonly=True)
        try:
            rows = journal.query(kind=query.get("kind") or None, since=query.get("since") or None,
                                 person_id=query.get("person") or None, limit=limit)
        except ValueError as exc:  # a bad "since"
            raise UploadError(str(exc)) from None
        finally:
            if own:
                journal.close()
        for r in rows:
            r["details"] = ", ".join(f"{k}={v}" for k, v in r["payload"].items() if k != "reasons")
        return rows


def start_kiosk(app: Any) -> Kiosk | None:
    """Start the kiosk of a starting appliance. A taken port is logged and journalled, not fatal: the door
    works without its screen. A bad password file is a configuration error and is raised."""
    kiosk = Kiosk(app)
    try:
        return kiosk.start()
    except OSError as exc:
        log.error("kiosk: cannot listen on %s:%s (%s); running without the web view", kiosk.cfg.bind,
                  kiosk.cfg.port, exc.strerror or exc)
        app._record("kiosk_error", error=f"cannot listen on {kiosk.cfg.bind}:{kiosk.cfg.port}: {exc}")
        return None


# ---------------------------------------------------------------------------------------------- handler


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 30  # a stalled client frees its thread
    server_version = "edge-mfr-kiosk"
    sys_version = ""

    @property
    def kiosk(self) -> Kiosk:
        return self.server.kiosk

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("kiosk %s: " + format, self.client_address[0], *args)

    # ---------------------------------------------------------------------------------------- replies

    def _send(self, status: int, body: bytes | str, content_type: str = "text/html; charset=utf-8",
              headers: dict[str, str] | None = None) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", CSP)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _json(self, data: Any, status: int = HTTPStatus.OK) -> None:
        self._send(status, json.dumps(data), "application/json")

    def _redirect(self, location: str, headers: dict[str, str] | None = None) -> None:
        self._send(HTTPStatus.SEE_OTHER, "", headers={"Location": location, **(headers or {})})

    def _error_page(self, status: int, text: str) -> None:
        if self._session_csrf():
            self._send(status, pages.admin_page("Not done", "", pages.message(text)))
        else:
            self._send(status, pages.page("edge-mfr", f"<div class=admin>{pages.message(text)}"
                                                      "<p><a href='/'>Live view</a></p></div>"))

    # ----------------------------------------------------------------------------------------- guards

    def _host_ok(self) -> bool:
        if not self.kiosk.loopback:
            return True
        host = (self.headers.get("Host") or "").strip().lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return name in LOOPBACK_HOSTS

    def _token(self) -> str | None:
        for item in (self.headers.get("Cookie") or "").split(";"):
            key, _, value = item.strip().partition("=")
            if key == COOKIE:
                return value
        return None

    def _session_csrf(self) -> str | None:
        return self.kiosk.auth.csrf(self._token())

    def _read_body(self, limit: int) -> bytes:
        """The request body, at most ``limit`` bytes; larger ones are drained (so the browser shows our
        message instead of a reset connection) up to a bound, then refused with 413."""
        try:
            length = int(self.headers.get("Content-Length") or "")
        except ValueError:
            raise UploadError("the request has no valid Content-Length", HTTPStatus.LENGTH_REQUIRED) from None
        if length > limit:
            if length <= 4 * limit + (1 << 20):
                left = length
                while left > 0:
                    chunk = self.rfile.read(min(left, 1 << 20))
                    if not chunk:
                        break
                    left -= len(chunk)
            else:
                self.close_connection = True
            raise UploadError(f"the upload is {length / 1048576:.1f} MB, over the limit of "
                              f"{limit / 1048576:g} MB (kiosk.max_upload_mb); nothing was stored",
                              HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        return self.rfile.read(length)

    def _form(self) -> dict[str, str]:
        body = self._read_body(MAX_FORM_BYTES)
        return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}

    # ----------------------------------------------------------------------------------------- routing

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        self._dispatch({
            "/": self._live_page, "/static/kiosk.css": self._css, "/static/kiosk.js": self._js,
            "/stream.mjpg": self._stream, "/api/status": self._status, "/admin/login": self._login_page,
            "/admin": self._people_page, "/admin/journal": self._journal, "/admin/capture/status":
            self._capture_status,
        })

    def do_POST(self) -> None:
        self._dispatch({
            "/admin/login": self._login, "/admin/logout": self._logout, "/admin/enroll": self._enroll,
            "/admin/capture": self._capture, "/admin/people/rename": self._person,
            "/admin/people/remove": self._person, "/admin/people/allow": self._person,
            "/admin/people/deny": self._person, "/admin/lockout/clear": self._clear_lockout,
        })

    def _dispatch(self, routes: dict[str, Callable[[], None]]) -> None:
        url = urlsplit(self.path)
        self.query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.route = url.path.rstrip("/") or "/"
        try:
            if not self._host_ok():
                self._send(HTTPStatus.MISDIRECTED_REQUEST, "unknown host", "text/plain")
                return
            handler = routes.get(self.route)
            if handler is None:
                self._error_page(HTTPStatus.NOT_FOUND, f"no page {self.route}")
                return
            if self.route.startswith("/admin") and self.route != "/admin/login" and not self._admin_ok():
                return
            handler()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        except UploadError as exc:
            self._error_page(exc.status, str(exc))
        except EdgeMfrError as exc:
            self._error_page(HTTPStatus.BAD_REQUEST, str(exc))
        except Exception as exc:
            log.exception("kiosk: %s %s failed", self.command, self.route)
            self._error_page(HTTPStatus.INTERNAL_SERVER_ERROR,
                             f"internal error ({type(exc).__name__}); see the appliance's log")

    def _admin_ok(self) -> bool:
        """Logged in (and for POSTs, the form's CSRF token matches); otherwise answered here."""
        if not self.kiosk.auth.enabled:
            self._error_page(HTTPStatus.FORBIDDEN, ADMIN_OFF)
            return False
        csrf = self._session_csrf()
        if csrf is None:
            if self.command == "POST" and self.route != "/admin/logout":
                self._read_and_drop()
                self._error_page(HTTPStatus.UNAUTHORIZED, "not logged in (or the session expired): log in")
            else:
                self._redirect("/admin/login")
            return False
        self.csrf = csrf
        return True

    def _read_and_drop(self) -> None:
        try:
            self._read_body(self.kiosk.max_upload)
        except UploadError:
            pass

    def _check_csrf(self, form: dict[str, str]) -> None:
        if not hmac.compare_digest(form.get("csrf", "").encode(), self.csrf.encode()):
            raise UploadError("the form is stale or forged (CSRF token mismatch): reload the page",
                              HTTPStatus.FORBIDDEN)

    # ------------------------------------------------------------------------------------- live view

    def _live_page(self) -> None:
        self._send(HTTPStatus.OK, pages.live_page(self.kiosk.auth.enabled))

    def _css(self) -> None:
        self._send(HTTPStatus.OK, pages.CSS, "text/css; charset=utf-8")

    def _js(self) -> None:
        self._send(HTTPStatus.OK, pages.JS, "text/javascript; charset=utf-8")

    def _status(self) -> None:
        self._json(self.kiosk.status())

    def _stream(self) -> None:
        """MJPEG: each new frame at most stream_fps times a second, until the viewer or the kiosk goes."""
        kiosk = self.kiosk
        if self.command == "HEAD":
            self._send(HTTPStatus.OK, b"", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            return
        if not kiosk.viewers.acquire(blocking=False):
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, f"at most {MAX_VIEWERS} live viewers", "text/plain")
            return
        with kiosk.count_lock:
            kiosk.streaming += 1
        try:
            self.close_connection = True
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            gap = 1.0 / kiosk.cfg.stream_fps
            seq, sent_at = -1, -gap
            while not kiosk.closing.is_set():
                wait = sent_at + gap - time.monotonic()
                if wait > 0 and kiosk.closing.wait(wait):
                    break
                newest = kiosk.live.wait_newer(seq, timeout=1.0)
                if newest == seq:
                    continue
                frame = kiosk.live.jpeg()
                if frame is None:
                    seq = newest
                    continue
                seq, jpeg = frame
                head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                self.wfile.write(head.encode() + jpeg + b"\r\n")
                self.wfile.flush()
                sent_at = time.monotonic()
        finally:
            with kiosk.count_lock:
                kiosk.streaming -= 1
            kiosk.viewers.release()

    # ----------------------------------------------------------------------------------------- admin

    def _login_page(self) -> None:
        if not self.kiosk.auth.enabled:
            self._error_page(HTTPStatus.FORBIDDEN, ADMIN_OFF)
            return
        self._send(HTTPStatus.OK, pages.login_page())

    def _login(self) -> None:
        form = self._form()
        try:
            token = self.kiosk.auth.login(form.get("password", ""), self.client_address[0])
        except LoginRefused as exc:
            headers = {"Retry-After": str(int(exc.retry_after) + 1)} if exc.retry_after else None
            self._send(exc.status, pages.login_page(pages.message(str(exc))), headers=headers)
            return
        cookie = f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={int(SESSION_S)}"
        self._redirect("/admin", {"Set-Cookie": cookie})

    def _logout(self) -> None:
        self._read_and_drop()
        self.kiosk.auth.logout(self._token())
        self._redirect("/", {"Set-Cookie": f"{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"})

    def _people_page(self, note: str = "", status: int = HTTPStatus.OK) -> None:
        kiosk = self.kiosk
        self._send(status, pages.people_page(kiosk.people(), self.csrf, kiosk.cfg.max_upload_mb, note))

    def _person(self) -> None:
        form = self._form()
        self._check_csrf(form)
        action = self.route.rsplit("/", 1)[1]
        try:
            done = self.kiosk.change_person(action, form.get("person", ""), form.get("name", ""))
        except EdgeMfrError as exc:
            self._people_page(pages.message(str(exc)), HTTPStatus.BAD_REQUEST)
            return
        self._people_page(pages.message(done, ok=True))

    def _clear_lockout(self) -> None:
        form = self._form()
        self._check_csrf(form)
        try:
            done = self.kiosk.clear_lockout()
        except EdgeMfrError as exc:
            self._people_page(pages.message(str(exc)), HTTPStatus.BAD_REQUEST)
            return
        self._people_page(pages.message(done, ok=True))

    def _enroll(self) -> None:
        parts = parse_multipart(self._read_body(self.kiosk.max_upload), self.headers.get("Content-Type", ""))
        fields = {p.name: p.data.decode("utf-8", "replace") for p in parts if p.filename is None}
        self._check_csrf(fields)
        files = [p for p in parts if p.filename is not None]
        try:
            name, person_id, result = self.kiosk.enroll_uploads(fields.get("name", ""), files,
                                                                "allowed" in fields, "add" in fields,
                                                                fields.get("different_from", ""))
        except EdgeMfrError as exc:
            status = getattr(exc, "status", HTTPStatus.BAD_REQUEST)
            self._people_page(pages.message(f"not enrolled: {exc}"), status)
            return
        synthetic = sum(m.synthetic for m in result.metas)
        kept = [(c.source, c.quality) for c in result.kept]
        self._send(HTTPStatus.OK, pages.enroll_result_page(name, person_id, kept, result.dropped, synthetic))

    def _capture(self) -> None:
        form = self._form()
        self._check_csrf(form)
        try:
            self.kiosk.start_capture(form.get("name", ""), "allowed" in form, "add" in form)
        except EdgeMfrError as exc:
            self._people_page(pages.message(f"not started: {exc}"), HTTPStatus.BAD_REQUEST)
            return
        self._send(HTTPStatus.OK, pages.capture_page())

    def _capture_status(self) -> None:
        job = self.kiosk.capture
        idle = {"state": "failed", "message": "no capture started", "report": []}
        self._json(job.as_dict() if job else idle)

    def _journal(self) -> None:
        query = {k: v for k, v in self.query.items() if k in ("kind", "since", "person", "limit")}
        try:
            rows, note = self.kiosk.journal_rows(query), ""
        except UploadError as exc:
            rows, note = [], pages.message(str(exc))
        self._send(HTTPStatus.OK if not note else HTTPStatus.BAD_REQUEST,
                   pages.journal_page(rows, JOURNAL_KINDS, query, note))


# ------------------------------------------------------------------------------------------- measuring


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
    import resource

    from gpiozero.pins.mock import MockFactory

    def cpu_s() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    from edge_mfr.app import Appliance

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
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
