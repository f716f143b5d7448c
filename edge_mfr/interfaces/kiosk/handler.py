"""The kiosk's HTTP side: routes, the MJPEG stream, forms, login cookies and CSRF checks, size limits.
Each request runs in its own thread (``ThreadingHTTPServer``) and calls :class:`~.server.Kiosk` for the work."""

from __future__ import annotations

import hmac
import json
import logging
import mmap
import time
from collections.abc import Callable
from html import escape as html_escape
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from edge_mfr.device.journal import KNOWN_KINDS
from edge_mfr.errors import EdgeMfrError
from edge_mfr.interfaces.kiosk import pages
from edge_mfr.interfaces.kiosk.auth import ADMIN_OFF, SESSION_S, LoginRefused
from edge_mfr.interfaces.kiosk.uploads import UploadError, parse_multipart, spool_body

log = logging.getLogger(__name__)

BOUNDARY = "edgemfrframe"
MAX_VIEWERS = 4  # concurrent MJPEG streams; more are refused (each one costs encoding time)
MAX_FORM_BYTES = 64 * 1024  # url-encoded forms (login, rename)
COOKIE = "edge_mfr_admin"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
# The journal page's kind filter: every kind the appliance writes (one list, kept complete by a test).
JOURNAL_KINDS = sorted(KNOWN_KINDS)
CSP = ("default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")


class _Handler(BaseHTTPRequestHandler):
    server: Any  # server._Server (not imported: the server module imports this one)
    timeout = 30  # a stalled client frees its thread
    server_version = "edge-mfr-kiosk"
    sys_version = ""

    @property
    def kiosk(self) -> Any:  # server.Kiosk
        return self.server.kiosk

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("kiosk %s: " + format, self.client_address[0], *args)

    # ---------------------------------------------------------------------------------------- replies

    def _send(self, status: int, body: bytes | str, content_type: str = "text/html; charset=utf-8",
              headers: dict[str, str] | None = None) -> None:
        if isinstance(body, str) and pages.CSRF_SLOT in body:  # the logout form of admin pages
            body = body.replace(pages.CSRF_SLOT, html_escape(getattr(self, "csrf", "") or ""))
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

    def _content_length(self) -> int:
        try:
            length = int(self.headers.get("Content-Length") or "")
        except ValueError:
            raise UploadError("the request has no valid Content-Length", HTTPStatus.LENGTH_REQUIRED) from None
        if length < 0:
            raise UploadError("the request has no valid Content-Length", HTTPStatus.LENGTH_REQUIRED)
        return length

    def _read_body(self, limit: int) -> bytes:
        """The request body, at most ``limit`` bytes; larger ones are drained (so the browser shows our
        message instead of a reset connection) up to a bound, then refused with 413."""
        length = self._content_length()
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
            if self.command == "POST":
                # Refused before reading a byte of the body: 8 parallel 50 MB POSTs without a session took
                # the daemon from 169 to 494 MiB when bodies were read first (issue 16 item 3).
                self.close_connection = True
                self._send(HTTPStatus.UNAUTHORIZED, pages.page("edge-mfr", "<div class=admin>" + pages.message(
                    "not logged in (or the session expired): log in") + "<p><a href='/admin/login'>Log in</a>"
                    "</p></div>"), headers={"Connection": "close"})
            else:
                self._redirect("/admin/login")
            return False
        self.csrf = csrf
        return True

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
        client = self.client_address[0]
        try:
            token = self.kiosk.auth.login(form.get("password", ""), client)
        except LoginRefused as exc:
            self.kiosk.journal_login(False, client, str(exc))
            headers = {"Retry-After": str(int(exc.retry_after) + 1)} if exc.retry_after else None
            self._send(exc.status, pages.login_page(pages.message(str(exc))), headers=headers)
            return
        self.kiosk.journal_login(True, client, "ok")
        cookie = f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={int(SESSION_S)}"
        self._redirect("/admin", {"Set-Cookie": cookie})

    def _logout(self) -> None:
        self._check_csrf(self._form())  # a forged cross-site logout is refused like any other admin form
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
            self._people_page(pages.message(str(exc)), getattr(exc, "status", HTTPStatus.BAD_REQUEST))
            return
        self._people_page(pages.message(done, ok=True))

    def _enroll(self) -> None:
        """The upload is spooled to a temp file (1 MiB at a time) and parsed from an mmap of it: an upload
        of max_upload_mb costs disk, not memory."""
        length = self._content_length()
        if length > self.kiosk.max_upload:
            self._read_body(self.kiosk.max_upload)  # drains or closes, then raises the 413
        with spool_body(self.rfile.read, length, self.kiosk.max_upload) as spool:
            if length == 0:
                raise UploadError("the upload is empty")
            body = mmap.mmap(spool.fileno(), length, access=mmap.ACCESS_READ)
            try:
                parts = parse_multipart(body, self.headers.get("Content-Type", ""), keep_views=True)
                self._enroll_parts(parts)
            finally:
                parts = []
                try:
                    body.close()
                except BufferError:  # a view is still referenced somewhere: the mapping goes with it
                    log.debug("kiosk: upload mapping closed by the garbage collector")

    def _enroll_parts(self, parts: list[Any]) -> None:
        fields = {p.name: bytes(p.data).decode("utf-8", "replace") for p in parts if p.filename is None}
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
