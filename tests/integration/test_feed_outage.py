"""The feed when things go wrong: a publisher killed with SIGKILL, and a broker restarted during a run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import numpy as np
import pytest

from formation.config import MqttConfig
from formation.feed import FeedPublisher, Topics, parse_payload, parse_topic
from formation.feed.payloads import FeedEvent, LotGrading, OrchestratorStatus
from formation.orchestrator.cabinet import CabinetSupervisor
from formation.store import Store
from tests.integration.feed_support import (
    CELLS,
    PrivateBroker,
    clear_retained,
    listen,
    private_broker,  # noqa: F401  (a fixture)
    run_fed_job,
    unique_topics,
)

PUBLISHER = """
import asyncio, sys
from formation.config import MqttConfig
from formation.feed import FeedPublisher
from formation.feed.payloads import ChannelState

async def main() -> None:
    host, port, site, line, keepalive = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
    async with FeedPublisher(MqttConfig(host=host, port=port, keepalive_s=keepalive), site, line) as feed:
        feed.publish_channel(ChannelState(cabinet="cab", channel=1, state="running"))
        if await feed.wait_connected(10):
            while feed.stats.messages < 2:
                await asyncio.sleep(0.01)
            print("publishing", flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.fixture
async def topics(mqtt_broker: tuple[str, int]) -> AsyncIterator[Topics]:
    t = unique_topics()
    yield t
    await clear_retained(*mqtt_broker, t)


async def _status(host: str, port: int, topics: Topics) -> OrchestratorStatus | None:
    heard = await listen(host, port, topics.status(), 0.15)
    payload = heard.retained.get(topics.status())
    return OrchestratorStatus.model_validate_json(payload) if payload else None


async def test_a_killed_publisher_turns_offline_within_the_keepalive_window(
    mqtt_broker: tuple[str, int], topics: Topics
) -> None:
    host, port = mqtt_broker
    keepalive_s = 2
    proc = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER, host, str(port), topics.site, topics.line, str(keepalive_s)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "publishing"
        online = await _status(host, port, topics)
        assert online is not None and online.state == "online" and online.pid == proc.pid
        proc.kill()  # SIGKILL: no clean disconnect, no offline message from the process itself
        killed_at = time.monotonic()
        proc.wait(timeout=10)
        status = online
        while status is not None and status.state == "online" and time.monotonic() - killed_at < 3 * keepalive_s:
            status = await _status(host, port, topics)
        took_s = time.monotonic() - killed_at
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert status is not None and status.state == "offline", status
    assert status.pid == proc.pid and status.started == online.started  # the will registered by that process
    assert took_s <= 1.5 * keepalive_s + 0.5, took_s


class Subscriber:
    """A subscriber with a persistent session (clean_session off, QoS 1) that reconnects while the broker is down:
    the broker keeps what is published for it meanwhile."""

    def __init__(self, port: int, pattern: str) -> None:
        self.port, self.pattern = port, pattern
        self.heard: list[tuple[float, str, bytes]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Subscriber:
        self._task = asyncio.create_task(self._run(), name="persistent-subscriber")
        while not self.heard:  # subscribed once the line's first message is in
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        subscribed = False
        while True:
            try:
                client = aiomqtt.Client("127.0.0.1", self.port, identifier=f"sub-{os.getpid()}-{id(self)}",
                                        clean_session=False)  # fmt: skip
                async with client:
                    if not subscribed:
                        await client.subscribe(self.pattern, qos=1)
                        subscribed = True
                    async for m in client.messages:
                        payload = m.payload if isinstance(m.payload, bytes) else b""
                        self.heard.append((time.monotonic(), str(m.topic), payload))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.05)


async def test_a_broker_restart_during_a_run_loses_no_alarm_and_republishes_the_retained_state(
    tmp_path: Path,
    private_broker: PrivateBroker,  # noqa: F811
) -> None:
    topics = unique_topics()
    broker = MqttConfig(host="127.0.0.1", port=private_broker.port, interval_s=0.2, keepalive_s=5)
    marks: dict[str, float] = {}
    alarms = [f"raised during the outage #{i}" for i in range(5)]

    async def outage(sup: CabinetSupervisor, feed: FeedPublisher) -> None:
        async with Subscriber(private_broker.port, topics.all) as sub:
            # A retained topic that no longer changes: after the restart only a republish can bring it back.
            feed.publish_grading(LotGrading.from_counts("LOT-F", {"A": 6, "NG": 2}))
            while feed.stats.messages < CELLS + 4:
                await asyncio.sleep(0.01)
            await asyncio.to_thread(private_broker.stop)
            while feed.connected:
                await asyncio.sleep(0.01)
            for text in alarms:  # the supervisor's own alarm path: store and feed
                await sup.ledger.alarm("warning", "outage_test", text)
            assert feed.events_waiting >= len(alarms)
            await asyncio.sleep(1.0)
            marks["up"] = await asyncio.to_thread(private_broker.start)
            await feed.wait_connected(10.0)
            marks["back"] = time.monotonic()
            while feed.events_waiting:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.5)
        marks["sub"] = sub.heard  # type: ignore[assignment]

    with Store(f"sqlite:///{tmp_path / 'outage.db'}") as store:
        store.create_schema()
        sup, feed = await run_fed_job(store, broker, topics, scale=1000.0, during=outage)
        stored_alarms = {a.message for a in store.alarms()}
        recs = np.sort(np.concatenate([store.samples(r.run_id)["rec"].to_numpy() for r in sup.runs]))
    heard: list[tuple[float, str, bytes]] = marks["sub"]  # type: ignore[assignment]
    assert marks["back"] - marks["up"] < 5.0, marks
    assert feed.stats.connects == 2 and feed.stats.republished > 0
    # No alarm lost: every alarm raised while the broker was down reached the subscriber, and the event numbers
    # have no gap from the first to the last.
    events = [FeedEvent.model_validate_json(p) for _, t, p in heard if t == topics.events()]
    assert set(alarms) <= {e.message for e in events if e.event == "alarm"}
    assert set(alarms) <= stored_alarms
    seqs = sorted({e.seq for e in events if e.seq is not None})
    assert seqs == list(range(seqs[0], seqs[-1] + 1)), seqs
    # Retained state republished: after the restart the subscriber heard every state topic again, status online.
    after = {t: p for when, t, p in heard if when >= marks["up"]}
    expected = {topics.cabinet("cab"), topics.chamber("ch1"), *(topics.channel("cab", c) for c in range(1, CELLS + 1))}
    expected.add(topics.grading("LOT-F"))
    assert expected <= set(after), sorted(expected - set(after))
    assert json.loads(after[topics.status()])["state"] == "online"
    for topic in expected:
        ref = parse_topic(topic)
        assert ref is not None
        parse_payload(ref.kind, after[topic])
    assert all(r.state.value == "done" for r in sup.runs)
    # The run itself never noticed: every record stored once, none missing.
    assert len(np.unique(recs)) == len(recs) and np.array_equal(recs, np.arange(recs[0], recs[0] + len(recs)))


class SturdySubscriber(Subscriber):
    """The persistent subscriber, reconnecting whatever the connection fails with (a broker restarted again and
    again resets sockets in more ways than one), and subscribing again each time (harmless with a kept session)."""

    async def _run(self) -> None:
        while True:
            try:
                client = aiomqtt.Client("127.0.0.1", self.port, identifier=f"sub-{os.getpid()}-{id(self)}",
                                        clean_session=False)  # fmt: skip
                async with client:
                    await client.subscribe(self.pattern, qos=1)
                    async for m in client.messages:
                        payload = m.payload if isinstance(m.payload, bytes) else b""
                        self.heard.append((time.monotonic(), str(m.topic), payload))
            except (aiomqtt.MqttError, OSError):
                await asyncio.sleep(0.05)


@pytest.mark.e2e  # ~7-13 s: three outages, each waited out until the feed has noticed and reconnected
async def test_a_flapping_broker_leaves_the_run_alone_and_delivers_every_event(
    tmp_path: Path,
    private_broker: PrivateBroker,  # noqa: F811
) -> None:
    """The broker stopped and started three times during a run: the cells finish, no sample is lost, and every
    alarm raised while it was down reaches a persistent subscriber, the event numbers without a gap."""
    topics = unique_topics()
    broker = MqttConfig(host="127.0.0.1", port=private_broker.port, interval_s=0.2, keepalive_s=5)
    flaps = 3
    alarms = [f"raised during outage {i}" for i in range(flaps)]
    marks: dict[str, object] = {}

    async def flapping(sup: CabinetSupervisor, feed: FeedPublisher) -> None:
        async with SturdySubscriber(private_broker.port, topics.all) as sub:
            while feed.stats.messages < CELLS + 2:
                await asyncio.sleep(0.01)
            for text in alarms:
                await asyncio.to_thread(private_broker.stop)
                while feed.connected:
                    await asyncio.sleep(0.01)
                await sup.ledger.alarm("warning", "outage_test", text)
                await asyncio.sleep(0.2)
                await asyncio.to_thread(private_broker.start)
                assert await feed.wait_connected(10.0)
            while feed.events_waiting:
                await asyncio.sleep(0.01)
            deadline = time.monotonic() + 10.0  # until the subscriber has heard the last alarm, or give up
            while time.monotonic() < deadline and not any(alarms[-1].encode() in p for _, _, p in sub.heard):
                await asyncio.sleep(0.05)
        marks["sub"] = sub.heard

    with Store(f"sqlite:///{tmp_path / 'flap.db'}") as store:
        store.create_schema()
        sup, feed = await run_fed_job(store, broker, topics, scale=1000.0, during=flapping)
        stored = {a.message for a in store.alarms()}
        recs = np.sort(np.concatenate([store.samples(r.run_id)["rec"].to_numpy() for r in sup.runs]))
        comm = [a.code for a in store.alarms(job_id=sup.job_id) if a.code.startswith("comm_")]
    heard: list[tuple[float, str, bytes]] = marks["sub"]  # type: ignore[assignment]
    # Formation unaffected: every channel done, no communication alarm, the records one unbroken run.
    assert all(r.state.value == "done" for r in sup.runs), [(r.state, r.end_reason) for r in sup.runs]
    assert not comm, comm
    assert len(np.unique(recs)) == len(recs) and np.array_equal(recs, np.arange(recs[0], recs[0] + len(recs)))
    # The feed reconnected after each outage and delivered every alarm, in an unbroken run of event numbers.
    assert feed.stats.connects == 1 + flaps
    events = [FeedEvent.model_validate_json(p) for _, t, p in heard if t == topics.events()]
    assert set(alarms) <= {e.message for e in events if e.event == "alarm"}
    assert set(alarms) <= stored
    seqs = sorted({e.seq for e in events if e.seq is not None})
    assert seqs == list(range(seqs[0], seqs[-1] + 1)), seqs
