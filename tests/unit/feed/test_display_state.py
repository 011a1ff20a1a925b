"""The wall display's picture of a line (FeedView): built from feed messages alone, newest wins, stale when it
should be."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from formation.feed import (
    CabinetState,
    ChamberState,
    ChannelState,
    FeedEvent,
    OrchestratorStatus,
    TopicKind,
    Topics,
    example_payloads,
    state_counts,
)
from formation.feed.display import STALE_INTERVALS, DisplayServer, FeedView
from formation.feed.display.state import ALARMS_KEPT, MIN_STALE_S, TREND_WINDOW_S

T0 = datetime(2025, 3, 14, 9, 0, 0, tzinfo=UTC)
TOPICS = Topics("site-a", "line-1")


def _view() -> FeedView:
    view = FeedView("site-a", "line-1", default_interval_s=15.0)
    view.started_s = 0.0
    view.set_broker(True)
    return view


def _cabinet(states: list[str], ts: datetime, name: str = "cab1", volts: float = 3.5) -> CabinetState:
    n = len(states)
    return CabinetState(
        ts=ts,
        cabinet=name,
        channels=list(range(1, n + 1)),
        state=states,  # type: ignore[arg-type]
        step_index=[1] * n,
        step_id=["form"] * n,
        step_kind=["charge"] * n,
        cell_id=[f"C{i}" for i in range(1, n + 1)],
        voltage_v=[volts] * n,
        current_a=[1.0] * n,
        temperature_c=[25.0] * n,
        counts=state_counts(states),  # type: ignore[arg-type]
    )


def _channel(channel: int, state: str, ts: datetime, step: str = "rest") -> ChannelState:
    return ChannelState(ts=ts, cabinet="cab1", channel=channel, state=state, step_index=2, step_id=step)  # type: ignore[arg-type]


def _status(state: str, ts: datetime = T0, interval_s: float | None = 5.0) -> OrchestratorStatus:
    return OrchestratorStatus(ts=ts, state=state, version="0.1.0", started=T0, interval_s=interval_s)  # type: ignore[arg-type]


def test_a_channel_message_newer_than_the_cabinet_state_wins_and_an_older_one_does_not() -> None:
    view = _view()
    parts = view.apply(TOPICS.cabinet("cab1"), _cabinet(["running"] * 4, T0).to_json(), 1.0)
    assert parts == {("cabinets", "cab1")}
    view.apply(TOPICS.channel("cab1", 2), _channel(2, "faulted", T0 + timedelta(seconds=1)).to_json(), 2.0)
    view.apply(TOPICS.channel("cab1", 3), _channel(3, "done", T0 - timedelta(seconds=1)).to_json(), 2.0)
    cab = view.part(("cabinets", "cab1"), 2.0)
    assert cab["channels"] == [1, 2, 3, 4]
    assert cab["state"] == ["running", "faulted", "running", "running"]
    assert cab["step_id"] == ["form", "rest", "form", "form"]
    assert cab["counts"] == {"running": 3, "faulted": 1}
    # The next cabinet state is newer than the channel message: it holds the channel's latest state again.
    view.apply(TOPICS.cabinet("cab1"), _cabinet(["done"] * 4, T0 + timedelta(seconds=5)).to_json(), 3.0)
    assert view.part(("cabinets", "cab1"), 3.0)["state"] == ["done"] * 4
    assert view.cabinets["cab1"].channels == {}


def test_channels_alone_make_a_cabinet_and_on_one_topic_the_last_message_wins_whatever_its_ts() -> None:
    view = _view()
    alone = _channel(7, "running", T0).model_copy(update={"cabinet": "cab9"})
    view.apply(TOPICS.channel("cab9", 7), alone.to_json(), 1)
    assert view.part(("cabinets", "cab9"), 1)["channels"] == [7]
    # A restarted orchestrator whose clock is behind: its states still replace the old ones.
    view.apply(TOPICS.cabinet("cab1"), _cabinet(["running"], T0 + timedelta(seconds=9)).to_json(), 1)
    assert view.apply(TOPICS.cabinet("cab1"), _cabinet(["done"], T0).to_json(), 2) == {("cabinets", "cab1")}
    assert view.part(("cabinets", "cab1"), 2)["state"] == ["done"]
    behind = _channel(7, "faulted", T0 - timedelta(hours=1)).model_copy(update={"cabinet": "cab9"})
    view.apply(TOPICS.channel("cab9", 7), behind.to_json(), 3)
    assert view.part(("cabinets", "cab9"), 3)["state"] == ["faulted"]


def test_an_empty_retained_payload_removes_what_the_topic_held() -> None:
    view = _view()
    examples = example_payloads()
    view.apply(TOPICS.cabinet("cab1"), examples[TopicKind.CABINET].to_json(), 1)
    view.apply(TOPICS.chamber("ageing-1"), examples[TopicKind.CHAMBER].to_json(), 1)
    view.apply(TOPICS.rack("R07"), examples[TopicKind.RACK].to_json(), 1)
    view.apply(TOPICS.grading("L2025-03-A"), examples[TopicKind.GRADING].to_json(), 1)
    view.apply(TOPICS.status(), examples[TopicKind.STATUS].to_json(), 1)
    snap = view.snapshot(1)
    assert set(snap["cabinets"]) == {"cab1"} and set(snap["chambers"]) == {"ageing-1"}
    assert snap["racks"]["R07"]["progress_pct"] == 10.0
    assert snap["lots"]["L2025-03-A"]["counts"] == {"A": 230, "B": 18, "C": 5, "NG": 3}
    for topic in (TOPICS.cabinet("cab1"), TOPICS.chamber("ageing-1"), TOPICS.rack("R07"), TOPICS.grading("L2025-03-A")):
        assert view.apply(topic, b"", 2)
    assert view.apply(TOPICS.status(), b"", 2) == {("status", ""), ("health", "")}
    snap = view.snapshot(2)
    assert (snap["cabinets"], snap["chambers"], snap["racks"], snap["lots"], snap["status"]) == ({}, {}, {}, {}, None)
    patch = view.patch({("cabinets", "cab1"), ("alarms", "")}, 2)
    assert patch == {"cabinets": {"cab1": None}, "alarms": []}


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        (TOPICS.cabinet("cab1"), b"{not json", "Invalid JSON"),
        (TOPICS.cabinet("cab1"), b'{"v": 2, "kind": "cabinet"}', "v"),
        (TOPICS.chamber("other"), example_payloads()[TopicKind.CHAMBER].to_json(), "payload names 'ageing-1'"),
        (TOPICS.channel("cab1", 9), example_payloads()[TopicKind.CHANNEL].to_json(), "payload is channel 3"),
    ],
    ids=["not-json", "wrong-version", "name-mismatch", "channel-mismatch"],
)
def test_a_payload_that_does_not_fit_its_model_is_counted_and_changes_nothing(
    topic: str, payload: bytes, reason: str
) -> None:
    view = _view()
    assert view.apply(topic, payload, 1) == {("bad", "")}
    assert view.bad_messages == 1 and reason in (view.last_bad or "")
    assert view.cabinets == {} and view.chambers == {}
    assert view.part(("bad", ""), 1)["count"] == 1


def test_topics_of_other_lines_and_outside_the_tree_are_ignored() -> None:
    view = _view()
    other = Topics("site-a", "line-2")
    assert view.apply(other.cabinet("cab1"), _cabinet(["running"], T0).to_json(), 1) == set()
    assert view.apply("formation/v1/site-a/line-1/unknown/x", b"{}", 1) == set()
    assert view.messages == 0 and view.cabinets == {}


def test_alarms_and_other_events_are_kept_newest_first_and_bounded() -> None:
    view = _view()
    for i in range(ALARMS_KEPT + 5):
        ev = FeedEvent(ts=T0 + timedelta(seconds=i), event="alarm", code=f"a{i}", message="m", severity="warning")
        view.apply(TOPICS.events(), ev.to_json(), i)
    step = FeedEvent(ts=T0, event="step", code="step", message="cell C1 starts form")
    assert view.apply(TOPICS.events(), step.to_json(), 99) == {("events", "")}
    alarms = view.part(("alarms", ""), 99)
    assert len(alarms) == ALARMS_KEPT and alarms[0]["code"] == f"a{ALARMS_KEPT + 4}"
    assert [e["code"] for e in view.part(("events", ""), 99)] == ["step"]


def test_the_chamber_trend_keeps_the_last_window_and_restarts_when_time_goes_back() -> None:
    view = _view()
    base = example_payloads()[TopicKind.CHAMBER]
    assert isinstance(base, ChamberState)
    step_s = 60.0
    count = int(TREND_WINDOW_S / step_s) + 10
    for i in range(count):
        msg = base.model_copy(update={"ts": T0 + timedelta(seconds=i * step_s), "temperature_c": 45.0 + i / 100})
        view.apply(TOPICS.chamber("ageing-1"), msg.to_json(), i)
    trend = view.part(("chambers", "ageing-1"), 0)["trend"]
    assert trend[-1][0] - trend[0][0] <= TREND_WINDOW_S
    assert len(trend) == int(TREND_WINDOW_S / step_s) + 1
    assert trend[-1][1] == pytest.approx(45.0 + (count - 1) / 100)
    assert trend[-1][0] == (T0 + timedelta(seconds=(count - 1) * step_s)).timestamp()
    older = base.model_copy(update={"ts": T0, "temperature_c": 10.0})
    view.apply(TOPICS.chamber("ageing-1"), older.to_json(), 99)
    after = view.part(("chambers", "ageing-1"), 99)
    assert after["temperature_c"] == 10.0 and after["trend"] == [[T0.timestamp(), 10.0, 45.0]]


def test_health_waits_then_goes_stale_on_silence_offline_status_or_a_lost_broker() -> None:
    view = FeedView("site-a", "line-1", default_interval_s=15.0)
    view.started_s = 0.0
    assert view.health(1.0).stale and "broker" in view.health(1.0).reason  # not connected yet
    view.set_broker(True)
    health = view.health(10.0)
    assert not health.stale and health.reason == "waiting for the feed"
    assert view.health(46.0).stale and "no message from the feed" in view.health(46.0).reason
    # The status names the interval: 5 s, so stale after 3 × 5 s without a message.
    view.apply(TOPICS.status(), _status("online").to_json(), 100.0)
    assert not view.health(100.0 + STALE_INTERVALS * 5.0 - 0.1).stale
    late = view.health(100.0 + STALE_INTERVALS * 5.0 + 0.1)
    assert late.stale and late.reason == "feed silent for 15 s" and late.threshold_s == 15.0
    view.apply(TOPICS.status(), _status("offline", T0 + timedelta(minutes=1)).to_json(), 120.0)
    offline = view.health(120.0)
    assert offline.stale and offline.online is False
    assert offline.reason == "orchestrator offline since 2025-03-14 09:01:00 UTC"
    view.apply(TOPICS.status(), _status("online").to_json(), 130.0)
    assert not view.health(130.0).stale
    view.set_broker(False, "lost broker 127.0.0.1:1883 (refused)")
    lost = view.health(130.0)
    assert lost.stale and lost.reason == "display: lost broker 127.0.0.1:1883 (refused)"


def test_data_without_a_status_is_stale_and_the_default_interval_applies() -> None:
    view = _view()
    view.apply(TOPICS.cabinet("cab1"), _cabinet(["running"], T0).to_json(), 1.0)
    health = view.health(2.0)
    assert health.stale and health.reason == "no orchestrator status on the feed" and health.threshold_s == 45.0
    view.apply(TOPICS.status(), _status("online", interval_s=None).to_json(), 3.0)
    assert not view.health(3.0 + 44.0).stale and view.health(3.0 + 46.0).stale


def test_the_snapshot_is_plain_json_with_every_section() -> None:
    view = _view()
    for kind, payload in example_payloads().items():
        name = {
            TopicKind.STATUS: TOPICS.status(),
            TopicKind.CABINET: TOPICS.cabinet("cab1"),
            TopicKind.CHANNEL: TOPICS.channel("cab1", 3),
            TopicKind.CHAMBER: TOPICS.chamber("ageing-1"),
            TopicKind.RACK: TOPICS.rack("R07"),
            TopicKind.GRADING: TOPICS.grading("L2025-03-A"),
            TopicKind.EVENTS: TOPICS.events(),
        }[kind]
        assert view.apply(name, payload.to_json(), 1.0), kind
    snap = json.loads(json.dumps(view.snapshot(2.0), allow_nan=False))
    assert snap["site"] == "site-a" and snap["line"] == "line-1"
    assert snap["status"]["state"] == "online" and snap["health"]["stale"] is False
    assert snap["cabinets"]["cab1"]["state"] == ["running", "running", "done", "idle"]
    chamber_ts = example_payloads()[TopicKind.CHAMBER].ts.timestamp()
    assert snap["chambers"]["ageing-1"]["trend"] == [[chamber_ts, 44.87, 45.0]]
    assert snap["alarms"][0]["code"] == "over_temperature" and snap["bad"] == {"count": 0, "last": None}


def test_the_servers_patch_is_the_views_patch_and_follows_every_change() -> None:
    view = _view()
    server = DisplayServer(view, b"", "127.0.0.1", 0, lambda: 5.0)
    for kind, payload in example_payloads().items():
        if kind is not TopicKind.CHANNEL:
            topic = {
                TopicKind.STATUS: TOPICS.status(),
                TopicKind.CABINET: TOPICS.cabinet("cab1"),
                TopicKind.CHAMBER: TOPICS.chamber("ageing-1"),
                TopicKind.RACK: TOPICS.rack("R07"),
                TopicKind.GRADING: TOPICS.grading("L2025-03-A"),
                TopicKind.EVENTS: TOPICS.events(),
            }[kind]
            server.notify(view.apply(topic, payload.to_json(), 1.0))
    parts = view.parts()
    assert json.loads(server.patch_json(parts)) == json.loads(json.dumps(view.patch(parts, 5.0)))
    # A part's JSON is made once and kept until the part changes.
    first = server.patch_json({("cabinets", "cab1")})
    changed = view.apply(TOPICS.channel("cab1", 4), _channel(4, "faulted", datetime.now(UTC)).to_json(), 2.0)
    assert json.loads(server.patch_json({("cabinets", "cab1")})) == json.loads(first)  # not told yet
    server.notify(changed)
    after = json.loads(server.patch_json({("cabinets", "cab1")}))
    assert after["cabinets"]["cab1"]["state"] == ["running", "running", "done", "faulted"]


def test_a_very_short_feed_interval_still_allows_the_least_silence() -> None:
    view = _view()
    view.apply(TOPICS.status(), _status("online", interval_s=0.1).to_json(), 10.0)
    assert view.health(10.0 + MIN_STALE_S - 0.1).stale is False
    assert view.health(10.0 + MIN_STALE_S + 0.1).stale is True
