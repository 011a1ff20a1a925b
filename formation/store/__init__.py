"""The store: SQLModel tables, engines (SQLite default, PostgreSQL), batch sample writes, queries, exports."""

from formation.store.ageing import AgeingJobRow
from formation.store.chamber import CHAMBER_SAMPLE_COLUMNS, ValveWear
from formation.store.engine import create_schema, make_engine, sqlite_url
from formation.store.export import export_cell_bdf
from formation.store.lotreport import latest_report_day, lot_report, report_path, write_daily_report
from formation.store.models import (
    SAMPLE_COLUMNS,
    SEVERITIES,
    AgeingJob,
    AgeingReading,
    AgeingResult,
    Alarm,
    CabinetLease,
    Cell,
    ChamberSample,
    Grade,
    Job,
    LineTimer,
    Lot,
    RackPosition,
    Recipe,
    Run,
    Sample,
    StepResult,
    ValveSwitches,
)
from formation.store.racks import LatestRun, Place
from formation.store.store import Store

__all__ = [
    "CHAMBER_SAMPLE_COLUMNS",
    "SAMPLE_COLUMNS",
    "SEVERITIES",
    "AgeingJob",
    "AgeingJobRow",
    "AgeingReading",
    "AgeingResult",
    "Alarm",
    "CabinetLease",
    "Cell",
    "ChamberSample",
    "Grade",
    "Job",
    "LatestRun",
    "LineTimer",
    "Lot",
    "Place",
    "RackPosition",
    "Recipe",
    "Run",
    "Sample",
    "StepResult",
    "Store",
    "ValveSwitches",
    "ValveWear",
    "create_schema",
    "export_cell_bdf",
    "latest_report_day",
    "lot_report",
    "make_engine",
    "report_path",
    "sqlite_url",
    "write_daily_report",
]
