"""The status feed in the CLI: ``--mqtt`` for the commands that publish, and the publisher's lifetime around a run."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.markup import escape

from formation.cli.app import console

if TYPE_CHECKING:
    from formation.config import MqttConfig, SiteConfig
    from formation.feed.publisher import FeedPublisher

T = TypeVar("T")

MqttOpt = Annotated[
    str | None,
    typer.Option(
        "--mqtt",
        help="Publish the status feed to this broker (mqtt://host:port, mqtts:// for TLS); "
        "'auto' publishes to the configured broker when it answers",
    ),
]
#: Wall seconds a command waits for the broker before it says whether it is publishing (it never waits longer).
ANNOUNCE_WAIT_S = 1.5


def feed_config(site_mqtt: MqttConfig, option: str | None) -> MqttConfig | None:
    """The broker settings to publish with (None: no feed): ``--mqtt URL`` wins, ``auto`` keeps the site's broker
    in auto mode, otherwise the site's ``[mqtt] enabled``."""
    from dataclasses import replace

    from formation.feed.url import mqtt_from_url

    if option is not None:
        if option.strip().lower() == "auto":
            return replace(site_mqtt, enabled="auto")
        return mqtt_from_url(option, site_mqtt)
    return None if site_mqtt.enabled == "no" else site_mqtt


@contextlib.asynccontextmanager
async def publishing(config: MqttConfig | None, site: str, line: str) -> AsyncIterator[FeedPublisher | None]:
    """Run a publisher for the block (None without a feed) and say whether it publishes; never fails the run."""
    if config is None:
        console.print("feed: not publishing (--mqtt URL publishes the status feed)", highlight=False)
        yield None
        return
    from formation.feed.publisher import FeedPublisher
    from formation.feed.url import broker_url

    url = broker_url(config)
    async with FeedPublisher(config, site, line) as feed:
        if await feed.wait_first_attempt(ANNOUNCE_WAIT_S):
            console.print(f"feed: publishing to {escape(url)} under {escape(feed.topics.prefix)}/", highlight=False)
        elif config.enabled == "auto":
            console.print(
                f"feed: no MQTT broker answers at {escape(url)} ({escape(feed.last_error or 'no answer')}); "
                "carrying on without it, publishing as soon as one answers",
                highlight=False,
            )
        else:
            console.print(
                f"[yellow]feed[/]: the broker at {escape(url)} does not answer "
                f"({escape(feed.last_error or 'no answer')}); formation carries on and publishes when it answers",
                highlight=False,
            )
        yield feed
    stats = feed.stats
    if stats.connects:
        console.print(
            f"feed: {stats.messages} messages ({stats.bytes / 1e3:.0f} kB) to {escape(url)}, "
            f"{stats.events_sent} events, {stats.connects} connection(s)",
            highlight=False,
        )


def publish_grading(config: MqttConfig | None, site: str, line: str, summary: Any, rules_sha256: str) -> None:
    """Publish each lot's grade counts and yields from ``summarize(grading)`` (retained) and say so."""
    if config is None:
        return
    import asyncio

    from formation.feed.oneshot import publish_retained
    from formation.feed.payloads import LotGrading
    from formation.feed.topics import Topics
    from formation.feed.url import broker_url

    topics = Topics(site, line)
    messages = []
    for lot, rows in summary.groupby("lot", sort=True):
        counts = {str(g): int(n) for g, n in zip(rows["grade"], rows["count"], strict=True)}
        payload = LotGrading.from_counts(str(lot), counts, rules_sha256=rules_sha256)
        messages.append((topics.grading(str(lot)), payload))
    problem = asyncio.run(publish_retained(config, messages))
    url = escape(broker_url(config))
    lots = ", ".join(escape(p.lot) for _, p in messages)
    if problem is None:
        console.print(f"feed: grading of {lots} published to {url} under {escape(topics.prefix)}/", highlight=False)
    else:
        console.print(f"feed: grading of {lots} not published ({escape(problem)} at {url})", highlight=False)


def demo_feed_config(option: str | None) -> MqttConfig | None:
    """The demo publishes to the default (or FORMATION_MQTT_*) broker whenever one answers, as a site without an
    [mqtt] table does; ``--mqtt URL`` names another; FORMATION_MQTT_ENABLED=no keeps it quiet."""
    from formation.config import SiteConfig, apply_env

    return feed_config(apply_env(SiteConfig()).mqtt, option)


async def with_feed(
    config: MqttConfig | None, site: SiteConfig, run: Callable[[FeedPublisher | None], Awaitable[T]]
) -> T:
    """``run(feed)`` with the site's line publishing for its whole length (``feed`` None without a feed)."""
    async with publishing(config, site.site, site.line) as feed:
        return await run(feed)
