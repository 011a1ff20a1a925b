"""`formation display`: the ageing-room wall display, a web page built only from the MQTT feed."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from formation.cli.app import console
from formation.errors import InputError

if TYPE_CHECKING:
    from formation.config import MqttConfig, SiteConfig
    from formation.feed.display import WallDisplay


def check_http_port(port: int, option: str = "--port") -> int:
    """``port`` if a web server can listen on it (0: any free port); InputError otherwise."""
    if not 0 <= port <= 65535:
        raise InputError(option, f"{port} is not a TCP port (0-65535; 0 picks a free one)")
    return port


def display_target(
    mqtt: str | None, site: Path | None, site_name: str | None, line: str | None
) -> tuple[str, str, MqttConfig]:
    """The site and line to show and the broker to read them from; InputError naming the option when bad.

    ``--site`` gives all three (and the broker's credentials and TLS); ``--mqtt``, ``--site-name`` and ``--line``
    override it; without a site file the defaults are those of an empty site file.
    """
    from formation.config import SiteConfig, load_site_config
    from formation.feed.topics import check_level
    from formation.feed.url import mqtt_from_url

    cfg: SiteConfig = load_site_config(site) if site is not None else SiteConfig()
    broker = mqtt_from_url(mqtt, cfg.mqtt) if mqtt is not None else cfg.mqtt
    names = {"--site-name": site_name or cfg.site, "--line": line or cfg.line}
    for option, value in names.items():
        try:
            check_level(value, option)
        except ValueError as exc:
            raise InputError(option, str(exc).removeprefix(f"{option}: ")) from None
    return names["--site-name"], names["--line"], broker


@contextlib.asynccontextmanager
async def serving_display(
    site: str, line: str, broker: MqttConfig, *, host: str = "127.0.0.1", port: int = 8080
) -> AsyncIterator[WallDisplay]:
    """A running wall display of ``site``/``line`` reading ``broker``, serving on ``host:port``.

    A port in use or an address that cannot be bound is InputError naming the option, before anything runs.
    """
    import ssl

    from formation.feed.display import WallDisplay

    tls = ssl.create_default_context(cafile=broker.ca_file) if broker.tls else None
    wall = WallDisplay(
        site,
        line,
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        username=broker.username,
        password=broker.password,
        tls_context=tls,
        host=host,
        port=port,
    )
    try:
        await wall.__aenter__()
    except OSError as exc:
        option = "--port" if exc.errno == errno.EADDRINUSE else "--host"
        # asyncio words the bind error around the system's reason; the system's alone is the one line we want.
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        raise InputError(option, f"cannot serve the display on {host}:{port}: {reason}") from None
    try:
        yield wall
    finally:
        await wall.__aexit__(None, None, None)


def display(
    mqtt: Annotated[
        str | None, typer.Option(help="Broker URL, mqtt://[user[:password]@]host[:port] (mqtts:// for TLS)")
    ] = None,
    port: Annotated[int, typer.Option(help="Port of the web page (0: any free port)")] = 8080,
    host: Annotated[str, typer.Option(help="Address to serve the page on (0.0.0.0 for every interface)")] = "127.0.0.1",
    site: Annotated[Path | None, typer.Option(help="Site configuration (TOML): site, line and broker")] = None,
    site_name: Annotated[str | None, typer.Option("--site-name", help="Site name in the topics")] = None,
    line: Annotated[str | None, typer.Option(help="Line name in the topics")] = None,
) -> None:
    """Serve the wall display of one line: cabinets, chambers, racks, alarms and grading, from the feed alone.

    Browsers get every change pushed; the page turns stale when the orchestrator is offline or the feed is silent.
    """
    import asyncio

    from formation.feed.url import broker_url

    check_http_port(port)
    if not host.strip():
        raise InputError("--host", "an empty address")
    site_id, line_id, broker = display_target(mqtt, site, site_name, line)
    shown = escape(f"formation/v1/{site_id}/{line_id}")

    async def serve() -> None:
        async with serving_display(site_id, line_id, broker, host=host, port=port) as wall:
            console.print(
                f"wall display of [bold]{shown}[/] from {escape(broker_url(broker))} on [bold]{wall.url}[/]"
                " (Ctrl-C stops)",
                highlight=False,
                soft_wrap=True,
            )
            await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        console.print("display stopped")
