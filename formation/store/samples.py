"""Batch writes of sample blocks: one executemany on SQLite, one binary COPY on PostgreSQL.

Samples bypass the ORM entirely: a block of a few thousand rows becomes Python tuples in a handful of C calls
(a structured array's ``tolist()``), or, on PostgreSQL, one binary COPY payload built by numpy without any
per-row Python at all.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import Connection

from formation.store.models import SAMPLE_BLOCK_COLUMNS, SAMPLE_COLUMNS, Sample

_INT_COLUMNS = frozenset({"run_id", "rec", "step_index", "cycle", "sub_step"})
#: Every block is written with its cycle and sub-step columns (blocks without them get 0).
_COLUMNS = SAMPLE_BLOCK_COLUMNS

#: Native structured dtype of a block's rows: integers where the table has integers.
ROW_DTYPE = np.dtype([(name, np.int64 if name in _INT_COLUMNS else np.float64) for name in _COLUMNS])

# PostgreSQL binary COPY: every field is a big-endian int32 length then the value; 4-byte ints for INTEGER
# columns, 8-byte for BIGINT and DOUBLE PRECISION. The widths must match the column types in models.py.
_PG_WIDTH = {"run_id": ">i4", "rec": ">i8", "step_index": ">i4", "cycle": ">i4", "sub_step": ">i4"}
_PG_DTYPE = np.dtype(
    [("nfields", ">i2")]
    + [field for name in _COLUMNS for field in ((f"len_{name}", ">i4"), (name, _PG_WIDTH.get(name, ">f8")))]
)
_PG_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
_PG_TRAILER = (-1).to_bytes(2, "big", signed=True)


def check_block(block: np.ndarray) -> np.ndarray:
    """``block`` as a C-contiguous float64 array of shape (n, 11): the SAMPLE_COLUMNS, the cycle and the sub-step
    (0 added for those a block of shape (n, 9) or (n, 10) lacks); ValueError for any other shape."""
    arr = np.ascontiguousarray(block, dtype=np.float64)
    widths = range(len(SAMPLE_COLUMNS), len(_COLUMNS) + 1)
    if arr.ndim != 2 or arr.shape[1] not in widths:
        shapes = ", ".join(f"(n, {w})" for w in widths[:-1]) + f" or (n, {widths[-1]})"
        raise ValueError(f"sample block must have shape {shapes}, got {arr.shape}")
    if arr.shape[1] < len(_COLUMNS):
        arr = np.column_stack([arr, np.zeros((len(arr), len(_COLUMNS) - arr.shape[1]))])
    return arr


def block_rows(block: np.ndarray) -> list[Any]:
    """The rows of a checked block as tuples, integer columns as Python ints (vectorised conversion)."""
    rows = np.empty(len(block), dtype=ROW_DTYPE)
    for i, name in enumerate(_COLUMNS):
        rows[name] = block[:, i]
    return rows.tolist()


def pg_copy_payload(block: np.ndarray) -> bytes:
    """The complete binary COPY stream (header, rows, trailer) of a checked block."""
    rows = np.empty(len(block), dtype=_PG_DTYPE)
    rows["nfields"] = len(_COLUMNS)
    for i, name in enumerate(_COLUMNS):
        rows[f"len_{name}"] = rows.dtype[name].itemsize
        rows[name] = block[:, i]
    return _PG_HEADER + rows.tobytes() + _PG_TRAILER


def _insert_sql(conn: Connection) -> str:
    table = conn.dialect.identifier_preparer.format_table(Sample.__table__)  # type: ignore[attr-defined]
    columns = ", ".join(_COLUMNS)
    marks = ", ".join("?" if conn.dialect.paramstyle == "qmark" else "%s" for _ in _COLUMNS)
    return f"INSERT INTO {table} ({columns}) VALUES ({marks})"


def insert_block(conn: Connection, block: np.ndarray) -> int:
    """Insert a checked block inside the caller's transaction; returns the number of rows written."""
    if len(block) == 0:
        return 0
    if conn.dialect.name == "postgresql":
        table = conn.dialect.identifier_preparer.format_table(Sample.__table__)  # type: ignore[attr-defined]
        sql = f"COPY {table} ({', '.join(_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
        driver_conn = conn.connection.driver_connection
        with driver_conn.cursor() as cursor, cursor.copy(sql) as copy:  # type: ignore[union-attr]
            copy.write(pg_copy_payload(block))
        return len(block)
    # Measured in bench/bench_ingest.py: the driver's executemany on tuples beats Core insert() with dicts.
    conn.exec_driver_sql(_insert_sql(conn), block_rows(block))
    return len(block)
