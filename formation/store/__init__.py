"""The store: SQLModel tables, engines (SQLite default, PostgreSQL), batch sample writes, queries, exports."""

from formation.store.engine import create_schema, make_engine, sqlite_url
from formation.store.export import export_cell_bdf
from formation.store.models import (
    SAMPLE_COLUMNS,
    SEVERITIES,
    Alarm,
    Cell,
    Grade,
    Job,
    Lot,
    Recipe,
    Run,
    Sample,
    StepResult,
)
from formation.store.store import Store

__all__ = [
    "SAMPLE_COLUMNS",
    "SEVERITIES",
    "Alarm",
    "Cell",
    "Grade",
    "Job",
    "Lot",
    "Recipe",
    "Run",
    "Sample",
    "StepResult",
    "Store",
    "create_schema",
    "export_cell_bdf",
    "make_engine",
    "sqlite_url",
]
