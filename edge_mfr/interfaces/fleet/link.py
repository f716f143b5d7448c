"""paho clients for the fleet, connected with the same broker settings (TLS, credentials) as the device."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def client_factory(settings: Any, suffix: str) -> Callable[[], Any]:
    """A function returning an unstarted paho client for ``settings`` (an MqttSettings) with client id
    ``<client id>-<suffix>``, so the fleet link never takes over the device's own connection."""

    def make() -> Any:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        from edge_mfr.interfaces.mqtt import ssl_context

        v5 = settings.protocol == "5"
        kwargs: dict[str, Any] = {"callback_api_version": CallbackAPIVersion.VERSION2,
                                  "client_id": f"{settings.client_id}-{suffix}",
                                  "protocol": paho.MQTTv5 if v5 else paho.MQTTv311}
        if not v5:
            kwargs["clean_session"] = True
        client = paho.Client(**kwargs)
        client.max_inflight_messages_set(64)
        client.reconnect_delay_set(settings.reconnect_min_seconds, settings.reconnect_max_seconds)
        if settings.username is not None:
            client.username_pw_set(settings.username, settings.password)
        if settings.tls:
            client.tls_set_context(ssl_context(settings))
        return client

    return make
