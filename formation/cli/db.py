"""`formation db upgrade|current`: a database's schema revision, and migrating it to this formation's."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from formation.cli.app import console
from formation.errors import InputError, StoreError

if TYPE_CHECKING:
    from sqlalchemy import Engine

app = typer.Typer(help="The database's schema revision, and upgrading it.", no_args_is_help=True)

SiteOpt = Annotated[Path | None, typer.Option(help="Site configuration (TOML): its [database]")]
DbOpt = Annotated[str | None, typer.Option(help="Database URL (overrides the site's)")]


def _shown(url: str) -> str:
    """The URL for messages, password hidden."""
    from sqlalchemy import make_url

    try:
        return repr(make_url(url).render_as_string(hide_password=True))
    except Exception:  # an unparseable URL holds no recognisable password field
        return repr(url)


def _first_line(exc: BaseException) -> str:
    # Drivers put several lines in their messages; the CLI answers with one.
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextmanager
def reachable_engine(site: Path | None, db: str | None) -> Iterator[tuple[Engine, str]]:
    """An engine on the site's (or ``--db``'s) database, checked reachable, and the URL as shown (password hidden);
    a bad URL, a missing SQLite file and a dead server exit 2 (`db upgrade|current`, `report daily`)."""
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from formation.config import SiteConfig, apply_env, load_site_config
    from formation.store import make_engine

    # Without a site file the defaults and FORMATION_DATABASE_URL apply, as a site file's values would be overridden.
    url = db or (load_site_config(site) if site is not None else apply_env(SiteConfig())).database_url
    field = "--db" if db else "database"
    shown = _shown(url)
    try:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            path = parsed.database
            # Upgrading creates nothing: a mistyped path is not a new, empty database.
            if not path or path == ":memory:" or not Path(path).is_file():
                raise InputError(field, f"no SQLite database file at {shown}")
        engine = make_engine(url)
    except ImportError as exc:
        raise InputError(field, f"the driver for {shown} is not installed ({exc.name})") from None
    except ArgumentError:
        raise InputError(field, f"unusable database URL {shown}") from None
    try:
        try:
            with engine.connect():
                pass
        except (SQLAlchemyError, OSError) as exc:
            raise InputError(field, f"cannot reach {shown}: {_first_line(exc)}") from None
        yield engine, shown
    finally:
        engine.dispose()


@contextmanager
def _store_errors(shown: str) -> Iterator[None]:
    """A database that fails once reached (a migration refused, the server gone) is a failure: exit 1."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except SQLAlchemyError as exc:
        raise StoreError(f"{shown}: {_first_line(exc)}") from None


@app.command()
def upgrade(site: SiteOpt = None, db: DbOpt = None) -> None:
    """Migrate the database to this formation's schema revision, keeping its data; prints from → to."""
    from formation.store import migrate

    with reachable_engine(site, db) as (engine, shown), _store_errors(shown):
        done = migrate.upgrade(engine)
    if not done.changed:
        console.print(f"{escape(shown)}: at revision {done.after}, the newest this formation knows; nothing to do")
        return
    how = " (the whole migration chain)" if done.before.empty else ""
    console.print(f"upgraded {escape(shown)}: {escape(done.before.describe())} → {done.after}{how}")


@app.command()
def current(site: SiteOpt = None, db: DbOpt = None) -> None:
    """Print the database's schema revision and whether this formation can work in it."""
    from formation.store import migrate

    with reachable_engine(site, db) as (engine, shown), _store_errors(shown), engine.connect() as conn:
        state = migrate.read_state(conn)
    if state.current:
        verdict = "the newest this formation knows"
    elif not state.known:
        verdict = f"newer than this formation, whose newest is {state.head}"
    elif state.empty:
        verdict = f"formation creates revision {state.head} at first use"
    else:
        verdict = f"this formation needs {state.head}: run `formation db upgrade`"
    console.print(f"{escape(shown)}: revision {escape(state.describe())}; {verdict}")
