"""The door lock on gpiozero's own MockFactory: fail-secure relay, time cap, contact, exit button, watchdog.

Times are small (0.2-0.4 s) and every wait polls with a generous timeout, so a loaded machine makes the
tests slower, never flaky. Durations are only checked from below (a relock may be late, never early).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from gpiozero import DigitalOutputDevice
from gpiozero.pins.mock import MockFactory

from edge_mfr.device.lock import (
    DoorConfig,
    DoorLock,
    LockBank,
    install_signal_handlers,
    is_raspberry_pi,
    make_pin_factory,
)
from edge_mfr.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
RELAY, CONTACT, EXIT, GREEN, RED, BUZZER = 17, 27, 22, 5, 6, 13
TIMEOUT = 10.0  # seconds any expected change may take on a loaded machine


def wait_until(predicate, timeout: float = TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


class Events:
    """Collects on_event calls (they arrive from the lock's dispatcher thread)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str, dict]] = []
        self._mutex = threading.Lock()

    def __call__(self, name: str, door: str, details: dict) -> None:
        with self._mutex:
            self.items.append((name, door, details))

    def names(self) -> list[str]:
        with self._mutex:
            return [name for name, _, _ in self.items]

    def of(self, name: str) -> list[dict]:
        with self._mutex:
            return [details for n, _, details in self.items if n == name]

    def wait(self, name: str, count: int = 1) -> list[dict]:
        assert wait_until(lambda: len(self.of(name)) >= count), f"no {name!r} event; got {self.names()}"
        return self.of(name)


@pytest.fixture()
def factory():
    pin_factory = MockFactory()
    yield pin_factory
    pin_factory.reset()


@pytest.fixture()
def events() -> Events:
    return Events()


@pytest.fixture()
def make_lock(factory, events):
    made: list[DoorLock] = []

    def make(watchdog_s: float | None = None, **overrides) -> DoorLock:
        settings = {"name": "front", "relay_pin": RELAY, "unlock_seconds": 0.2, "max_unlock_seconds": 0.4}
        settings.update(overrides)
        lock = DoorLock(DoorConfig(**settings), factory, events, watchdog_s=watchdog_s)
        made.append(lock)
        return lock

    yield make
    for lock in made:
        lock.close()


def energised(factory: MockFactory, active_high: bool = True) -> bool:
    return factory.pin(RELAY).state == active_high


# -- relay: fail-secure start, timed unlock, cap ---------------------------------------------------


@pytest.mark.parametrize("active_high", [True, False])
def test_relay_is_de_energised_right_after_construction(make_lock, factory, active_high):
    lock = make_lock(active_high=active_high)
    pin = factory.pin(RELAY)
    assert pin.function == "output"
    assert pin.state is (not active_high)  # active-low: de-energised means the line is high
    assert not lock.is_unlocked
    assert lock.state()["unlocked"] is False


@pytest.mark.parametrize("active_high", [True, False])
def test_unlock_energises_then_relocks_by_itself(make_lock, factory, events, active_high):
    lock = make_lock(active_high=active_high)
    pin = factory.pin(RELAY)
    assert lock.unlock("face:alice") is True
    assert pin.state is active_high
    assert lock.is_unlocked
    assert wait_until(lambda: pin.state is (not active_high)), "relay never relocked"
    assert not lock.is_unlocked
    # MockPin records how long the previous state lasted: the unlock was not cut short.
    assert pin.states[-1].state is (not active_high)
    assert pin.states[-1].timestamp >= 0.2 - 0.01
    assert events.wait("unlocked")[0]["reason"] == "face:alice"
    assert events.wait("locked")[0] == {"reason": "timeout"}


def test_requested_time_is_capped(make_lock, factory, events):
    lock = make_lock(unlock_seconds=0.2, max_unlock_seconds=0.3)
    lock.unlock("mqtt", seconds=3600)
    assert events.wait("unlocked")[0]["seconds"] == pytest.approx(0.3)
    assert lock.state()["remaining_s"] <= 0.3
    assert wait_until(lambda: not energised(factory)), "cap not enforced"


def test_repeated_unlocks_extend_at_most_to_the_cap_from_now(make_lock, factory, events):
    cap = 0.4
    lock = make_lock(unlock_seconds=0.3, max_unlock_seconds=cap)
    for _ in range(5):
        assert lock.unlock("again", seconds=60)
        assert 0 < lock.state()["remaining_s"] <= cap
        time.sleep(0.05)
    assert all(details["remaining_s"] <= cap for details in events.wait("unlocked", 5))
    assert [d["extended"] for d in events.of("unlocked")] == [False, True, True, True, True]
    assert wait_until(lambda: not energised(factory))
    assert events.wait("locked")[0] == {"reason": "timeout"}


def test_a_shorter_request_never_shortens_a_running_unlock(make_lock, factory, events):
    lock = make_lock(unlock_seconds=5.0, max_unlock_seconds=10.0)
    lock.unlock("long")
    lock.unlock("short", seconds=0.05)
    assert lock.state()["remaining_s"] > 1.0
    time.sleep(0.2)
    assert energised(factory)
    assert lock.lock("operator") is True
    assert not energised(factory)
    assert events.wait("locked")[0] == {"reason": "operator"}
    assert lock.lock("again") is False


@pytest.mark.parametrize("seconds", [0, -1, float("nan"), float("inf"), "5"])
def test_invalid_unlock_seconds_are_refused_and_stay_locked(make_lock, factory, seconds):
    lock = make_lock()
    with pytest.raises(ValueError, match="positive number"):
        lock.unlock("bad", seconds=seconds)
    assert not energised(factory)


# -- door contact ----------------------------------------------------------------------------------


def test_door_contact_open_and_close_events(make_lock, factory, events):
    lock = make_lock(unlock_seconds=2.0, max_unlock_seconds=5.0, contact_pin=CONTACT)
    contact = factory.pin(CONTACT)
    assert lock.state()["door_open"] is True  # pulled up, nothing driving it: reads open (fail-safe reading)
    contact.drive_low()  # reed switch closes to GND
    events.wait("door_closed")
    assert lock.state()["door_open"] is False
    lock.unlock("face:bob")
    contact.drive_high()
    assert events.wait("door_opened")[0] == {"while_unlocked": True}
    contact.drive_low()
    events.wait("door_closed", 2)
    assert "door_forced" not in events.names()
    assert lock.state()["forced"] is False


def test_contact_polarity_closed_is_high(make_lock, factory, events):
    lock = make_lock(contact_pin=CONTACT, contact_closed_is_high=True)
    contact = factory.pin(CONTACT)
    assert lock.state()["door_open"] is True  # pulled down: open
    contact.drive_high()
    events.wait("door_closed")
    assert lock.state()["door_open"] is False
    contact.drive_low()
    events.wait("door_opened")


def test_door_opened_while_locked_is_forced_and_sounds_the_buzzer(make_lock, factory, events):
    lock = make_lock(contact_pin=CONTACT, buzzer_pin=BUZZER, red_led_pin=RED)
    contact, buzzer = factory.pin(CONTACT), factory.pin(BUZZER)
    contact.drive_low()
    events.wait("door_closed")
    contact.drive_high()
    events.wait("door_forced")
    assert events.of("door_opened") == [{"while_unlocked": False}]
    assert lock.state()["forced"] is True
    assert not energised(factory)
    assert wait_until(lambda: any(s.state for s in buzzer.states)), "buzzer never sounded"
    contact.drive_low()
    events.wait("door_closed", 2)
    assert lock.state()["forced"] is False
    assert wait_until(lambda: buzzer.state is False)


def test_door_held_open_is_reported_once_per_opening(make_lock, factory, events):
    lock = make_lock(unlock_seconds=0.2, max_unlock_seconds=0.4, contact_pin=CONTACT, held_open_seconds=0.2)
    contact = factory.pin(CONTACT)
    contact.drive_low()
    events.wait("door_closed")
    lock.unlock("face:carol")
    contact.drive_high()
    held = events.wait("door_held_open")
    assert held[0]["open_s"] >= 0.2 - 0.01
    assert lock.state()["held_open"] is True
    time.sleep(0.3)
    contact.drive_low()
    events.wait("door_closed", 2)
    assert len(events.of("door_held_open")) == 1
    assert events.of("door_closed")[-1]["open_s"] >= 0.2
    assert "door_forced" not in events.names()


# -- exit button -----------------------------------------------------------------------------------


def test_exit_button_unlocks_for_the_configured_time(make_lock, factory, events):
    lock = make_lock(exit_button_pin=EXIT)
    button = factory.pin(EXIT)
    assert not energised(factory)
    button.drive_low()  # pressed: shorted to GND against the pull-up
    button.drive_high()
    events.wait("exit_button")
    assert events.wait("unlocked")[0]["reason"] == "exit_button"
    assert events.names().index("exit_button") < events.names().index("unlocked")
    assert wait_until(lambda: not energised(factory))
    assert not lock.is_unlocked


# -- watchdog --------------------------------------------------------------------------------------


def test_watchdog_trip_relocks_and_refuses_remote_unlocks_until_fed(make_lock, factory, events):
    lock = make_lock(watchdog_s=0.2, unlock_seconds=5.0, max_unlock_seconds=10.0, exit_button_pin=EXIT)
    # Not armed before the first feed: a slow start-up cannot trip it.
    lock.unlock("before-first-feed")
    time.sleep(0.4)
    assert energised(factory)
    assert "watchdog_tripped" not in events.names()
    lock.watchdog_feed()  # armed; then the "frame loop" stops feeding
    assert wait_until(lambda: not energised(factory)), "watchdog did not relock"
    assert events.wait("watchdog_tripped")[0] == {"watchdog_s": 0.2}
    assert {"reason": "watchdog"} in events.wait("locked")
    assert lock.state()["watchdog_tripped"] is True
    assert lock.unlock("face:dave") is False
    assert not energised(factory)
    # Egress still works while the recognition loop is dead.
    factory.pin(EXIT).drive_low()
    assert wait_until(lambda: energised(factory))
    lock.lock("test")
    factory.pin(EXIT).drive_high()
    lock.watchdog_feed()
    assert lock.state()["watchdog_tripped"] is False
    assert lock.unlock("face:dave") is True


def test_fed_watchdog_does_not_trip(make_lock, factory, events):
    lock = make_lock(watchdog_s=2.0, unlock_seconds=5.0, max_unlock_seconds=10.0)
    lock.watchdog_feed()
    lock.unlock("face:erin")
    for _ in range(10):
        lock.watchdog_feed()
        time.sleep(0.03)
    assert energised(factory)
    assert "watchdog_tripped" not in events.names()


# -- close, context manager, errors ----------------------------------------------------------------


def test_close_relocks_releases_pins_and_is_idempotent(make_lock, factory, events):
    lock = make_lock(active_high=False, unlock_seconds=5.0, max_unlock_seconds=10.0, contact_pin=CONTACT)
    lock.unlock("face:frank")
    assert energised(factory, active_high=False)
    lock.close()
    assert not energised(factory, active_high=False)
    assert lock.state()["closed"] is True and not lock.is_unlocked
    lock.close()
    assert events.wait("locked") == [{"reason": "close"}]
    assert lock.unlock("after-close") is False
    assert lock.lock("after-close") is False
    # The pins were released: another device can claim the relay pin now.
    DigitalOutputDevice(RELAY, pin_factory=factory).close()
    time.sleep(0.1)
    assert events.names().count("locked") == 1


def test_exception_inside_with_leaves_the_relay_de_energised(factory, events):
    config = DoorConfig("front", RELAY, unlock_seconds=5.0, max_unlock_seconds=10.0)
    with pytest.raises(RuntimeError, match="camera died"):
        with DoorLock(config, factory, events) as lock:
            lock.unlock("face:gina")
            assert energised(factory)
            raise RuntimeError("camera died")
    assert not energised(factory)
    assert lock.state()["closed"] is True


def test_failing_event_callback_never_blocks_relocking(factory):
    def broken(name, door, details):
        raise RuntimeError("mqtt down")

    config = DoorConfig("front", RELAY, unlock_seconds=0.2, max_unlock_seconds=0.4)
    with DoorLock(config, factory, broken) as lock:
        lock.unlock("face:hal")
        assert wait_until(lambda: not energised(factory))
        assert lock.unlock("face:hal") is True


def test_pin_conflict_is_a_config_error_and_leaves_nothing_claimed(make_lock, factory):
    make_lock(relay_pin=RELAY)
    with pytest.raises(ConfigError, match=r"door 'back': cannot use GPIO pin 17 as contact_pin"):
        DoorLock(DoorConfig("back", 23, contact_pin=RELAY), factory)
    DigitalOutputDevice(23, pin_factory=factory).close()  # the failed door released its relay pin


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"name": "front door"}, "door name 'front door' is invalid"),
        ({"unlock_seconds": 20.0, "max_unlock_seconds": 15.0}, "exceeds max_unlock_seconds"),
        ({"unlock_seconds": 0}, "unlock_seconds must be a positive number"),
        ({"held_open_seconds": float("nan")}, "held_open_seconds must be a positive number"),
        ({"contact_pin": RELAY}, "contact_pin and relay_pin both use pin 17"),
        ({"buzzer_pin": -3}, "buzzer_pin must be a GPIO number"),
        ({"active_high": "yes"}, "active_high must be true or false"),
    ],
)
def test_bad_door_config_is_a_clear_config_error(settings, message):
    with pytest.raises(ConfigError, match=message):
        DoorConfig(**{"name": "front", "relay_pin": RELAY, **settings})


# -- status outputs --------------------------------------------------------------------------------


def test_status_signals_drive_leds_and_buzzer(make_lock, factory):
    lock = make_lock(
        unlock_seconds=2.0, max_unlock_seconds=5.0, green_led_pin=GREEN, red_led_pin=RED, buzzer_pin=BUZZER
    )
    green, red, buzzer = factory.pin(GREEN), factory.pin(RED), factory.pin(BUZZER)
    lock.signal("denied")
    assert wait_until(lambda: sum(s.state for s in red.states) >= 3), "red LED did not blink three times"
    assert wait_until(lambda: sum(s.state for s in buzzer.states) >= 3)
    assert not any(s.state for s in green.states)
    lock.unlock("face:ivy")
    assert green.state is True  # green is steady while unlocked
    assert lock.lock("done") is True
    assert green.state is False
    with pytest.raises(ValueError, match="unknown door signal 'maybe'"):
        lock.signal("maybe")


# -- several doors ---------------------------------------------------------------------------------


def test_lock_bank_keeps_doors_independent_and_closes_all(factory, events):
    configs = [
        DoorConfig("front", RELAY, unlock_seconds=5.0, max_unlock_seconds=10.0),
        DoorConfig("back", 23, active_high=False, unlock_seconds=5.0, max_unlock_seconds=10.0),
    ]
    with LockBank(configs, factory, events) as bank:
        assert bank.names == ["front", "back"]
        assert factory.pin(23).state is True  # active-low door also starts de-energised
        bank["back"].unlock("face:jo")
        assert factory.pin(23).state is False and factory.pin(RELAY).state is False
        assert bank.state()["back"]["unlocked"] and not bank.state()["front"]["unlocked"]
        with pytest.raises(KeyError, match="no door named 'side'"):
            bank["side"]
    assert factory.pin(23).state is True
    assert ("locked", "back", {"reason": "close"}) in events.items


def test_lock_bank_refuses_shared_pins_and_duplicate_names(factory):
    with pytest.raises(ConfigError, match="pin 17 is used by door 'front' and by door 'back'"):
        LockBank([DoorConfig("front", RELAY), DoorConfig("back", 23, exit_button_pin=RELAY)], factory)
    with pytest.raises(ConfigError, match="door names must be unique: front"):
        LockBank([DoorConfig("front", RELAY), DoorConfig("front", 23)], factory)


# -- pin factory -----------------------------------------------------------------------------------


def test_is_raspberry_pi_reads_the_device_tree_model(tmp_path):
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\x00")
    assert is_raspberry_pi(model)
    model.write_bytes(b"Generic x86 board\x00")
    assert not is_raspberry_pi(model)
    assert not is_raspberry_pi(tmp_path / "missing")


def test_make_pin_factory_simulates_with_a_warning(caplog):
    assert isinstance(make_pin_factory(mock=True), MockFactory)
    assert "simulated" in caplog.text
    if not is_raspberry_pi():
        caplog.clear()
        assert isinstance(make_pin_factory(mock=None), MockFactory)
        assert "not a Raspberry Pi" in caplog.text


# -- signals ---------------------------------------------------------------------------------------


def test_signal_handler_closes_the_bank_in_process(factory):
    bank = LockBank([DoorConfig("front", RELAY, unlock_seconds=5.0, max_unlock_seconds=10.0)], factory)
    seen: list[int] = []
    previous = install_signal_handlers(bank, signals=(signal.SIGUSR1,), then=seen.append)
    try:
        bank["front"].unlock("face:kim")
        assert energised(factory)
        signal.raise_signal(signal.SIGUSR1)
        assert seen == [signal.SIGUSR1]
        assert not energised(factory)
        assert bank["front"].state()["closed"] is True
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        bank.close()


def test_install_signal_handlers_needs_the_main_thread(factory):
    errors: list[BaseException] = []

    def worker():
        try:
            install_signal_handlers(LockBank([], factory))
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(TIMEOUT)
    assert errors and "main thread" in str(errors[0])


CHILD = textwrap.dedent(
    """
    import sys, time
    from gpiozero.pins.mock import MockFactory
    from edge_mfr.device.lock import DoorConfig, LockBank, install_signal_handlers

    factory = MockFactory()
    active_high = sys.argv[2] == "high"
    bank = LockBank([DoorConfig("front", 17, active_high=active_high, unlock_seconds=60,
                                max_unlock_seconds=60)], factory)
    if sys.argv[1] == "install":
        install_signal_handlers(bank)
    relay = factory.pin(17)
    energised = lambda: relay.state == active_high
    try:
        bank["front"].unlock("test")
        print(f"before energised={energised()}", flush=True)
        while True:
            time.sleep(0.05)
    finally:
        print(f"after energised={energised()} closed={bank['front'].state()['closed']}", flush=True)
    """
)


def run_child_and_sigterm(tmp_path: Path, mode: str, polarity: str) -> tuple[str, int]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, str(script), mode, polarity],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "child never reported its relay state"
        first = proc.stdout.readline()
        assert first.strip() == "before energised=True", first + proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return rest + err, proc.returncode


@pytest.mark.parametrize("polarity", ["high", "low"])
def test_sigterm_becomes_a_clean_close_in_a_child_process(tmp_path, polarity):
    output, code = run_child_and_sigterm(tmp_path, "install", polarity)
    assert "after energised=False closed=True" in output, output
    assert code == 0, output


def test_without_the_handlers_sigterm_skips_finally(tmp_path):
    # The control: default SIGTERM kills the process before any cleanup can de-energise the relay.
    output, code = run_child_and_sigterm(tmp_path, "plain", "high")
    assert code == -signal.SIGTERM
    assert "after" not in output


BLOCKED_CHILD = textwrap.dedent(
    """
    import sys, threading, time
    import cv2
    from gpiozero.pins.mock import MockFactory
    from edge_mfr.device.lock import DoorConfig, LockBank, install_signal_handlers

    factory = MockFactory()
    bank = LockBank([DoorConfig("front", 17, unlock_seconds=60, max_unlock_seconds=60)], factory)
    install_signal_handlers(bank)
    relay = factory.pin(17)

    def report():
        while relay.state:
            time.sleep(0.01)
        print("relay off", flush=True)

    bank["front"].unlock("test")
    threading.Thread(target=report, daemon=True).start()
    print("blocking", flush=True)
    # A stalled stream: FFmpeg waits in C, retrying through signals, until the server gives up.
    cv2.VideoCapture(sys.argv[1], cv2.CAP_FFMPEG)
    print("unblocked", flush=True)
    """
)


def test_sigterm_relocks_while_the_main_thread_is_blocked_in_c(tmp_path):
    """The relock must not wait for the main thread (issue 16 item 8: 5 s behind a stalled camera read)."""
    import socket

    server = socket.create_server(("127.0.0.1", 0))
    script = tmp_path / "child.py"
    script.write_text(BLOCKED_CHILD)
    url = f"http://127.0.0.1:{server.getsockname()[1]}/stream.mjpg"
    proc = subprocess.Popen([sys.executable, str(script), url], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    conn = None
    try:
        server.settimeout(60)
        conn, _ = server.accept()  # the child is now inside FFmpeg, waiting for an answer that never comes
        assert proc.stdout.readline().strip() == "blocking"
        proc.send_signal(signal.SIGTERM)
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline().strip() if ready else "(nothing while the main thread was blocked)"
        if line != "relay off":
            proc.kill()
            pytest.fail(f"{line!r}; child stderr: {proc.communicate(timeout=30)[1][-2000:]}")
    finally:
        if conn is not None:
            conn.close()  # now FFmpeg gives up, the main thread returns and the Python handler ends the child
        server.close()
        out, err = proc.communicate(timeout=60)
    assert "unblocked" not in out and proc.returncode == 0, err


HELD_LOCK_CHILD = textwrap.dedent(
    """
    import signal
    from gpiozero.pins.mock import MockFactory
    from edge_mfr.device.lock import DoorConfig, LockBank, install_signal_handlers

    factory = MockFactory()
    bank = LockBank([DoorConfig("front", 17, unlock_seconds=60, max_unlock_seconds=60)], factory)
    seen = []
    install_signal_handlers(bank, signals=(signal.SIGUSR1,), then=seen.append)
    bank["front"].unlock("test")
    with bank["front"]._wake._cond:  # where watchdog_feed's Event.set() is when a signal lands
        signal.raise_signal(signal.SIGUSR1)  # the Python handler runs here, inside the held lock
        print("handler returned", seen, "relay", factory.pin(17).state, flush=True)
    """
)


def test_a_signal_landing_inside_a_held_lock_still_relocks_and_returns(tmp_path):
    """SIGTERM during watchdog_feed deadlocked: the handler's close() waited for a lock the main thread held."""
    script = tmp_path / "child.py"
    script.write_text(HELD_LOCK_CHILD)
    try:
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    except subprocess.TimeoutExpired:
        pytest.fail("the signal handler deadlocked")
    assert proc.returncode == 0, proc.stderr
    assert f"handler returned [{int(signal.SIGUSR1)}] relay False" in proc.stdout, proc.stdout + proc.stderr
