"""The kiosk: a small local web server with the live view, the door's status and an admin area.

Why it is shaped like this:

* **The frame loop never waits for us.** The ``on_frame`` hook only stores a reference to the newest
  report (which carries the frame) and wakes the viewers. Drawing and JPEG encoding happen in a viewer's
  server thread, at most ``stream_fps`` times a second, and one encoded frame is shared by all viewers.
  :func:`edge_mfr.bench.measure_viewer_cost` measures what a connected viewer costs the loop.
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

import ipaddress
import logging
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from edge_mfr.errors import EdgeMfrError, EnrollmentError
from edge_mfr.interfaces.kiosk.auth import AdminAuth, read_password
from edge_mfr.interfaces.kiosk.handler import MAX_VIEWERS, _Handler
from edge_mfr.interfaces.kiosk.live import LiveView, StatusBoard
from edge_mfr.interfaces.kiosk.uploads import Part, UploadError, store_upload

# Journal rows shown only when asked for: one per face judged, they drown the decisions.
JOURNAL_HIDDEN = ("mask_status",)
log = logging.getLogger(__name__)

MAX_FILES = 40
MAX_HANDLERS = 16  # connections served at once (live viewers, pages, uploads); more are closed at once
CAPTURE_FRAMES = 12  # live-camera enrollment: frames collected while the person turns their head
CAPTURE_GAP_S = 0.3  # at least this long between two collected frames
CAPTURE_TIMEOUT_S = 20.0


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
    """One thread per connection, at most MAX_HANDLERS at once: beyond that a connection is closed at once
    instead of costing a thread (and its buffers) per attacker connection."""

    daemon_threads = True
    allow_reuse_address = True
    kiosk: Kiosk

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slots = threading.BoundedSemaphore(MAX_HANDLERS)
        self.turned_away = 0

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.turned_away += 1
            log.warning("kiosk: %d connections already open; closing one from %s", MAX_HANDLERS,
                        client_address[0])
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


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

    def journal_login(self, ok: bool, client: str, reason: str) -> None:
        """Journal an admin login; failures (anyone can cause them) through the journal's rate limit."""
        journal = getattr(self.app, "journal", None)
        if journal is None:
            return
        try:
            if ok:
                journal.record("admin_login", client=client)
            else:
                journal.record_noise("login_failed", reason.split(":")[0], client=client)
        except Exception:
            log.exception("kiosk: cannot journal a login attempt")

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
        """Enroll through the CLI's code on a private pipeline; one enrollment at a time. "add to a person
        already enrolled" is the CLI's ``--same-as`` with that name (checked by :meth:`_check_name`), and
        "Different from" its ``--different-from``."""
        from edge_mfr.identity.enroll import EnrollOptions, enroll
        from edge_mfr.vision.pipeline import FacePipeline

        if not self._enroll_lock.acquire(blocking=False):
            raise EnrollmentError("another enrollment is running; try again when it has finished")
        try:
            cfg = self.app.config
            pipeline = FacePipeline(detector=cfg.models.detector, num_threads=cfg.models.threads,
                                    models_dir=self.app.models_dir, embedders=cfg.recognition.embedders)
            return enroll(self.gallery_path, name, paths, pipeline, EnrollOptions(), add_to_existing=add,
                          allowed=allowed, same_as=name if add else None, different_from=different_from)
        finally:
            self._enroll_lock.release()

    def enroll_uploads(self, name: str, files: list[Part], allowed: bool, add: bool,
                       different_from: str = "") -> tuple[str, str, Any]:
        """(name, person_id, EnrollmentResult); every file is decoded before anything is stored. The CLI's
        rule: the good files are enrolled and the bad ones reported; refused only when none is usable.
        ``different_from`` is a comma-separated list of ids or names."""
        name = self._check_name(name, add)
        files = [f for f in files if f.filename or f.data]
        if not files:
            raise UploadError("choose at least one photo or video")
        if len(files) > MAX_FILES:
            raise UploadError(f"{len(files)} files: at most {MAX_FILES} per enrollment")
        with tempfile.TemporaryDirectory(prefix="edge-mfr-upload-") as tmp:
            paths, bad = [], []
            for i, f in enumerate(files):
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
        """An operator ends the lockout: a journal event the frame loop applies within a second (as for
        `edge-mfr lockout clear` and MQTT), so the HTTP thread never touches the policy."""
        journal = getattr(self.app, "journal", None)
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
                                 person_id=query.get("person") or None, limit=limit,
                                 exclude=() if query.get("kind") else JOURNAL_HIDDEN)
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
        app.record("kiosk_error", error=f"cannot listen on {kiosk.cfg.bind}:{kiosk.cfg.port}: {exc}")
        return None


def attach_kiosk(app: Any) -> None:
    """The appliance's kiosk subscriber (see :func:`edge_mfr.app.default_interfaces`)."""
    app.kiosk = start_kiosk(app)
