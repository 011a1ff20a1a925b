"""`formation report daily`: the daily lot report of one day, written by hand (`formation serve` writes it each
morning): the same file, for the day ending at ``[report] daily_at`` on ``--date``."""

from __future__ import annotations

import re
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from formation.cli.app import add_text_row, console, print_problem
from formation.errors import FormationError, InputError

if TYPE_CHECKING:
    import pandas as pd

    from formation.config import SiteConfig
    from formation.store import Store

app = typer.Typer(help="Reports from the store.", no_args_is_help=True)

SiteOpt = Annotated[Path | None, typer.Option(help="Site configuration (TOML): its database, report folder and time")]
DbOpt = Annotated[str | None, typer.Option(help="Database URL (overrides the site's)")]
#: ``YYYY-MM-DD`` in ASCII digits (``date.fromisoformat`` alone would also take ``20261202``).
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


@app.command("daily")
def daily(
    site: SiteOpt = None,
    db: DbOpt = None,
    day: Annotated[
        str | None,
        typer.Option(
            "--date",
            help="The report's date, YYYY-MM-DD: the day ending at daily_at on it (default: the latest due now)",
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Folder of the report (default: the site's report folder)")] = None,
) -> None:
    """Write the daily lot report (lot-report-YYYY-MM-DD.csv) of one day and print its summary."""
    import time

    from formation.cli.run import output_dir
    from formation.config import SiteConfig, apply_env, load_site_config
    from formation.store.lotreport import latest_report_day, report_window, write_daily_report

    # Every input checked before the database is opened: nothing is written for a bad one.
    cfg = load_site_config(site) if site is not None else apply_env(SiteConfig())
    hour_minute = cfg.report.hour_minute
    when = _parse_date(day) if day is not None else latest_report_day(time.time(), hour_minute)
    try:
        start_s, end_s = report_window(when, hour_minute)
    except (OverflowError, OSError, ValueError):  # a date the platform's clock cannot give (year 1, 9999)
        raise InputError("--date", f"{when.isoformat()} is beyond the dates this host's clock can give") from None
    folder = output_dir(out if out is not None else Path(cfg.report.folder), "--out" if out else "report.folder")
    store = _open_existing_store(site, db, cfg)
    with store:
        try:
            path, report = write_daily_report(store, folder, when, hour_minute)
        except OSError as exc:  # checked writable a moment ago; a full disk still says no
            raise FormationError(f"cannot write the report in {folder}: {exc.strerror or exc}") from None
    if end_s > time.time():
        print_problem("warning:", f"the day of {when.isoformat()} is not over: the report covers it so far", "yellow")
    console.print(summary_table(report, f"Daily lot report {when.isoformat()} ({_local(start_s)} – {_local(end_s)})"))
    console.print(f"wrote {escape(str(path))} ({len(report)} lot(s))", highlight=False)


def _parse_date(text: str) -> date:
    if _DATE.fullmatch(text) is None:
        raise InputError("--date", f"{text!r} is not a date as YYYY-MM-DD")
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise InputError("--date", f"{text!r} is not a date: {exc}") from None


def _local(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s).strftime("%Y-%m-%d %H:%M")


def _open_existing_store(site: Path | None, db: str | None, cfg: SiteConfig) -> Store:
    """The store of an existing formation database: a missing SQLite file, a database without formation's tables, an
    unreachable server or a bad URL exit 2 with nothing created; an old schema asks for `formation db upgrade`."""
    from formation.cli.db import reachable_engine
    from formation.store import Store
    from formation.store.migrate import read_state

    with reachable_engine(site, db) as (engine, shown), engine.connect() as conn:
        state = read_state(conn)
    if state.empty:
        raise InputError("--db" if db else "database", f"{shown} holds no formation database")
    store = Store(db or cfg.database_url)
    try:
        store.create_schema()  # on a database that has tables, only checks their revision
    except BaseException:
        store.close()
        raise
    return store


def summary_table(report: pd.DataFrame, title: str) -> Table:
    """One row per lot: cells, runs by state, ageing jobs, grades and the A yield, alarms."""
    table = Table(title=title)
    columns = ("lot", "cells", "running", "done", "faulted", "aborted", "ageing", "graded", "A yield", "alarms")
    for column in columns:
        table.add_column(column, justify="left" if column == "lot" else "right")
    for row in report.itertuples(index=False):
        yield_a = "—" if row.graded_cells == 0 else f"{row.yield_a_pct:.1f} %"
        alarms = f"{row.alarms_critical} critical, {row.alarms_warning} warning"
        ageing = f"{row.ageing_jobs_running} running, {row.ageing_jobs_done} done"
        counts = (row.cells, row.runs_running, row.runs_done, row.runs_faulted, row.runs_aborted)
        add_text_row(table, str(row.lot), *(str(n) for n in counts), ageing, str(row.graded_cells), yield_a, alarms)
    return table
