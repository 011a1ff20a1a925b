"""The simulator's own copy of the wire contract: what its SCPI text means (docs/bt2200-dialect.md).

The driver keeps its copy in ``formation/instruments/program.py``; the two meet only over TCP, so neither imports
the other. tests/integration/test_dialect_wire.py runs cells through the real driver and checks that both copies
mean the same thing on the wire (state codes, log columns, end codes, step modes, test keywords).

The simulator parses a superset of what the driver sends: every keyword the public BT2200 set defines and the
simulator can model (docs/bt2200-dialect.md lists the ones it refuses).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum


class CellState(IntEnum):
    """``STAT:CELL:REP?`` codes (EXT code table)."""

    UNDEFINED = -1
    IDLE = 0
    ENABLED = 1
    RUNNING = 2
    DONE = 3
    FAIL = 4
    ABORTED = 5


class EndCode:
    """End codes of a step: the ``end`` column of the data log and ``last_end`` of ``STAT:CELL:VERB?``."""

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


#: Columns of a data-log record (``DATA:LOG?``), in order.
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
LOG_COL: dict[str, int] = {name: i for i, name in enumerate(LOG_COLUMNS)}


class StepMode(StrEnum):
    """The ``<mode>`` keyword of ``SEQ:STEP:DEF``."""

    CHARGE = "CHARGE"
    DISCHARGE = "DISCHARGE"
    REST = "REST"


class TestType(StrEnum):
    """The ``<test_type>`` keyword of ``SEQ:TEST:DEF``: the quantity compared and how.

    CURR_* compare |I|, AMPH_* the step's |Ah|, WATTH_* the step's |Wh|, POWER_* |V·I| in W, TEMP_GE the cell
    temperature in °C (EXT), STEPTIME_GE the step time in s (EXT).
    """

    __test__ = False  # not a pytest test class

    VOLT_GE = "VOLT_GE"
    VOLT_LE = "VOLT_LE"
    CURR_GE = "CURR_GE"
    CURR_LE = "CURR_LE"
    AMPH_GE = "AMPH_GE"
    AMPH_LE = "AMPH_LE"
    WATTH_GE = "WATTH_GE"
    WATTH_LE = "WATTH_LE"
    POWER_GE = "POWER_GE"
    POWER_LE = "POWER_LE"
    TEMP_GE = "TEMP_GE"
    STEPTIME_GE = "STEPTIME_GE"


class TestWhen(StrEnum):
    """The ``<time_type>`` keyword of ``SEQ:TEST:DEF``: when a test is evaluated against its ``<time_limit>``."""

    __test__ = False  # not a pytest test class

    AT = "AT"
    AFTER = "AFTER"
    BEFORE = "BEFORE"


class TestAction(StrEnum):
    """The ``<test_action>`` keyword of ``SEQ:TEST:DEF``: end the step (NEXT) or fail the cell (FAIL)."""

    __test__ = False  # not a pytest test class

    NEXT = "NEXT"
    FAIL = "FAIL"


@dataclass(frozen=True, slots=True)
class StepTest:
    """One ``SEQ:TEST:DEF`` test as the simulator parsed it."""

    type: TestType
    value: float
    action: TestAction = TestAction.NEXT
    when: TestWhen = TestWhen.AFTER
    at_s: float = 0.0
