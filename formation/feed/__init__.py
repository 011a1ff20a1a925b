"""formation.feed: the MQTT status feed — topic tree, payload models, the publisher and the sink protocol.

The publisher (and with it aiomqtt) is imported on first use: the orchestrator's hooks need only the payloads.
"""

from typing import TYPE_CHECKING, Any

from formation.feed.payloads import (
    CHANNEL_STATES,
    MODELS,
    PAYLOAD_VERSION,
    CabinetState,
    ChamberState,
    ChannelState,
    FeedEvent,
    FeedPayload,
    LotGrading,
    OrchestratorStatus,
    RackState,
    example_payloads,
    parse_payload,
    state_counts,
)
from formation.feed.sink import FeedSink
from formation.feed.topics import RETAINED_KINDS, ROOT, TopicKind, TopicRef, Topics, parse_topic
from formation.feed.url import broker_url, mqtt_from_url

if TYPE_CHECKING:
    from formation.feed.publisher import FeedPublisher, FeedStats


def __getattr__(name: str) -> Any:
    if name in ("FeedPublisher", "FeedStats"):
        from formation.feed import publisher

        return getattr(publisher, name)
    raise AttributeError(f"module 'formation.feed' has no attribute {name!r}")


__all__ = [
    "CHANNEL_STATES",
    "MODELS",
    "PAYLOAD_VERSION",
    "RETAINED_KINDS",
    "ROOT",
    "CabinetState",
    "ChamberState",
    "ChannelState",
    "FeedEvent",
    "FeedPayload",
    "FeedPublisher",
    "FeedSink",
    "FeedStats",
    "LotGrading",
    "OrchestratorStatus",
    "RackState",
    "TopicKind",
    "TopicRef",
    "Topics",
    "broker_url",
    "example_payloads",
    "mqtt_from_url",
    "parse_payload",
    "parse_topic",
    "state_counts",
]
