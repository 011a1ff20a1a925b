"""The display process: subscribes to one line's feed and serves the wall page to browsers.

:class:`WallDisplay` is an async context manager holding three named tasks: the subscriber (aiomqtt, reconnecting
with backoff while the broker is away; the broker replays the retained tree on every connect, so a display that
starts late or reconnects shows the current state at once), the health tick (pushes the stale verdict every second,
so a silent feed turns the page stale without any message) and the HTTP server's connection handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import uuid
from collections.abc import Callable
from importlib import resources
from typing import Any

from formation.feed.display.server import DisplayServer
from formation.feed.display.state import DEFAULT_INTERVAL_S, FeedView, Part

#: Wall seconds between two health pushes (the stale banner's resolution).
HEALTH_TICK_S = 1.0
#: Reconnect backoff while the broker is away: first wait, growth factor, cap (wall seconds).
BACKOFF_FIRST_S = 0.5
BACKOFF_FACTOR = 2.0
BACKOFF_MAX_S = 10.0
#: MQTT keepalive of the display's own connection (s): a dead broker is noticed within about 1.5 × this.
KEEPALIVE_S = 10


def page_html() -> bytes:
    """The wall page (HTML with its CSS and JS inline), as shipped in the package."""
    return resources.files("formation.feed.display").joinpath("page.html").read_bytes()


class WallDisplay:
    """Subscribes to ``formation/v1/{site}/{line}/#`` and serves the page on ``host:port`` (0: any free port)."""

    def __init__(
        self,
        site: str,
        line: str,
        *,
        mqtt_host: str,
        mqtt_port: int = 1883,
        username: str | None = None,
        password: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
        port: int = 8080,
        default_interval_s: float = DEFAULT_INTERVAL_S,
        monotonic_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self.view = FeedView(site, line, default_interval_s=default_interval_s)
        self.mqtt_host = mqtt_host
        self.mqtt_port = mqtt_port
        self._username = username
        self._password = password
        self._tls_context = tls_context
        self._now_s = monotonic_s
        self.server = DisplayServer(self.view, page_html(), host, port, monotonic_s)
        self._tasks: list[asyncio.Task[None]] = []
        self._connected = asyncio.Event()

    @property
    def url(self) -> str:
        """Where a browser finds the page."""
        host = self.server.host
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.server.port}/"

    async def __aenter__(self) -> WallDisplay:
        self.view.started_s = self._now_s()
        await self.server.__aenter__()
        self._tasks = [
            asyncio.create_task(self._subscribe(), name="display-subscriber"),
            asyncio.create_task(self._tick(), name="display-health"),
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.server.__aexit__(*exc)

    async def wait_connected(self, timeout_s: float) -> bool:
        """Whether the subscriber is connected to the broker within ``timeout_s`` wall seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._connected.wait()
        return self._connected.is_set()

    def _changed(self, parts: set[Part]) -> None:
        self.server.notify(parts)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_TICK_S)
            self._changed({("health", "")})

    async def _subscribe(self) -> None:
        import aiomqtt

        backoff_s = BACKOFF_FIRST_S
        while True:
            try:
                async with aiomqtt.Client(
                    self.mqtt_host,
                    self.mqtt_port,
                    identifier=f"formation-display-{uuid.uuid4().hex[:12]}",
                    username=self._username,
                    password=self._password,
                    tls_context=self._tls_context,
                    keepalive=KEEPALIVE_S,
                    timeout=10.0,
                ) as client:
                    await client.subscribe(self.view.topics.all, qos=1)
                    self._connected.set()
                    self._changed(self.view.set_broker(True))
                    backoff_s = BACKOFF_FIRST_S
                    async for message in client.messages:
                        payload = _payload_bytes(message.payload)
                        self._changed(self.view.apply(str(message.topic), payload, self._now_s()))
            except aiomqtt.MqttError as exc:
                self._connected.clear()
                where = f"broker {self.mqtt_host}:{self.mqtt_port}"
                self._changed(self.view.set_broker(False, f"lost {where} ({exc}); reconnecting"))
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * BACKOFF_FACTOR, BACKOFF_MAX_S)


def _payload_bytes(payload: Any) -> bytes:
    """A received payload as bytes (aiomqtt hands bytes; the other payload types only appear when publishing)."""
    if payload is None:
        return b""
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return str(payload).encode()
