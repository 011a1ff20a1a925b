"""What the wall display knows: the latest retained state of one line's feed, recent events, chamber trends.

Pure (no I/O): :class:`FeedView` takes each received message with the display's own monotonic time and answers
which parts of the page changed; the server turns those parts into JSON for the browsers. Everything here comes
from the feed; the display never reads the database.

On one topic the message received last wins: MQTT keeps one publisher's messages on a topic in order (the
retained one first), and a ``ts`` may step back when an orchestrator restarts on a host whose clock did. A cabinet's
channels come from two topics, though: the whole-cabinet state every feed interval and one channel's state on a
change of run state or step. Between those two the newer (by ``ts``) wins per channel, so a channel that changes
between two cabinet states shows the change at once and an old retained channel message never hides a newer
cabinet state.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from formation.feed.payloads import (
    CabinetState,
    ChamberState,
    ChannelState,
    FeedEvent,
    FeedPayload,
    LotGrading,
    OrchestratorStatus,
    RackState,
    parse_payload,
)
from formation.feed.topics import TopicKind, Topics, parse_topic

#: The feed interval assumed until the status payload names one (seconds).
DEFAULT_INTERVAL_S = 15.0
#: The feed is stale after this many feed intervals without any message, and never sooner than MIN_STALE_S (a very
#: short interval would make the verdict flicker with the network's jitter).
STALE_INTERVALS = 3.0
MIN_STALE_S = 2.0
#: How much chamber history the trend keeps (seconds of payload time) and its finest spacing.
TREND_WINDOW_S = 30 * 60.0
TREND_MIN_STEP_S = 2.0
#: Recent alarms and other events kept for the page.
ALARMS_KEPT = 20
EVENTS_KEPT = 30

#: The columns of a cabinet's view, as the browser receives them (those of :class:`CabinetState`).
VIEW_COLUMNS = ("state", "step_index", "step_id", "step_kind", "cell_id", "voltage_v", "current_a", "temperature_c")

#: A part of the page: (section, name); name is "" for the sections that are one thing (status, alarms, …).
Part = tuple[str, str]


@dataclass(frozen=True)
class Health:
    """Whether the page may be trusted: stale (and why) when the orchestrator is offline or the feed is silent."""

    stale: bool
    reason: str
    online: bool | None
    silence_s: float | None
    threshold_s: float

    def to_json(self) -> dict[str, Any]:
        """The health as the browser receives it."""
        silence = None if self.silence_s is None else round(self.silence_s, 1)
        return {
            "stale": self.stale,
            "reason": self.reason,
            "online": self.online,
            "silence_s": silence,
            "threshold_s": self.threshold_s,
        }


@dataclass
class _Cabinet:
    """One cabinet: its latest whole-cabinet state and the channel messages newer than it."""

    name: str
    state: CabinetState | None = None
    channels: dict[int, ChannelState] = field(default_factory=dict)

    def view(self) -> dict[str, Any]:
        """Columns per channel (sorted by channel), each channel from the newer of the two topics."""
        rows: dict[int, tuple[datetime, dict[str, Any]]] = {}
        if self.state is not None:
            for row in self.state.rows():
                rows[row["channel"]] = (self.state.ts, row)
        for number, msg in self.channels.items():
            held = rows.get(number)
            if held is None or msg.ts >= held[0]:
                rows[number] = (msg.ts, {k: getattr(msg, k) for k in VIEW_COLUMNS})
        numbers = sorted(rows)
        view: dict[str, Any] = {"cabinet": self.name, "channels": numbers}
        for col in VIEW_COLUMNS:
            view[col] = [rows[n][1].get(col) for n in numbers]
        newest = max((ts for ts, _ in rows.values()), default=None)
        view["ts"] = None if newest is None else newest.isoformat()
        counts: dict[str, int] = {}
        for state in view["state"]:
            counts[state] = counts.get(state, 0) + 1
        view["counts"] = counts
        return view


@dataclass
class _Chamber:
    """One chamber: its latest state and a short temperature trend."""

    state: ChamberState
    trend: deque[tuple[float, float | None, float]] = field(default_factory=deque)

    def add(self, state: ChamberState) -> None:
        t_s = state.ts.timestamp()
        if self.trend and t_s < self.trend[-1][0]:
            self.trend.clear()  # time went back (a restarted publisher): a trend across it would mean nothing
        self.state = state
        if self.trend and t_s - self.trend[-1][0] < TREND_MIN_STEP_S:
            self.trend[-1] = (self.trend[-1][0], state.temperature_c, state.setpoint_c)
        else:
            self.trend.append((t_s, state.temperature_c, state.setpoint_c))
        while self.trend and self.trend[0][0] < t_s - TREND_WINDOW_S:
            self.trend.popleft()

    def view(self) -> dict[str, Any]:
        data = self.state.model_dump(mode="json")
        data["trend"] = [[round(t, 1), temp, sp] for t, temp, sp in self.trend]
        return data


class FeedView:
    """The display's picture of one line, built only from the feed's messages."""

    def __init__(self, site: str, line: str, *, default_interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self.topics = Topics(site, line)
        self.default_interval_s = default_interval_s
        self.status: OrchestratorStatus | None = None
        self.cabinets: dict[str, _Cabinet] = {}
        self.chambers: dict[str, _Chamber] = {}
        self.racks: dict[str, RackState] = {}
        self.lots: dict[str, LotGrading] = {}
        self.alarms: deque[FeedEvent] = deque(maxlen=ALARMS_KEPT)
        self.events: deque[FeedEvent] = deque(maxlen=EVENTS_KEPT)
        self.messages = 0
        self.bad_messages = 0
        self.last_bad: str | None = None
        self.last_message_s: float | None = None
        self.started_s: float | None = None
        self.broker_connected = False
        self.broker_problem: str | None = "not connected to the broker yet"

    # --- input -------------------------------------------------------------------------------------------------

    def apply(self, topic: str, payload: bytes, now_s: float) -> set[Part]:
        """Take one message received at monotonic ``now_s``; the parts of the page it changed.

        An empty payload on a retained topic clears it (that is how a retained message is deleted). A payload that
        does not validate against its kind's model is counted and otherwise ignored.
        """
        ref = parse_topic(topic)
        if ref is None or ref.site != self.topics.site or ref.line != self.topics.line:
            return set()
        self.messages += 1
        self.last_message_s = now_s
        if not payload:
            return self._clear(ref.kind, ref.name, ref.channel)
        try:
            msg = parse_payload(ref.kind, payload)
        except (ValidationError, ValueError) as exc:
            return self._refuse(topic, exc)
        if ref.name is not None and getattr(msg, _NAME_FIELD.get(ref.kind, ""), ref.name) != ref.name:
            return self._refuse(topic, ValueError(f"payload names {getattr(msg, _NAME_FIELD[ref.kind])!r}"))
        if isinstance(msg, ChannelState) and msg.channel != ref.channel:
            return self._refuse(topic, ValueError(f"payload is channel {msg.channel}"))
        return self._take(msg, ref.name, ref.channel)

    def set_broker(self, connected: bool, problem: str | None = None) -> set[Part]:
        """Note whether the display's own connection to the broker is up (a lost one makes the page stale)."""
        self.broker_connected = connected
        self.broker_problem = None if connected else problem or "lost the broker"
        return {("health", "")}

    def _refuse(self, topic: str, exc: Exception) -> set[Part]:
        self.bad_messages += 1
        first = str(exc).splitlines()
        self.last_bad = f"{topic}: {' '.join(first[:3])}"[:300]
        return {("bad", "")}

    def _take(self, msg: FeedPayload, name: str | None, channel: int | None) -> set[Part]:
        match msg:
            case OrchestratorStatus():
                self.status = msg
                return {("status", ""), ("health", "")}
            case CabinetState():
                cab = self.cabinets.setdefault(msg.cabinet, _Cabinet(msg.cabinet))
                cab.state = msg
                # Channel messages older than the cabinet state are contained in it.
                cab.channels = {n: c for n, c in cab.channels.items() if c.ts > msg.ts}
                return {("cabinets", msg.cabinet)}
            case ChannelState():
                cab = self.cabinets.setdefault(msg.cabinet, _Cabinet(msg.cabinet))
                cab.channels[msg.channel] = msg
                return {("cabinets", msg.cabinet)}
            case ChamberState():
                chamber = self.chambers.get(msg.chamber)
                if chamber is None:
                    self.chambers[msg.chamber] = chamber = _Chamber(msg)
                chamber.add(msg)
                return {("chambers", msg.chamber)}
            case RackState():
                self.racks[msg.rack] = msg
                return {("racks", msg.rack)}
            case LotGrading():
                self.lots[msg.lot] = msg
                return {("lots", msg.lot)}
            case FeedEvent():
                (self.alarms if msg.event == "alarm" else self.events).appendleft(msg)
                return {("alarms", "")} if msg.event == "alarm" else {("events", "")}
        return set()  # pragma: no cover - every model is matched above

    def _clear(self, kind: TopicKind, name: str | None, channel: int | None) -> set[Part]:
        """A retained topic deleted (empty payload): forget what it held."""
        if kind is TopicKind.STATUS:
            self.status = None
            return {("status", ""), ("health", "")}
        if name is None:
            return set()
        if kind is TopicKind.CABINET and name in self.cabinets:
            cab = self.cabinets[name]
            cab.state = None
            if not cab.channels:
                del self.cabinets[name]
            return {("cabinets", name)}
        if kind is TopicKind.CHANNEL and name in self.cabinets and channel is not None:
            cab = self.cabinets[name]
            cab.channels.pop(channel, None)
            if cab.state is None and not cab.channels:
                del self.cabinets[name]
            return {("cabinets", name)}
        held: dict[TopicKind, tuple[str, dict[str, Any]]] = {
            TopicKind.CHAMBER: ("chambers", self.chambers),
            TopicKind.RACK: ("racks", self.racks),
            TopicKind.GRADING: ("lots", self.lots),
        }
        if kind in held:
            section, items = held[kind]
            if items.pop(name, None) is not None:
                return {(section, name)}
        return set()

    # --- output ------------------------------------------------------------------------------------------------

    @property
    def interval_s(self) -> float:
        """The feed interval: the status payload's, else the default."""
        if self.status is not None and self.status.interval_s is not None:
            return self.status.interval_s
        return self.default_interval_s

    def health(self, now_s: float) -> Health:
        """Stale when the display lost the broker, the orchestrator is offline, or nothing arrived for
        STALE_INTERVALS feed intervals (counted from the display's start when nothing ever arrived)."""
        threshold_s = max(MIN_STALE_S, STALE_INTERVALS * self.interval_s)
        since = self.last_message_s if self.last_message_s is not None else self.started_s
        silence_s = None if since is None else max(0.0, now_s - since)
        online = None if self.status is None else self.status.state == "online"
        if not self.broker_connected:
            return Health(True, f"display: {self.broker_problem}", online, silence_s, threshold_s)
        if online is False:
            assert self.status is not None
            when = self.status.ts.strftime("%Y-%m-%d %H:%M:%S UTC")
            return Health(True, f"orchestrator offline since {when}", online, silence_s, threshold_s)
        if silence_s is not None and silence_s > threshold_s:
            what = "feed silent" if self.last_message_s is not None else "no message from the feed"
            return Health(True, f"{what} for {_duration(silence_s)}", online, silence_s, threshold_s)
        if self.status is None:
            # Data without a status says nothing about the orchestrator; nothing at all is not yet stale.
            reason = "no orchestrator status on the feed" if self.messages else "waiting for the feed"
            return Health(bool(self.messages), reason, online, silence_s, threshold_s)
        return Health(False, "online", online, silence_s, threshold_s)

    def part(self, part: Part, now_s: float) -> Any:
        """The JSON of one part of the page (None: it is gone)."""
        section, name = part
        match section:
            case "cabinets":
                cab = self.cabinets.get(name)
                return None if cab is None else cab.view()
            case "chambers":
                chamber = self.chambers.get(name)
                return None if chamber is None else chamber.view()
            case "racks":
                rack = self.racks.get(name)
                return None if rack is None else _rack_json(rack)
            case "lots":
                lot = self.lots.get(name)
                return None if lot is None else lot.model_dump(mode="json")
            case "status":
                return None if self.status is None else self.status.model_dump(mode="json")
            case "health":
                return self.health(now_s).to_json()
            case "alarms":
                return [e.model_dump(mode="json", exclude_none=True) for e in self.alarms]
            case "events":
                return [e.model_dump(mode="json", exclude_none=True) for e in self.events]
            case "bad":
                return {"count": self.bad_messages, "last": self.last_bad}
        raise KeyError(section)

    def parts(self) -> set[Part]:
        """Every part the page has now."""
        found: set[Part] = {(s, "") for s in ("status", "health", "alarms", "events", "bad")}
        found |= {("cabinets", n) for n in self.cabinets}
        found |= {("chambers", n) for n in self.chambers}
        found |= {("racks", n) for n in self.racks}
        found |= {("lots", n) for n in self.lots}
        return found

    def patch(self, parts: set[Part], now_s: float) -> dict[str, Any]:
        """The JSON that brings a page up to date on ``parts``: named sections map names to values (None: gone),
        the single ones hold their value."""
        out: dict[str, Any] = {}
        for section, name in sorted(parts):
            value = self.part((section, name), now_s)
            if name:
                out.setdefault(section, {})[name] = value
            else:
                out[section] = value
        return out

    def snapshot(self, now_s: float) -> dict[str, Any]:
        """The whole page: what a browser that just connected receives."""
        snap = self.patch(self.parts(), now_s)
        for section in ("cabinets", "chambers", "racks", "lots"):
            snap.setdefault(section, {})
        snap["site"], snap["line"] = self.topics.site, self.topics.line
        snap["stale_intervals"] = STALE_INTERVALS
        return snap


#: The payload field that repeats the name in the topic, per kind.
_NAME_FIELD = {
    TopicKind.CABINET: "cabinet",
    TopicKind.CHANNEL: "cabinet",
    TopicKind.CHAMBER: "chamber",
    TopicKind.RACK: "rack",
    TopicKind.GRADING: "lot",
}


def _rack_json(rack: RackState) -> dict[str, Any]:
    data = rack.model_dump(mode="json")
    data["progress_pct"] = round(rack.progress_pct, 2)
    return data


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "ever"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
