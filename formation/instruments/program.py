"""Typed instrument programs, statuses and log records: what the orchestrator hands the cycler driver.

The orchestrator never sees SCPI text; it compiles a recipe step into a :class:`StepProgram` (one instrument
sequence of one or more instrument steps) and reads back :class:`CellState` codes and log blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

import numpy as np


class StepMode(StrEnum):
    """What the channel does during an instrument step."""

    CHARGE = "CHARGE"
    DISCHARGE = "DISCHARGE"
    REST = "REST"


class TestType(StrEnum):
    """Quantity a step test compares (CURR_* on |I|, AMPH_GE on the step's |Ah|)."""

    __test__ = False  # not a pytest test class

    VOLT_GE = "VOLT_GE"
    VOLT_LE = "VOLT_LE"
    CURR_GE = "CURR_GE"
    CURR_LE = "CURR_LE"
    AMPH_GE = "AMPH_GE"
    TEMP_GE = "TEMP_GE"
    STEPTIME_GE = "STEPTIME_GE"


class TestWhen(StrEnum):
    """When a test is evaluated relative to the step time ``at_s``."""

    __test__ = False  # not a pytest test class

    AT = "AT"
    AFTER = "AFTER"
    BEFORE = "BEFORE"


class TestAction(StrEnum):
    """What a test that holds does: end the step, or fail the cell (output off)."""

    __test__ = False  # not a pytest test class

    NEXT = "NEXT"
    FAIL = "FAIL"


@dataclass(frozen=True, slots=True)
class StepTest:
    """One end condition or safety test of an instrument step."""

    type: TestType
    value: float
    action: TestAction = TestAction.NEXT
    when: TestWhen = TestWhen.AFTER
    at_s: float = 0.0


@dataclass(frozen=True, slots=True)
class InstrumentStep:
    """One instrument step: CC (with CV clamp at ``voltage_v``) charge/discharge or rest, tests, record rule."""

    mode: StepMode
    duration_s: float
    current_a: float = 0.0
    voltage_v: float = 0.0
    tests: tuple[StepTest, ...] = ()
    every_s: float = 60.0
    every_mv: float = 5.0


@dataclass(frozen=True, slots=True)
class StepProgram:
    """One instrument sequence: the compiled form of one recipe step for one cell."""

    steps: tuple[InstrumentStep, ...] = field(default_factory=tuple)


class CellState(IntEnum):
    """``STAT:CELL:REP?`` codes (simulator extension table, docs/bt2200-dialect.md)."""

    UNDEFINED = -1
    IDLE = 0
    ENABLED = 1
    RUNNING = 2
    DONE = 3
    FAIL = 4
    ABORTED = 5


class EndCode:
    """End codes of a step in the data log (``end`` column)."""

    NONE = 0
    TIME = 1
    NEXT_BASE = 10  # NEXT test n -> 10 + n
    FAIL_BASE = 20  # FAIL test n -> 20 + n
    ABORT = 30
    WATCHDOG = 31
    FAULT = 32

    @staticmethod
    def describe(code: int) -> str:
        """A short name for an end code: ``time``, ``test2``, ``fail1``, ``abort``, ``watchdog``, ``fault``."""
        if code == EndCode.TIME:
            return "time"
        if EndCode.NEXT_BASE < code < EndCode.FAIL_BASE:
            return f"test{code - EndCode.NEXT_BASE}"
        if EndCode.FAIL_BASE < code < EndCode.ABORT:
            return f"fail{code - EndCode.FAIL_BASE}"
        return {EndCode.ABORT: "abort", EndCode.WATCHDOG: "watchdog", EndCode.FAULT: "fault"}.get(code, f"code{code}")


#: Columns of a data-log record, in order (docs/bt2200-dialect.md).
LOG_COLUMNS: tuple[str, ...] = (
    "rec",
    "cell",
    "seq",
    "step",
    "time_s",
    "step_time_s",
    "voltage_v",
    "current_a",
    "step_ah",
    "step_wh",
    "temp_c",
    "end",
)
LOG_COL = {name: i for i, name in enumerate(LOG_COLUMNS)}


def empty_log_block() -> np.ndarray:
    """A log block with no rows (shape ``(0, len(LOG_COLUMNS))``, float64)."""
    return np.empty((0, len(LOG_COLUMNS)), dtype=np.float64)


def channel_to_instrument(channel: int) -> int:
    """Logical channel (1-based) to BT2200 slot/channel number (1 -> 101, 33 -> 201)."""
    return ((channel - 1) // 32 + 1) * 100 + (channel - 1) % 32 + 1


def channel_to_cell_id(channel: int) -> int:
    """Logical channel to the instrument-side cell id the driver uses (1 -> 1001)."""
    return 1000 + channel


def cell_id_to_channel(cell_id: int) -> int:
    """Instrument-side cell id back to the logical channel (1001 -> 1)."""
    return cell_id - 1000
