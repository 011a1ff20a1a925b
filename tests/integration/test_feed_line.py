"""The feed of a real run: simulated cabinet and chamber over TCP, the supervisor and chamber loop publishing
through FeedPublisher to the real Mosquitto on 127.0.0.1:1883."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from formation.config import MqttConfig
from formation.feed import FeedPublisher, TopicKind, Topics, parse_payload, parse_topic
from formation.feed.payloads import CabinetState, ChamberState, ChannelState, OrchestratorStatus
from formation.orchestrator.cabinet import CabinetSupervisor
from formation.store import Store
from tests.integration.feed_support import CELLS, clear_retained, entries, free_port, listen, run_fed_job, unique_topics


@pytest.fixture
async def line_topics(mqtt_broker: tuple[str, int]) -> AsyncIterator[Topics]:
    topics = unique_topics()
    yield topics
    await clear_retained(*mqtt_broker, topics)


async def test_a_late_subscriber_gets_every_cabinet_channel_and_chamber_state_at_once(
    tmp_path: Path, mqtt_broker: tuple[str, int], line_topics: Topics
) -> None:
    host, port = mqtt_broker
    broker = MqttConfig(host=host, port=port, interval_s=0.2, keepalive_s=5)
    seen: dict[str, object] = {}

    async def late_subscriber(sup: CabinetSupervisor, feed: FeedPublisher) -> None:
        # Joins once the run is under way (cells on their first step) and the chamber loop has stepped.
        while not (feed.stats.messages > CELLS + 2 and any(r.step_index >= 0 for r in sup.runs)):
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        t0 = time.monotonic()
        heard = await listen(host, port, line_topics.all, 1.0)
        seen["heard"], seen["t0"] = heard, t0

    with Store(f"sqlite:///{tmp_path / 'feed.db'}") as store:
        store.create_schema()
        sup, feed = await run_fed_job(store, broker, line_topics, scale=3000.0, during=late_subscriber)
    heard = seen["heard"]
    retained = heard.retained  # type: ignore[attr-defined]
    expected = {line_topics.status(), line_topics.cabinet("cab"), line_topics.chamber("ch1")}
    expected |= {line_topics.channel("cab", ch) for ch in range(1, CELLS + 1)}
    assert expected <= set(retained), sorted(expected - set(retained))
    # "At once": the broker hands the whole retained tree over as soon as the subscription is made.
    latest = max(heard.first_at[t] for t in expected)  # type: ignore[attr-defined]
    assert latest - seen["t0"] < 0.5  # type: ignore[operator]
    for topic, payload in retained.items():
        ref = parse_topic(topic)
        assert ref is not None and ref.site == line_topics.site
        model = parse_payload(ref.kind, payload)  # validates against the documented model
        assert json.loads(payload)["v"] == 1
        match model:
            case OrchestratorStatus():
                assert model.state == "online" and model.interval_s == 0.2
            case CabinetState():
                assert model.channels == list(range(1, CELLS + 1))
                assert set(model.cell_id) == {e.cell_id for e in entries()}
                assert sum(model.counts.values()) == CELLS
            case ChannelState():
                assert model.cabinet == "cab" and model.cell_id == f"F-{model.channel:03d}"
                assert model.step_id in ("c1", "r1")
            case ChamberState():
                assert model.chamber == "ch1" and len(model.temperatures_c) == 4 and model.band_c == 0.5
            case _:
                assert ref.kind in (TopicKind.EVENTS,), ref
    assert all(r.state.value == "done" for r in sup.runs)
    assert feed.stats.connects == 1 and feed.events_waiting == 0
    # After the run the retained tree says what became of it: every channel done, the orchestrator offline.
    after = await listen(host, port, line_topics.all, 0.5)
    states = {t: parse_payload(parse_topic(t).kind, p) for t, (p, _) in after.messages.items() if p}  # type: ignore[union-attr]
    assert all(states[line_topics.channel("cab", ch)].state == "done" for ch in range(1, CELLS + 1))  # type: ignore[attr-defined]
    assert states[line_topics.status()].state == "offline"  # type: ignore[attr-defined]


@pytest.mark.e2e  # two runs compared within 2 %: scheduling jitter of a loaded machine must stay below that
async def test_a_run_with_the_broker_unreachable_stores_the_same_samples_and_step_results(
    tmp_path: Path, mqtt_broker: tuple[str, int], line_topics: Topics
) -> None:
    """Same seed, once publishing to the broker and once with no broker on the port from the start."""
    host, port = mqtt_broker
    stored = []
    for name, broker in (
        ("with", MqttConfig(host=host, port=port, interval_s=0.2)),
        ("without", MqttConfig(host="127.0.0.1", port=free_port(), interval_s=0.2)),
    ):
        with Store(f"sqlite:///{tmp_path / f'{name}.db'}") as store:
            store.create_schema()
            sup, feed = await run_fed_job(store, broker, line_topics, scale=1500.0)
            results = store.step_results(job_id=sup.job_id)
            samples = {r.cell_id: store.samples(r.run_id) for r in sup.runs}
        stored.append((feed, results, samples))
    (fed, results_a, samples_a), (unfed, results_b, samples_b) = stored
    assert fed.stats.connects == 1 and fed.stats.messages > 0
    assert unfed.stats.connects == 0 and unfed.stats.connect_failures > 0 and unfed.stats.messages == 0
    assert unfed.events_waiting > 0  # its events were kept for a broker that never came
    key = ["cell_id", "step_id"]
    a = results_a.sort_values(key).reset_index(drop=True)
    b = results_b.sort_values(key).reset_index(drop=True)
    assert list(a[key].itertuples(index=False)) == list(b[key].itertuples(index=False))
    assert list(a["end_reason"]) == list(b["end_reason"])
    # The simulated plant runs on a scaled wall clock, so two runs of one seed differ by scheduling jitter alone:
    # measured at ×3000 on a quiet machine without any broker, run to run, ±0.2 % in Ah and step duration and ±3
    # samples of ~146 per cell; more on a loaded machine (its integration steps follow the wall). The feed, present
    # or absent, must stay inside 2 % and 5 %.
    assert np.allclose(a["ah"], b["ah"], rtol=0.02, atol=1e-3), (list(a["ah"]), list(b["ah"]))
    assert np.allclose(a["duration_s"], b["duration_s"], rtol=0.02), (list(a["duration_s"]), list(b["duration_s"]))
    for cell, sa in samples_a.items():
        sb = samples_b[cell]
        assert abs(len(sa) - len(sb)) <= 0.05 * len(sa), (cell, len(sa), len(sb))
        for index in (0, 1):  # where each step ended (the first rest samples follow the relaxation's steep start)
            va, vb = (s[s["step_index"] == index]["voltage_v"] for s in (sa, sb))
            assert abs(va.iloc[-1] - vb.iloc[-1]) < 0.005, (cell, index, va.iloc[-1], vb.iloc[-1])
