"""The appliance's MQTT subscriber: wires a running appliance to an :class:`MqttClient` (events through the
journal's outbox, retained state, remote commands). The entry point passes :func:`attach_mqtt` to the
appliance, which calls it during start-up once the locks, journal and gallery exist.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

log = logging.getLogger(__name__)
STATUS_EVERY_S = 10.0  # how often fps and people count are re-published


def attach_mqtt(app: Any) -> Any:
    """Connect in the background: events through the journal's outbox, retained state, commands.

    A broker that is down does not keep the door from working: the client retries with back-off and
    logs why, and the outbox keeps the events until the broker answers. A configuration mistake (an
    unreadable password, secret or TLS file) aborts start-up like any other.
    """
    from edge_mfr import __version__
    from edge_mfr.interfaces.mqtt import DoorInfo, MqttClient, MqttSettings
    from edge_mfr.interfaces.mqtt_commands import CommandHandler, GalleryCommands
    from edge_mfr.vision.pipeline import FacePipeline

    cfg = app.config
    settings = MqttSettings.from_config(cfg)
    models_dir = app.models_dir

    def enroll_pipeline() -> Any:  # its own interpreters: TFLite ones must not be shared across threads
        return FacePipeline(detector=cfg.models.detector, num_threads=cfg.models.threads,
                            models_dir=models_dir)

    gallery = GalleryCommands(cfg.recognition.gallery, enroll_pipeline)  # the loop sees the new file
    reload_wanted = threading.Event()  # set by the command thread, served by the frame thread
    handler = CommandHandler(settings.topic_prefix or "", app.bank, secret=settings.command_secret,
                             journal=app.journal, limits=settings.command_limits(),
                             enroll=gallery.enroll, remove_person=gallery.remove_person,
                             reload=reload_wanted.set)
    doors = [DoorInfo(d.name, has_contact=d.contact_pin is not None) for d in cfg.doors]
    client = MqttClient(settings, journal=app.journal, handler=handler, doors=doors)
    client.publish_lock_states(app.bank.state())  # cached, sent on every (re)connect
    client.set_state("models", {"edge_mfr": __version__, "detector": cfg.models.detector,
                                "embedder_sha256": app.pipeline.embedder.model_sha256})
    client.set_state("people_count", len(app.identifier.gallery.people))
    announced: dict[int, str] = {}  # track id -> the person it was announced as
    last_state = [-math.inf]

    def on_frame(report: Any) -> None:
        """Frame thread: reload when asked, announce newly recognised tracks, refresh fps and people."""
        if reload_wanted.is_set():
            reload_wanted.clear()
            app.request_gallery_reload()  # the next frame re-reads it
        for ended in app.tracker.ended:
            announced.pop(ended.id, None)
        for t in app.tracker.tracks:  # the score the policy decided on, as in access_granted
            if t.decided not in (None, "unknown") and announced.get(t.id) != t.decided:
                announced[t.id] = t.decided
                ident = t.identification
                app.record("recognized", door=app.door, person_id=t.decided,
                             name=getattr(ident, "name", None), masked=bool(t.masked),
                             score=round(float(t.best_score), 4), track_id=t.id,
                             allowed=bool(getattr(ident, "allowed", False)))
        now = app.clock()
        if now - last_state[0] >= STATUS_EVERY_S:
            last_state[0] = now
            client.set_state("fps", round(app.stats.fps, 1))
            client.set_state("people_count", len(app.identifier.gallery.people))

    def on_event(kind: str, event: dict[str, Any]) -> None:
        if kind == "gallery_reloaded":
            client.set_state("people_count", event.get("people", 0))

    app.mqtt = client
    app.on_event += [client.on_app_event, on_event]  # lock, door and last-person state
    app.on_frame.append(on_frame)
    client.start()
    log.info("MQTT: connecting to %s:%s in the background as %s; events wait in the journal until the "
             "broker answers", settings.host, settings.port, settings.client_id)
    return client
