"""Grades in the store: plain rows from a grading DataFrame, and their upsert per rules version."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, delete, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from formation.store.models import Grade

if TYPE_CHECKING:
    from formation.store.store import Store

# Stay well below SQLite's bound-parameter limit in IN (...) lists.
_IN_CHUNK = 5_000

_GRADE_METRICS = ("capacity_ah", "dcir_mohm", "k_mv_per_day", "ocv_v", "acir_mohm")
_GRADE_VALUE_COLUMNS = ("lot_id", "grade", "reason", *_GRADE_METRICS, "recipe_sha256", "rules_name", "graded_s")


def grade_rows(grades: pd.DataFrame, rules_sha256: str, rules_name: str, graded_s: float) -> list[dict[str, Any]]:
    """Plain-Python row dicts (no numpy scalars, NULL for missing values) for an executemany of grades."""
    n = len(grades)

    def text(name: str, default: str | None) -> list[str | None]:
        if name not in grades:
            return [default] * n
        col = grades[name].astype(object)
        return [None if pd.isna(v) else str(v) for v in col.where(col.notna(), None).tolist()]

    def number(name: str) -> list[float | None]:
        if name not in grades:
            return [None] * n
        x = pd.to_numeric(grades[name], errors="coerce").astype(np.float64)
        return x.astype(object).where(x.notna(), None).tolist()

    run = pd.to_numeric(grades["run_id"], errors="coerce") if "run_id" in grades else pd.Series([np.nan] * n)
    columns: dict[str, list[Any]] = {
        "cell_id": text("cell_id", None),
        "lot_id": text("lot_id" if "lot_id" in grades else "lot", None),
        "run_id": [None if pd.isna(v) else int(v) for v in run.tolist()],
        "grade": text("grade", None),
        "reason": [r or "" for r in text("reason", "")],
        **{m: number(m) for m in _GRADE_METRICS},
        "recipe_sha256": text("recipe_sha256", None),
        "rules_sha256": [rules_sha256] * n,
        "rules_name": [rules_name] * n,
        "graded_s": [float(graded_s)] * n,
    }
    keys = list(columns)
    return [dict(zip(keys, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def _chunks(items: Sequence[str], size: int = _IN_CHUNK) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def write_grades(conn: Connection, rows: list[dict[str, Any]], rules_sha256: str) -> None:
    """Upsert grade rows in one transaction: same (cell, rules, run) replaced, other rules versions kept."""
    grade_t = Grade.__table__  # type: ignore[attr-defined]
    ran = [r for r in rows if r["run_id"] is not None]
    never_ran = [r for r in rows if r["run_id"] is None]
    if ran:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(grade_t)
        stmt = stmt.on_conflict_do_update(
            index_elements=["cell_id", "rules_sha256", "run_id"],
            set_={c: stmt.excluded[c] for c in _GRADE_VALUE_COLUMNS},
        )
        conn.execute(stmt, ran)
    if never_ran:
        # NULL run ids never conflict in a unique index: replace these rows by hand.
        ids = [r["cell_id"] for r in never_ran]
        for chunk in _chunks(ids):
            conn.execute(
                delete(grade_t).where(
                    grade_t.c.rules_sha256 == rules_sha256,
                    grade_t.c.run_id.is_(None),
                    grade_t.c.cell_id.in_(chunk),
                )
            )
        conn.execute(insert(grade_t), never_ran)


def save_grades(
    self: Store, grades: pd.DataFrame, *, rules_sha256: str, rules_name: str, graded_s: float | None = None
) -> int:
    """Store one grade per row (``cell_id, lot, run_id, grade, reason``, metrics, ``recipe_sha256``).

    Keyed by (cell_id, rules_sha256, run_id): rows already stored under the same key are replaced, other
    rules versions are kept. Returns the number of rows written.
    """
    if grades.empty:
        return 0
    rows = grade_rows(grades, rules_sha256, rules_name, self._clock.now() if graded_s is None else graded_s)
    with self._begin() as conn:
        write_grades(conn, rows, rules_sha256)
    return len(rows)


def grades(self: Store, lot: str | None = None, rules_sha256: str | None = None) -> pd.DataFrame:
    """Stored grades (of one lot and/or rules version), by cell then grading time; missing metrics NaN."""
    grade_t = Grade.__table__  # type: ignore[attr-defined]
    stmt = select(grade_t)
    if lot is not None:
        stmt = stmt.where(grade_t.c.lot_id == lot)
    if rules_sha256 is not None:
        stmt = stmt.where(grade_t.c.rules_sha256 == rules_sha256)
    frame = self.query_frame(stmt.order_by(grade_t.c.cell_id, grade_t.c.graded_s, grade_t.c.id))
    floats = ["capacity_ah", "dcir_mohm", "k_mv_per_day", "ocv_v", "graded_s"]
    return frame.astype({**dict.fromkeys(floats, "float64"), "run_id": "Int64", "id": "int64"})
