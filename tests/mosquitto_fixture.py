"""A real mosquitto on a free loopback port for the MQTT tests, with the ACL of deploy/mosquitto/acl.

tests/conftest.py imports the ``broker`` and ``certs`` fixtures, so every test can ask for them.
They skip with a reason when the ``mosquitto`` binary (Debian package ``mosquitto``) or, for TLS,
``openssl`` is missing. Each broker writes its config, password file, ACL and log under the test's tmp
folder and is stopped at the end; :meth:`Mosquitto.stop` / :meth:`Mosquitto.start` restart it on the same
ports (for outage tests).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
ACL_TEMPLATE = REPO / "deploy" / "mosquitto" / "acl"
DEVICE_ID = "testdoor"
TEMPLATE_DEVICE = "front-door-pi"  # the device id written in deploy/mosquitto/acl
USERS = {  # user name -> password
    DEVICE_ID: "device-secret-pw",
    f"cmd-{DEVICE_ID}": "operator-secret-pw",
    "homeassistant": "ha-secret-pw",
    "monitor": "monitor-secret-pw",
    "fleet-admin": "fleet-admin-pw",
    f"{DEVICE_ID}-b": "device-b-pw",
    f"{DEVICE_ID}-c": "device-c-pw",
}
START_TIMEOUT = 10.0


def _tool(name: str) -> str | None:
    return shutil.which(name) or next((str(p) for d in ("/usr/sbin", "/usr/local/sbin")
                                       if (p := Path(d) / name).is_file()), None)


MOSQUITTO = _tool("mosquitto")
MOSQUITTO_PASSWD = _tool("mosquitto_passwd")
OPENSSL = _tool("openssl")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, step: float = 0.02) -> Any:
    """Poll ``predicate`` until it is truthy or ``timeout`` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


# ------------------------------------------------------------------------------------------ certificates


@dataclass(frozen=True)
class Certs:
    ca: Path  # the CA that signed the broker certificate
    broker_cert: Path  # CN=localhost, SAN DNS:localhost, IP:127.0.0.1
    broker_key: Path
    other_ca: Path  # an unrelated CA: verification against it must fail


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certs(folder: Path) -> Certs:
    """A throw-away CA, a broker certificate it signs, and a second unrelated CA (EC P-256: fast)."""
    folder.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    for name in ("ca", "other-ca"):
        _openssl("req", "-x509", *ec, "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
                 "-subj", f"/CN=edge-mfr test {name}", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)
    _openssl("req", *ec, "-keyout", "broker.key", "-out", "broker.csr", "-subj", "/CN=localhost", cwd=folder)
    (folder / "ext.cnf").write_text("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                                    "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "broker.crt", "-days", "2", "-extfile", "ext.cnf", cwd=folder)
    return Certs(folder / "ca.crt", folder / "broker.crt", folder / "broker.key", folder / "other-ca.crt")


# ------------------------------------------------------------------------------------------------ broker


class Mosquitto:
    """One mosquitto process: plain listener ``port``, TLS listener ``tls_port`` when ``certs`` is given."""

    def __init__(self, workdir: Path, certs: Certs | None = None):
        if MOSQUITTO is None or MOSQUITTO_PASSWD is None:
            raise RuntimeError("mosquitto is not installed")
        self.workdir = workdir
        self.certs = certs
        self.host = "127.0.0.1"
        self.port = free_port()
        self.tls_port = free_port() if certs is not None else None
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self._proc: subprocess.Popen | None = None
        self._log_fh: Any = None
        workdir.mkdir(parents=True, exist_ok=True)
        self._write_config()

    def _write_config(self) -> None:
        passwd = self.workdir / "passwd"
        passwd.write_text("")
        for user, password in USERS.items():
            subprocess.run([MOSQUITTO_PASSWD, "-b", str(passwd), user, password], check=True,
                           capture_output=True, timeout=30)
        acl = self.workdir / "acl"
        acl.write_text(ACL_TEMPLATE.read_text().replace(TEMPLATE_DEVICE, DEVICE_ID))
        lines = ["per_listener_settings false", "allow_anonymous false", f"password_file {passwd}",
                 f"acl_file {acl}", "persistence false", "max_packet_size 3000000",
                 "log_dest stderr", "log_type error", "log_type warning", "log_type notice",
                 "log_type information", "connection_messages true", f"listener {self.port} {self.host}"]
        if os.geteuid() == 0:
            lines.insert(0, "user root")  # as root, mosquitto would switch to user 'mosquitto' otherwise
        if self.certs is not None:
            lines += [f"listener {self.tls_port} {self.host}", f"cafile {self.certs.ca}",
                      f"certfile {self.certs.broker_cert}", f"keyfile {self.certs.broker_key}"]
        self.conf.write_text("\n".join(lines) + "\n")

    def _accepting(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def start(self) -> None:
        if self.running:
            return
        self._log_fh = open(self.log, "ab")  # noqa: SIM115 (closed in stop)
        self._proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=self._log_fh,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if not wait_until(lambda: self._accepting() or self._proc.poll() is not None, START_TIMEOUT) \
                or self._proc.poll() is not None:
            self.stop()
            raise RuntimeError(f"mosquitto did not start; log:\n{self.log.read_text()[-2000:]}")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(10)
            self._proc = None
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    if OPENSSL is None:
        pytest.skip("openssl not installed: cannot make the test CA and broker certificate")
    return make_certs(tmp_path_factory.mktemp("mqtt-certs"))


@pytest.fixture()
def broker(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Mosquitto]:
    """A running mosquitto (plain + TLS listener) for one test; stopped afterwards."""
    if MOSQUITTO is None or MOSQUITTO_PASSWD is None:
        pytest.skip("mosquitto not installed (apt-get install mosquitto); the MQTT tests need a real broker")
    tls = request.getfixturevalue("certs") if OPENSSL is not None else None
    b = Mosquitto(tmp_path / "mosquitto", tls)
    b.start()
    try:
        yield b
    finally:
        b.stop()


# ---------------------------------------------------------------------------------------------- clients


class Recorder:
    """A paho subscriber (or publisher) that keeps every message it receives, thread-safely."""

    def __init__(self, b: Mosquitto, user: str, topics: list[str] | tuple[str, ...] = (), client_id: str = ""):
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[str, bytes, bool, float]] = []  # topic, payload, retain, monotonic time
        self._mutex = threading.Lock()
        self._subscribed = threading.Event()
        self._topics = list(topics)
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"test-{user}-{id(self)}")
        self.client.username_pw_set(user, USERS[user])
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect(b.host, b.port, keepalive=10)
        self.client.loop_start()
        if self._topics and not self._subscribed.wait(10):
            raise RuntimeError(f"{user}: subscription to {self._topics} not confirmed")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if self._topics:
            client.subscribe([(t, 1) for t in self._topics])

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._mutex:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain), time.monotonic()))

    def on(self, topic: str) -> list[bytes]:
        with self._mutex:
            return [p for t, p, _, _ in self.messages if t == topic]

    def last(self, topic: str) -> bytes | None:
        found = self.on(topic)
        return found[-1] if found else None

    def publish(self, topic: str, payload: Any, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
