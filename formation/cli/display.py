"""`formation display`: the ageing-room wall display, a web page built only from the MQTT feed."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import subprocess
import sys
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

    ``--site`` gives all three (and the broker's credentials and TLS), FORMATION_MQTT_* override its broker as for
    every command, and ``--mqtt``, ``--site-name`` and ``--line`` override both; without a site file the defaults
    are those of an empty site file.
    """
    from formation.config import SiteConfig, apply_env, load_site_config
    from formation.feed.topics import check_level
    from formation.feed.url import mqtt_from_url

    cfg: SiteConfig = apply_env(load_site_config(site) if site is not None else SiteConfig())
    broker = mqtt_from_url(mqtt, cfg.mqtt) if mqtt is not None else cfg.mqtt
    names = {
        "--site-name": site_name if site_name is not None else cfg.site,
        "--line": line if line is not None else cfg.line,
    }
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
    until_stdin_closes: Annotated[
        bool, typer.Option("--until-stdin-closes", hidden=True, help="Stop when standard input closes")
    ] = False,
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
            if until_stdin_closes:
                await _stdin_closed()
            else:
                await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        console.print("display stopped")


async def _stdin_closed() -> None:
    """Return when standard input reaches its end: the process that started this one has gone."""
    import asyncio

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    # A pipe read by the loop, not a thread: a thread blocked in read() would hold up the exit after Ctrl-C.
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while await reader.read(4096):
            pass
    finally:
        transport.close()


class DisplayProcess:
    """``formation display`` in a process of its own (for the demo): it stops when this process ends, whatever
    way it ends, because it serves only until its standard input (a pipe from here) closes."""

    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc = proc
        self.url = url

    @classmethod
    def start(cls, broker: MqttConfig, site: str, line: str, *, timeout_s: float = 20.0) -> DisplayProcess:
        """Start a display of ``site``/``line`` from ``broker`` on a free 127.0.0.1 port; FormationError (with the
        display's own message) when it does not come up within ``timeout_s``."""
        import queue
        import threading

        from formation.errors import FormationError
        from formation.feed.url import broker_url

        env = dict(os.environ)
        # Credentials travel in the environment, not on a command line that every user of the machine can read.
        for key in ("username", "password", "ca_file"):
            env.pop(f"FORMATION_MQTT_{key.upper()}", None)
            if (value := getattr(broker, key)) is not None:
                env[f"FORMATION_MQTT_{key.upper()}"] = str(value)
        env["FORMATION_MQTT_TLS"] = "yes" if broker.tls else "no"
        args = [sys.executable, "-m", "formation", "display", "--mqtt", broker_url(broker), "--port", "0"]
        args += ["--site-name", site, "--line", line, "--until-stdin-closes"]
        env["COLUMNS"] = "1000"  # the address line is read back: never wrapped
        proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        assert proc.stdout is not None and proc.stderr is not None
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()  # type: ignore[union-attr]
        try:
            first = lines.get(timeout=timeout_s)
        except queue.Empty:
            first = ""
        found = re.search(r"on (http://\S+/)", first)
        if found is None:
            proc.kill()
            problem = proc.stderr.read().strip().splitlines() if proc.wait() is not None else []
            reason = problem[-1] if problem else f"no address within {timeout_s:g} s"
            raise FormationError(f"the wall display did not start: {reason}")
        return cls(proc, found.group(1))

    def stop(self) -> None:
        """Stop the display (its input closes) and wait for it."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def serve_until_interrupted(self) -> None:
        """Keep the display up until Ctrl-C (or until it ends by itself), then stop it."""
        console.print(f"wall display still at [bold]{self.url}[/] (Ctrl-C stops it)", highlight=False)
        try:
            self.proc.wait()
        except KeyboardInterrupt:
            console.print("display stopped")
        finally:
            self.stop()
