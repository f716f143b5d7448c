"""sd_notify against real unix datagram sockets (a file in a temp dir and an abstract one)."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from edge_mfr.device.notify import Notifier


@pytest.fixture()
def path_socket(monkeypatch):
    # A short directory of our own: unix socket paths are limited to 107 bytes and tmp_path can be long.
    folder = Path(tempfile.mkdtemp(prefix="sdn-"))
    address = str(folder / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5.0)
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    yield sock
    sock.close()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture()
def abstract_socket(monkeypatch):
    if not sys.platform.startswith("linux"):
        pytest.skip("the abstract socket namespace is Linux-only")
    name = f"edge-mfr-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5.0)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    yield sock
    sock.close()


def received(sock: socket.socket, count: int) -> list[bytes]:
    return [sock.recv(4096) for _ in range(count)]


@pytest.mark.parametrize("which", ["path_socket", "abstract_socket"])
def test_each_message_is_one_exact_datagram(request, which):
    sock = request.getfixturevalue(which)
    notifier = Notifier()
    assert notifier.enabled
    assert notifier.ready()
    assert notifier.ready("recognising at 7.5 fps")
    assert notifier.status("loading models")
    assert notifier.watchdog()
    assert notifier.stopping()
    assert received(sock, 5) == [
        b"READY=1",
        b"READY=1\nSTATUS=recognising at 7.5 fps",
        b"STATUS=loading models",
        b"WATCHDOG=1",
        b"STOPPING=1",
    ]
    notifier.close()


def test_status_text_cannot_inject_other_assignments(path_socket):
    Notifier().status("camera ok\nREADY=1\nMAINPID=1")
    assert path_socket.recv(4096) == b"STATUS=camera ok READY=1 MAINPID=1"


def test_unset_notify_socket_is_a_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    assert notifier.ready("x") is False
    assert notifier.watchdog() is False
    assert notifier.status("x") is False
    assert notifier.stopping() is False


def test_missing_socket_is_logged_once_never_raised(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    notifier = Notifier()
    assert notifier.enabled
    assert notifier.watchdog() is False
    assert notifier.watchdog() is False
    assert caplog.text.count("cannot notify systemd") == 1


def test_socket_appearing_later_is_used(monkeypatch):
    folder = Path(tempfile.mkdtemp(prefix="sdn-"))
    try:
        address = str(folder / "late")
        monkeypatch.setenv("NOTIFY_SOCKET", address)
        notifier = Notifier()
        assert notifier.ready() is False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(address)
            sock.settimeout(5.0)
            assert notifier.watchdog() is True
            assert sock.recv(4096) == b"WATCHDOG=1"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "self"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(env, expected):
    env = {k: (str(os.getpid()) if v == "self" else v) for k, v in env.items()}
    assert Notifier(env).watchdog_interval() == expected


def test_not_a_unix_address_disables_notifications(caplog):
    notifier = Notifier({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert "not a unix socket address" in caplog.text
