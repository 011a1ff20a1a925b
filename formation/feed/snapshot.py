"""FeedSnapshot: the latest state of every line seen on a broker, built from received messages (pure, no I/O).

``formation status`` fills one from the retained tree; a channel's own message wins over its cabinet's columns
when it is newer, as on the wall display.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field

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
    state_counts,
)
from formation.feed.topics import parse_topic


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that puts cab2 before cab10."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name) if part)


#: Events kept per line (the newest).
EVENTS_KEPT = 20


@dataclass
class LineSnapshot:
    """One site/line: its status and the latest payload of every retained topic, plus recent events."""

    site: str
    line: str
    status: OrchestratorStatus | None = None
    cabinets: dict[str, CabinetState] = field(default_factory=dict)
    channels: dict[tuple[str, int], ChannelState] = field(default_factory=dict)
    chambers: dict[str, ChamberState] = field(default_factory=dict)
    racks: dict[str, RackState] = field(default_factory=dict)
    lots: dict[str, LotGrading] = field(default_factory=dict)
    events: deque[FeedEvent] = field(default_factory=lambda: deque(maxlen=EVENTS_KEPT))

    def channel_states(self, cabinet: str) -> dict[int, str]:
        """Each channel's state: the cabinet's column, or the channel's own message where that is newer."""
        cab = self.cabinets.get(cabinet)
        states: dict[int, str] = {}
        stamp = {}
        if cab is not None:
            states = dict(zip(cab.channels, cab.state, strict=True))
            stamp = dict.fromkeys(cab.channels, cab.ts)
        for (name, number), ch in self.channels.items():
            if name == cabinet and (number not in stamp or ch.ts > stamp[number]):
                states[number] = ch.state
        return states

    def counts(self, cabinet: str) -> dict[str, int]:
        """Channels per state in one cabinet."""
        return state_counts(list(self.channel_states(cabinet).values()))

    @property
    def cabinet_names(self) -> list[str]:
        """Every cabinet heard of, from its state or its channels."""
        return sorted(set(self.cabinets) | {name for name, _ in self.channels}, key=natural_key)


class FeedSnapshot:
    """Latest state per line from a stream of (topic, payload) messages; bad payloads are counted, not raised."""

    def __init__(self) -> None:
        self.lines: dict[tuple[str, str], LineSnapshot] = {}
        self.messages = 0
        #: Messages on the tree whose payload does not validate (topic, reason), the latest few.
        self.invalid: deque[tuple[str, str]] = deque(maxlen=20)
        self.invalid_total = 0

    def add(self, topic: str, payload: bytes) -> FeedPayload | None:
        """Take one message; the payload it carried, or None (not ours, empty = a cleared retained topic, bad)."""
        ref = parse_topic(topic)
        if ref is None or not payload:
            return None
        self.messages += 1
        try:
            value = parse_payload(ref.kind, payload)
        except ValidationError as exc:
            self.invalid_total += 1
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "payload"
            self.invalid.append((topic, f"{where}: {first['msg']}"))
            return None
        named = _name_in(value)
        if named is not None and (named, getattr(value, "channel", None)) != (ref.name, ref.channel):
            self.invalid_total += 1
            self.invalid.append((topic, f"payload names {named!r}, not the topic's {ref.name!r}"))
            return None
        line = self.lines.setdefault((ref.site, ref.line), LineSnapshot(ref.site, ref.line))
        match value:
            case OrchestratorStatus():
                line.status = value
            case CabinetState():
                line.cabinets[value.cabinet] = value
            case ChannelState():
                line.channels[(value.cabinet, value.channel)] = value
            case ChamberState():
                line.chambers[value.chamber] = value
            case RackState():
                line.racks[value.rack] = value
            case LotGrading():
                line.lots[value.lot] = value
            case FeedEvent():
                line.events.append(value)
        return value


def _name_in(value: FeedPayload) -> str | None:
    """The name a payload carries for its topic level (cabinet, chamber, rack, lot); None for status/events."""
    key = _NAME_FIELD.get(type(value))
    return None if key is None else str(getattr(value, key))


_NAME_FIELD: dict[type[FeedPayload], str] = {
    CabinetState: "cabinet",
    ChannelState: "cabinet",
    ChamberState: "chamber",
    RackState: "rack",
    LotGrading: "lot",
}
