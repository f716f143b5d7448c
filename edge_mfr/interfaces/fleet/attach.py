"""Wire a fleet follower into the running appliance (a subscriber, like MQTT and the kiosk)."""

from __future__ import annotations

import logging
from typing import Any

from edge_mfr.errors import EdgeMfrError
from edge_mfr.interfaces.fleet import keys, link, payload
from edge_mfr.interfaces.fleet.bundle import BundleHeader, DoorRule
from edge_mfr.interfaces.fleet.follower import Follower, load_rules

log = logging.getLogger(__name__)


def _apply_rules(app: Any) -> None:
    """Frame thread: the policy takes the door rules that came with the gallery it now decides with."""
    try:
        app.policy.door_rules = load_rules(app.config.recognition.gallery)
    except EdgeMfrError as exc:  # unreadable rules: nobody with a rule is let in until the next bundle
        app.record("fleet_refused", version=0, reason=str(exc))
        app.policy.door_rules = {pid: DoorRule((), {}) for pid in app.policy.door_rules}


def attach_fleet(app: Any) -> Follower:
    """Start following the fleet's bundles on the broker; the door loop adopts each applied gallery itself."""
    from edge_mfr.interfaces.mqtt import MqttSettings

    cfg = app.config
    settings = MqttSettings.from_config(cfg)
    mqtt = app.mqtt
    follower = Follower(
        fleet=cfg.fleet.id, root=cfg.fleet.topic_root, trusted=keys.load_trusted(cfg.fleet.public_keys),
        gallery_path=cfg.recognition.gallery, models=lambda: payload.pipeline_models(app.pipeline.embedder_ids),
        record=app.record, client_factory=link.client_factory(settings, "fleet"), host=settings.host,
        port=settings.port, keepalive=settings.keepalive_seconds,
        publish_state=(lambda state: mqtt.set_state("fleet", state)) if mqtt is not None else None)
    _apply_rules(app)

    def on_event(kind: str, event: dict[str, Any]) -> None:
        if kind == "gallery_reloaded":
            _apply_rules(app)

    def forget(header: BundleHeader) -> None:
        """The door stops matching revoked or changed people now; the reload brings the changed ones back."""
        if header.kind == "delta":
            app.forget_people([*header.revoked, *header.people])
        elif app.identifier is not None:
            keep = set(header.people)
            app.forget_people([p.person_id for p in app.identifier.gallery.people if p.person_id not in keep])

    app.on_event.append(on_event)
    follower.on_applied.append(forget)
    app.fleet = follower
    follower.start()
    log.info("fleet %s: following %s (gallery v%d)", cfg.fleet.id, cfg.fleet.topic_root, follower.state.version)
    return follower
