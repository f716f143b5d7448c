"""Door lock over gpiozero: relay, door contact, exit button, status LEDs and buzzer; fail-secure.

Why it is shaped like this:

* **Fail-secure.** "Locked" means the relay is de-energised. The relay is created de-energised, and every
  way out (``close()``, leaving a ``with`` block by exception, SIGTERM/SIGINT through
  :func:`install_signal_handlers`, a watchdog trip, an internal error) de-energises it first and does the
  bookkeeping afterwards.
* **The time cap does not trust callers.** Each door owns a supervisor thread that relocks at the deadline
  on its own; an unlock can never set a deadline later than ``max_unlock_seconds`` from now, and a second
  request only extends up to that cap.
* **Watchdog.** When ``watchdog_s`` is set, the frame loop must call :meth:`DoorLock.watchdog_feed`; if it
  stops for ``watchdog_s`` the supervisor relocks and refuses remote unlocks until fed again. The first feed
  arms it, so slow model loading at start-up cannot trip it. The exit button keeps working (egress never
  depends on the recognition loop).
* **Events leave through a queue.** ``on_event(name, door, details)`` is called from one dispatcher thread
  per door, in order, never while an internal lock is held: a slow or failing callback (journal, MQTT) can
  neither delay a relock nor deadlock the lock.

Wiring notes: the door contact is read with the internal pull towards the "open" level
(``contact_closed_is_high=False``: reed switch to GND, pull-up; a cut wire reads as "open", which raises an
alarm instead of hiding one). The exit button is a normally-open push button to GND (pull-up). After the
process ends the GPIO line is released and the relay input follows the board's default pull: prefer
active-high relay boards, or give an active-low board an external pull-up, so a dead process stays locked.

Why one file: the fail-secure state machine (relay, contact, button, supervisor thread, watchdog,
event queue) is one class, DoorLock, whose invariants are only checkable when read together; splitting it
would spread the relock paths across files.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import re
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from edge_mfr.errors import ConfigError

log = logging.getLogger(__name__)

#: Every event name ``on_event`` can receive.
EVENTS = (
    "unlocked",  # details: reason, seconds (granted now), remaining_s, extended
    "locked",  # details: reason ("timeout", "watchdog", "close", "error" or the caller's reason)
    "door_opened",  # details: while_unlocked
    "door_closed",  # details: open_s
    "door_forced",  # opened while locked
    "door_held_open",  # details: open_s (once per opening)
    "exit_button",  # request-to-exit pressed (an "unlocked" event follows)
    "watchdog_tripped",  # details: watchdog_s (the frame loop stopped feeding)
)
#: Patterns :meth:`DoorLock.signal` can show on the door's LEDs and buzzer.
SIGNALS = ("granted", "denied", "unknown")

OnEvent = Callable[[str, str, dict[str, Any]], None]
Pin = int | str

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
_MAX_WAIT_S = 1.0  # the supervisor re-checks at least this often even if nothing woke it
_CLOSE_JOIN_S = 2.0


@dataclass(frozen=True)
class DoorConfig:
    """One door's wiring and timings. Pins are BCM numbers or gpiozero pin names ("GPIO17", "BOARD11")."""

    name: str
    relay_pin: Pin
    active_high: bool = True
    unlock_seconds: float = 5.0
    max_unlock_seconds: float = 15.0
    contact_pin: Pin | None = None
    contact_closed_is_high: bool = False
    held_open_seconds: float = 30.0
    exit_button_pin: Pin | None = None
    green_led_pin: Pin | None = None
    red_led_pin: Pin | None = None
    buzzer_pin: Pin | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ConfigError(
                f"door name {self.name!r} is invalid: use 1-64 letters, digits, '_' or '-' "
                "(it becomes part of MQTT topics)"
            )
        for flag in ("active_high", "contact_closed_is_high"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"door {self.name!r}: {flag} must be true or false")
        for key in ("unlock_seconds", "max_unlock_seconds", "held_open_seconds"):
            value = getattr(self, key)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ConfigError(
                    f"door {self.name!r}: {key} must be a positive number of seconds, got {value!r}"
                )
        if self.unlock_seconds > self.max_unlock_seconds:
            raise ConfigError(
                f"door {self.name!r}: unlock_seconds ({self.unlock_seconds}) exceeds "
                f"max_unlock_seconds ({self.max_unlock_seconds})"
            )
        seen: dict[str, str] = {}
        for role, pin in self.pins().items():
            valid_int = isinstance(pin, int) and not isinstance(pin, bool) and pin >= 0
            if not (valid_int or (isinstance(pin, str) and pin.strip())):
                raise ConfigError(
                    f"door {self.name!r}: {role} must be a GPIO number or pin name, got {pin!r}"
                )
            key = str(pin).strip().upper()
            if key in seen:
                raise ConfigError(f"door {self.name!r}: {role} and {seen[key]} both use pin {pin!r}")
            seen[key] = role

    def pins(self) -> dict[str, Pin]:
        """The pins this door uses, by role (``relay_pin``, ``contact_pin``, ...), unset ones left out."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name.endswith("_pin") and getattr(self, f.name) is not None
        }


def is_raspberry_pi(model_file: Path = _DEVICE_TREE_MODEL) -> bool:
    """True when the device tree names a Raspberry Pi (the file is absent on PCs and in CI)."""
    try:
        return "Raspberry Pi" in model_file.read_text(errors="replace")
    except OSError:
        return False


def make_pin_factory(mock: bool | None = None) -> Any:
    """The gpiozero pin factory to inject: real GPIO on a Pi, ``MockFactory`` elsewhere.

    ``mock=True`` always simulates; ``mock=False`` requires real GPIO (clear error otherwise); ``None``
    simulates off a Pi and uses gpiozero's default factory on one. On a Pi a failing factory is an error,
    not a silent fallback: a simulated relay on a real door would never open it and nobody would know why.
    """
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    if mock is None and not is_raspberry_pi():
        log.warning("not a Raspberry Pi (%s does not name one): GPIO is simulated", _DEVICE_TREE_MODEL)
        return MockFactory()
    if mock:
        log.warning("GPIO is simulated (gpiozero MockFactory): no relay will switch")
        return MockFactory()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # gpiozero warns for each backend it falls back from
            Device.ensure_pin_factory()
    except Exception as exc:  # gpiozero raises BadPinFactory, ImportError, OSError...
        raise ConfigError(
            f"no usable GPIO pin factory ({exc}); install python3-lgpio, "
            "or set the GPIO mock option to simulate"
        ) from exc
    return Device.pin_factory


class DoorLock:
    """One door: relay, optional contact, exit button, LEDs and buzzer, all created on ``pin_factory``."""

    def __init__(
        self,
        config: DoorConfig,
        pin_factory: Any,
        on_event: OnEvent | None = None,
        *,
        watchdog_s: float | None = None,
    ) -> None:
        from gpiozero import LED, Button, Buzzer, DigitalInputDevice, OutputDevice

        if watchdog_s is not None and (not math.isfinite(watchdog_s) or watchdog_s <= 0):
            raise ConfigError(f"door {config.name!r}: watchdog_s must be a positive number of seconds")
        self.config = config
        self.name = config.name
        self._on_event = on_event
        self._watchdog_s = watchdog_s
        self._mutex = (
            threading.RLock()
        )  # re-entrant: a signal handler may close() mid-call on the main thread
        self._wake = threading.Event()
        self._events: queue.SimpleQueue[tuple[str, dict[str, Any]] | None] = queue.SimpleQueue()
        self._closed = False
        self._unlocked_until: float | None = None
        self._watchdog_deadline: float | None = None
        self._watchdog_tripped = False
        self._door_open: bool | None = None
        self._opened_at: float | None = None
        self._held_reported = False
        self._forced = False
        self._devices: list[Any] = []  # closed in reverse order: inputs first, relay last

        def make(role: str, factory: Callable[[], Any]) -> Any:
            try:
                device = factory()
            except Exception as exc:
                self._close_devices()
                raise ConfigError(
                    f"door {self.name!r}: cannot use GPIO pin {getattr(config, role)!r} as {role}: {exc}"
                ) from exc
            self._devices.append(device)
            return device

        # The relay comes first and is driven to its inactive (locked) level as the pin becomes an output.
        self._relay = make(
            "relay_pin",
            lambda: OutputDevice(
                config.relay_pin, active_high=config.active_high, initial_value=False, pin_factory=pin_factory
            ),
        )
        self._green = self._red = self._buzzer = None
        if config.green_led_pin is not None:
            self._green = make("green_led_pin", lambda: LED(config.green_led_pin, pin_factory=pin_factory))
        if config.red_led_pin is not None:
            self._red = make("red_led_pin", lambda: LED(config.red_led_pin, pin_factory=pin_factory))
        if config.buzzer_pin is not None:
            self._buzzer = make("buzzer_pin", lambda: Buzzer(config.buzzer_pin, pin_factory=pin_factory))
        self._contact = None
        if config.contact_pin is not None:
            # Pull towards "open": is_active is then "door closed" for both polarities.
            self._contact = make(
                "contact_pin",
                lambda: DigitalInputDevice(
                    config.contact_pin,
                    pull_up=not config.contact_closed_is_high,
                    bounce_time=0.05,
                    pin_factory=pin_factory,
                ),
            )
            self._door_open = not self._contact.is_active
            self._opened_at = time.monotonic() if self._door_open else None
        self._exit_button = None
        if config.exit_button_pin is not None:
            self._exit_button = make(
                "exit_button_pin",
                lambda: Button(
                    config.exit_button_pin, pull_up=True, bounce_time=0.05, pin_factory=pin_factory
                ),
            )

        self._dispatcher = threading.Thread(
            target=self._dispatch_loop, name=f"lock-events-{self.name}", daemon=True
        )
        self._supervisor = threading.Thread(
            target=self._supervise, name=f"lock-timer-{self.name}", daemon=True
        )
        self._dispatcher.start()
        self._supervisor.start()
        if self._contact is not None:
            self._contact.when_activated = lambda: self._on_contact(closed=True)
            self._contact.when_deactivated = lambda: self._on_contact(closed=False)
        if self._exit_button is not None:
            self._exit_button.when_pressed = self._on_exit_button

    # -- public API ------------------------------------------------------------------------------------------

    def unlock(self, reason: str, seconds: float | None = None) -> bool:
        """Energise the relay for ``seconds`` (default ``unlock_seconds``), never past the cap from now.

        Returns False, and leaves the door locked, when the lock is closed or the watchdog has tripped.
        """
        return self._unlock(reason, seconds, egress=False)

    def lock(self, reason: str) -> bool:
        """De-energise the relay now; True when it was unlocked."""
        with self._mutex:
            if self._closed:
                return False
            changed = self._relock(reason)
        return changed

    @property
    def is_unlocked(self) -> bool:
        """Whether the relay is energised right now (read back from the output device)."""
        with self._mutex:
            return not self._closed and bool(self._relay.value)

    def state(self) -> dict[str, Any]:
        """A JSON-ready snapshot for the kiosk, MQTT state topic and ``doctor``."""
        with self._mutex:
            now = time.monotonic()
            unlocked = not self._closed and bool(self._relay.value)
            return {
                "door": self.name,
                "unlocked": unlocked,
                "remaining_s": round(max(0.0, self._unlocked_until - now), 3)
                if self._unlocked_until
                else 0.0,
                "door_open": self._door_open,
                "open_s": round(now - self._opened_at, 3) if self._opened_at is not None else None,
                "forced": self._forced,
                "held_open": self._held_reported,
                "watchdog_tripped": self._watchdog_tripped,
                "closed": self._closed,
            }

    def signal(self, kind: str) -> None:
        """Show a decision to the person at the door on whichever LEDs/buzzer are wired (non-blocking)."""
        if kind not in SIGNALS:
            raise ValueError(f"unknown door signal {kind!r}; expected one of {', '.join(SIGNALS)}")
        with self._mutex:
            if self._closed:
                return
            unlocked = bool(self._relay.value)
            if kind == "granted":
                if self._green is not None and not unlocked:
                    self._green.blink(on_time=1.0, off_time=0.1, n=1)
                if self._buzzer is not None:
                    self._buzzer.beep(on_time=0.15, off_time=0.1, n=1)
            elif kind == "denied":
                if self._red is not None:
                    self._red.blink(on_time=0.2, off_time=0.2, n=3)
                if self._buzzer is not None:
                    self._buzzer.beep(on_time=0.1, off_time=0.1, n=3)
            else:  # unknown face: one long red flash and beep
                if self._red is not None:
                    self._red.blink(on_time=1.0, off_time=0.1, n=1)
                if self._buzzer is not None:
                    self._buzzer.beep(on_time=0.5, off_time=0.1, n=1)

    def watchdog_feed(self) -> None:
        """Called once per frame-loop iteration; arms the watchdog on first use, clears a trip."""
        if self._watchdog_s is None:
            return
        with self._mutex:
            if self._closed:
                return
            self._watchdog_deadline = time.monotonic() + self._watchdog_s
            if self._watchdog_tripped:
                self._watchdog_tripped = False
                log.warning("door %s: watchdog fed again, remote unlocks allowed", self.name)
        self._wake.set()

    def close(self) -> None:
        """Relock and release every pin; idempotent and safe from a signal handler or an event callback."""
        got = self._mutex.acquire(timeout=_CLOSE_JOIN_S)
        try:
            if self._closed:
                return
            self._relay_off()  # before anything else can fail
            was_unlocked = self._unlocked_until is not None
            self._unlocked_until = None
            self._closed = True
            if was_unlocked:
                self._emit("locked", reason="close")
        finally:
            if got:
                self._mutex.release()
        self._wake.set()
        self._join(self._supervisor)
        self._close_devices()
        self._events.put(None)
        self._join(self._dispatcher)

    def __enter__(self) -> DoorLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals (callers hold self._mutex where noted) ----------------------------------------------------

    def _unlock(self, reason: str, seconds: float | None, *, egress: bool) -> bool:
        cap = self.config.max_unlock_seconds
        if seconds is None:
            seconds = self.config.unlock_seconds
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not math.isfinite(seconds)
            or seconds <= 0
        ):
            raise ValueError(f"door {self.name!r}: unlock seconds must be a positive number, got {seconds!r}")
        with self._mutex:
            if self._closed:
                log.warning("door %s: unlock (%s) refused, the lock is closed", self.name, reason)
                return False
            if self._watchdog_tripped and not egress:
                log.warning("door %s: unlock (%s) refused, the watchdog has tripped", self.name, reason)
                return False
            now = time.monotonic()
            granted = min(float(seconds), cap)
            extended = self._unlocked_until is not None
            until = now + granted
            if extended and self._unlocked_until > until:
                until = self._unlocked_until  # a shorter request never shortens a running unlock
            self._unlocked_until = min(until, now + cap)
            self._relay.on()
            if self._green is not None:
                self._green.on()
            self._emit(
                "unlocked",
                reason=reason,
                seconds=round(granted, 3),
                remaining_s=round(self._unlocked_until - now, 3),
                extended=extended,
            )
        self._wake.set()
        return True

    def _relock(self, reason: str) -> bool:  # holds mutex
        was_unlocked = self._unlocked_until is not None or bool(self._relay.value)
        self._relay_off()
        self._unlocked_until = None
        if self._green is not None and not self._closed:
            self._green.off()
        if was_unlocked:
            self._emit("locked", reason=reason)
        return was_unlocked

    def _relay_off(self) -> None:
        try:
            self._relay.off()
        except Exception:  # a closed device: nothing left to switch
            log.debug("door %s: relay already released", self.name, exc_info=True)

    def _on_contact(self, *, closed: bool) -> None:
        with self._mutex:
            if self._closed or self._door_open is (not closed):
                return
            now = time.monotonic()
            if not closed:
                unlocked = self._unlocked_until is not None
                self._door_open, self._opened_at, self._held_reported = True, now, False
                self._emit("door_opened", while_unlocked=unlocked)
                if not unlocked:
                    self._forced = True
                    log.warning("door %s: forced open", self.name)
                    self._emit("door_forced")
                    self._alarm(True)
            else:
                open_s = now - self._opened_at if self._opened_at is not None else None
                self._door_open, self._opened_at = False, None
                if self._forced or self._held_reported:
                    self._alarm(False)
                self._forced = self._held_reported = False
                self._emit("door_closed", open_s=round(open_s, 3) if open_s is not None else None)
        self._wake.set()

    def _on_exit_button(self) -> None:
        with self._mutex:
            if self._closed:
                return
            self._emit("exit_button")
        self._unlock("exit_button", None, egress=True)

    def _alarm(self, on: bool) -> None:  # holds mutex
        if self._buzzer is not None:
            if on:
                self._buzzer.beep(on_time=0.2, off_time=0.8)
            else:
                self._buzzer.off()
        if self._red is not None:
            if on:
                self._red.blink(on_time=0.2, off_time=0.2)
            else:
                self._red.off()

    def _tick(self) -> float:
        """Enforce every deadline that has passed; return how long to sleep until the next one."""
        with self._mutex:
            if self._closed:
                return 0.0
            now = time.monotonic()
            if self._unlocked_until is not None and now >= self._unlocked_until:
                self._relock("timeout")
            if self._watchdog_deadline is not None and now >= self._watchdog_deadline:
                self._watchdog_deadline = None
                self._watchdog_tripped = True
                log.error(
                    "door %s: watchdog tripped (no feed for %.1f s): locked", self.name, self._watchdog_s
                )
                self._relock("watchdog")
                self._emit("watchdog_tripped", watchdog_s=self._watchdog_s)
            held_at = None
            if self._door_open and self._opened_at is not None and not self._held_reported:
                held_at = self._opened_at + self.config.held_open_seconds
                if now >= held_at:
                    self._held_reported = True
                    held_at = None
                    log.warning("door %s: held open", self.name)
                    self._emit("door_held_open", open_s=round(now - self._opened_at, 3))
                    if not self._forced:
                        self._alarm(True)
            deadlines = [t for t in (self._unlocked_until, self._watchdog_deadline, held_at) if t is not None]
            return min([_MAX_WAIT_S, *(t - now for t in deadlines)])

    def _supervise(self) -> None:
        while not self._closed:
            self._wake.clear()
            try:
                timeout = self._tick()
            except Exception:
                log.exception("door %s: supervisor error, relocking", self.name)
                with self._mutex:
                    self._relay_off()
                    if self._unlocked_until is not None:
                        self._unlocked_until = None
                        self._emit("locked", reason="error")
                timeout = 0.1
            self._wake.wait(max(0.0, timeout))

    def _emit(self, name: str, **details: Any) -> None:
        self._events.put((name, details))

    def _dispatch_loop(self) -> None:
        while (item := self._events.get()) is not None:
            name, details = item
            if self._on_event is None:
                continue
            try:
                self._on_event(name, self.name, details)
            except Exception:
                log.exception("door %s: on_event(%s) failed", self.name, name)

    def _close_devices(self) -> None:
        for device in reversed(self._devices):
            try:
                device.close()
            except Exception:
                log.warning("door %s: closing %r failed", self.name, device, exc_info=True)
        self._devices.clear()

    @staticmethod
    def _join(thread: threading.Thread) -> None:
        if thread is not threading.current_thread() and thread.is_alive():
            thread.join(_CLOSE_JOIN_S)


class LockBank:
    """Several doors by name, opened together and always closed together."""

    def __init__(
        self,
        configs: Iterable[DoorConfig],
        pin_factory: Any,
        on_event: OnEvent | None = None,
        *,
        watchdog_s: float | None = None,
    ) -> None:
        configs = list(configs)
        names = [c.name for c in configs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"door names must be unique: {', '.join(dupes)} used more than once")
        owner: dict[str, str] = {}
        for config in configs:
            for role, pin in config.pins().items():
                key = str(pin).strip().upper()
                if key in owner:
                    raise ConfigError(
                        f"pin {pin!r} is used by door {owner[key]!r} and by door {config.name!r} ({role})"
                    )
                owner[key] = config.name
        self._doors: dict[str, DoorLock] = {}
        try:
            for config in configs:
                self._doors[config.name] = DoorLock(config, pin_factory, on_event, watchdog_s=watchdog_s)
        except BaseException:
            self.close()
            raise

    def __getitem__(self, name: str) -> DoorLock:
        try:
            return self._doors[name]
        except KeyError:
            raise KeyError(f"no door named {name!r}; doors: {', '.join(self._doors) or 'none'}") from None

    def __iter__(self):
        return iter(self._doors.values())

    def __len__(self) -> int:
        return len(self._doors)

    @property
    def names(self) -> list[str]:
        return list(self._doors)

    def state(self) -> dict[str, dict[str, Any]]:
        return {name: door.state() for name, door in self._doors.items()}

    def watchdog_feed(self) -> None:
        for door in self._doors.values():
            door.watchdog_feed()

    def lock_all(self, reason: str) -> None:
        for door in self._doors.values():
            door.lock(reason)

    def close(self) -> None:
        """Relock every door first (fast, no joins), then release them one by one."""
        for door in self._doors.values():
            door._relay_off()
        for door in self._doors.values():
            try:
                door.close()
            except Exception:
                log.exception("door %s: close failed", door.name)

    def __enter__(self) -> LockBank:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Closable(Protocol):
    def close(self) -> None: ...


def install_signal_handlers(
    lock_bank: _Closable,
    *,
    signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT),
    then: Callable[[int], None] | None = None,
) -> Mapping[int, Any]:
    """Make SIGTERM/SIGINT relock and release the doors at once, then stop the app.

    The handler closes ``lock_bank`` (a :class:`LockBank` or :class:`DoorLock`) first, then calls
    ``then(signum)`` if given, else raises ``SystemExit`` so ``finally`` blocks run: exit status 0 for
    SIGTERM (a requested stop is a success for systemd), 130 for SIGINT. Must run on the main thread.
    Returns the previous handlers so a caller can restore them.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("install_signal_handlers must be called from the main thread")

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("%s received: locking doors", signal.Signals(signum).name)
        with contextlib.suppress(Exception):
            lock_bank.close()
        if then is not None:
            then(signum)
        else:
            raise SystemExit(0 if signum == signal.SIGTERM else 128 + signum)

    return {signum: signal.signal(signum, handler) for signum in signals}
