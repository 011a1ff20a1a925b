"""`formation run launch|list|show|resume|continue|abort`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from formation.cli.app import add_text_row, console
from formation.cli.feed import MqttOpt
from formation.config import CabinetConfig, SiteConfig, load_site_config
from formation.errors import InputError, StoreError
from formation.states import ACTIVE_JOB_STATES, TERMINAL_RUN_STATES, JobState

if TYPE_CHECKING:
    from formation.orchestrator.inputs import CellEntry
    from formation.recipes import Recipe
    from formation.store import Job, Store

app = typer.Typer(help="Launch and inspect formation runs.", no_args_is_help=True)

SiteOpt = Annotated[Path | None, typer.Option(help="Site configuration (TOML)")]
DbOpt = Annotated[str | None, typer.Option(help="Database URL (overrides the site's)")]
#: A job id: a database row id, so at most a signed 64-bit integer (a larger one is a usage error, exit 2).
JobArg = Annotated[int, typer.Argument(help="Job id", min=1, max=2**63 - 1)]


def open_store(site: Path | None, db: str | None) -> tuple[SiteConfig, Store]:
    """The site configuration (defaults without a file) and its store, schema created; the caller closes it."""
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from formation.store import Store

    cfg = load_site_config(site) if site is not None else SiteConfig()
    url = db or cfg.database_url
    shown = _safe_url(url)
    try:
        store = Store(url)
        try:
            store.create_schema()
        except BaseException:
            store.close()
            raise
    except ImportError as exc:
        raise InputError("database", f"the driver for {shown} is not installed ({exc.name})") from None
    except (ArgumentError, StoreError, SQLAlchemyError) as exc:
        if isinstance(exc, ArgumentError) or isinstance(exc.__cause__, ArgumentError):
            raise InputError("database", f"unusable database URL {shown}") from None
        # Drivers put several lines in their messages; the CLI answers with one.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreError(f"cannot open the database {shown}: {first.replace(url, shown)}") from None
    return cfg, store


def _safe_url(url: str) -> str:
    """The URL for messages, password hidden."""
    from sqlalchemy import make_url

    try:
        return repr(make_url(url).render_as_string(hide_password=True))
    except Exception:  # an unparseable URL holds no recognisable password field
        return repr(url)


def output_file(path: Path, option: str) -> Path:
    """An output file path whose folder exists and is writable (checked before any work starts)."""
    try:
        if path.is_dir():
            raise InputError(option, f"{path} is a folder, not a file")
        if not path.parent.is_dir():
            raise InputError(option, f"folder {path.parent} does not exist")
        _check_writable(path.parent, option)
        if path.exists() and not os.access(path, os.W_OK):
            raise InputError(option, f"{path} cannot be written (permission denied)")
    except OSError as exc:  # a name the system refuses: too long, a component too long
        raise InputError(option, f"unusable path: {exc.strerror or type(exc).__name__}") from None
    return path


def output_dir(path: Path, option: str) -> Path:
    """An output folder that exists or can be created next to an existing parent, and is writable."""
    try:
        if path.exists() and not path.is_dir():
            raise InputError(option, f"{path} exists and is not a folder")
        if not path.exists() and not path.parent.is_dir():
            raise InputError(option, f"folder {path.parent} does not exist")
        _check_writable(path if path.exists() else path.parent, option)
    except OSError as exc:  # a name the system refuses: too long, a component too long
        raise InputError(option, f"unusable path: {exc.strerror or type(exc).__name__}") from None
    return path


def _check_writable(folder: Path, option: str) -> None:
    """Refuse a folder nothing can be written in: tried with an unnamed file, as permissions alone do not tell
    (root writes anywhere but a read-only mount or a pseudo file system)."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise InputError(option, f"cannot write in {folder}: {exc.strerror or type(exc).__name__}") from None


def _job_and_cabinet(cfg: SiteConfig, store: Store, job: int) -> tuple[Job, CabinetConfig]:
    """A job of the store and the site's cabinet it runs on; InputError when either is unknown."""
    found = store.get_job(job)
    if found is None:
        raise InputError("job", f"no job {job}")
    return found, cfg.cabinet(found.cabinet)


def _print_job_end(store: Store, job_id: int | None) -> None:
    from formation.cli.progress import step_summary_table

    console.print(step_summary_table(store.step_results(job_id=job_id)))
    console.print(f"job {job_id}: data in {escape(store.url)}", highlight=False)


@app.command("launch")
def launch(
    recipe: Annotated[str, typer.Argument(help="Recipe file or built-in name")],
    site: Annotated[Path, typer.Option(help="Site configuration (TOML)")],
    cabinet: Annotated[str, typer.Option(help="Cabinet name in the site file")],
    channels: Annotated[str, typer.Option(help="Channel list, e.g. 1-32 or 1-8,17-24")],
    cells: Annotated[Path, typer.Option(help="Cells CSV: cell_id, lot, nominal_capacity_ah")],
    db: DbOpt = None,
    note: Annotated[str | None, typer.Option(help="Free text stored with the job")] = None,
    mqtt: MqttOpt = None,
    foreground: Annotated[
        bool, typer.Option("--foreground", help="Run it here and now (Ctrl-C aborts the cells) instead of queueing")
    ] = False,
    at: Annotated[
        str | None, typer.Option("--at", help='Queued job starts no earlier than this local time ("2026-12-01 06:00")')
    ] = None,
) -> None:
    """Queue a recipe on a cabinet's channels for `formation serve`, or run it here with --foreground."""
    import asyncio

    from formation.cli.feed import feed_config, with_feed
    from formation.cli.progress import job_progress
    from formation.clock import make_clock
    from formation.orchestrator.inputs import load_cells_file, parse_channel_list
    from formation.orchestrator.job import assign_cells, check_chamber, run_job
    from formation.recipes import chamber_setpoints, resolve_recipe

    cfg = load_site_config(site)
    cab = cfg.cabinet(cabinet)
    r = resolve_recipe(recipe)
    chans = parse_channel_list(channels, cab.channels, field="--channels")
    entries = load_cells_file(cells)
    assignments = assign_cells(chans, entries, r)
    chamber = cfg.chamber(cab.chamber) if cab.chamber is not None else None
    check_chamber(r, cab, chamber)  # a temperature the cabinet cannot give is refused before anything is written
    broker = feed_config(cfg.mqtt, mqtt)
    if at is not None and foreground:
        raise InputError("--at", "a foreground run starts now: --at queues a job for `formation serve`")
    start_after_s = parse_start_time(at) if at is not None else None
    _, store = open_store(site, db)
    if not foreground:
        with store:
            _queue(cfg, cab, r, assignments, store, note, start_after_s, site)
        return
    with store:
        busy = [j for j in store.list_jobs() if j.cabinet == cab.name and j.state in ACTIVE_JOB_STATES]
        if busy:
            # One job per cabinet: jobs share the instrument's data log and its sequence table.
            raise InputError(
                "--cabinet",
                f"cabinet {cab.name} is busy with job {busy[-1].id}; "
                f"wait for it or `formation run abort {busy[-1].id}`",
            )
        if chamber is not None and chamber_setpoints(r):
            _refuse_a_second_temperature_job(cfg, store, chamber.name)
        clock = make_clock(cfg.clock_scale)
        console.print(
            f"launching [bold]{escape(r.name)}[/] {escape(r.version)} on {escape(cab.name)} "
            f"channels {escape(channels)} ({len(chans)} cells)"
        )
        with job_progress() as progress:
            sup = asyncio.run(
                with_feed(
                    broker,
                    cfg,
                    lambda feed: run_job(
                        cab,
                        r,
                        assignments,
                        store,
                        clock,
                        on_start=progress.on_start,
                        on_cycle=progress.on_cycle,
                        note=note,
                        chamber=chamber,
                        feed=feed,
                    ),
                )
            )
        _print_job_end(store, sup.job_id)


#: How far ahead --at may look (a typo of a year is refused, not queued for ever).
MAX_AT_AHEAD_S = 366 * 86400.0


def parse_start_time(text: str) -> float:
    """``--at``: an ISO-8601 date and time (local time unless it names its zone) → unix seconds, at most a year on."""
    from datetime import datetime

    from formation.orchestrator.timebase import unix_wall_s

    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError("--at", f"{text!r} is not a date and time like 2026-12-01 06:00") from None
    start_s = when.timestamp()  # a naive time is local time
    if start_s - unix_wall_s() > MAX_AT_AHEAD_S:
        raise InputError("--at", f"{text} is more than a year ahead")
    return start_s


def _queue(
    cfg: SiteConfig,
    cab: CabinetConfig,
    recipe: Recipe,
    assignments: list[tuple[int, CellEntry]],
    store: Store,
    note: str | None,
    start_after_s: float | None,
    site: Path,
) -> None:
    """Record the job for the daemon and say so."""
    from formation.clock import make_clock
    from formation.orchestrator.job import queue_job

    job_id = queue_job(
        cab, recipe, assignments, store, make_clock(cfg.clock_scale), note=note, start_after_s=start_after_s
    )
    when = "" if start_after_s is None else f", not before {datetime_text(start_after_s)}"
    console.print(
        f"job {job_id} queued: [bold]{escape(recipe.name)}[/] {escape(recipe.version)} on {escape(cab.name)}, "
        f"{len(assignments)} cells{when}; `formation serve --site {escape(str(site))}` starts it",
        highlight=False,
    )


def datetime_text(unix_s: float) -> str:
    """Local date and time to the minute."""
    from datetime import datetime

    return datetime.fromtimestamp(unix_s).strftime("%Y-%m-%d %H:%M")


def _refuse_a_second_temperature_job(cfg: SiteConfig, store: Store, chamber: str) -> None:
    """The cells of one chamber share its set point: only one running job may set it."""
    from formation.orchestrator.job import job_recipe
    from formation.recipes import chamber_setpoints

    in_chamber = {c.name for c in cfg.cabinets if c.chamber == chamber}
    for other in store.list_jobs():
        if other.cabinet in in_chamber and other.state in ACTIVE_JOB_STATES and other.id is not None:
            theirs = job_recipe(store, other.id)
            if theirs is not None and chamber_setpoints(theirs):
                raise InputError(
                    "chamber",
                    f"chamber {chamber} is held by job {other.id} on cabinet {other.cabinet}, whose recipe sets its "
                    "temperature too: one temperature per chamber",
                )


@app.command("resume")
def resume(
    job: JobArg,
    site: Annotated[Path, typer.Option(help="Site configuration (TOML)")],
    db: DbOpt = None,
    mqtt: MqttOpt = None,
) -> None:
    """Re-attach to a job whose host process died: its cells kept running on the instrument."""
    import asyncio

    from formation.cli.feed import feed_config, with_feed
    from formation.cli.progress import job_progress
    from formation.clock import make_clock
    from formation.orchestrator.job import resume_job

    broker = feed_config(load_site_config(site).mqtt, mqtt)
    cfg, store = open_store(site, db)
    with store:
        _, cab = _job_and_cabinet(cfg, store, job)
        chamber = cfg.chamber(cab.chamber) if cab.chamber is not None else None
        clock = make_clock(cfg.clock_scale)
        console.print(f"re-attaching job {job} on {escape(cab.name)}")
        with job_progress() as progress:
            sup = asyncio.run(
                with_feed(
                    broker,
                    cfg,
                    lambda feed: resume_job(
                        cab, job, store, clock, on_start=progress.on_start, on_cycle=progress.on_cycle,
                        chamber=chamber, feed=feed,
                    ),
                )
            )  # fmt: skip
        _print_job_end(store, sup.job_id)


@app.command("list")
def list_jobs(site: SiteOpt = None, db: DbOpt = None) -> None:
    """List jobs."""
    _, store = open_store(site, db)
    table = Table(title="Jobs")
    for col in ("job", "recipe", "cabinet", "channels", "state", "runs"):
        table.add_column(col)
    with store:
        for job in store.list_jobs():
            assert job.id is not None
            runs = store.job_runs(job.id)
            add_text_row(
                table, str(job.id), job.recipe_sha256[:12], job.cabinet, job.channels, job.state, str(len(runs))
            )
    console.print(table)


@app.command("show")
def show(job: JobArg, site: SiteOpt = None, db: DbOpt = None) -> None:
    """Show a job's runs, per-step summary and, for recipes with repeat blocks, per-cycle capacity."""
    from formation.cli.progress import cycle_summary_table, step_summary_table

    _, store = open_store(site, db)
    with store:
        if store.get_job(job) is None:
            raise InputError("job", f"no job {job}")
        table = Table(title=f"Job {job} runs")
        for col in ("run", "cell", "channel", "state", "step", "end reason"):
            table.add_column(col)
        for run in store.job_runs(job):
            add_text_row(
                table,
                str(run.id),
                run.cell_id,
                str(run.channel),
                run.state,
                run.step_id or "",
                run.end_reason or "",
            )
        console.print(table)
        results = store.step_results(job_id=job)
        console.print(step_summary_table(results))
        cycles = cycle_summary_table(results)
        if cycles is not None:
            console.print(cycles)


@app.command("continue")
def continue_job(
    job: JobArg,
    site: SiteOpt = None,
    db: DbOpt = None,
) -> None:
    """Release the job's runs waiting at a hold step (through the database: the supervising process goes on)."""
    from formation.orchestrator.job import job_recipe
    from formation.states import RESUMABLE_JOB_STATES

    _, store = open_store(site, db)
    with store:
        found = store.get_job(job)
        if found is None:
            raise InputError("job", f"no job {job}")
        if found.state not in RESUMABLE_JOB_STATES:
            raise InputError("job", f"job {job} is {found.state}: nothing to continue")
        recipe = job_recipe(store, job)
        assert recipe is not None  # a stored job always has its recipe
        holding = [
            r
            for r in store.job_runs(job)
            if r.state not in TERMINAL_RUN_STATES
            and 0 <= r.step_index < len(recipe.steps)
            and recipe.steps[r.step_index].kind == "hold"
        ]
        if not holding:
            raise InputError("job", f"no run of job {job} is at a hold step")
        store.request_continue(job)
        steps = ", ".join(sorted({r.step_id or "" for r in holding}))
    console.print(f"job {job}: continue sent to {len(holding)} run(s) at hold step {escape(steps)}")


@app.command("abort")
def abort(
    job: JobArg,
    site: Annotated[Path, typer.Option(help="Site configuration (TOML)")],
    db: DbOpt = None,
) -> None:
    """Switch off every unfinished channel of a job on its cabinet (the launching process records the aborts)."""
    import asyncio

    cfg, store = open_store(site, db)
    with store:
        j, cab = _job_and_cabinet(cfg, store, job)
        if j.state == JobState.QUEUED and store.set_job_state(job, JobState.ABORTED):
            # Never started: nothing on the instrument to switch off (a claim and this race; one of them wins).
            from formation.clock import make_clock

            runs = [r for r in store.job_runs(job) if r.state not in TERMINAL_RUN_STATES]
            # An end time like every finished run's, so the daily lot report counts them on the day they ended.
            ended = {
                "state": "aborted",
                "end_reason": "aborted before start",
                "ended_s": make_clock(cfg.clock_scale).now(),
            }
            store.update_runs([{"id": r.id, **ended} for r in runs])
            console.print(f"queued job {job} aborted before it started ({len(runs)} runs)")
            return
        channels = [r.channel for r in store.job_runs(job) if r.state not in TERMINAL_RUN_STATES]
        if not channels:
            console.print(f"job {job} has no unfinished run")
            return
        # The launching process sees `aborting` and aborts too (a cell resting between steps is not running, so
        # the instrument abort alone would not keep the launcher from starting its next step).
        if not store.set_job_state(job, JobState.ABORTING):
            console.print(f"job {job} is already {j.state}; switching its unfinished channels off anyway")
    asyncio.run(_abort(cab, channels))
    console.print(f"aborted {len(channels)} channel(s) of job {job} on {escape(cab.name)}")


async def _abort(cab: CabinetConfig, channels: list[int]) -> None:
    from formation.instruments.bt2200 import Bt2200Cycler
    from formation.instruments.scpi import ScpiSession

    async with ScpiSession(cab.resource, timeout_s=cab.timeout_s, name=cab.name) as session:
        await Bt2200Cycler(session).abort(channels)
