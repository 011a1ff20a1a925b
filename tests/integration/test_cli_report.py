"""`formation report daily` in this process: the same file the daemon writes, from --db or a site file, a summary
table, and databases it must not touch (bad input through the CLI: test_bad_inputs.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa

from formation.cli.app import main
from formation.store import Store, sqlite_url
from formation.store.lotreport import latest_report_day, lot_report, report_csv, report_path, report_window
from tests.conftest import POSTGRES_BASE_URL
from tests.integration.lotreport_support import DAY, HOUR_MINUTE, SetClock, fill


@pytest.fixture(autouse=True)
def _wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "formation.db")
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def filled(url: str) -> Iterator[Store]:
    clock = SetClock(0.0)
    with Store(url, clock=clock) as store:
        store.create_schema()
        fill(store, clock)
        yield store


def test_the_days_file_is_the_daemons_and_a_summary_is_printed(
    filled: Store, url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["report", "daily", "--db", url, "--date", DAY.isoformat(), "--out", str(out)]) == 0
    printed, err = capsys.readouterr()
    path = report_path(out, DAY)
    assert path.read_text(encoding="utf-8") == report_csv(lot_report(filled, *report_window(DAY, HOUR_MINUTE)))
    assert err == ""
    assert f"wrote {path} (4 lot(s))" in printed
    for lot in ("L-AGE", "L-DONE", "L-QUEUED", "L-RUN"):
        assert lot in printed
    assert "66.7 %" in printed and "1 critical, 3 warning" in printed


def test_a_site_file_gives_the_database_the_folder_and_the_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "site.toml"
    site.write_text('[database]\npath = "line.db"\n[report]\ndaily_at = "05:30"\nfolder = "daily"\n')
    with Store(sqlite_url(tmp_path / "line.db")) as store:
        store.create_schema()
    day = latest_report_day(time.time(), (5, 30))
    assert main(["report", "daily", "--site", str(site)]) == 0
    path = report_path(tmp_path / "daily", day)
    assert path.read_text(encoding="utf-8").startswith("lot,cells,")  # an empty day: the header only
    assert f"wrote {path} (0 lot(s))" in capsys.readouterr().out


def test_a_day_not_over_yet_is_reported_so_far_with_a_warning(
    filled: Store, url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "daily", "--db", url, "--date", "2099-01-01", "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: the day of 2099-01-01 is not over") and err.count("\n") == 1
    assert report_path(tmp_path / "o", date(2099, 1, 1)).is_file()


@pytest.mark.services
def test_a_database_without_formation_or_not_there_is_refused_and_left_untouched(
    postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["report", "daily", "--db", postgres_url, "--out", str(out)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: --db: ") and line.endswith("holds no formation database")
    engine = sa.create_engine(postgres_url)
    try:
        assert sa.inspect(engine).get_table_names() == []  # the empty schema was not made a formation database
    finally:
        engine.dispose()
    missing = POSTGRES_BASE_URL.rsplit("/", 1)[0] + "/no_such_formation_database"
    assert main(["report", "daily", "--db", missing, "--out", str(out)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: --db: cannot reach") and "no_such_formation_database" in line
    assert not out.exists()
