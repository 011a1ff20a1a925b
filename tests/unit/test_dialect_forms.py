"""The simulator takes every form of the public BT2200 commands it implements (docs/bt2200-dialect.md).

REST steps with only a duration, the public keyword spellings and channel-list forms, ``0`` for "every cell" or
"every sequence", the public test types it can model; and every malformed parameter is refused with a standard
SCPI error in the queue, never an exception out of the dispatcher.
"""

from __future__ import annotations

import numpy as np
import pytest

from formation.sim.cells import PRESETS, CellPopulation
from formation.sim.commands import COMMAND_TABLE, CabinetCommands
from formation.sim.cycler import CabinetModel
from formation.sim.scpi import Dispatcher
from formation.sim.wire import LOG_COL, CellState, EndCode, StepMode

T0 = 1_700_000_000.0
N = 40


@pytest.fixture
def model() -> CabinetModel:
    cells = CellPopulation(PRESETS["ncm21700-5ah"], N, seed=3, initial_soc=0.5, formed=True, defect_fraction=0.0)
    return CabinetModel(N, cells, start_time_s=T0)


@pytest.fixture
def scpi(model: CabinetModel) -> Dispatcher:
    d = Dispatcher(COMMAND_TABLE, CabinetCommands(model))
    for k in range(N):
        assert d.execute(f"CELL:DEF {1001 + k},(@{(k // 32 + 1) * 100 + k % 32 + 1})") is None
    return d


def errors(scpi: Dispatcher) -> list[int]:
    out = []
    while (reply := scpi.execute("SYST:ERR?")) != '+0,"No error"':
        assert reply is not None
        out.append(int(reply.split(",")[0]))
    return out


# --- REST steps ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "SEQ:STEP:DEF 1,1,REST,60",
        "SEQ:STEP:DEF 1, 1, REST, 300",  # spaces after the commas, as public host code sends it
        "SEQ:STEP:DEF 1,1,REST,60,0",
        "SEQ:STEP:DEF 1,1,REST,60,0,0",
        "SEQ:STEP:DEF 1,1,REST,60,2.5,4.2",  # a current and a voltage are checked, then ignored
        "SEQuence:STEP:DEFine 1,1,rest,60",
    ],
)
def test_rest_step_takes_only_a_duration(scpi: Dispatcher, model: CabinetModel, line: str) -> None:
    assert scpi.execute(line) is None
    assert errors(scpi) == []
    (step,) = model.sequences[1]
    assert (step.mode, step.current_a, step.voltage_v) == (StepMode.REST, 0.0, 0.0)


def test_a_duration_only_rest_runs_at_zero_current_and_ends_on_time(scpi: Dispatcher, model: CabinetModel) -> None:
    scpi.execute("SEQ:STEP:DEF 1,1,DISCHARGE,30,2.5,2.5;SEQ:STEP:DEF 1,2,REST,60")
    scpi.execute("CELL:ENAB (@1001:1004),1;CELL:INIT (@1001:1004)")
    assert errors(scpi) == []
    model.advance_to(T0 + 120.0)
    rows = model.log.read(1, 10**6)
    rest = rows[rows[:, LOG_COL["step"]] == 2]
    assert rest.shape[0] > 0 and np.all(rest[:, LOG_COL["current_a"]] == 0.0)
    ends = rest[rest[:, LOG_COL["end"]] != 0]
    np.testing.assert_array_equal(ends[:, LOG_COL["end"]], EndCode.TIME)
    np.testing.assert_allclose(ends[:, LOG_COL["step_time_s"]], 60.0, atol=1e-6)
    assert scpi.execute("STAT:CELL:REP? (@1001:1004)") == ",".join([str(int(CellState.DONE))] * 4)


@pytest.mark.parametrize(
    ("line", "code"),
    [
        ("SEQ:STEP:DEF 1,1,CHARGE,60", -109),  # a charge needs its current and voltage limit
        ("SEQ:STEP:DEF 1,1,CHARGE,60,1", -109),
        ("SEQ:STEP:DEF 1,1,DISCHARGE,60", -109),
        ("SEQ:STEP:DEF 1,1,REST", -109),  # the duration is never optional
        ("SEQ:STEP:DEF 1,1,REST,60,0,0,0", -108),
        ("SEQ:STEP:DEF 1,1,REST,0", -222),
        ("SEQ:STEP:DEF 1,1,REST,60,-1", -222),
        ("SEQ:STEP:DEF 1,1,REST,60,0,abc", -224),
        ("SEQ:STEP:DEF 1,1,REST,60,0,1e9", -222),
        ("SEQ:STEP:DEF 1,1,PRECHARGE,20,1,2", -224),  # public, not simulated (docs/bt2200-dialect.md)
    ],
)
def test_incomplete_or_bad_steps_are_refused(scpi: Dispatcher, model: CabinetModel, line: str, code: int) -> None:
    assert scpi.execute(line) is None
    assert errors(scpi) == [code]
    assert model.sequences.get(1, []) == []


# --- keyword spellings and channel lists -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "CELL:DEFINE 1001,(@101)",
        "cell:define 1001,(@101)",
        "CELL:ENABLE (@1001:1004),1",
        "CELL:ENABle (@1001,1002,1003:1004),1",
        "CELL:ENAB (@1001:1002),1;CELL:INITiate (@1001:1002)",
        "STATus:CELL:REPort? (@1001:1032,1033:1040)",
        "STAT:CELL:REP? (@1001, 1002, 1005:1010)",
        "STAT:CELL:REP? (@1010:1001)",
        "STATus:CELL:VERBose? 1001",
        "MEASure:CELL:VOLTage? (@1001:1040)",
        "SEQuence:CLEar 1",
        "SEQ:CLEAR 0",
        "CELL:ABORT 0",
        "CELL:ABORt (@1001:1040)",
    ],
)
def test_public_spellings_are_accepted(scpi: Dispatcher, line: str) -> None:
    scpi.execute("SEQ:STEP:DEF 1,1,REST,600")
    scpi.execute(line)
    assert errors(scpi) == []


def test_list_replies_follow_the_list_order(scpi: Dispatcher) -> None:
    assert scpi.execute("STAT:CELL:REP? (@1003:1001,1040,1033:1034)") == "0,0,0,0,0,0"
    volts = scpi.execute("MEAS:CELL:VOLT? (@1001,1002,1005:1010)")
    assert volts is not None and len(volts.split(",")) == 8


@pytest.mark.parametrize(
    ("arg", "code"),
    [
        ("(@0)", -222),
        ("(@1001:70000)", -222),
        ("(@-5)", -222),
        ("(@" + ",".join(["1:65535"] * 2) + ")", -223),
        ("(@1001;1002)", -224),
        ("(@1001:)", -224),
        ("(@a)", -224),
        ("1001", -224),
        ("(@4242)", -224),  # a number in range, but no such cell
    ],
)
def test_bad_channel_lists_are_refused(scpi: Dispatcher, arg: str, code: int) -> None:
    assert scpi.execute(f"MEAS:CELL:VOLT? {arg}") is None
    assert errors(scpi) == [code]


# --- every cell, every sequence ------------------------------------------------------------------------------


def test_cell_abort_0_aborts_every_cell(scpi: Dispatcher, model: CabinetModel) -> None:
    scpi.execute("SEQ:STEP:DEF 1,1,REST,600;CELL:ENAB (@1001:1040),1;CELL:INIT (@1001:1020)")
    model.advance_to(T0 + 10.0)
    scpi.execute("CELL:ABORT 0")
    assert errors(scpi) == []
    assert np.all(model.state == CellState.ABORTED)
    rows = model.log.read(1, 10**6)
    ends = rows[rows[:, LOG_COL["end"]] != 0]
    assert sorted(ends[:, LOG_COL["cell"]].astype(int).tolist()) == list(range(1001, 1021))
    np.testing.assert_array_equal(ends[:, LOG_COL["end"]], EndCode.ABORT)


def test_seq_clear_0_clears_every_sequence_unless_one_is_in_use(scpi: Dispatcher, model: CabinetModel) -> None:
    scpi.execute("SEQ:STEP:DEF 1,1,REST,600;SEQ:STEP:DEF 2,1,REST,600;CELL:ENAB (@1001),2")
    scpi.execute("SEQ:CLE 0")
    assert errors(scpi) == [-221]
    assert set(model.sequences) == {1, 2}  # nothing cleared
    scpi.execute("CELL:ABORT 0;SEQ:CLE 0")
    assert errors(scpi) == []
    assert model.sequences == {}


# --- test types ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("test", "quantity"),
    [
        ("AMPH_LE,1.0,AFTER,30", "step_time_s"),  # |Ah| is small: holds once the test starts, at 30 s
        ("WATTH_GE,0.05,AFTER,0", "step_wh"),
        ("POWER_GE,1.0,AFTER,0", "current_a"),  # |V·I| ≈ 18 W: holds at once
        ("POWER_LE,1.0,AFTER,0", None),  # never holds: the step ends on time
        ("WATTH_LE,-1,AFTER,0", None),
    ],
)
def test_public_test_types(scpi: Dispatcher, model: CabinetModel, test: str, quantity: str | None) -> None:
    scpi.execute(f"SEQ:STEP:DEF 1,1,DISCHARGE,120,5,2.5;SEQ:TEST:DEF 1,1,3,{test},NEXT")
    scpi.execute("CELL:ENAB (@1001),1;CELL:INIT (@1001)")
    assert errors(scpi) == []
    model.advance_to(T0 + 200.0)
    rows = model.log.read(1, 10**6)
    end = rows[rows[:, LOG_COL["end"]] != 0][0]
    if quantity is None:
        assert end[LOG_COL["end"]] == EndCode.TIME
        return
    assert end[LOG_COL["end"]] == EndCode.NEXT_BASE + 3
    if quantity == "step_time_s":
        assert end[LOG_COL["step_time_s"]] == pytest.approx(30.0)
    elif quantity == "step_wh":
        assert abs(end[LOG_COL["step_wh"]]) >= 0.05 and end[LOG_COL["step_time_s"]] < 120.0
    else:
        assert end[LOG_COL["step_time_s"]] <= 5.0


@pytest.mark.parametrize(
    "line",
    [
        "SEQ:TEST:DEF 1,1,1,VOLT_GE,4.2,BEFORE_START,0,FAIL",  # public, not simulated
        "SEQ:TEST:DEF 1,1,1,POS_DVDT_GE,0.1,AFTER,0,NEXT",  # public, not simulated
        "SEQ:TEST:DEF 1,1,1,VOLT_GE,4.2,AFTER,0,NEX",
        "SEQ:TEST:DEF 1,1,9,VOLT_GE,4.2,AFTER,0,NEXT",
        "SEQ:TEST:DEF 1,1,1,VOLT_GE,inf,AFTER,0,NEXT",
        "SEQ:TEST:DEF 1,1,1,VOLT_GE,nan,AFTER,0,NEXT",
        "SEQ:TEST:DEF 1,1,1,VOLT_GE,4.2,AFTER,-1,NEXT",
        "SEQ:TEST:DEF 1,1,1,VOLT_GE,4.2,AFTER,0",
    ],
)
def test_bad_tests_are_refused(scpi: Dispatcher, model: CabinetModel, line: str) -> None:
    scpi.execute("SEQ:STEP:DEF 1,1,CHARGE,60,1,4.2")
    assert scpi.execute(line) is None
    assert len(errors(scpi)) == 1
    assert model.sequences[1][0].tests == {}


# --- every parameter is checked at the edge ----------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["inf", "-inf", "nan", "1e400", "abc", "", "1e308"])
@pytest.mark.parametrize(
    "template",
    [
        "SEQ:STEP:DEF {},1,REST,60",
        "SEQ:STEP:DEF 1,{},REST,60",
        "SEQ:STEP:DEF 1,1,REST,{}",
        "SEQ:STEP:DEF 1,1,CHARGE,60,{},4.2",
        "SEQ:STEP:DEF 1,1,CHARGE,60,1,{}",
        "SEQ:STEP:LOG 1,1,{},5",
        "SEQ:TEST:DEF 1,1,{},VOLT_GE,4.2,AFTER,0,NEXT",
        "SEQ:CLE {}",
        "SEQ:STEP:COUN? {}",
        "CELL:DEF {},(@101)",
        "CELL:ENAB (@1001),{}",
        "STAT:CELL:VERB? {}",
        "DATA:LOG? {},10",
        "DATA:LOG? 1,{}",
        "SYST:COMM:WDOG {}",
        "SIM:FAULT:STALL {}",
        "SIM:FAULT:GARB {}",
        "SIM:FAULT:SHORT 1001,{}",
        "SIM:CELL:TRUTH? {}",
        "SIM:CELL:DCIR? 1001,{},1",
        "SIM:CELL:DCIR? 1001,1,{}",
    ],
)
def test_non_finite_or_garbage_numbers_are_scpi_errors(scpi: Dispatcher, template: str, bad: str) -> None:
    scpi.execute("SEQ:STEP:DEF 1,1,REST,60")
    reply = scpi.execute(template.format(bad))  # never raises
    assert reply is None
    assert len(errors(scpi)) == 1
