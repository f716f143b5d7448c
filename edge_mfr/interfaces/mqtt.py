"""MQTT for the appliance: availability, events from the durable outbox, retained state, Home Assistant
discovery and (through :mod:`edge_mfr.interfaces.mqtt_commands`) authorised remote commands.

Why it is shaped like this:

* **Events are never lost to a broker outage or a restart.** Events reach MQTT only through the journal's
  outbox (``journal.record(..., publish=client.messages_for)`` writes the event and its message in one
  transaction). One publisher thread sends the outbox in ``seq`` order and deletes a message only when the
  broker's PUBACK for it arrives (paho's ``on_publish`` with the message id). After a reconnect it first
  lets paho re-send what was in flight, so order is kept; after a restart everything still queued is sent
  again (a subscriber may see an event twice, always with the same ``event_id``). The journal bounds the
  outbox by size and age and counts what it dropped.
* **State is retained and latest-wins**, so it is not queued: it is cached and re-published on connect.
* **Availability** is ``<prefix>/availability``: ``online`` (retained) on connect, ``offline`` as the Last
  Will (the broker publishes it when the device dies or its link times out) and on a clean stop.
* **Commands never run on paho's network thread**: messages are queued to one worker that calls
  :meth:`CommandHandler.handle` (which never raises) and answers on ``<prefix>/command/result``; a slow
  enrollment cannot stall keep-alives, and no message can crash the client.
* **Connection problems are named.** paho retries silently with back-off; the last failure (TLS
  verification, refused connection, bad credentials) is kept as a clear :class:`MqttError` in
  ``last_error``, logged once per change, and raised by :meth:`MqttClient.wait_connected`.

Topics (``<prefix>`` defaults to ``edge-mfr/<device id>``)::

    <prefix>/availability                     online | offline                         retained
    <prefix>/event/<kind>                     JSON: schema, event_id, ts, kind, ...    QoS 1
    <prefix>/snapshot/<kind>                  JPEG (only with mqtt.snapshots = true)   QoS 1
    <prefix>/state/lock/<door>                LOCKED | UNLOCKED                        retained
    <prefix>/state/door/<door>                OPEN | CLOSED (door contact)             retained
    <prefix>/state/last_person                JSON: person_id, name, masked, ts, door  retained
    <prefix>/state/people_count|fps|models    number | number | JSON                   retained
    <prefix>/command/<name>                   in: unlock, lock, reload, enroll, remove_person
    <prefix>/command/result                   out: JSON answer to each command
    <prefix>/ha/lock/<door>/set               in: LOCK | UNLOCK from Home Assistant
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from edge_mfr import __version__
from edge_mfr.errors import EdgeMfrError
from edge_mfr.interfaces.mqtt_topics import (
    OFFLINE,
    ONLINE,
    SCHEMA,
    DoorInfo,
    MqttSettings,
    Topics,
    discovery_configs,
    encode_snapshot,
    event_payload,
)

log = logging.getLogger(__name__)
# The settings, topics and payloads live in mqtt_topics; import them from here or there.
__all__ = ["COMMAND_QUEUE", "DoorInfo", "EVENT_KINDS", "MqttAuthError", "MqttClient", "MqttError", "MqttSettings",
           "MqttTlsError", "OFFLINE", "ONLINE", "RESEND_WAIT_S", "SCHEMA", "Topics", "WINDOW", "discovery_configs",
           "encode_snapshot", "event_payload"]

#: Journal event kinds published on <prefix>/event/<kind> (others stay in the journal only).
EVENT_KINDS = frozenset({"recognized", "unknown_face", "access_granted", "access_denied", "door_opened",
                         "door_forced", "door_held_open", "lockout", "mask_status", "liveness_refused"})
WINDOW = 20  # outbox messages in flight at once (paho's max_inflight_messages is set to the same)
RESEND_WAIT_S = 10.0  # after a reconnect, how long paho may take to re-send what was in flight
COMMAND_QUEUE = 32


class MqttError(EdgeMfrError, ConnectionError):
    """The broker cannot be reached or refused us; the message says why and what to check."""


class MqttTlsError(MqttError):
    """TLS set-up or verification failed (wrong CA, certificate name, unreadable key...)."""


class MqttAuthError(MqttError):
    """The broker refused the user name, password or client certificate."""


# ---------------------------------------------------------------------------------------------- settings



# ------------------------------------------------------------------------------------------------ client


def _describe_failure(exc: BaseException, s: MqttSettings) -> MqttError:
    where = f"MQTT broker {s.host}:{s.port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        ca = f"mqtt.tls_ca = {s.tls_ca}" if s.tls_ca else "the system CAs (mqtt.tls_ca unset)"
        return MqttTlsError(f"{where}: TLS certificate verification failed ({exc.verify_message}); is it "
                            f"signed by the CA in {ca}, and does it name {s.host!r}?")
    if isinstance(exc, ssl.SSLError):
        return MqttTlsError(f"{where}: TLS handshake failed ({exc.reason or exc}); is port {s.port} a TLS "
                            "listener, and does it accept this client certificate?")
    if isinstance(exc, ConnectionRefusedError):
        return MqttError(f"{where}: connection refused (is the broker running and listening on port {s.port}?)")
    if isinstance(exc, socket.gaierror):
        return MqttError(f"{where}: cannot resolve the host name ({exc.strerror})")
    if isinstance(exc, TimeoutError | socket.timeout):
        return MqttError(f"{where}: connection timed out (network or firewall?)")
    return MqttError(f"{where}: {getattr(exc, 'strerror', None) or exc}")


def ssl_context(s: MqttSettings) -> ssl.SSLContext:
    """The TLS context for the broker: its CA (or the system CAs) and, for mutual TLS, our certificate."""
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                         cafile=str(s.tls_ca) if s.tls_ca else None)
        if s.tls_cert is not None:
            ctx.load_cert_chain(str(s.tls_cert), str(s.tls_key) if s.tls_key else None)
    except FileNotFoundError as exc:
        raise MqttTlsError(f"MQTT TLS: {exc.filename or s.tls_ca}: no such file") from None
    except (ssl.SSLError, OSError) as exc:
        raise MqttTlsError(f"MQTT TLS: cannot load the CA/certificate/key ({s.tls_ca}, {s.tls_cert}, "
                           f"{s.tls_key}): {getattr(exc, 'reason', None) or exc}") from None
    return ctx


def _paho_client_class() -> type:
    import paho.mqtt.client as paho

    class _Client(paho.Client):  # type: ignore[misc]
        """paho's client, keeping the exception of the last failed connection attempt (paho drops it)."""

        last_exception: BaseException | None = None

        def reconnect(self) -> Any:
            try:
                return super().reconnect()
            except OSError as exc:
                self.last_exception = exc
                raise

    return _Client


class MqttClient:
    """The device's MQTT connection: call :meth:`start` once, :meth:`stop` at the end.

    ``journal``: the :class:`~edge_mfr.device.journal.Journal` whose outbox is published (None: no events).
    ``handler``: a :class:`~edge_mfr.interfaces.mqtt_commands.CommandHandler` (None: commands not subscribed).
    ``doors``: names or :class:`DoorInfo` for Home Assistant discovery.
    """

    def __init__(self, settings: MqttSettings, *, journal: Any = None, handler: Any = None,
                 doors: Iterable[DoorInfo | str] = (), sw_version: str = __version__):
        self.settings = settings
        self.topics = Topics(settings.topic_prefix or "", settings.discovery_prefix)
        self.journal = journal
        self.handler = handler
        self.doors = [d if isinstance(d, DoorInfo) else DoorInfo(str(d)) for d in doors]
        self.sw_version = sw_version
        self.last_error: MqttError | None = None
        self.stats = {"connects": 0, "published": 0, "acked": 0, "broker_refused": 0, "commands": 0}
        self._client: Any = None
        self._connected = threading.Event()
        self._subscribed = threading.Event()  # the broker acknowledged this connection's subscriptions
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._mutex = threading.Lock()  # stats and epoch; never held while calling into paho
        # Held across state publishes (paho's callbacks never take it, so this cannot deadlock).
        self._state_lock = threading.RLock()
        self._states: dict[str, str | bytes] = {}
        self._epoch = 0  # connections so far; the publisher notices reconnects by it
        self._acks: queue.SimpleQueue[tuple[int, bool]] = queue.SimpleQueue()
        self._inflight: dict[int, int] = {}  # publisher thread only: paho mid -> outbox seq
        self._last_handed = 0  # publisher thread only: highest outbox seq given to paho
        self._commands: queue.Queue[tuple[str, bytes, bool] | None] = queue.Queue(COMMAND_QUEUE)
        self._threads: list[threading.Thread] = []
        self._error_text: str | None = None

    # ------------------------------------------------------------------------------------------ lifecycle

    def _ssl_context(self) -> ssl.SSLContext:
        return ssl_context(self.settings)

    def _build(self) -> Any:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        s = self.settings
        v5 = s.protocol == "5"
        kwargs: dict[str, Any] = {"callback_api_version": CallbackAPIVersion.VERSION2,
                                  "client_id": s.client_id, "protocol": paho.MQTTv5 if v5 else paho.MQTTv311}
        if not v5:
            kwargs["clean_session"] = True  # no backlog of commands sent while we were away
        client = _paho_client_class()(**kwargs)
        client.max_inflight_messages_set(WINDOW)
        client.reconnect_delay_set(s.reconnect_min_seconds, s.reconnect_max_seconds)
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.tls:
            client.tls_set_context(self._ssl_context())
        client.will_set(self.topics.availability, OFFLINE, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def start(self) -> None:
        """Connect in the background (retrying with back-off) and start the publisher and command threads."""
        if self._client is not None:
            raise RuntimeError("MqttClient.start() called twice")
        client = self._build()
        s = self.settings
        extra = {"clean_start": True} if s.protocol == "5" else {}
        try:
            client.connect_async(s.host, s.port, keepalive=s.keepalive_seconds, **extra)
        except ValueError as exc:
            raise MqttError(f"MQTT broker {s.host}:{s.port}: {exc}") from None
        self._client = client
        client.loop_start()
        for name, target in (("mqtt-outbox", self._publish_loop), ("mqtt-commands", self._command_loop)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> None:
        """Block until connected and listening (the broker acknowledged the subscriptions, so a command
        published from now on reaches this client); raise the last clear error (or a timeout) otherwise."""
        deadline = time.monotonic() + timeout
        if self._connected.wait(timeout) and self._subscribed.wait(max(0.0, deadline - time.monotonic())):
            return
        if self.last_error is not None:
            raise self.last_error
        what = "no subscription acknowledged" if self._connected.is_set() else "no connection"
        raise MqttError(f"MQTT broker {self.settings.host}:{self.settings.port}: {what} within {timeout:g} s")

    def stop(self, drain_s: float = 2.0) -> None:
        """Publish ``offline``, disconnect cleanly and stop the threads (unsent events stay in the outbox)."""
        client = self._client
        if client is None or self._stop.is_set():
            return
        deadline = time.monotonic() + drain_s
        while self._inflight and self.connected and time.monotonic() < deadline:
            time.sleep(0.02)  # let PUBACKs of messages in flight arrive, to spare duplicates next time
        self._stop.set()
        self._wake.set()
        self._commands.put(None)
        for thread in self._threads:
            thread.join(5.0)
        if self.connected:
            try:
                info = client.publish(self.topics.availability, OFFLINE, qos=1, retain=True)
                info.wait_for_publish(timeout=max(0.5, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                log.debug("mqtt: could not publish offline", exc_info=True)
        client.disconnect()
        client.loop_stop()
        self._drain_acks()
        self._connected.clear()

    def __enter__(self) -> MqttClient:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------------------------- paho callbacks

    def _set_error(self, error: MqttError | None) -> None:
        self.last_error = error
        text = str(error) if error is not None else None
        if text != self._error_text:
            if text is not None:
                log.error("%s", text)
            elif self._error_text is not None:
                log.info("MQTT connection problem resolved")
            self._error_text = text
        elif text is not None:
            log.debug("%s (again)", text)

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        exc = getattr(client, "last_exception", None)
        self._set_error(_describe_failure(exc, self.settings) if exc is not None else
                        MqttError(f"MQTT broker {self.settings.host}:{self.settings.port}: connection failed"))

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        try:
            if reason_code.is_failure:
                s = self.settings
                text = f"MQTT broker {s.host}:{s.port} refused the connection: {reason_code}"
                name = str(reason_code).lower()
                if "authori" in name or "password" in name or "user name" in name:
                    self._set_error(MqttAuthError(f"{text} (check mqtt.username, the password and the ACL)"))
                else:
                    self._set_error(MqttError(text))
                return
            self._set_error(None)
            with self._mutex:
                self._epoch += 1
                self.stats["connects"] += 1
            log.info("MQTT connected to %s:%s as %s", self.settings.host, self.settings.port,
                     self.settings.client_id)
            client.publish(self.topics.availability, ONLINE, qos=1, retain=True)
            subs: list[tuple[str, Any]] = [(self.topics.ha_status, 1)]
            if self.handler is not None:
                # MQTT 5: keep the publisher's retain flag on live deliveries too, so a command published
                # retained is refused the first time as well, not only after a reconnect (MQTT 3.1.1 cannot
                # tell: config check warns). paho's SubscribeOptions defaults to QoS 0, hence qos=1.
                from paho.mqtt.subscribeoptions import SubscribeOptions

                opts: Any = (SubscribeOptions(qos=1, retainAsPublished=True)
                             if self.settings.protocol == "5" else 1)
                subs += [(self.topics.commands, opts), (self.topics.ha_lock_commands, opts)]
            self._subscribed.clear()
            client.subscribe(subs)
            if self.settings.discovery:
                self.publish_discovery()
            with self._state_lock:  # so a concurrent set_state cannot be overtaken by an older value
                self._connected.set()
                for topic, payload in self._states.items():
                    client.publish(topic, payload, qos=1, retain=True)
            self._wake.set()
        except Exception:
            log.exception("mqtt: on_connect failed")

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        refused = [str(rc) for rc in reason_codes if getattr(rc, "is_failure", False)]
        if refused:
            self._set_error(MqttAuthError(f"MQTT broker {self.settings.host}:{self.settings.port} refused a "
                                          f"subscription ({', '.join(refused)}): check the ACL for "
                                          f"{self.topics.commands}"))
            return
        self._subscribed.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        self._subscribed.clear()
        self._wake.set()
        if was and not self._stop.is_set():
            log.warning("MQTT disconnected (%s); reconnecting with back-off", reason_code)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        # Runs inside paho's message lock: only hand the ack to the publisher thread.
        self._acks.put((mid, bool(getattr(reason_code, "is_failure", False))))
        self._wake.set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            topic = message.topic
            if topic == self.topics.ha_status:
                if message.payload.strip() == b"online" and self.settings.discovery:
                    self.publish_discovery()  # Home Assistant restarted: it wants the configs again
                return
            if self.handler is None:
                return
            try:
                self._commands.put_nowait((topic, bytes(message.payload), bool(message.retain)))
            except queue.Full:
                self._reply(self.handler.busy(topic, bytes(message.payload)))
        except Exception:
            log.exception("mqtt: dropping a message that could not be handled")

    # ---------------------------------------------------------------------------------------- publishing

    def _publish(self, topic: str, payload: Any, *, qos: int = 1, retain: bool = False) -> Any:
        if isinstance(payload, dict | list):
            payload = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str)
        return self._client.publish(topic, payload, qos=qos, retain=retain)

    def messages_for(self, event: Mapping[str, Any], snapshot: bytes | None = None) -> list[tuple]:
        """The outbox messages of one journal event; pass as ``journal.record(..., publish=...)``."""
        kind = event["kind"]
        if kind not in EVENT_KINDS:
            return []
        out: list[tuple] = [(self.topics.event(kind), event_payload(event, self.settings.device_id), 1, False)]
        if snapshot is not None and self.settings.snapshots:
            out.append((self.topics.snapshot(kind), bytes(snapshot), 1, False))
        return out

    def record(self, kind: str, *, door: str | None = None, person_id: str | None = None,
               snapshot: bytes | None = None, **payload: Any) -> dict[str, Any]:
        """Journal an event with its MQTT message in one transaction, then wake the publisher."""
        if self.journal is None:
            raise RuntimeError("MqttClient.record needs a journal")
        event = self.journal.record(kind, door=door, person_id=person_id,
                                    publish=lambda ev: self.messages_for(ev, snapshot), **payload)
        self._wake.set()
        return event

    def wake(self) -> None:
        """Tell the publisher that the outbox has new messages (it also polls twice a second)."""
        self._wake.set()

    def set_state(self, name: str, value: Any) -> None:
        """Retained ``<prefix>/state/<name>``; cached and re-sent on every (re)connect."""
        topic = self.topics.state(name)
        if isinstance(value, dict | list):
            payload: str | bytes = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
        elif isinstance(value, bytes):
            payload = value
        else:
            payload = str(value)
        with self._state_lock:
            changed = self._states.get(topic) != payload
            self._states[topic] = payload
            if changed and self.connected:
                self._publish(topic, payload, retain=True)

    def publish_lock_states(self, states: Mapping[str, Mapping[str, Any]]) -> None:
        """From ``LockBank.state()``: lock and door-contact state of every door."""
        for door, st in states.items():
            self.set_state(f"lock/{door}", "UNLOCKED" if st.get("unlocked") else "LOCKED")
            if st.get("door_open") is not None:
                self.set_state(f"door/{door}", "OPEN" if st["door_open"] else "CLOSED")

    def on_app_event(self, kind: str, event: Mapping[str, Any]) -> None:
        """An ``Appliance.on_event`` hook: keeps the retained state topics current (events use the outbox)."""
        try:
            door = event.get("door")
            if kind in ("unlocked", "locked") and door:
                self.set_state(f"lock/{door}", "UNLOCKED" if kind == "unlocked" else "LOCKED")
            elif kind in ("door_opened", "door_closed", "door_forced") and door:
                self.set_state(f"door/{door}", "CLOSED" if kind == "door_closed" else "OPEN")
            elif kind in ("recognized", "access_granted"):
                self.set_state("last_person", {
                    "person_id": event.get("person_id"), "name": event.get("name"),
                    "masked": event.get("masked"), "score": event.get("score"), "door": door,
                    "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        except Exception:
            log.exception("mqtt: state update for %s failed", kind)

    def publish_discovery(self) -> list[str]:
        """Send the retained Home Assistant discovery configs; returns their topics."""
        configs = discovery_configs(self.settings, self.doors, self.sw_version)
        for topic, config in configs:
            self._publish(topic, config, retain=True)
        return [topic for topic, _ in configs]

    def remove_discovery(self, timeout: float = 5.0) -> list[str]:
        """Empty retained configs: Home Assistant deletes the entities. Waits for the broker's acks."""
        infos = [(topic, self._publish(topic, b"", retain=True))
                 for topic, _ in discovery_configs(self.settings, self.doors, self.sw_version)]
        deadline = time.monotonic() + timeout
        for _, info in infos:
            try:
                info.wait_for_publish(timeout=max(0.1, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                log.warning("mqtt: discovery removal not confirmed (not connected)")
        return [topic for topic, _ in infos]

    def _reply(self, result: Any) -> None:
        if result.reply and self._client is not None:
            try:
                self._publish(self.topics.result, result.to_payload())
            except Exception:
                log.exception("mqtt: cannot publish a command result")

    # ------------------------------------------------------------------------------------ worker threads

    def _command_loop(self) -> None:
        while (item := self._commands.get()) is not None:
            topic, payload, retained = item
            try:
                result = self.handler.handle(topic, payload, retained)
                with self._mutex:
                    self.stats["commands"] += 1
                if not result.ok and result.reply:
                    log.warning("mqtt command on %s refused: %s", topic, result.reason)
                self._reply(result)
            except Exception:
                log.exception("mqtt: command worker error")

    def _drain_acks(self) -> None:
        """Apply PUBACKs: delete acknowledged outbox messages (publisher thread, and stop())."""
        while True:
            try:
                mid, refused = self._acks.get_nowait()
            except queue.Empty:
                return
            seq = self._inflight.pop(mid, None)
            if seq is None or self.journal is None:
                continue  # not an outbox message (state, availability, discovery, results)
            with self._mutex:
                self.stats["acked"] += 1
                if refused:
                    self.stats["broker_refused"] += 1
            if refused:
                log.warning("mqtt: the broker refused outbox message %d (ACL?); dropped", seq)
            try:
                self.journal.mark_sent(seq)
            except Exception:
                log.exception("journal: cannot mark outbox message %d sent", seq)

    def _publish_loop(self) -> None:
        seen_epoch = 0
        resend_deadline: float | None = None
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self._drain_acks()
                if self.journal is None or not self.connected:
                    self._wake.wait(0.5)
                    continue
                with self._mutex:
                    epoch = self._epoch
                if epoch != seen_epoch:
                    seen_epoch = epoch
                    resend_deadline = time.monotonic() + RESEND_WAIT_S if self._inflight else None
                if resend_deadline is not None:
                    # paho re-sends what was in flight first; new messages wait so order is kept
                    if not self._inflight:
                        resend_deadline = None
                    elif time.monotonic() > resend_deadline:
                        log.warning("mqtt: %d messages unacknowledged after reconnect; re-sending from the "
                                    "outbox", len(self._inflight))
                        self._inflight.clear()
                        self._last_handed = 0
                        resend_deadline = None
                    else:
                        self._wake.wait(0.1)
                        continue
                room = WINDOW - len(self._inflight)
                batch = [m for m in self.journal.peek(2 * WINDOW) if m.seq > self._last_handed][:max(room, 0)]
                if not batch:
                    self._wake.wait(0.5)
                    continue
                for msg in batch:
                    if not self.connected or self._stop.is_set():
                        break
                    try:
                        info = self._client.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain)
                    except ValueError as exc:  # a message MQTT cannot carry (too large): never block the rest
                        log.error("mqtt: dropping outbox message %d on %s: %s", msg.seq, msg.topic, exc)
                        self.journal.mark_sent(msg.seq)
                        continue
                    self._inflight[info.mid] = msg.seq
                    self._last_handed = msg.seq
                    with self._mutex:
                        self.stats["published"] += 1
            except Exception:
                log.exception("mqtt: outbox publisher error; retrying")
                self._stop.wait(1.0)
