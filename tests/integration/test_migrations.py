"""Schema migrations on SQLite and PostgreSQL: the head matches the models, revision 0001 is the schema before
migrations, a database made by that code (``tests/fixtures/formation-00694c5.sqlite``) upgrades with
`formation db upgrade` and keeps its data, and a database at another revision is refused in one line."""

from __future__ import annotations

import csv
import pickle
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

from formation.cli.app import main
from formation.errors import SchemaError
from formation.store import Store, make_engine, migrate, sqlite_url

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FIXTURE = FIXTURES / "formation-00694c5.sqlite"
#: The rules its grades were made with (the built-in demo rules at 00694c5; the built-in ones have moved on since).
FIXTURE_RULES = FIXTURES / "demo-ncm21700-rules-00694c5.toml"

#: What the fixture holds (`formation demo --cells 4` at 00694c5, see tests/fixtures/README.md): rows per table.
FIXTURE_ROWS = {
    "lot": 1,
    "recipe": 1,
    "cell": 4,
    "job": 1,
    "run": 4,
    "step_result": 36,
    "sample": 5943,
    "alarm": 10,
    "grade": 4,
    "chamber_sample": 859,
    "valve_switches": 8,
}


@dataclass(frozen=True)
class Ran:
    """What one in-process `formation` call returned and printed."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., Ran]:
    """`formation ARGS` in this process, from a fresh folder."""
    monkeypatch.setenv("COLUMNS", "160")
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> Ran:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return Ran(code, out, err)

    return run


def one_line_error(ran: Ran) -> str:
    assert ran.returncode == 2, ran.stdout + ran.stderr
    lines = [ln for ln in ran.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in ran.stderr, ran.stderr
    return lines[0]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with no tables: a new SQLite file or a fresh PostgreSQL schema (dropped afterwards)."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "empty.db")
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def engine(empty_url: str) -> Iterator[sa.Engine]:
    eng = make_engine(empty_url)
    yield eng
    eng.dispose()


def drift(engine: sa.Engine) -> list[Any]:
    """What autogenerate would write to bring this database to the models (empty: they agree)."""
    with engine.connect() as conn:
        opts = {"compare_type": True, "compare_server_default": True, "include_name": migrate.include_name}
        return list(compare_metadata(MigrationContext.configure(conn, opts=opts), SQLModel.metadata))


def describe(engine: sa.Engine) -> dict[str, Any]:
    """Every formation table as the database reports it: columns, keys, indexes, unique and check constraints."""
    inspector = sa.inspect(engine)
    tables = set(inspector.get_table_names()) - {"alembic_version"} - migrate.FOREIGN_TABLES
    return {
        t: {
            "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(t)],
            "pk": inspector.get_pk_constraint(t)["constrained_columns"],
            "fks": sorted(
                (tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
                for f in inspector.get_foreign_keys(t)
            ),
            "indexes": sorted((i["name"], tuple(i["column_names"]), i["unique"]) for i in inspector.get_indexes(t)),
            "uniques": sorted((u["name"], tuple(u["column_names"])) for u in inspector.get_unique_constraints(t)),
            "checks": sorted(c["name"] for c in inspector.get_check_constraints(t)),
        }
        for t in sorted(tables)
    }


def alembic(engine: sa.Engine, verb: str, target: str) -> None:
    """``alembic upgrade|downgrade TARGET`` on the shipped migrations."""
    with engine.begin() as conn:
        getattr(command, verb)(migrate.alembic_config(conn), target)


# -- the chain against the models ----------------------------------------------------------------------------


def test_migration_head_matches_the_models(engine: sa.Engine) -> None:
    done = migrate.upgrade(engine)
    assert done.before.empty and done.after == migrate.head_revision()
    assert drift(engine) == [], (
        "the models differ from the migration head: add a revision under formation/store/migrations/versions"
    )
    chained = describe(engine)
    assert set(chained) >= migrate.BASE_TABLES

    # The check bites: one revision back, the models are ahead by what the head revision adds.
    alembic(engine, "downgrade", "-1")
    assert drift(engine) != []
    # Down to nothing, then a new database the way the line makes one (create_all, stamp): the same schema.
    alembic(engine, "downgrade", "base")
    assert set(sa.inspect(engine).get_table_names()) & migrate.BASE_TABLES == set()
    state = migrate.ensure_schema(engine)
    assert state.current and describe(engine) == chained


def test_revision_0001_is_the_schema_before_migrations(tmp_path: Path) -> None:
    engine = make_engine(sqlite_url(tmp_path / "base.db"))
    alembic(engine, "upgrade", migrate.BASE_REVISION)
    engine.dispose()

    def ddl(path: Path) -> dict[str, str]:
        with sqlite3.connect(path) as conn:
            rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall()
        skip = {"alembic_version", *migrate.FOREIGN_TABLES, "ix_apscheduler_jobs_next_run_time"}
        return {name: " ".join(sql.split()) for name, sql in rows if name not in skip}

    # The very CREATE statements the code at 00694c5 ran, constraint order included.
    assert ddl(tmp_path / "base.db") == ddl(FIXTURE)
    assert set(FIXTURE_ROWS) == migrate.BASE_TABLES


# -- the fixture database ------------------------------------------------------------------------------------


def fixture_rows(table: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(FIXTURE) as conn:
        return conn.execute(f'SELECT * FROM "{table}" ORDER BY 1').fetchall()


def check_fixture_data(url: str) -> None:
    """Every row of the fixture is there, values unchanged, and the new columns hold their defaults."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            counts = {t: conn.execute(sa.text(f'SELECT count(*) FROM "{t}"')).scalar_one() for t in FIXTURE_ROWS}
            cells = conn.execute(sa.text("SELECT id, lot_id, nominal_capacity_ah FROM cell ORDER BY id")).all()
            grades = conn.execute(sa.text("SELECT cell_id, grade, capacity_ah FROM grade ORDER BY cell_id")).all()
            steps = conn.execute(sa.text("SELECT run_id, step_index, ah, cycle FROM step_result ORDER BY id")).all()
            samples = conn.execute(sa.text("SELECT count(*), sum(rec), max(cycle) FROM sample")).one()
            holds = conn.execute(sa.text("SELECT continue_count FROM job")).scalars().all()
            timers = conn.execute(sa.text("SELECT count(*) FROM line_timers")).scalar_one()
    finally:
        engine.dispose()
    assert counts == FIXTURE_ROWS
    assert [tuple(c) for c in cells] == [(f"DEMO-000{i}", "DEMO-LOT", 5.0) for i in range(1, 5)]
    old_grades = {(r[1], r[4], r[6]) for r in fixture_rows("grade")}  # cell_id, grade, capacity_ah
    assert {tuple(g) for g in grades} == old_grades
    assert [(r, i, ah) for r, i, ah, _ in steps] == [(r[1], r[2], r[8]) for r in fixture_rows("step_result")]
    assert {cycle for *_, cycle in steps} == {0}
    with sqlite3.connect(FIXTURE) as conn:
        assert tuple(samples) == (*conn.execute("SELECT count(*), sum(rec) FROM sample").fetchone(), 0)
    assert holds == [0]
    assert timers == 0


def check_app_reads(cli: Callable[..., Ran], url: str, tmp_path: Path) -> None:
    """`run show` and `grade` work on the upgraded database; regrading with the same rules gives the grades and
    metrics the old code stored, replacing its rows (same cell, rules hash and run)."""
    shown = cli("run", "show", "1", "--db", url)
    assert shown.returncode == 0, shown.stderr
    assert all(f"DEMO-000{i}" in shown.stdout for i in range(1, 5)) and "capacity" in shown.stdout
    graded = cli("grade", "DEMO-LOT", "--rules", str(FIXTURE_RULES), "--out", str(tmp_path / "r.csv"), "--db", url)
    assert graded.returncode == 0, graded.stderr
    with (tmp_path / "r.csv").open(newline="") as f:
        report = {row["cell_id"]: row["grade"] for row in csv.DictReader(f)}
    # cell_id: (grade, capacity_ah, dcir_mohm, k_mv_per_day, ocv_v) as the old code stored them
    old = {r[1]: (r[4], *r[6:10]) for r in fixture_rows("grade")}
    assert report == {cell: values[0] for cell, values in old.items()}
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            query = "SELECT cell_id, grade, capacity_ah, dcir_mohm, k_mv_per_day, ocv_v FROM grade"
            new = {row[0]: tuple(row[1:]) for row in conn.execute(sa.text(query))}
    finally:
        engine.dispose()
    assert new.keys() == old.keys()  # replaced, not added: same cells, rules hash and runs
    for cell, (grade, *metrics) in new.items():
        assert grade == old[cell][0] and metrics == pytest.approx(list(old[cell][1:]), rel=1e-9)


def test_fixture_database_upgrades_and_keeps_its_data(cli: Callable[..., Ran], tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    shutil.copyfile(FIXTURE, db)
    url = sqlite_url(db)
    head = migrate.head_revision()

    assert "revision 0001 (unversioned: made before migrations)" in cli("db", "current", "--db", url).stdout
    # Nothing works in it before the upgrade, and saying so writes nothing.
    refused = one_line_error(cli("run", "show", "1", "--db", url))
    assert refused == (
        f"error: database at revision 0001 (unversioned: made before migrations), this formation needs {head}: "
        "run `formation db upgrade`"
    )
    upgraded = cli("db", "upgrade", "--db", url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"0001 (unversioned: made before migrations) → {head}" in upgraded.stdout
    check_fixture_data(url)
    check_app_reads(cli, url, tmp_path)
    again = cli("db", "upgrade", "--db", url)
    assert again.returncode == 0 and f"at revision {head}" in again.stdout and "nothing to do" in again.stdout
    assert f"revision {head}; the newest this formation knows" in cli("db", "current", "--db", url).stdout


def test_pending_age_checkpoints_carry_over_without_unpickling(cli: Callable[..., Ran], tmp_path: Path) -> None:
    db = tmp_path / "ageing.db"
    shutil.copyfile(FIXTURE, db)
    marker = tmp_path / "unpickled"
    # Unpickling this blob would create the marker: the job store's pickles must stay unread.
    blob = pickle.dumps(Touch(marker))
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO apscheduler_jobs (id, next_run_time, job_state) VALUES (?, ?, ?)",
            [
                ("ocv:sim-cab1:2:8:3", 1_800_000_000.5, blob),  # checkpoint 3 of run 2's age step
                ("ocv:cab:with:colons:4:8:1", 1_800_000_100.0, blob),
                ("ocv:sim-cab1:99:8:1", 1_800_000_000.0, blob),  # no such run
                ("ocv:sim-cab1:x:8:1", 1_800_000_000.0, blob),
                ("report:daily", 1_800_000_000.0, blob),
                ("ocv:sim-cab1:3:8:2", None, blob),  # paused: no due time
            ],
        )
    assert cli("db", "upgrade", "--db", sqlite_url(db)).returncode == 0
    with sqlite3.connect(db) as conn:
        timers = conn.execute("SELECT * FROM line_timers ORDER BY id").fetchall()
        assert conn.execute("SELECT count(*) FROM apscheduler_jobs").fetchone() == (6,)  # left as it was
    assert timers == [
        ("ocv:cab:with:colons:4:8:1", "ocv_checkpoint", "cab:with:colons", 1, 4, 8, 1, 1_800_000_100.0),
        ("ocv:sim-cab1:2:8:3", "ocv_checkpoint", "sim-cab1", 1, 2, 8, 3, 1_800_000_000.5),
    ]
    assert not marker.exists()


class Touch:
    """Unpickling this creates ``path``: the stand-in for code a crafted pickle would run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


@pytest.mark.services
def test_fixture_data_upgrades_on_postgres(cli: Callable[..., Ran], postgres_url: str, tmp_path: Path) -> None:
    engine = make_engine(postgres_url)
    alembic(engine, "upgrade", migrate.BASE_REVISION)
    source = make_engine(sqlite_url(FIXTURE))
    try:
        old, new = sa.MetaData(), sa.MetaData()
        old.reflect(source, only=list(FIXTURE_ROWS))
        new.reflect(engine, only=list(FIXTURE_ROWS))
        with source.connect() as src, engine.begin() as dst:
            for table in old.sorted_tables:  # parents first
                rows = [dict(r._mapping) for r in src.execute(table.select())]
                dst.execute(new.tables[table.name].insert(), rows)
                if "id" in table.c and isinstance(table.c.id.type, sa.Integer):
                    # Rows came with their ids: move the sequence past them, as a database that made them would.
                    dst.execute(sa.text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), {len(rows)})"))
    finally:
        source.dispose()
        engine.dispose()

    upgraded = cli("db", "upgrade", "--db", postgres_url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"0001 → {migrate.head_revision()}" in upgraded.stdout
    check_fixture_data(postgres_url)
    check_app_reads(cli, postgres_url, tmp_path)


def test_unversioned_database_made_between_revisions_upgrades(tmp_path: Path) -> None:
    # formation between 0001 and the first migrations made new databases with create_all from newer models
    # and recorded no revision: recognised as 0001, the later revisions add only what is missing.
    engine = make_engine(sqlite_url(tmp_path / "between.db"))
    try:
        SQLModel.metadata.create_all(engine)
        done = migrate.upgrade(engine)
        assert (done.before.revision, done.before.recorded, done.after) == ("0001", False, migrate.head_revision())
        assert drift(engine) == []
    finally:
        engine.dispose()


@pytest.mark.services
def test_processes_opening_a_new_postgres_database_at_once_all_get_it(postgres_url: str) -> None:
    # Two daemons started together on a new plant database: one creates the schema, the others wait and find it.
    engines = [make_engine(postgres_url) for _ in range(4)]
    barrier, errors = threading.Barrier(len(engines)), []

    def open_it(engine: sa.Engine) -> None:
        barrier.wait()
        try:
            migrate.ensure_schema(engine)
        except Exception as exc:  # collected: a failure in a thread would otherwise pass unseen
            errors.append(exc)

    threads = [threading.Thread(target=open_it, args=(e,)) for e in engines]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert errors == []
        with engines[0].connect() as conn:
            assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all() == [
                migrate.head_revision()
            ]
    finally:
        for engine in engines:
            engine.dispose()


def _open_at_once(engine: sa.Engine, barrier: threading.Barrier, errors: list[Exception]) -> None:
    barrier.wait()
    try:
        migrate.ensure_schema(engine)
    except Exception as exc:  # collected: a failure in a thread would otherwise pass unseen
        errors.append(exc)


def test_openers_of_a_new_sqlite_database_at_once_see_no_table_or_all_of_them(tmp_path: Path) -> None:
    # A `run launch` beside a daemon that is creating the database: the schema is made in one transaction under
    # SQLite's write lock, so nobody sees half of it ("lacks alarm, cell, …") or creates a table twice.
    for trial in range(3):
        engines = [make_engine(sqlite_url(tmp_path / f"new{trial}.db")) for _ in range(4)]
        barrier, errors = threading.Barrier(len(engines)), []
        threads = [threading.Thread(target=_open_at_once, args=(e, barrier, errors)) for e in engines]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
            assert errors == []
            assert drift(engines[0]) == []
        finally:
            for engine in engines:
                engine.dispose()


# -- refusals ------------------------------------------------------------------------------------------------


def test_opening_a_database_at_another_revision_is_refused(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "x.db")
    engine = make_engine(url)
    alembic(engine, "upgrade", migrate.BASE_REVISION)
    head = migrate.head_revision()
    with Store(url) as store, pytest.raises(SchemaError) as behind:
        store.create_schema()
    assert str(behind.value) == f"database at revision 0001, this formation needs {head}: run `formation db upgrade`"
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'ffff'"))
    with Store(url) as store, pytest.raises(SchemaError, match="revision ffff, which this formation does not know"):
        store.create_schema()
    with pytest.raises(SchemaError, match="does not know"):
        migrate.upgrade(engine)
    with engine.connect() as conn:
        assert migrate.read_state(conn).revision == "ffff"  # nothing written
    engine.dispose()


def test_partial_unversioned_schema_is_refused(tmp_path: Path) -> None:
    engine = make_engine(sqlite_url(tmp_path / "partial.db"))
    SQLModel.metadata.tables["lot"].create(engine)
    with pytest.raises(SchemaError, match="no schema revision and lacks alarm, cell,"):
        migrate.ensure_schema(engine)
    engine.dispose()


def test_db_commands_refuse_bad_databases_in_one_line(cli: Callable[..., Ran], tmp_path: Path) -> None:
    (tmp_path / "text.db").write_text("not a database\n")
    newer = tmp_path / "newer.db"
    with Store(sqlite_url(newer)) as made:
        made.create_schema()
    with sqlite3.connect(newer) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    cases = [
        ("postgresql://formation@127.0.0.1:1/plant", "--db: cannot reach 'postgresql://formation@127.0.0.1:1/plant'"),
        ("postgresql://formation:secret@127.0.0.1:1/plant", "cannot reach 'postgresql://formation:***@127.0.0.1"),
        ("not a url", "--db: unusable database URL 'not a url'"),
        ("nosuchdialect://x/y", "--db: unusable database URL"),
        (sqlite_url(tmp_path / "missing.db"), "--db: no SQLite database file at"),
        (sqlite_url(tmp_path / "text.db"), "--db: cannot reach"),
        (sqlite_url(newer), "error: database at revision 9999, which this formation does not know"),
    ]
    for url, expected in cases:
        for verb in ("upgrade", "current"):
            ran = cli("db", verb, "--db", url)
            if verb == "current" and url == sqlite_url(newer):
                assert ran.returncode == 0 and "revision 9999; newer than this formation" in ran.stdout
                continue
            line = one_line_error(ran)
            assert expected in line, (verb, url, line)
            assert "secret" not in line
    assert not (tmp_path / "missing.db").exists()
    assert (tmp_path / "text.db").read_text() == "not a database\n"
    site = tmp_path / "site.toml"
    site.write_text(f'[database]\nurl = "{sqlite_url(tmp_path / "missing.db")}"\n')
    assert "database: no SQLite database file at" in one_line_error(cli("db", "upgrade", "--site", str(site)))


def test_db_commands_without_a_site_take_the_environment(
    cli: Callable[..., Ran], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Store(sqlite_url(tmp_path / "env.db")) as made:
        made.create_schema()
    monkeypatch.setenv("FORMATION_DATABASE_URL", sqlite_url(tmp_path / "env.db"))
    ran = cli("db", "current")
    assert ran.returncode == 0 and "env.db" in ran.stdout and "the newest this formation knows" in ran.stdout


def test_db_current_of_an_empty_database(cli: Callable[..., Ran], tmp_path: Path) -> None:
    (tmp_path / "empty.db").touch()
    ran = cli("db", "current", "--db", sqlite_url(tmp_path / "empty.db"))
    assert ran.returncode == 0
    assert f"revision none (empty); formation creates revision {migrate.head_revision()} at first use" in ran.stdout
    upgraded = cli("db", "upgrade", "--db", sqlite_url(tmp_path / "empty.db"))
    assert upgraded.returncode == 0
    assert f"none (empty) → {migrate.head_revision()} (the whole migration chain)" in upgraded.stdout
