"""Simulated ageing racks and the BT3562-dialect tester: moves keep the cell's state, readings, formats, faults,
bad parameters, and the dialect page's table in step with COMMAND_TABLE."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from formation.sim import tester as sim_tester  # module-qualified: pytest would collect Tester* classes
from formation.sim import tester_commands
from formation.sim.cycler import CabinetModel
from formation.sim.plant import CabinetSpec, build_cabinet
from formation.sim.rack import RackModel, RackSpec
from formation.sim.scpi import Dispatcher
from formation.sim.tester import FAULT, OVERFLOW, format_resistance, format_voltage, scanner_channel
from formation.sim.tester_commands import COMMAND_TABLE, command_table_markdown
from formation.sim.wire import StepMode

DIALECT_DOC = Path(__file__).resolve().parents[2] / "docs" / "bt3562-dialect.md"
T0 = 1_700_000_000.0


def cabinet(n: int = 8, *, soc: float = 0.3) -> CabinetModel:
    model = build_cabinet(CabinetSpec("cab1", channels=n, formed=True, initial_soc=soc, seed=4), T0)
    for k in range(n):
        model.define_cell(1001 + k, 101 + k)
    return model


class Rig:
    """A cabinet, one rack of 16 positions and a tester reaching it, driven through the dispatcher."""

    def __init__(self, **tester: float) -> None:
        self.cab = cabinet()
        self.rack = RackModel(RackSpec("rack1", positions=16, seed=2), start_time_s=T0)
        spec = sim_tester.TesterSpec("t1", ("rack1",), **tester)  # type: ignore[arg-type]
        self.model = sim_tester.TesterModel(spec, [self.rack])
        self.commands = tester_commands.TesterCommands(self.model, self.lookup)
        self.scpi = Dispatcher(COMMAND_TABLE, self.commands)

    def lookup(self, name: str) -> CabinetModel:
        if name != "cab1":
            raise KeyError(name)
        return self.cab

    def run(self, line: str) -> str | None:
        return self.scpi.execute(line)

    def errors(self) -> list[str]:
        out = []
        while (reply := self.run("SYST:ERR?")) != '+0,"No error"':
            out.append(str(reply).split(",")[0])
        return out


def test_a_moved_cell_keeps_its_state_and_its_channel_cannot_move_twice() -> None:
    rig = Rig()
    rig.cab.advance_to(T0 + 3600.0)
    before = rig.cab.cells.truth(2)
    sei_before = float(rig.cab.cells.sei_growth.q_ah[2])
    rig.rack.advance_to(T0 + 3600.0)
    rig.run("SIM:RACK:LOAD rack1,5,cab1,103")
    assert rig.errors() == []
    truth = json.loads(rig.run("SIM:RACK:TRUTH? rack1,5") or "")
    assert (truth["cabinet"], truth["channel"], truth["cell"], truth["position"]) == ("cab1", 103, 1003, 5)
    for key in ("soc", "leak_a", "sei_growth_a", "temperature_c", "capacity_ah", "r0_ohm"):
        assert truth[key] == pytest.approx(before[key], rel=1e-12), key
    assert rig.rack.cells is not None
    assert float(rig.rack.cells.sei_growth.q_ah[0]) == sei_before
    rig.run('SIM:RACK:LOAD "rack1",6,"cab1",103')  # the channel is empty now
    assert rig.errors() == ["-221"]
    rig.run("SIM:RACK:LOAD rack1,5,cab1,104")  # the position is taken
    assert rig.errors() == ["-221"]


def test_rack_cells_follow_their_ambient_and_keep_self_discharging() -> None:
    rig = Rig()
    for position, channel in ((1, 101), (2, 102), (3, 103)):
        rig.run(f"SIM:RACK:LOAD rack1,{position},cab1,{channel}")
    rig.rack.ambient_c = 45.0
    start = rig.rack.cells.truth_arrays()  # type: ignore[union-attr]
    rig.rack.advance_to(T0 + 2 * 86400.0)
    end = rig.rack.cells.truth_arrays()  # type: ignore[union-attr]
    np.testing.assert_allclose(end["temperature_c"], 45.0, atol=0.01)
    assert np.all(end["soc"] < start["soc"])
    assert np.all(end["sei_growth_a"] > start["sei_growth_a"])  # warm: the growth runs faster
    # The cabinet's own copy stayed behind (never integrated with the rack's).
    np.testing.assert_allclose(rig.cab.cells.soc[:3], start["soc"])


def test_unload_gives_the_cell_back_and_keeps_the_others_in_place() -> None:
    rig = Rig()
    for position, channel in ((1, 101), (2, 102), (3, 103)):
        rig.run(f"SIM:RACK:LOAD rack1,{position},cab1,{channel}")
    soc3 = rig.rack.truth(3)["soc"]
    rig.run("SIM:RACK:UNL rack1,2")
    assert rig.errors() == []
    assert not rig.rack.occupied(2) and rig.rack.truth(3)["soc"] == soc3 and rig.rack.truth(3)["cell"] == 1003
    rig.run("SIM:RACK:UNL rack1,2")
    assert rig.errors() == ["-221"]


def test_battery_reading_is_ocv_and_acir_with_noise_contact_and_resolution() -> None:
    rig = Rig()
    rig.run("SIM:RACK:LOAD rack1,4,cab1,104")
    rig.run(":FUNC RV;:RES:RANG 0.03;:VOLT:RANG 6;:SAMP:RATE SLOW")
    rig.run(f":ROUT:CLOS (@{scanner_channel(1, 4)})")
    assert rig.run(":ROUT:CLOS?") == "1004"
    readings = [str(rig.run(":MEAS:BATT?")) for _ in range(200)]
    assert rig.errors() == []
    r = np.array([float(x.split(",")[0]) for x in readings])
    v = np.array([float(x.split(",")[1]) for x in readings])
    truth = rig.rack.truth(4)
    true_r = truth["acir_ohm"] + truth["contact_ohm"]  # type: ignore[operator]
    true_v = float(rig.rack.cells.terminal_voltage_v(0.0)[0])  # type: ignore[union-attr]
    assert abs(float(np.mean(r)) - true_r) < 1e-6 and abs(float(np.mean(v)) - true_v) < 3e-6
    assert 0.5e-6 < float(np.std(r)) < 5e-6 and 1e-6 < float(np.std(v)) < 15e-6  # noise at the SLOW rate
    np.testing.assert_allclose(r * 1e6, np.round(r * 1e6), atol=1e-6)  # 30 mΩ range: 1 µΩ resolution
    np.testing.assert_allclose(v * 1e5, np.round(v * 1e5), atol=1e-6)  # 6 V range: 10 µV
    assert all(x.split(",")[0].endswith("E-3") and x.split(",")[1].endswith("E+0") for x in readings)
    assert 0.0 < float(truth["contact_ohm"]) < 1e-3  # type: ignore[arg-type]


def test_empty_position_and_lost_contact_read_the_fault_value_and_a_small_range_overflows() -> None:
    rig = Rig()
    rig.run("SIM:RACK:LOAD rack1,1,cab1,101")
    rig.run(":RES:RANG 0.03;:ROUT:CLOS (@1002)")
    assert rig.run(":MEAS:BATT?") == "100.000E+8,1.00000E+10"  # nothing on the position
    rig.run(":ROUT:CLOS (@1001);SIM:FAULT:CONT (@1001)")
    assert rig.run(":MEAS:BATT?") == "100.000E+8,1.00000E+10"
    rig.run("SIM:FAULT:CLE")
    r_text, v_text = str(rig.run(":MEAS:BATT?")).split(",")
    assert 0.005 < float(r_text) < 0.03 and 3.0 < float(v_text) < 3.7
    rig.run(":RES:RANG 0.003")
    assert str(rig.run(":MEAS:BATT?")).startswith("10.0000E+8,")  # a 16 mΩ cell overflows the 3 mΩ range
    rig.run(":ROUT:OPEN:ALL")
    assert rig.run(":ROUT:CLOS?") == "0" and str(rig.run(":MEAS:BATT?")).startswith("10.0000E+9,")
    assert rig.errors() == []


def test_formats_follow_the_public_digit_patterns() -> None:
    assert format_resistance(0.016512, 30e-3) == "16.512E-3"
    assert format_resistance(0.0002512, 3e-3) == "0.2512E-3"
    assert format_resistance(OVERFLOW, 30e-3) == "100.000E+7"
    assert format_resistance(FAULT, 300e-3) == "1000.00E+7"
    assert format_resistance(OVERFLOW, 3e-3) == "10.0000E+8"
    assert format_resistance(1.5, 3.0) == "1.5000E+0"
    assert format_resistance(1500.0, 3000.0) == "1.5000E+3"
    assert format_voltage(3.612345, 6.0) == "3.61234E+0" or format_voltage(3.612345, 6.0) == "3.61235E+0"
    assert format_voltage(-OVERFLOW, 6.0) == "-1.00000E+9"
    assert format_voltage(FAULT, 60.0) == "10.0000E+9"
    for text in ("100.000E+7", "10.0000E+8", "1000.00E+6", "1.00000E+9"):
        assert float(text) == OVERFLOW


def test_settings_read_back_and_reset() -> None:
    rig = Rig()
    rig.run(":FUNC RES;:RES:RANG 0.2;:VOLT:RANG 20;:SAMP:RATE FAST")
    assert [rig.run(q) for q in (":FUNC?", ":RES:RANG?", ":VOLT:RANG?", ":SAMP:RATE?")] == [
        "RESISTANCE",
        "300E-3",
        "60E+0",
        "FAST",
    ]
    rig.run(":ROUT:CLOS (@1001);*RST")
    assert [rig.run(q) for q in (":FUNC?", ":RES:RANG?", ":VOLT:RANG?", ":SAMP:RATE?", ":ROUT:CLOS?")] == [
        "RV",
        "3E+0",
        "6E+0",
        "MEDIUM",
        "0",
    ]
    assert str(rig.run("*IDN?")).startswith("Formation,BT3562-SIM,")
    assert rig.errors() == []


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (":FUNC OHM", "-224"),
        (":RES:RANG 5000", "-222"),
        (":RES:RANG nan", "-222"),
        (":RES:RANG -1", "-222"),
        (":VOLT:RANG 100", "-222"),
        (":SAMP:RATE QUICK", "-224"),
        (":ROUT:CLOS (@1017)", "-222"),  # position 17 of a 16-position rack
        (":ROUT:CLOS (@2001)", "-222"),  # no rack in slot 2
        (":ROUT:CLOS (@abc)", "-224"),
        ("SIM:RACK:LOAD rack9,1,cab1,101", "-224"),
        ("SIM:RACK:LOAD rack1,0,cab1,101", "-222"),
        ("SIM:RACK:LOAD rack1,1,cab9,101", "-224"),
        ("SIM:RACK:LOAD rack1,1,cab1,133", "-224"),  # no such cabinet channel (the BT2200 code)
        ("SIM:RACK:LOAD rack1,1,cab1", "-109"),
        ("SIM:RACK:TRUTH? rack1,3", "-221"),
        ("SIM:FAULT:STALL 1e9", "-222"),
        (":MEAS:BATT? 1", "-108"),
        (":MEASURE:VOLTAGE?", "-113"),
    ],
)
def test_bad_parameters_are_refused_with_the_dialect_errors(line: str, code: str) -> None:
    rig = Rig()
    assert rig.run(line) is None
    assert rig.errors() == [code]


def test_battery_query_outside_rv_mode_is_an_execution_error() -> None:
    rig = Rig()
    rig.run(":FUNC VOLT")
    assert rig.run(":MEAS:BATT?") is None
    assert rig.errors() == ["-221"]


def test_a_running_cell_cannot_be_moved() -> None:
    rig = Rig()
    rig.cab.define_step(1, 1, StepMode.REST, 3600.0, 0.0, 0.0)
    rig.cab.enable([1001], 1)
    rig.cab.init([1001])
    rig.run("SIM:RACK:LOAD rack1,1,cab1,101")
    assert rig.errors() == ["-221"]


def test_rack_list_names_slots_and_occupancy() -> None:
    rig = Rig()
    rig.run("SIM:RACK:LOAD rack1,1,cab1,101")
    assert json.loads(rig.run("SIM:RACK:LIST?") or "") == [
        {"rack": "rack1", "slot": 1, "positions": 16, "chamber": None, "occupied": 1}
    ]


def test_contact_resistance_is_per_position_and_seeded() -> None:
    a = RackModel(RackSpec("r", positions=500, seed=3), start_time_s=T0)
    b = RackModel(RackSpec("r", positions=500, seed=3), start_time_s=T0)
    np.testing.assert_array_equal(a.contact_ohm, b.contact_ohm)
    assert math.isclose(float(np.median(a.contact_ohm)), 20e-6, rel_tol=0.15)
    assert float(np.std(np.log(a.contact_ohm))) == pytest.approx(0.5, rel=0.15)


@pytest.mark.parametrize("positions", [0, 1000])
def test_rack_positions_are_bounded(positions: int) -> None:
    with pytest.raises(ValueError, match="positions"):
        RackSpec("r", positions=positions)


def test_the_dialect_page_shows_the_command_table() -> None:
    text = DIALECT_DOC.read_text(encoding="utf-8")
    assert command_table_markdown() in text
