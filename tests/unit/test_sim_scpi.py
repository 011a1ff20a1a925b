"""SCPI layer of the simulated cabinet: parsing, dispatch, error queue, IEEE 488.2 basics, blocks."""

from __future__ import annotations

import json

import pytest

from formation.errors import ScpiError
from formation.sim.cells import PRESETS, CellPopulation
from formation.sim.commands import COMMAND_TABLE, GARBAGE_REPLY, CabinetCommands
from formation.sim.cycler import CabinetModel
from formation.sim.scpi import (
    Dispatcher,
    definite_block,
    parse_channel_list,
    split_compound,
    split_params,
)


@pytest.fixture
def scpi() -> Dispatcher:
    cells = CellPopulation(PRESETS["ncm21700-5ah"], 40, seed=3, initial_soc=0.3)
    model = CabinetModel(40, cells, start_time_s=1_700_000_000.0)
    return Dispatcher(COMMAND_TABLE, CabinetCommands(model))


def errors(scpi: Dispatcher) -> list[str]:
    """Drain the error queue."""
    out = []
    while (e := scpi.execute("SYST:ERR?")) != '+0,"No error"':
        assert e is not None
        out.append(e)
    return out


def test_idn_and_opc(scpi: Dispatcher) -> None:
    maker, model, serial, version = scpi.execute("*IDN?").split(",")  # type: ignore[union-attr]
    assert (maker, model) == ("Formation", "BT2200-SIM")
    assert serial and version
    assert scpi.execute("*OPC?") == "1"


def test_long_and_short_forms_are_the_same_command(scpi: Dispatcher) -> None:
    assert scpi.execute("CELL:DEF 1001,(@101)") is None
    assert scpi.execute("cell:define 1002,(@102)") is None
    assert scpi.execute("SEQuence:STEP:DEFine 1,1,CHARGE,60,1.0,4.2") is None
    assert scpi.execute(":SEQ:STEP:COUN? 1") == "1"
    assert scpi.execute("sequence:step:count? 1") == "1"
    short = scpi.execute("MEAS:CELL:VOLT? (@1001,1002)")
    assert scpi.execute("MEASure:CELL:VOLTage? (@1001,1002)") == short
    assert scpi.execute("SYST:COMM:WDOG 5") is None
    assert scpi.execute("SYSTem:COMMunicate:WATCHdog?") == "5"
    assert errors(scpi) == []


def test_compound_line_joins_query_replies(scpi: Dispatcher) -> None:
    reply = scpi.execute("CELL:DEF 1001,(@101);*OPC?;STAT:CELL:REP? (@1001,1002);SEQ:STEP:COUN? 7")
    assert reply == "1;0,-1;0"


def test_undefined_header_goes_to_error_queue(scpi: Dispatcher) -> None:
    assert scpi.execute("FOO:BAR 1") is None
    assert scpi.execute("MEAS:CELL:VOLT (@1001)") is None  # the query form exists, the command form not
    assert errors(scpi) == ['-113,"Undefined header"', '-113,"Undefined header"']


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("SEQ:STEP:DEF 1,1,BOOST,60,1,4.2", '-224,"Illegal parameter value"'),
        ("SEQ:STEP:DEF 1,1,CHARGE,abc,1,4.2", '-224,"Illegal parameter value"'),
        ("SEQ:STEP:DEF 1,1,CHARGE,-5,1,4.2", '-222,"Data out of range"'),
        ("SEQ:STEP:DEF 2000,1,CHARGE,60,1,4.2", '-222,"Data out of range"'),
        ("SEQ:STEP:DEF 1,1,CHARGE,60,1", '-109,"Missing parameter"'),
        ("*IDN? 3", '-108,"Parameter not allowed"'),
        ("CELL:DEF 1001,(@133)", '-224,"Illegal parameter value"'),
        ("CELL:DEF 1001,(@999)", '-224,"Illegal parameter value"'),
        ("MEAS:CELL:VOLT? (@4242)", '-224,"Illegal parameter value"'),
        ("SEQ:STEP:DEF 1,2,CHARGE,60,1,4.2", '-222,"Data out of range"'),
    ],
)
def test_bad_parameters_give_their_error(scpi: Dispatcher, line: str, error: str) -> None:
    assert scpi.execute(line) is None
    assert errors(scpi) == [error]


def test_query_error_in_compound_contributes_nothing(scpi: Dispatcher) -> None:
    assert scpi.execute("MEAS:CELL:VOLT? (@9);*OPC?") == "1"
    assert errors(scpi) == ['-224,"Illegal parameter value"']


def test_esr_stb_and_cls(scpi: Dispatcher) -> None:
    assert scpi.execute("*STB?") == "0"
    scpi.execute("NOPE")  # command error
    scpi.execute("SEQ:STEP:DEF 1,1,CHARGE,-1,1,4.2")  # execution error
    assert scpi.execute("*STB?") == str(4 | 32)
    assert scpi.execute("*ESR?") == str(32 | 16)
    assert scpi.execute("*ESR?") == "0"  # reading clears it
    assert scpi.execute("*STB?") == "4"  # the queue still holds the errors
    scpi.execute("*CLS")
    assert scpi.execute("*STB?") == "0"
    assert errors(scpi) == []


def test_error_queue_overflow_replaces_last(scpi: Dispatcher) -> None:
    for _ in range(40):
        scpi.execute("NOPE")
    queued = errors(scpi)
    assert len(queued) == 32
    assert queued[-1] == '-350,"Queue overflow"'
    assert set(queued[:-1]) == {'-113,"Undefined header"'}


def test_channel_lists() -> None:
    assert parse_channel_list("(@1001)") == [1001]
    assert parse_channel_list("(@1001,1005)") == [1001, 1005]
    assert parse_channel_list("(@1001:1004)") == [1001, 1002, 1003, 1004]
    assert parse_channel_list("(@1001:1003,1020,1030:1032)") == [1001, 1002, 1003, 1020, 1030, 1031, 1032]
    assert parse_channel_list("(@1003:1001)") == [1003, 1002, 1001]
    with pytest.raises(ScpiError) as info:
        parse_channel_list("1001,1002")
    assert info.value.code == -224


def test_splitting_keeps_lists_and_strings_whole() -> None:
    assert split_params(" (@1001:1004,1010),3 ") == ["(@1001:1004,1010)", "3"]
    assert split_params('"a,b",1') == ['"a,b"', "1"]
    assert split_compound('CELL:INIT (@1001);*OPC?; ;"x;y"') == ["CELL:INIT (@1001)", "*OPC?", '"x;y"']


def test_definite_length_block() -> None:
    assert definite_block("") == "#10"
    assert definite_block("1,2\n") == "#141,2\n"
    assert definite_block("x" * 1234) == "#41234" + "x" * 1234


def test_batched_queries_follow_list_order(scpi: Dispatcher) -> None:
    for n in range(1, 33):
        scpi.execute(f"CELL:DEF {1000 + n},(@{100 + n})")
    scpi.execute("CELL:DEF 1033,(@201)")
    volts = scpi.execute("MEAS:CELL:VOLT? (@1001:1033)").split(",")  # type: ignore[union-attr]
    assert len(volts) == 33
    assert all(len(v.split(".")[1]) >= 5 for v in volts)  # at least 5 decimals
    reversed_volts = scpi.execute("MEAS:CELL:VOLT? (@1033:1001)").split(",")  # type: ignore[union-attr]
    assert reversed_volts == volts[::-1]
    assert scpi.execute("STAT:CELL:STEP? (@1001,1999)") == "0:0,0:0"


def test_garbage_fault_hits_only_the_next_n_measurements_and_status_replies(scpi: Dispatcher) -> None:
    scpi.execute("CELL:DEF 1001,(@101)")
    scpi.execute("SIM:FAULT:GARB 3")
    assert scpi.execute("MEAS:CELL:VOLT? (@1001)") == GARBAGE_REPLY
    assert scpi.execute("STAT:CELL:STEP? (@1001)") == "0:0"  # neither a MEAS nor the status report
    assert scpi.execute("STAT:CELL:REP? (@1001)") == GARBAGE_REPLY
    assert scpi.execute("MEAS:CELL:TEMP? (@1001)") == GARBAGE_REPLY
    assert float(scpi.execute("MEAS:CELL:VOLT? (@1001)")) > 2.0  # type: ignore[arg-type]
    assert scpi.execute("STAT:CELL:REP? (@1001)") == "0"


def test_short_fault_adds_a_leak(scpi: Dispatcher) -> None:
    scpi.execute("CELL:DEF 1001,(@101)")
    before = json.loads(scpi.execute("SIM:CELL:TRUTH? 1001"))  # type: ignore[arg-type]
    scpi.execute("SIM:FAULT:SHORT 1001,0.002")
    after = json.loads(scpi.execute("SIM:CELL:TRUTH? 1001"))  # type: ignore[arg-type]
    assert (after["cell"], after["channel"]) == (1001, 101)
    assert after["leak_a"] > before["leak_a"] + 0.0015
    assert errors(scpi) == []


def test_data_log_block_and_next(scpi: Dispatcher) -> None:
    assert scpi.execute("DATA:LOG? 1,100") == "#10"
    assert scpi.execute("DATA:LOG:NEXT?") == "1"
    scpi.execute("CELL:DEF 1001,(@101);SEQ:STEP:DEF 1,1,REST,30,0,0;CELL:ENAB (@1001),1;CELL:INIT (@1001)")
    model = scpi.target.model  # type: ignore[attr-defined]
    model.advance_to(model.time_s + 60.0)
    block = scpi.execute("DATA:LOG? 1,100")
    assert block is not None and block.startswith("#")
    digits = int(block[1])
    length = int(block[2 : 2 + digits])
    payload = block[2 + digits :]
    assert len(payload) == length and payload.endswith("\n")
    lines = payload.splitlines()
    assert len(lines) == 2  # start record and end record of a 30 s rest (60 s periodic rule)
    assert [len(line.split(",")) for line in lines] == [12, 12]
    assert lines[-1].split(",")[-1] == "1"  # end code TIME
    assert scpi.execute("DATA:LOG:NEXT?") == "3"


def test_rst_clears_cells_sequences_log_and_watchdog(scpi: Dispatcher) -> None:
    scpi.execute("CELL:DEF 1001,(@101);SEQ:STEP:DEF 1,1,REST,30,0,0;SYST:COMM:WDOG 3")
    scpi.execute("*RST")
    assert scpi.execute("STAT:CELL:REP? (@1001);SEQ:STEP:COUN? 1;SYST:COMM:WDOG?;DATA:LOG:NEXT?") == "-1;0;0;1"


def test_command_table_is_consistent() -> None:
    target = CabinetCommands(CabinetModel(1, CellPopulation(PRESETS["lfp-280ah"], 1), start_time_s=0.0))
    keys = [(spec.short, spec.query) for spec in COMMAND_TABLE]
    assert len(keys) == len(set(keys))
    for spec in COMMAND_TABLE:
        assert callable(getattr(target, spec.handler)), spec.header
        assert spec.description
    ext = {spec.short for spec in COMMAND_TABLE if spec.ext}
    assert {"SEQ:STEP:LOG", "SYST:COMM:WDOG", "DATA:LOG?", "STAT:CELL:REP?", "SIM:FAULT:DROP"} <= ext
    assert "SEQ:STEP:DEF" not in ext
