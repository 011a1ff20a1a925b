"""Publishing a few retained messages on one short connection (a lot's grading from `formation grade`)."""

from __future__ import annotations

import ssl
from collections.abc import Sequence

import aiomqtt

from formation.config import MqttConfig
from formation.feed.payloads import FeedPayload


async def publish_retained(
    config: MqttConfig, messages: Sequence[tuple[str, FeedPayload]], timeout_s: float = 5.0
) -> str | None:
    """Publish ``messages`` retained (QoS 1) and disconnect; None once the broker has them, else why not.

    Never raises for a broker that is absent or refuses: grading is done and stored whatever the feed does.
    """
    tls = ssl.create_default_context(cafile=config.ca_file) if config.tls else None
    try:
        async with aiomqtt.Client(
            config.host,
            config.port,
            username=config.username,
            password=config.password,
            tls_context=tls,
            timeout=timeout_s,
        ) as client:
            for topic, payload in messages:
                await client.publish(topic, payload.to_json(), qos=1, retain=True)
    except (aiomqtt.MqttError, OSError, ssl.SSLError) as exc:
        return str(exc) or type(exc).__name__
    return None
