"""FeedPublisher: publishes the line's state to the MQTT broker, off the control path (aiomqtt 2.x).

Callers (the supervisors, chamber loops, grading) hand payloads to the sync ``publish_*`` methods, which never
block and never raise: they only note the payload. One background task does the network work:

* **State** topics (retained) are coalesced per topic, latest wins: a slow or absent broker costs intermediate
  snapshots, never memory. The last payload sent on each retained topic is kept and republished after a
  reconnect, so a broker that lost its retained store (restarted without persistence) has the whole tree again.
* **Events** (alarms, step transitions, run and job ends; not retained) are never dropped while the process lives:
  they wait in an :class:`~formation.feed.spill.EventQueue` (memory, then a spill file) and leave it only once the
  broker acknowledged them (QoS 1). Delivery is at least once: an event whose acknowledgement was lost with the
  connection is sent again, and its ``seq`` lets a subscriber drop the duplicate.
* **Status**: ``online`` (retained) on every connection, and again after any ``interval_s`` with nothing else
  sent (a heartbeat: an idle line is not a silent one); the ``offline`` form is registered as the MQTT will, so a
  killed process turns offline within 1.5 × keepalive; a clean exit publishes ``offline`` itself.

The connection is retried with exponential backoff (``reconnect_min_s`` doubling up to ``reconnect_max_s``) for
the life of the publisher, so ``enabled = "auto"`` publishes as soon as a broker answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import ssl
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiomqtt

from formation import __version__
from formation.config import MqttConfig
from formation.feed.payloads import (
    CabinetState,
    ChamberState,
    ChannelState,
    FeedEvent,
    FeedPayload,
    LotGrading,
    OrchestratorStatus,
    RackState,
    utc_now,
)
from formation.feed.spill import DEFAULT_MEMORY_CAP, EventQueue
from formation.feed.topics import Topics

log = logging.getLogger(__name__)

#: Publishes in flight at once (paho's default in-flight window is 20; more wait in its queue).
WINDOW = 64
#: Wall seconds a clean exit gives the last events and the offline status before it cuts the connection.
CLOSE_TIMEOUT_S = 3.0


@dataclass
class FeedStats:
    """What the publisher did (for the demo's summary, tests and the benchmark)."""

    connects: int = 0
    connect_failures: int = 0
    messages: int = 0
    bytes: int = 0
    events_sent: int = 0
    #: State snapshots replaced by a newer one before they were sent (the broker was slower than the line).
    coalesced: int = 0
    republished: int = 0
    #: Status messages sent because an interval passed with nothing else to send.
    heartbeats: int = 0


class FeedPublisher:
    """The line's MQTT publisher; an async context manager running one named background task."""

    def __init__(
        self,
        config: MqttConfig,
        site: str,
        line: str,
        *,
        version: str = __version__,
        identifier: str | None = None,
        reconnect_min_s: float = 0.25,
        reconnect_max_s: float = 2.0,
        memory_cap: int = DEFAULT_MEMORY_CAP,
    ) -> None:
        self.config = config
        self.topics = Topics(site, line)
        self.interval_s = config.interval_s
        self.version = version
        self.identifier = identifier or f"formation-{site}-{line}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.started = utc_now()
        self.stats = FeedStats()
        #: The last reason a connection failed or dropped (None while connected or before the first attempt).
        self.last_error: str | None = None
        self._events = EventQueue(memory_cap)
        self._seq = 0
        self._pending: dict[str, FeedPayload] = {}
        self._sent: dict[str, bytes] = {}
        self._wake = asyncio.Event()
        self._connected = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._last_send_s = -math.inf

    # -- the sync, non-blocking side the line calls --------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """Whether the publisher holds a connection to the broker now."""
        return self._connected.is_set()

    @property
    def events_waiting(self) -> int:
        """Events not yet acknowledged by the broker."""
        return len(self._events)

    @property
    def events(self) -> EventQueue:
        """The event queue (its ``spilled_total`` and ``lost`` counters)."""
        return self._events

    def publish_state(self, topic: str, payload: FeedPayload) -> None:
        """Note the latest state for a retained topic; an unsent older one on the same topic is replaced."""
        if topic in self._pending:
            self.stats.coalesced += 1
        self._pending[topic] = payload
        self._wake.set()

    def publish_cabinet(self, payload: CabinetState) -> None:
        """A cabinet's aggregated state."""
        self.publish_state(self.topics.cabinet(payload.cabinet), payload)

    def publish_channel(self, payload: ChannelState) -> None:
        """One channel's state (on a change of run state or step)."""
        self.publish_state(self.topics.channel(payload.cabinet, payload.channel), payload)

    def publish_chamber(self, payload: ChamberState) -> None:
        """A chamber's state."""
        self.publish_state(self.topics.chamber(payload.chamber), payload)

    def publish_rack(self, payload: RackState) -> None:
        """An ageing rack's state."""
        self.publish_state(self.topics.rack(payload.rack), payload)

    def publish_grading(self, payload: LotGrading) -> None:
        """A lot's grading summary."""
        self.publish_state(self.topics.grading(payload.lot), payload)

    def publish_event(self, event: FeedEvent) -> None:
        """Queue an event (numbered with the publisher's ``seq``); delivered at least once while the process lives."""
        try:
            data = event.model_copy(update={"seq": self._seq}).to_json()
        except Exception:  # a payload that cannot be serialised is a bug: log it, never break the caller
            log.exception("feed: event not serialisable: %r", event)
            return
        self._seq += 1
        self._events.put(data)
        self._wake.set()

    # -- lifecycle -------------------------------------------------------------------------------------------------
    async def __aenter__(self) -> FeedPublisher:
        self._task = asyncio.create_task(self._run(), name=f"feed-publisher-{self.topics.site}-{self.topics.line}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._closing = True
        self._wake.set()
        if self.connected:
            # Connected: the task sends what is queued and the offline status, then leaves by itself.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), CLOSE_TIMEOUT_S)
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._events.close()

    async def wait_first_attempt(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` wall seconds for the first connection attempt to end; whether it connected."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self.connected and not self.stats.connect_failures and loop.time() < deadline:
            await asyncio.sleep(0.01)
        return self.connected

    async def wait_connected(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` wall seconds for a connection; whether there is one."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout_s)
        return self.connected

    # -- the background task -----------------------------------------------------------------------------------
    def _status(self, state: str) -> bytes:
        return OrchestratorStatus(
            state=state,  # type: ignore[arg-type]
            version=self.version,
            started=self.started,
            host=socket.gethostname(),
            pid=os.getpid(),
            interval_s=self.interval_s,
        ).to_json()

    def _client(self) -> aiomqtt.Client:
        cfg = self.config
        tls: ssl.SSLContext | None = None
        if cfg.tls:
            tls = ssl.create_default_context(cafile=cfg.ca_file)
        will = aiomqtt.Will(self.topics.status(), self._status("offline"), qos=1, retain=True)
        client = aiomqtt.Client(
            cfg.host,
            cfg.port,
            username=cfg.username,
            password=cfg.password,
            identifier=self.identifier,
            will=will,
            keepalive=cfg.keepalive_s,
            timeout=max(2.0, float(cfg.keepalive_s)),
            tls_context=tls,
            logger=log,
        )
        # The window of concurrent publishes is ours by design: no warning for it (aiomqtt warns above 10).
        client.pending_calls_threshold = WINDOW + 16
        return client

    async def _run(self) -> None:
        backoff_s = self.reconnect_min_s
        while not self._closing:
            try:
                client = self._client()
                async with client:
                    self._connected.set()
                    self.stats.connects += 1
                    self.last_error = None
                    backoff_s = self.reconnect_min_s
                    log.info("feed: connected to %s:%s", self.config.host, self.config.port)
                    await self._serve(client)
                    return  # closing: everything sent
            except aiomqtt.MqttError as exc:
                self._lost(exc)
            except (OSError, ssl.SSLError, ValueError) as exc:  # TLS set-up or socket errors outside aiomqtt's net
                self._lost(exc)
            finally:
                self._connected.clear()
            if self._closing:
                return
            # Wake early only to leave: a new payload does not shorten the backoff.
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2.0, self.reconnect_max_s)

    def _lost(self, exc: BaseException) -> None:
        was_connected = self._connected.is_set()
        reason = str(exc) or type(exc).__name__
        if was_connected:
            log.warning("feed: connection to the broker lost: %s", reason)
        elif self.last_error != reason:
            log.info("feed: broker at %s:%s not reachable: %s", self.config.host, self.config.port, reason)
        if not was_connected:
            self.stats.connect_failures += 1
        self.last_error = reason

    async def _serve(self, client: aiomqtt.Client) -> None:
        """One connection: status online, queued events, every retained state again, then whatever comes."""
        await self._send(client, self.topics.status(), self._status("online"), retain=True)
        await self._send_events(client)
        if self._sent:
            stale = {t: b for t, b in self._sent.items() if t not in self._pending}
            await self._send_many(client, list(stale.items()), retain=True)
            self.stats.republished += len(stale)
        disconnected = _disconnected_future(client)
        while True:
            await self._send_events(client)
            await self._send_states(client)
            if self._closing:
                await self._send(client, self.topics.status(), self._status("offline"), retain=True)
                return
            if self._pending or len(self._events):
                continue
            self._wake.clear()
            waiter = asyncio.ensure_future(self._wake.wait())
            quiet_s = self.interval_s - (time.monotonic() - self._last_send_s)
            try:
                waits: set[asyncio.Future[Any]] = {waiter}
                if disconnected is not None:
                    waits.add(disconnected)
                done, _ = await asyncio.wait(waits, timeout=max(quiet_s, 0.0), return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
            if disconnected is not None and disconnected.done():
                exc = disconnected.exception() if not disconnected.cancelled() else None
                raise aiomqtt.MqttError(f"disconnected: {exc or 'by the broker'}")
            if not done:
                # A quiet interval (an idle line): the status again, so a display can tell idle from gone.
                await self._send(client, self.topics.status(), self._status("online"), retain=True)
                self.stats.heartbeats += 1

    async def _send_events(self, client: aiomqtt.Client) -> None:
        topic = self.topics.events()
        while batch := self._events.peek(WINDOW):
            # Removed only once the whole window is acknowledged: a lost connection resends it (at least once).
            await self._send_many(client, [(topic, data) for data in batch], retain=False)
            self._events.pop(len(batch))
            self.stats.events_sent += len(batch)

    async def _send_states(self, client: aiomqtt.Client) -> None:
        while self._pending:
            topics = list(self._pending)[:WINDOW]
            batch = [(t, self._pending.pop(t).to_json()) for t in topics]
            try:
                await self._send_many(client, batch, retain=True)
            except BaseException:
                for t, data in batch:  # not known to be sent: send again unless a newer state came meanwhile
                    if t not in self._pending:
                        self._sent[t] = data
                raise
            self._sent.update(batch)

    async def _send_many(self, client: aiomqtt.Client, batch: list[tuple[str, bytes]], *, retain: bool) -> None:
        results = await asyncio.gather(
            *(self._send(client, t, data, retain=retain) for t, data in batch), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _send(self, client: aiomqtt.Client, topic: str, data: bytes, *, retain: bool) -> None:
        await client.publish(topic, data, qos=1, retain=retain)
        self._last_send_s = time.monotonic()
        self.stats.messages += 1
        self.stats.bytes += len(data)


def _disconnected_future(client: aiomqtt.Client) -> asyncio.Future[None] | None:
    """aiomqtt's future that completes when the connection drops; None if this version has none.

    A publisher that has nothing to send would otherwise notice a lost broker only at its next publish, and so
    republish late; aiomqtt 2.x keeps this future privately (pinned to <3 in pyproject).
    """
    fut = getattr(client, "_disconnected", None)
    return fut if isinstance(fut, asyncio.Future) else None


def event(
    kind: str, code: str, message: str, *, severity: str = "info", ts: datetime | None = None, **keys: Any
) -> FeedEvent:
    """A FeedEvent (``kind`` is alarm | step | run_end | job_end), stamped now unless ``ts`` is given."""
    return FeedEvent(
        event=kind,  # type: ignore[arg-type]
        code=code,
        message=message,
        severity=severity,  # type: ignore[arg-type]
        ts=ts or utc_now(),
        **keys,
    )
