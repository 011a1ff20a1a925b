"""Topic builders and the parser back from a topic to its keys."""

from __future__ import annotations

import pytest

from formation.feed.topics import RETAINED_KINDS, TopicKind, TopicRef, Topics, parse_topic


def test_every_builder_lands_under_the_line_prefix_and_parses_back_to_its_keys() -> None:
    t = Topics("plant-a", "line1")
    cases = {
        t.status(): TopicRef(TopicKind.STATUS, "plant-a", "line1"),
        t.events(): TopicRef(TopicKind.EVENTS, "plant-a", "line1"),
        t.cabinet("cab1"): TopicRef(TopicKind.CABINET, "plant-a", "line1", "cab1"),
        t.channel("cab1", 17): TopicRef(TopicKind.CHANNEL, "plant-a", "line1", "cab1", 17),
        t.chamber("ch-1"): TopicRef(TopicKind.CHAMBER, "plant-a", "line1", "ch-1"),
        t.rack("R07"): TopicRef(TopicKind.RACK, "plant-a", "line1", "R07"),
        t.grading("L-42"): TopicRef(TopicKind.GRADING, "plant-a", "line1", "L-42"),
    }
    for topic, ref in cases.items():
        assert topic.startswith("formation/v1/plant-a/line1/")
        assert parse_topic(topic) == ref
    assert t.channel("cab1", 17) == "formation/v1/plant-a/line1/cabinet/cab1/channel/17"
    assert t.all == "formation/v1/plant-a/line1/#"


def test_only_events_are_not_retained() -> None:
    assert set(TopicKind) - RETAINED_KINDS == {TopicKind.EVENTS}
    ref = parse_topic(Topics("s", "l").events())
    assert ref is not None and not ref.retained
    ref = parse_topic(Topics("s", "l").cabinet("c"))
    assert ref is not None and ref.retained


@pytest.mark.parametrize(
    "topic",
    [
        "formation/v2/s/l/status",
        "other/v1/s/l/status",
        "formation/v1/s/l",
        "formation/v1/s/l/cabinet/c/channel/x",
        "formation/v1/s/l/cabinet/c/channel/-1",
        "formation/v1/s/l/cabinet/c/channel/²",
        "formation/v1/s/l/cabinet//state",
        "formation/v1/s/l/chamber/c/temperature",
        "formation/v1/s/l/status/extra",
        "formation/v1//l/status",
    ],
)
def test_topics_outside_the_tree_parse_to_none(topic: str) -> None:
    assert parse_topic(topic) is None


@pytest.mark.parametrize("name", ["", "a/b", "a+", "#", "x\x00"])
def test_names_that_cannot_be_a_topic_level_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="cabinet"):
        Topics("s", "l").cabinet(name)
    with pytest.raises(ValueError, match="site"):
        Topics(name, "l")


@pytest.mark.parametrize("channel", [-1, True, 1.5])
def test_a_channel_must_be_a_non_negative_integer(channel: object) -> None:
    with pytest.raises(ValueError, match="channel"):
        Topics("s", "l").channel("c", channel)  # type: ignore[arg-type]
