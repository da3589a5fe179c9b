"""MQTT publishing of outbox events (aiomqtt).

One more :class:`~nhi_nac.events.EventRelay` subscriber: each event goes to
``nhi-nac/<site>/<event-type>`` as JSON (event id, schema version, type, timestamp,
payload) with QoS 1; a batch of RADIUS decisions (``admissions.recorded``) goes out as
one ``admission.accepted`` / ``admission.rejected`` message per decision. A publish that
fails raises, so the relay leaves the outbox row unpublished and retries it later: a
broker outage delays events but loses none. ``mqtts://`` uses TLS with the system trust
store; credentials come from the URL (``mqtt://user:password@host:1883``).
"""

from __future__ import annotations

import contextlib
import json
import ssl
from urllib.parse import unquote, urlsplit

import aiomqtt
import structlog

from nhi_nac.errors import ConfigError
from nhi_nac.events import Event, decision_events

log = structlog.get_logger("nhi_nac.mqtt")

TOPIC_ROOT = "nhi-nac"
#: Seconds to wait for the broker to accept a connection or acknowledge a publish.
MQTT_TIMEOUT_SECONDS = 5.0


def event_topic(site: str, event_type: str) -> str:
    return f"{TOPIC_ROOT}/{site}/{event_type}"


def event_json(ev: Event) -> bytes:
    return json.dumps({"event_id": ev.event_id, "schema": ev.schema, "type": ev.type,
                       "at": ev.at, "payload": ev.payload}, sort_keys=True).encode()


class MqttPublisher:
    def __init__(self, url: str, site: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ConfigError("mqtt.url", "must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
        self.host = parts.hostname
        self.port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.tls = ssl.create_default_context() if parts.scheme == "mqtts" else None
        self.site = site
        self._client: aiomqtt.Client | None = None
        self.published = 0

    async def _connected(self) -> aiomqtt.Client:
        if self._client is None:
            client = aiomqtt.Client(self.host, self.port, username=self.username,
                                    password=self.password, tls_context=self.tls,
                                    timeout=MQTT_TIMEOUT_SECONDS,
                                    identifier=None)
            await client.__aenter__()
            self._client = client
            log.info("mqtt.connected", broker=f"{self.host}:{self.port}")
        return self._client

    async def __call__(self, ev: Event) -> None:
        try:
            client = await self._connected()
            for one in decision_events(ev):
                await client.publish(event_topic(self.site, one.type), event_json(one),
                                     qos=1, timeout=MQTT_TIMEOUT_SECONDS)
                self.published += 1
        except aiomqtt.MqttError:
            await self.close()
            raise

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)
