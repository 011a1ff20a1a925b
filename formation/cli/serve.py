"""`formation serve`: the line as a service — every cabinet of the site driven from the database's job queue."""

from __future__ import annotations

import contextlib
import gc
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO

import typer
from rich.markup import escape

from formation.cli.app import console
from formation.cli.feed import MqttOpt
from formation.config import CabinetConfig, SiteConfig, load_site_config
from formation.errors import InputError, StoreError

if TYPE_CHECKING:
    from formation.orchestrator.cabinet import PollStats

#: Bounds of --lease-s: long enough to renew over a slow database, short enough to hand a dead daemon's cabinets on.
LEASE_RANGE_S = (3.0, 3600.0)


def serve(
    site: Annotated[Path, typer.Option(help="Site configuration (TOML)")],
    db: Annotated[str | None, typer.Option(help="Database URL (overrides the site's)")] = None,
    mqtt: MqttOpt = None,
    lease_s: Annotated[
        float,
        typer.Option(
            "--lease-s",
            help="Seconds a cabinet's lease lasts unrenewed (another daemon takes it over after)",
            min=LEASE_RANGE_S[0],
            max=LEASE_RANGE_S[1],
        ),
    ] = 30.0,
    poll_log: Annotated[
        Path | None,
        typer.Option(
            "--poll-log",
            help="Append one CSV line per cabinet poll (cabinet, end time, wall s, late s, records, step ends)",
        ),
    ] = None,
) -> None:
    """Run the line: re-attach unfinished jobs, start queued ones (`formation run launch`), until SIGTERM.

    SIGTERM or Ctrl-C stops the service, not the cells: they finish their steps on the instruments, the jobs are
    left interrupted, and the next `formation serve` re-attaches to them. Every cabinet must answer at start. The
    daily lot report goes to the site's [report] folder at its daily_at.
    """
    import asyncio

    from formation.cli.feed import feed_config, with_feed
    from formation.cli.run import open_store, output_dir, output_file
    from formation.clock import make_clock
    from formation.orchestrator.line import Line

    cfg = load_site_config(site)
    if not cfg.cabinets:
        raise InputError("--site", f"{site} lists no cabinet: nothing to serve")
    if poll_log is not None:
        output_file(poll_log, "--poll-log")
    if cfg.report.enabled:  # refused now rather than found at 06:00
        output_dir(Path(cfg.report.folder), "report.folder")
    broker = feed_config(cfg.mqtt, mqtt)
    try:
        _, store = open_store(site, db)
    except StoreError as exc:  # the service cannot start without its queue: a usage problem, said in one line
        raise InputError("database", str(exc)) from None
    clock = make_clock(cfg.clock_scale)
    silent = asyncio.run(_silent_cabinets(cfg))
    if silent:
        store.close()
        raise InputError("--site", "; ".join(silent))

    async def run(feed: object) -> None:
        import signal

        def say(text: str) -> None:
            console.print(escape(text), highlight=False)

        async with Line(
            cfg,
            store,
            clock,
            feed=feed,  # type: ignore[arg-type]
            lease_s=lease_s,
            on_event=say,
            on_poll=polls.write if polls is not None else None,
        ) as line:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, line.stop)
            names = ", ".join(c.name for c in cfg.cabinets)
            say(f"serving {cfg.site}/{cfg.line}: cabinets {names} as {line.owner} (SIGTERM stops; cells keep running)")
            try:
                await line.wait()
            finally:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
                say("stopping: jobs are left to their instruments and re-attach at the next start")

    with store, contextlib.ExitStack() as stack:
        polls = stack.enter_context(PollLog(poll_log)) if poll_log is not None else None
        asyncio.run(with_feed(broker, cfg, run))
    console.print("stopped")


async def _silent_cabinets(cfg: SiteConfig) -> list[str]:
    """Every cabinet of the site that does not answer ``*IDN?`` (all asked at once), as ``name (resource): why``."""
    import asyncio

    from formation.errors import InstrumentError
    from formation.instruments.bt2200 import Bt2200Cycler
    from formation.instruments.scpi import ScpiSession

    async def probe(cabinet: CabinetConfig) -> str | None:
        try:
            async with ScpiSession(cabinet.resource, timeout_s=cabinet.timeout_s, name=cabinet.name) as session:
                await Bt2200Cycler(session).identify()
        except InstrumentError as exc:
            return f"cabinet {cabinet.name} ({cabinet.resource}) does not answer: {exc}"
        return None

    answers = await asyncio.gather(*(probe(c) for c in cfg.cabinets))
    return [a for a in answers if a is not None]


class PollLog:
    """``--poll-log``: one CSV line per cabinet poll, for benchmarks and for finding slow or late polls.

    Python's garbage collections of the oldest generation (and any other taking 20 ms or more) are logged too, as
    cabinet ``(gc)`` with the pause as ``wall_s``, the generation as ``records`` and what it freed as
    ``step_ends``: a stall of the whole process shows whether it was the collector.
    """

    HEADER = "cabinet,end_unix_s,wall_s,late_s,records,step_ends\n"
    GC_ROW = "(gc)"
    #: A collection of a younger generation is logged when it pauses the process this long (s).
    GC_LOG_S = 0.02

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: TextIO | None = None
        self._flushed_s = 0.0
        self._gc_started_s = 0.0

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started_s = time.perf_counter()
            return
        pause_s = time.perf_counter() - self._gc_started_s
        if self._file is not None and (info["generation"] == 2 or pause_s >= self.GC_LOG_S):
            collected = info.get("collected", 0)
            self._file.write(f"{self.GC_ROW},{time.time():.3f},{pause_s:.6f},0,{info['generation']},{collected}\n")

    def __enter__(self) -> PollLog:
        try:
            self._file = self.path.open("a", encoding="utf-8")
            if self._file.tell() == 0:
                self._file.write(self.HEADER)
        except OSError as exc:
            raise InputError("--poll-log", f"cannot write {self.path}: {exc.strerror or type(exc).__name__}") from None
        gc.callbacks.append(self._on_gc)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)
        if self._file is not None:
            self._file.close()
            self._file = None

    def write(self, cabinet: str, stats: PollStats) -> None:
        """Append one poll (flushed at most once a second: a reader sees it a second later at most)."""
        if self._file is None:
            return
        now_s = time.time()
        self._file.write(
            f"{cabinet},{now_s:.3f},{stats.wall_s:.6f},{stats.late_s:.6f},{stats.records},{stats.step_ends}\n"
        )
        if now_s - self._flushed_s >= 1.0:
            self._file.flush()
            self._flushed_s = now_s
