"""formation.feed: the MQTT status feed — topic tree, payload models and (soon) the publisher."""

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
from formation.feed.topics import RETAINED_KINDS, ROOT, TopicKind, TopicRef, Topics, parse_topic

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
    "LotGrading",
    "OrchestratorStatus",
    "RackState",
    "TopicKind",
    "TopicRef",
    "Topics",
    "example_payloads",
    "parse_payload",
    "parse_topic",
    "state_counts",
]
