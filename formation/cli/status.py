"""`formation status`: the retained feed tree of a broker, collected for a moment and printed once as tables."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from formation.cli.app import add_text_row, console
from formation.cli.feed import MqttOpt
from formation.errors import FormationError, InputError

if TYPE_CHECKING:
    from formation.config import MqttConfig
    from formation.feed.snapshot import FeedSnapshot, LineSnapshot

#: Bounds of --wait, seconds: retained messages come at once, events only while we listen.
WAIT_RANGE_S = (0.1, 60.0)


class BrokerUnreachable(FormationError):
    """The broker did not answer (exit code 1, one line)."""


def status(
    mqtt: MqttOpt = None,
    site: Annotated[Path | None, typer.Option(help="Site configuration (TOML): its line only, and its broker")] = None,
    wait: Annotated[float, typer.Option(help="Seconds to listen before printing (events come only meanwhile)")] = 1.0,
    database: Annotated[
        bool, typer.Option("--database", help="Read the site's database instead (leases, open jobs, alarms)")
    ] = False,
    db: Annotated[str | None, typer.Option(help="Database URL for --database (overrides the site's)")] = None,
) -> None:
    """Print the line's state from the MQTT feed once: status, cabinets, chambers, racks, lots, latest events.

    With --database, print what the database holds instead: which daemon drives which cabinet, the jobs running,
    queued and interrupted, and the latest alarms.
    """
    import asyncio

    if database:
        if mqtt is not None:
            raise InputError("--mqtt", "--database reads the database, not the feed: give one of them")
        from formation.cli.status_db import print_database_status

        print_database_status(site, db)
        return
    if db is not None:
        raise InputError("--db", "a database URL goes with --database")

    from formation.config import SiteConfig, apply_env, load_site_config
    from formation.feed.url import broker_url, mqtt_from_url

    low, high = WAIT_RANGE_S
    if not math.isfinite(wait) or not low <= wait <= high:
        raise InputError("--wait", f"{wait:g} is outside {low:g}–{high:g} s")
    cfg = load_site_config(site) if site is not None else apply_env(SiteConfig())
    broker = cfg.mqtt if mqtt is None or mqtt.strip().lower() == "auto" else mqtt_from_url(mqtt, cfg.mqtt)
    pattern = f"formation/v1/{cfg.site}/{cfg.line}/#" if site is not None else "formation/v1/#"
    snapshot = asyncio.run(_collect(broker, pattern, wait))
    console.print(f"feed at {broker_url(broker)} ({pattern}), listened {wait:g} s", highlight=False)
    if not snapshot.lines:
        console.print("nothing published there yet (no line's retained state)")
    for key in sorted(snapshot.lines):
        _print_line(snapshot.lines[key])
    if snapshot.invalid_total:
        topic, reason = snapshot.invalid[-1]
        console.print(
            f"[yellow]{snapshot.invalid_total} message(s) did not validate[/], latest on {topic}: {reason}",
            highlight=False,
        )


async def _collect(broker: MqttConfig, pattern: str, wait_s: float) -> FeedSnapshot:
    import asyncio
    import contextlib
    import ssl

    import aiomqtt

    from formation.feed.snapshot import FeedSnapshot
    from formation.feed.url import broker_url

    snapshot = FeedSnapshot()
    tls = ssl.create_default_context(cafile=broker.ca_file) if broker.tls else None
    try:
        async with aiomqtt.Client(
            broker.host,
            broker.port,
            username=broker.username,
            password=broker.password,
            tls_context=tls,
            timeout=5.0,
        ) as client:
            await client.subscribe(pattern, qos=1)

            async def listen() -> None:
                async for message in client.messages:
                    payload = message.payload
                    snapshot.add(str(message.topic), payload if isinstance(payload, bytes) else b"")

            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(listen(), wait_s)
    except (aiomqtt.MqttError, OSError, ssl.SSLError) as exc:
        raise BrokerUnreachable(f"MQTT broker at {broker_url(broker)}: {exc}") from None
    return snapshot


def _ago(ts: datetime) -> str:
    seconds = (datetime.now(UTC) - ts).total_seconds()
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _num(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _print_line(line: LineSnapshot) -> None:
    st = line.status
    state = "unknown (no status)" if st is None else st.state
    style = {"online": "bold green", "offline": "bold red"}.get(state, "yellow")
    head = Table(title=f"{line.site} / {line.line}", title_justify="left")
    for col in ("orchestrator", "version", "started", "last status"):
        head.add_column(col)
    head.add_row(
        f"[{style}]{state}[/]",
        st.version if st else "—",
        st.started.strftime("%Y-%m-%d %H:%M:%S UTC") if st else "—",
        _ago(st.ts) if st else "—",
    )
    console.print(head)
    if line.cabinet_names:
        states = sorted({s for name in line.cabinet_names for s in line.counts(name)})
        cabinets = Table(title="Cabinets", title_justify="left")
        for col in ("cabinet", "channels", *states, "updated"):
            cabinets.add_column(col, justify="left" if col in ("cabinet", "updated") else "right")
        for name in line.cabinet_names:
            counts = line.counts(name)
            cab = line.cabinets.get(name)
            updated = _ago(cab.ts) if cab is not None else "channels only"
            add_text_row(cabinets, name, str(sum(counts.values())), *(str(counts.get(s, 0)) for s in states), updated)
        console.print(cabinets)
    if line.chambers:
        chambers = Table(title="Chambers", title_justify="left")
        for col in ("chamber", "set °C", "temp °C", "sensors °C", "band °C", "in band", "stable", "valves open"):
            chambers.add_column(col)
        for name, ch in sorted(line.chambers.items()):
            sensors = " ".join(_num(v, 1) for v in ch.temperatures_c.values())
            valves = " ".join(str(v) for v in ch.heating_open + ch.cooling_open) or "none"
            flags = ("yes" if ch.in_band else "no", "yes" if ch.stable else "no")
            add_text_row(chambers, name, _num(ch.setpoint_c, 1), _num(ch.temperature_c), sensors,
                         f"±{ch.band_c:g}", *flags, valves + (" (fail-safe)" if ch.fail_safe else ""))  # fmt: skip
        console.print(chambers)
    if line.racks:
        racks = Table(title="Racks", title_justify="left")
        for col in ("rack", "chamber", "stage", "cells", "progress"):
            racks.add_column(col)
        for name, rack in sorted(line.racks.items()):
            add_text_row(racks, name, rack.chamber or "—", rack.stage or "—", str(rack.cells),
                         f"{rack.progress_pct:.0f} %")  # fmt: skip
        console.print(racks)
    if line.lots:
        lots = Table(title="Graded lots", title_justify="left")
        for col in ("lot", "cells", "grades (yield)"):
            lots.add_column(col)
        for name, lot in sorted(line.lots.items()):
            grades = ", ".join(f"{g} {n} ({lot.yields_pct[g]:.1f} %)" for g, n in lot.counts.items())
            add_text_row(lots, name, str(lot.cells), grades)
        console.print(lots)
    if line.events:
        events = Table(title="Events heard while listening", title_justify="left")
        for col in ("time (UTC)", "event", "severity", "where", "message"):
            events.add_column(col)
        for ev in line.events:
            where = ev.chamber or (f"{ev.cabinet} ch {ev.channel}" if ev.channel is not None else ev.cabinet) or ""
            add_text_row(events, ev.ts.strftime("%H:%M:%S"), ev.event, ev.severity, where, ev.message)
        console.print(events)
