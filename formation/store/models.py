"""SQLModel tables of the store.

Units live in column names. Times are float unix seconds of *clock* time (``*_s``, ``ts_s``): the plant may
run on a scaled clock, so these are not necessarily wall-clock instants. IDs are kept as given by the plant
(cell serials, lot names); only jobs, runs and the append-only tables get surrogate integer keys.

``Sample`` is declared here so that the schema is in one place, but it is written only through SQLAlchemy Core
in batches (see :mod:`formation.store.samples`), never as ORM objects.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, Column, ForeignKey, Index, Integer, UniqueConstraint
from sqlmodel import Field, SQLModel

#: Alarm severities, in increasing order of gravity.
SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")

#: Columns of a sample block handed to :meth:`Store.write_samples`, in order (float64 array, shape (n, 9)).
SAMPLE_COLUMNS: tuple[str, ...] = (
    "run_id",
    "rec",
    "ts_s",
    "step_index",
    "step_time_s",
    "voltage_v",
    "current_a",
    "ah",
    "temperature_c",
)
#: A block may carry the cycle number as a tenth column (the orchestrator's do); without it, cycle 0 is stored.
SAMPLE_COLUMNS_WITH_CYCLE: tuple[str, ...] = (*SAMPLE_COLUMNS, "cycle")
#: ... and the instrument sub-step as an eleventh (the orchestrator's do); without it, sub-step 0 (unknown).
SAMPLE_BLOCK_COLUMNS: tuple[str, ...] = (*SAMPLE_COLUMNS_WITH_CYCLE, "sub_step")


def _bigint_pk() -> Column[int]:
    # SQLite only aliases the rowid (fast, auto-assigned) for a column declared exactly INTEGER PRIMARY KEY.
    return Column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True)


class Lot(SQLModel, table=True):
    """Cells made together."""

    __tablename__ = "lot"

    id: str = Field(primary_key=True)
    product: str | None = None
    created_s: float


class Cell(SQLModel, table=True):
    """One cell, keyed by its serial number."""

    __tablename__ = "cell"

    id: str = Field(primary_key=True)
    lot_id: str = Field(foreign_key="lot.id", index=True)
    nominal_capacity_ah: float
    created_s: float


class Recipe(SQLModel, table=True):
    """A recipe as launched: canonical JSON body and source text, keyed by the body's sha256."""

    __tablename__ = "recipe"

    sha256: str = Field(primary_key=True, max_length=64)
    name: str
    version: str
    chemistry: str | None = None
    nominal_capacity_ah: float
    body_json: str
    source_text: str
    created_s: float


class Job(SQLModel, table=True):
    """One launch of a recipe on a set of channels of one cabinet."""

    __tablename__ = "job"

    id: int | None = Field(default=None, primary_key=True)
    recipe_sha256: str = Field(foreign_key="recipe.sha256", index=True)
    cabinet: str
    channels: str
    state: str
    clock_scale: float = 1.0
    started_s: float
    ended_s: float | None = None
    note: str | None = None
    #: How many times `formation run continue` released this job's hold steps (read by the supervising host).
    continue_count: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    #: A queued job starts no earlier than this (clock seconds; `run launch --at`); None: as soon as claimed.
    start_after_s: float | None = None
    #: The daemon that claimed the job (`formation serve`; host:pid:tag), None for a foreground launch.
    owner: str | None = None


class CabinetLease(SQLModel, table=True):
    """Which daemon drives a cabinet, until when: renewed while it lives, taken over once expired."""

    __tablename__ = "cabinet_lease"

    cabinet: str = Field(primary_key=True)
    owner: str
    #: Unix wall seconds (leases are between processes, whatever their clock scale).
    expires_unix_s: float
    acquired_unix_s: float


class LineTimer(SQLModel, table=True):
    """A long-horizon timer of the line as plain data: what kind, about what, due when (``orchestrator/timers.py``).

    Never code: the kind is looked up in a fixed set and the keys are checked before anything is scheduled.
    """

    __tablename__ = "line_timers"

    #: The timer's id (scheduling the same id again replaces it).
    id: str = Field(primary_key=True, max_length=200)
    kind: str = Field(max_length=40)
    cabinet: str = Field(max_length=200)
    job_id: int
    run_id: int
    step_index: int
    k: int
    #: Unix wall seconds (the scheduler's time, whatever the clock scale).
    due_unix_s: float


class Run(SQLModel, table=True):
    """One cell's pass through a recipe on one channel: state, recipe cursor and journal."""

    __tablename__ = "run"
    __table_args__ = (Index("ix_run_cabinet_state", "cabinet", "state"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", index=True)
    cell_id: str = Field(foreign_key="cell.id", index=True)
    cabinet: str
    channel: int
    instrument_cell: int
    state: str
    step_index: int = 0
    step_id: str | None = None
    seq_id: int | None = None
    step_started_s: float | None = None
    journal: str = "{}"
    # The data-log record numbers grow for years on a busy cabinet: 64 bits.
    last_rec: int = Field(default=0, sa_type=BigInteger)
    started_s: float
    ended_s: float | None = None
    end_reason: str | None = None


class RackPosition(SQLModel, table=True):
    """Where a cell sits in the ageing room: one cell in one place, and one place holds one cell."""

    __tablename__ = "rack_position"
    __table_args__ = (UniqueConstraint("rack", "position", name="uq_rack_position_place"),)

    cell_id: str = Field(foreign_key="cell.id", primary_key=True)
    rack: str = Field(max_length=200)
    position: int
    #: When the cell was put there (clock seconds).
    loaded_s: float


class AgeingJob(SQLModel, table=True):
    """One ageing plan run on the cells of a lot on one rack (``formation age start``; orchestrator/ageing.py)."""

    __tablename__ = "ageing_job"
    __table_args__ = (Index("ix_ageing_job_rack_state", "rack", "state"),)

    id: int | None = Field(default=None, primary_key=True)
    lot_id: str = Field(foreign_key="lot.id", index=True)
    rack: str = Field(max_length=200)
    tester: str | None = Field(default=None, max_length=200)
    chamber: str | None = Field(default=None, max_length=200)
    plan_name: str
    plan_sha256: str = Field(max_length=64)
    #: The plan's canonical JSON (durations in seconds): what the runner follows, re-validated when read.
    plan_json: str
    #: queued (for `formation serve`), running, interrupted, done, aborted.
    state: str = Field(max_length=20)
    #: The plan's time zero (clock seconds): checkpoints and stages count from here.
    started_s: float
    ended_s: float | None = None
    owner: str | None = None


class AgeingReading(SQLModel, table=True):
    """One cell's OCV/ACIR reading at one checkpoint, with the time, temperatures and chamber state it was taken in.

    ``reason`` is set (``no contact``, ``over range``, ``timeout``) when the tester gave no number.
    """

    __tablename__ = "ageing_reading"
    __table_args__ = (
        UniqueConstraint("ageing_job_id", "k", "cell_id", name="uq_ageing_reading_job_k_cell"),
        Index("ix_ageing_reading_cell", "cell_id"),
    )

    id: int | None = Field(default=None, sa_column=_bigint_pk())
    ageing_job_id: int = Field(foreign_key="ageing_job.id")
    cell_id: str = Field(foreign_key="cell.id")
    position: int
    #: Checkpoint index in the plan (0, 1, …) and the stage it belongs to.
    k: int
    stage: int
    ts_s: float
    ocv_v: float | None = None
    acir_mohm: float | None = None
    #: The cell's temperature: the chamber air it has sat in (the tester has no probe), NULL without a chamber.
    cell_temperature_c: float | None = None
    chamber_setpoint_c: float | None = None
    chamber_temperature_c: float | None = None
    chamber_in_band: bool | None = None
    chamber_stable: bool | None = None
    reason: str | None = None


class AgeingResult(SQLModel, table=True):
    """K by regression of one cell in one ageing job, with its standard error, window and last readings."""

    __tablename__ = "ageing_result"

    ageing_job_id: int = Field(foreign_key="ageing_job.id", primary_key=True)
    cell_id: str = Field(foreign_key="cell.id", primary_key=True, index=True)
    k_mv_per_day: float | None = None
    k_se_mv_per_day: float | None = None
    n_points: int = 0
    window_start_s: float | None = None
    window_end_s: float | None = None
    #: Mean cell temperature over the fit window, and the temperature K was corrected to.
    temperature_c: float | None = None
    reference_c: float
    #: The last valid OCV and ACIR of the job (NULL when none).
    ocv_v: float | None = None
    acir_mohm: float | None = None
    #: Empty when K was fit; else why not (too few valid readings, tester faults).
    reason: str = ""
    computed_s: float


class StepResult(SQLModel, table=True):
    """Accounting of one finished recipe step of one run."""

    __tablename__ = "step_result"
    # The unique index leads with run_id, so it also serves every "results of this run" lookup.
    __table_args__ = (UniqueConstraint("run_id", "step_index", name="uq_step_result_run_step"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id")
    step_index: int
    step_id: str | None = None
    kind: str
    started_s: float
    ended_s: float
    duration_s: float
    ah: float
    wh: float
    start_voltage_v: float | None = None
    end_voltage_v: float | None = None
    end_reason: str
    details: str = "{}"
    #: Cycle number of a step in a repeat block (1, 2, … across the recipe); 0 outside any block.
    cycle: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


class Sample(SQLModel, table=True):
    """One decimated data-log record of one run (written in batches through Core only)."""

    __tablename__ = "sample"
    __table_args__ = (Index("ix_sample_run_rec", "run_id", "rec"),)

    id: int | None = Field(default=None, sa_column=_bigint_pk())
    run_id: int = Field(sa_column=Column(Integer, ForeignKey("run.id"), nullable=False))
    rec: int = Field(sa_type=BigInteger)
    ts_s: float
    step_index: int
    # Measurements may be NaN (an open thermocouple); SQLite stores NaN as NULL, so these are nullable.
    step_time_s: float | None = None
    voltage_v: float | None = None
    current_a: float | None = None
    ah: float | None = None
    temperature_c: float | None = None
    #: The cycle number of the record's step (``StepResult.cycle``).
    cycle: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    #: The instrument step of the recipe step's sequence (1-based: a dcir's baseline rest 1, its pulse 2), so a
    #: step interrupted by a host crash is measured from its stored records; 0 where unknown (older rows).
    sub_step: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


class Alarm(SQLModel, table=True):
    """An alarm raised by the line, kept forever."""

    __tablename__ = "alarm"
    __table_args__ = (CheckConstraint("severity IN ('info', 'warning', 'critical')", name="ck_alarm_severity"),)

    id: int | None = Field(default=None, primary_key=True)
    ts_s: float = Field(index=True)
    severity: str
    code: str
    message: str
    cabinet: str | None = None
    channel: int | None = None
    run_id: int | None = Field(default=None, foreign_key="run.id")
    job_id: int | None = Field(default=None, foreign_key="job.id", index=True)


class ChamberSample(SQLModel, table=True):
    """One decimated control step of a chamber (written in batches through Core only, see ``store/chamber.py``).

    ``temperature_c`` is the control temperature (the vote of the healthy thermocouples; NULL when none was);
    ``sensors_c`` a JSON list in the configured sensor order (null for an open thermocouple); ``valves_open`` the
    valve channels commanded open, comma-separated (``"301,302"``).
    """

    __tablename__ = "chamber_sample"
    __table_args__ = (Index("ix_chamber_sample_chamber_ts", "chamber", "ts_s"),)

    id: int | None = Field(default=None, sa_column=_bigint_pk())
    chamber: str
    ts_s: float
    setpoint_c: float
    temperature_c: float | None = None
    sensors_c: str = "[]"
    demand: float
    valves_open: str = ""
    stable: bool
    in_band: bool


class ValveSwitches(SQLModel, table=True):
    """A chamber valve's wear so far: switchings and seconds commanded open, across every run of the loop."""

    __tablename__ = "valve_switches"

    chamber: str = Field(primary_key=True)
    channel: int = Field(primary_key=True)
    switches: int = Field(default=0, sa_type=BigInteger)
    open_s: float = 0.0
    updated_s: float


class Grade(SQLModel, table=True):
    """One cell's grade under one rules version for one run (NG with a reason included).

    Unique per (cell, rules hash, run): grading with new rules adds a version, grading again with the same rules
    replaces it. ``run_id`` is NULL for a cell that never ran (graded NG "no run").
    """

    __tablename__ = "grade"
    __table_args__ = (
        UniqueConstraint("cell_id", "rules_sha256", "run_id", name="uq_grade_cell_rules_run"),
        Index("ix_grade_lot_rules", "lot_id", "rules_sha256"),
    )

    id: int | None = Field(default=None, primary_key=True)
    cell_id: str = Field(foreign_key="cell.id")
    lot_id: str
    run_id: int | None = Field(default=None, foreign_key="run.id")
    grade: str
    reason: str = ""
    capacity_ah: float | None = None
    dcir_mohm: float | None = None
    k_mv_per_day: float | None = None
    ocv_v: float | None = None
    recipe_sha256: str | None = Field(default=None, max_length=64)
    rules_sha256: str = Field(max_length=64)
    rules_name: str
    graded_s: float
    #: The ACIR the grade was given with (added by migration 0003, hence last).
    acir_mohm: float | None = None


#: Every table of the store, parents first.
TABLES: tuple[type[SQLModel], ...] = (
    Lot,
    Cell,
    Recipe,
    Job,
    Run,
    StepResult,
    Sample,
    Alarm,
    Grade,
    ChamberSample,
    ValveSwitches,
    CabinetLease,
    LineTimer,
    AgeingJob,
    AgeingReading,
    AgeingResult,
)
