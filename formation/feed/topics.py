"""The feed's topic tree (docs/architecture.md §10a): a builder for every topic, and the parser back to its keys.

Every topic lives under ``formation/v1/{site}/{line}/``:

| topic                               | kind        | retained |
|-------------------------------------|-------------|----------|
| ``status``                          | ``status``  | yes      |
| ``cabinet/{cabinet}/state``         | ``cabinet`` | yes      |
| ``cabinet/{cabinet}/channel/{n}``   | ``channel`` | yes      |
| ``chamber/{chamber}/state``         | ``chamber`` | yes      |
| ``rack/{rack}/state``               | ``rack``    | yes      |
| ``lot/{lot}/grading``               | ``grading`` | yes      |
| ``events``                          | ``events``  | no       |

Names become single topic levels, so a name may not be empty nor hold ``/``, ``+``, ``#`` or a NUL; the
builders refuse such names with a ValueError rather than publish somewhere a subscriber would never look.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

#: The first levels of every topic; the version level changes only with an incompatible payload change.
ROOT = "formation/v1"
_BAD_CHARS = frozenset("/+#\x00")


class TopicKind(StrEnum):
    """What a topic carries (its payload model is ``payloads.MODELS[kind]``)."""

    STATUS = "status"
    CABINET = "cabinet"
    CHANNEL = "channel"
    CHAMBER = "chamber"
    RACK = "rack"
    GRADING = "grading"
    EVENTS = "events"


#: Kinds published with the retain flag: a late subscriber gets the latest of each at once.
RETAINED_KINDS = frozenset(k for k in TopicKind if k is not TopicKind.EVENTS)


def check_level(name: str, what: str = "name") -> str:
    """``name`` if it can be one topic level; ValueError naming ``what`` otherwise."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what}: must be a non-empty string")
    bad = sorted(set(name) & _BAD_CHARS)
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise ValueError(f"{what}: {name!r} holds {shown}, which cannot be part of an MQTT topic level")
    return name


@dataclass(frozen=True)
class Topics:
    """The topic builders of one site and line."""

    site: str
    line: str

    def __post_init__(self) -> None:
        check_level(self.site, "site")
        check_level(self.line, "line")

    @property
    def prefix(self) -> str:
        """``formation/v1/{site}/{line}``, without a trailing slash."""
        return f"{ROOT}/{self.site}/{self.line}"

    @property
    def all(self) -> str:
        """The wildcard that subscribes to the whole tree of this line."""
        return f"{self.prefix}/#"

    def status(self) -> str:
        """The orchestrator's online/offline status (retained; offline is the will)."""
        return f"{self.prefix}/status"

    def cabinet(self, cabinet: str) -> str:
        """All channels of one cabinet in one message."""
        return f"{self.prefix}/cabinet/{check_level(cabinet, 'cabinet')}/state"

    def channel(self, cabinet: str, channel: int) -> str:
        """One channel of a cabinet, published on a change of run state or step."""
        if isinstance(channel, bool) or not isinstance(channel, int) or channel < 0:
            raise ValueError(f"channel: {channel!r} is not a non-negative integer")
        return f"{self.prefix}/cabinet/{check_level(cabinet, 'cabinet')}/channel/{channel}"

    def chamber(self, chamber: str) -> str:
        """One chamber's set point, temperatures and valves."""
        return f"{self.prefix}/chamber/{check_level(chamber, 'chamber')}/state"

    def rack(self, rack: str) -> str:
        """One ageing rack's progress."""
        return f"{self.prefix}/rack/{check_level(rack, 'rack')}/state"

    def grading(self, lot: str) -> str:
        """A lot's grade counts and yields."""
        return f"{self.prefix}/lot/{check_level(lot, 'lot')}/grading"

    def events(self) -> str:
        """Alarms, step transitions and run/job completions (not retained)."""
        return f"{self.prefix}/events"


@dataclass(frozen=True)
class TopicRef:
    """A parsed topic: its kind, site and line, and the keys below the line (cabinet, channel, …)."""

    kind: TopicKind
    site: str
    line: str
    #: ``cabinet`` for cabinet/channel topics, ``chamber``, ``rack`` or ``lot`` otherwise; None for status/events.
    name: str | None = None
    channel: int | None = None

    @property
    def retained(self) -> bool:
        """Whether this topic is published retained."""
        return self.kind in RETAINED_KINDS


def parse_topic(topic: str) -> TopicRef | None:
    """The kind and keys of a feed topic, or None for a topic that is not part of the tree."""
    parts = topic.split("/")
    if len(parts) < 5 or f"{parts[0]}/{parts[1]}" != ROOT or not parts[2] or not parts[3]:
        return None
    site, line, rest = parts[2], parts[3], parts[4:]
    match rest:
        case ["status"]:
            return TopicRef(TopicKind.STATUS, site, line)
        case ["events"]:
            return TopicRef(TopicKind.EVENTS, site, line)
        case ["cabinet", name, "state"] if name:
            return TopicRef(TopicKind.CABINET, site, line, name)
        case ["cabinet", name, "channel", number] if name and number.isascii() and number.isdigit():
            return TopicRef(TopicKind.CHANNEL, site, line, name, int(number))
        case ["chamber", name, "state"] if name:
            return TopicRef(TopicKind.CHAMBER, site, line, name)
        case ["rack", name, "state"] if name:
            return TopicRef(TopicKind.RACK, site, line, name)
        case ["lot", name, "grading"] if name:
            return TopicRef(TopicKind.GRADING, site, line, name)
    return None
