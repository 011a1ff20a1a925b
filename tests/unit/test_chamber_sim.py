"""Simulated chamber: FOPDT physics, faults, thermocouples, cells inside, and the DAQ970A-dialect command table.

The figures checked are the working figures of docs/domain.md §8 (gain ≈ 40 °C at full valve, τ ≈ 20 min, dead
time 30–120 s); the command forms are those of docs/daq970a-dialect.md.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from formation.sim.cells import PRESETS, CellPopulation
from formation.sim.chamber import OVERLOAD, ChamberModel, ChamberParams
from formation.sim.chamber_commands import COMMAND_TABLE, ChamberCommands, command_table_markdown
from formation.sim.commands import COMMAND_TABLE as CABINET_TABLE
from formation.sim.commands import CabinetCommands
from formation.sim.cycler import CabinetModel
from formation.sim.plant import ChamberGroup
from formation.sim.scpi import Dispatcher

T0 = 1_700_000_000.0
HOT = [0, 1, 2, 3]
COLD = [4, 5, 6, 7]


def settle(model: ChamberModel, seconds: float) -> None:
    model.advance_to(model.time_s + seconds)


# --- physics ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dead_time_s", [30.0, 60.0, 120.0])
def test_all_hot_valves_give_a_first_order_plus_dead_time_step(dead_time_s: float) -> None:
    params = ChamberParams(dead_time_s=dead_time_s)
    model = ChamberModel(params, start_time_s=T0)
    model.command_valves(HOT, True)
    model.advance_to(T0 + dead_time_s - 0.5)
    assert model.air_c == 25.0 and model.mass_c == 25.0  # nothing before the dead time has passed
    # Sample the air every 10 s and find when it crosses 63.2 % of the gain: the dead time plus τ.
    times, air = [], []
    for t in np.arange(dead_time_s, dead_time_s + 8 * 1200.0, 10.0):
        model.advance_to(T0 + t)
        times.append(t)
        air.append(model.air_c)
    rise = np.array(air) - 25.0
    t63 = float(np.interp(0.632 * 40.0, rise, times))
    assert t63 - dead_time_s == pytest.approx(1200.0, rel=0.05)
    assert rise[-1] == pytest.approx(40.0, abs=0.05)  # gain at full valve
    assert np.all(np.diff(rise) >= -1e-9)  # a monotone first-order approach, no overshoot
    model.advance_to(T0 + 30 * 3600.0)
    assert model.air_c == pytest.approx(65.0, abs=1e-3)
    # The loops heat the coils and the mass, which run warmer than the air by the heat over the coupling.
    full_w = 40.0 * params.loss_w_per_k
    assert model.mass_c == pytest.approx(65.0 + full_w / params.coupling_w_per_k, abs=1e-3)


def test_cooling_is_symmetric_and_each_valve_adds_an_equal_share() -> None:
    model = ChamberModel(start_time_s=T0)
    model.command_valves(COLD, True)
    settle(model, 20 * 3600.0)
    assert model.air_c == pytest.approx(25.0 - 40.0, abs=1e-3)
    model.command_only([0, 1])  # two of four hot valves, every cold valve closed
    settle(model, 20 * 3600.0)
    assert model.air_c == pytest.approx(45.0, abs=1e-3)
    assert model.truth()["valve_heat_w"] == pytest.approx(2 * 40.0 * 50.0 / 4)


def test_an_ambient_step_moves_the_chamber_without_dead_time() -> None:
    model = ChamberModel(start_time_s=T0)
    model.command_valves([0, 1], True)
    settle(model, 20 * 3600.0)
    model.set_ambient(35.0)
    settle(model, 5.0)
    assert model.air_c > 45.0  # the loss drops at once: no transport delay on the ambient
    settle(model, 1195.0)
    assert model.air_c - 45.0 == pytest.approx(10.0 * (1 - math.exp(-1)), abs=0.4)
    settle(model, 20 * 3600.0)
    assert model.air_c == pytest.approx(55.0, abs=1e-3)


def test_an_open_door_pulls_the_air_to_ambient_fast_and_the_mass_slowly() -> None:
    model = ChamberModel(start_time_s=T0)
    model.command_valves([0, 1], True)
    settle(model, 20 * 3600.0)
    model.open_door(600.0)
    assert model.truth()["door_open"] is True
    settle(model, 10.0)
    assert 45.0 - model.air_c > 3.0  # the air drops within seconds ...
    assert 45.0 - model.air_c > 4 * (45.0 - model.mass_c)  # ... the mass lags
    settle(model, 590.0)
    assert model.air_c < 31.0  # ten minutes open: most of the 20 °C over ambient is gone
    low_c = model.air_c
    assert model.door_open is False and model.truth()["door_left_s"] == 0.0
    settle(model, 30.0)
    assert model.air_c > low_c + 0.5  # door shut: the mass gives its heat back to the air at once
    settle(model, 20 * 3600.0)
    assert model.air_c == pytest.approx(45.0, abs=1e-3)


def test_thermocouples_lag_the_air() -> None:
    model = ChamberModel(ChamberParams(tc_noise_c=0.0, tc_offset_sigma_c=0.0, tc_resolution_c=0.0), start_time_s=T0)
    model.air_c = model.mass_c = 35.0  # a step of the air the sensors have not seen yet
    settle(model, 20.0)
    expected = 25.0 + (model.air_c - 25.0) * (1 - math.exp(-1))  # first order, τ = 20 s (air nearly still)
    assert model.read_thermocouples([0])[0] == pytest.approx(expected, abs=0.1)
    settle(model, 200.0)
    slope_c_per_s = -(model.air_c - 25.0) / 1200.0  # the slow mode: d(air)/dt = -(air - ambient) / τ
    # A ramp is followed with a delay of τ: the reading trails the cooling air by slope × 20 s.
    assert model.read_thermocouples([0])[0] == pytest.approx(model.air_c - slope_c_per_s * 20.0, abs=0.03)


def test_readings_have_the_noise_and_the_resolution() -> None:
    model = ChamberModel(ChamberParams(tc_offset_sigma_c=0.0), start_time_s=T0, seed=4)
    values = np.concatenate([model.read_thermocouples(list(range(4))) for _ in range(1000)])
    assert float(np.std(values)) == pytest.approx(0.02, rel=0.15)
    assert float(np.mean(values)) == pytest.approx(25.0, abs=0.005)
    steps = values / 0.01
    assert np.allclose(steps, np.round(steps), atol=1e-6)  # multiples of the 0.01 °C resolution


def test_deterministic_under_a_seed() -> None:
    def run(seed: int) -> np.ndarray:
        model = ChamberModel(start_time_s=T0, seed=seed)
        model.command_valves([0, 4, 5], True)
        settle(model, 3600.0)
        return np.concatenate([model.read_thermocouples([0, 1, 2, 3]) for _ in range(5)])

    assert np.array_equal(run(7), run(7))
    assert not np.array_equal(run(7), run(8))


def test_substeps_are_bounded_and_land_on_the_clock() -> None:
    model = ChamberModel(start_time_s=T0)
    model.command_valves(HOT, True)
    model.advance_to(T0 + 3600.0)
    assert model.time_s == T0 + 3600.0
    assert model.substeps >= 3600.0 / model.params.max_dt_s


def test_an_open_thermocouple_reads_overload_until_cleared() -> None:
    model = ChamberModel(start_time_s=T0)
    model.open_thermocouple(1)
    values = model.read_thermocouples([0, 1, 2])
    assert values[1] == OVERLOAD and abs(values[0] - 25.0) < 0.3 and abs(values[2] - 25.0) < 0.3
    model.clear_faults()
    assert model.read_thermocouples([1])[0] < 100.0


def test_a_stuck_valve_accepts_commands_and_stays() -> None:
    model = ChamberModel(start_time_s=T0)
    model.stick_valve(0, True)
    model.command_valves(HOT, False)
    assert model.valve_open.tolist()[:4] == [True, False, False, False]
    assert model.valve_commanded.tolist()[:4] == [False, False, False, False]
    settle(model, 3 * 3600.0)
    assert model.air_c > 25.0 + 0.9 * 10.0  # one hot valve keeps heating
    model.command_valves([0], True)
    model.command_valves([0], False)
    assert model.truth()["switch_counts"][0] == 1 and model.truth()["valve_stuck"][0] == "OPEN"
    model.clear_faults()
    assert model.valve_open[0] == False  # noqa: E712 - freed: it goes to its commanded position
    assert model.truth()["switch_counts"][0] == 2


def test_switch_counts_count_moves_only() -> None:
    model = ChamberModel(start_time_s=T0)
    for _ in range(3):
        model.command_valves([0, 1], True)
        model.command_valves([0, 1], True)
        model.command_valves([0], False)
    assert model.switch_counts.tolist()[:3] == [6, 1, 0]


@pytest.mark.parametrize(
    "bad",
    [
        {"hot_valves": 0},
        {"hot_valves": 12, "cold_valves": 9},
        {"thermocouples": 21},
        {"gain_c": -1.0},
        {"tau_s": 0.0},
        {"dead_time_s": 601.0},
        {"air_fraction": 1.0},
        {"ambient_c": float("nan")},
        {"max_dt_s": float("inf")},
    ],
)
def test_params_are_validated(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="chamber"):
        ChamberParams(**bad)  # type: ignore[arg-type]


def _cabinet(channels: int, preset: str = "ncm21700-5ah") -> tuple[CabinetModel, Dispatcher]:
    cells = CellPopulation(PRESETS[preset], channels, seed=1, initial_soc=0.3, formed=True, defect_fraction=0.0)
    model = CabinetModel(channels, cells, start_time_s=T0)
    scpi = Dispatcher(CABINET_TABLE, CabinetCommands(model))
    scpi.execute(";".join(f"CELL:DEF {1001 + k},(@{101 + k})" for k in range(channels)))
    return model, scpi


def test_cells_inside_a_chamber_at_45c_reach_45c() -> None:
    chamber = ChamberModel(start_time_s=T0)
    inside, _ = _cabinet(8)
    outside, _ = _cabinet(8)
    group = ChamberGroup(chamber, [inside])
    chamber.command_valves([0, 1], True)  # half the hot loop: 25 + 40 / 2 = 45 °C
    for t in np.arange(T0, T0 + 8 * 3600.0, 600.0):
        group.advance_to(float(t))
        outside.advance_to(float(t))
    assert chamber.air_c == pytest.approx(45.0, abs=0.05)
    assert inside.cells.temperature_c == pytest.approx(45.0, abs=0.1)
    assert outside.cells.temperature_c == pytest.approx(25.0, abs=1e-9)
    assert inside.truth(1001)["temperature_c"] == pytest.approx(45.0, abs=0.1)


def test_the_chamber_receives_the_heat_of_the_cells_inside() -> None:
    loaded, idle = ChamberModel(start_time_s=T0), ChamberModel(start_time_s=T0)
    inside, scpi_in = _cabinet(32, "lfp-280ah")
    outside, scpi_out = _cabinet(32, "lfp-280ah")
    group = ChamberGroup(loaded, [inside])
    for scpi in (scpi_in, scpi_out):
        scpi.execute("SEQ:STEP:DEF 1,1,CHARGE,3600,140,3.65;CELL:ENAB (@1001:1032),1;CELL:INIT (@1001:1032)")
        assert scpi.execute("SYST:ERR?") == '+0,"No error"'
    group.advance_to(T0 + 1800.0)
    idle.advance_to(T0 + 1800.0)
    outside.advance_to(T0 + 1800.0)
    assert loaded.cell_heat_w == pytest.approx(float(inside.cells.heat_w.sum()), rel=0.01)  # last step's heat
    assert loaded.cell_heat_w > 100.0  # 32 cells of 280 Ah at 0.5 C
    assert loaded.air_c > idle.air_c + 1.0
    # The same cells charging in a chamber run warmer than in a 25 °C room: they warm their own air.
    assert inside.cells.temperature_c.mean() > outside.cells.temperature_c.mean() + 0.5


# --- DAQ970A-dialect commands ------------------------------------------------------------------------------------


@pytest.fixture
def daq() -> Dispatcher:
    return Dispatcher(COMMAND_TABLE, ChamberCommands(ChamberModel(start_time_s=T0, seed=2)))


def errors(scpi: Dispatcher) -> list[int]:
    out = []
    while (e := scpi.execute("SYST:ERR?")) != '+0,"No error"':
        assert e is not None
        out.append(int(e.split(",")[0]))
    return out


def truth(scpi: Dispatcher) -> dict[str, object]:
    return json.loads(scpi.execute("SIM:CHAM:TRUTH?") or "")  # type: ignore[no-any-return]


def readings(reply: str | None) -> list[float]:
    assert reply is not None
    return [float(v) for v in reply.split(",")]


def test_common_commands(daq: Dispatcher) -> None:
    maker, model, serial, version = (daq.execute("*IDN?") or "").split(",")
    assert (maker, model) == ("Formation", "DAQ970A-SIM") and serial and version
    assert daq.execute("*OPC?") == "1"
    daq.execute("ROUT:CLOS (@301:308)")
    assert daq.execute("*RST;ROUT:CLOS? (@301:308)") == "0,0,0,0,0,0,0,0"
    daq.execute("BOGUS:CMD")
    assert daq.execute("*ESR?") == "32" and daq.execute("*STB?") == "4"
    daq.execute("*CLS")
    assert errors(daq) == []


@pytest.mark.parametrize(
    "line",
    [
        "MEAS:TEMP? TC,K,(@101:104)",
        "MEASure:TEMPerature? TCouple,K,(@101:104)",
        "meas:temp? tc , k , (@101,102:104)",
        "MEAS:TEMP? TC,K,1,(@101:104)",
        "MEAS:TEMP? TC,K,1,DEF,(@101:104)",
        "MEAS:TEMP? TC,K,1,0.01,(@101:104)",
        "MEAS:TEMP? DEF,K,1,MAX,(@101:104)",
    ],
)
def test_meas_temp_forms_read_every_channel_in_nr3(daq: Dispatcher, line: str) -> None:
    reply = daq.execute(line)
    assert reply is not None and all(re.fullmatch(r"[+-]\d\.\d{8}E[+-]\d\d", v) for v in reply.split(","))
    assert readings(reply) == pytest.approx([25.0] * 4, abs=0.3)
    assert errors(daq) == []


def test_meas_temp_replies_in_request_order_with_the_overload_of_an_open_thermocouple(daq: Dispatcher) -> None:
    daq.execute("SIM:FAULT:TC 104")
    assert (daq.execute("MEAS:TEMP? TC,K,(@104:101)") or "").split(",")[0] == "+9.9E+37"
    values = readings(daq.execute("MEAS:TEMP? TC,K,(@101,104,102)"))
    assert values[1] == OVERLOAD and values[0] < 30.0 and values[2] < 30.0
    assert errors(daq) == []


def test_route_commands_set_and_read_back_the_valve_relays(daq: Dispatcher) -> None:
    assert daq.execute("ROUT:CLOS (@301,302);ROUT:OPEN (@303:308);ROUT:CLOS? (@301:308)") == "1,1,0,0,0,0,0,0"
    assert daq.execute("ROUTe:OPEN? (@302,301,303)") == "0,0,1"
    assert daq.execute("ROUTe:CLOSe:EXCLusive (@305);ROUT:CLOS? (@308:301)") == "0,0,0,1,0,0,0,0"
    assert daq.execute("ROUT:OPEN:ALL 1;ROUT:CLOS? (@305)") == "1"  # slot 1 has no closed relay
    assert daq.execute("ROUT:OPEN:ALL;ROUT:CLOS? (@301:308)") == "0,0,0,0,0,0,0,0"
    assert truth(daq)["switch_counts"] == [2, 2, 0, 0, 2, 0, 0, 0]
    assert errors(daq) == []


def test_fault_injection_and_clear(daq: Dispatcher) -> None:
    model = daq.target.model  # type: ignore[attr-defined]
    daq.execute("SIM:FAULT:VALV 301,OPEN;SIM:FAULT:VALVe 305,closed;ROUT:CLOS (@305);ROUT:OPEN (@301)")
    t = truth(daq)
    assert t["valve_open"][0] is True and t["valve_open"][4] is False  # type: ignore[index]
    assert t["valve_stuck"][:5] == ["OPEN", None, None, None, "CLOSED"]  # type: ignore[index]
    assert daq.execute("ROUT:CLOS? (@301,305)") == "0,1"  # the relays obeyed; the valves did not
    assert daq.execute("SENS:DIG:DATA:BYTE? (@201)") == "1"  # the end switches tell: 301 open, 305 closed
    assert daq.execute("SENS:DIG:DATA:BYTE? (@202)") is None  # eight valves: one port wired
    assert errors(daq) == [-222]
    daq.execute("SIM:FAULT:AMB 30.5;SIM:FAULT:DOOR 600;SIM:FAULT:TC (@103)")
    t = truth(daq)
    assert (t["ambient_c"], t["door_open"], t["tc_open"]) == (30.5, True, [False, False, True, False])
    model.advance_to(T0 + 700.0)
    assert truth(daq)["door_open"] is False
    assert daq.execute("SIM:TIME?") == f"{T0 + 700.0:.3f}"
    daq.execute("SIM:FAULT:DOOR 600;SIM:FAULT:CLE")
    t = truth(daq)
    assert (t["ambient_c"], t["door_open"], t["tc_open"]) == (25.0, False, [False] * 4)
    assert t["valve_open"][:5] == [False, False, False, False, True]  # type: ignore[index]
    assert errors(daq) == []


@pytest.mark.parametrize(
    ("line", "code"),
    [
        ("MEAS:TEMP?", -109),
        ("MEAS:TEMP? TC,K", -109),
        ("MEAS:TEMP? TC,K,101", -109),
        ("MEAS:TEMP? TC,K,1,DEF,7,(@101)", -108),
        ("MEAS:TEMP? RTD,85,(@101)", -224),
        ("MEAS:TEMP? THER,5000,(@101)", -224),
        ("MEAS:TEMP? TC,J,(@101)", -224),
        ("MEAS:TEMP? DEF,DEF,(@101)", -224),  # DEF is type J; the wired thermocouples are K
        ("MEAS:TEMP? TC,X,(@101)", -224),
        ("MEAS:TEMP? TC,K,2,(@101)", -224),
        ("MEAS:TEMP? TC,K,1,fine,(@101)", -224),
        ("MEAS:TEMP? TC,K,1,inf,(@101)", -222),
        ("MEAS:TEMP? TC,K,1,1e400,(@101)", -222),
        ("MEAS:TEMP? TC,K,1,-0.1,(@101)", -222),
        ("MEAS:TEMP? TC,K,(@105)", -222),
        ("MEAS:TEMP? TC,K,(@101:105)", -222),
        ("MEAS:TEMP? TC,K,(@301)", -222),
        ("MEAS:TEMP? TC,K,(@1a1)", -224),
        ("MEAS:TEMP? TC,K,(@)", -224),
        ("MEAS:TEMP? TC,K,(@101:)", -224),
        ("MEAS:TEMP? TC,K,(@" + ",".join(["101:104"] * 65) + ")", -223),
        ("ROUT:CLOS", -109),
        ("ROUT:CLOS (@301),(@302)", -108),
        ("ROUT:CLOS (@309)", -222),
        ("ROUT:CLOS (@101)", -222),
        ("ROUT:CLOS (@300:302)", -222),
        ("ROUT:CLOS 301", -224),
        ("ROUT:OPEN (@99999999999999999999)", -222),
        ("ROUT:CLOS:EXCL (@301,x)", -224),
        ("ROUT:CLOS? (@320)", -222),
        ("ROUT:OPEN? ", -109),
        ("ROUT:OPEN:ALL 4", -222),
        ("ROUT:OPEN:ALL SOME", -224),
        ("ROUT:OPEN:ALL 1,2", -108),
        ("SIM:FAULT:TC", -109),
        ("SIM:FAULT:TC 105", -222),
        ("SIM:FAULT:TC abc", -224),
        ("SIM:FAULT:TC (@101:102)", -224),
        ("SIM:FAULT:VALV 301", -109),
        ("SIM:FAULT:VALV 309,OPEN", -222),
        ("SIM:FAULT:VALV 301,HALF", -224),
        ("SIM:FAULT:AMB 100", -222),
        ("SIM:FAULT:AMB nan", -222),
        ("SIM:FAULT:DOOR -1", -222),
        ("SIM:FAULT:DOOR 1e9", -222),
        ("SIM:FAULT:STALL 1e5", -222),
        ("SIM:FAULT:CLE 1", -108),
        ("SIM:FAULT:DROP now", -108),
        ("SIM:TIME? 1", -108),
        ("SIM:CHAM:TRUTH? 101", -108),
        ("ROUT:CLO (@301)", -113),
        ("MEAS:TEMP:TC? (@101)", -113),
        ("SIM:FAULT:VALVES 301,OPEN", -113),
    ],
)
def test_every_bad_parameter_is_a_standard_error_and_changes_nothing(daq: Dispatcher, line: str, code: int) -> None:
    before = truth(daq)
    assert daq.execute(line) is None
    assert errors(daq) == [code]
    assert truth(daq) == before


NASTY = ["", "(@", "(@301:)", "1e400", "nan", "(@301,,302)", '"x"', "(@-1)", "(@301:308", "DEF", "-0", "OPEN"]


def test_no_parameter_makes_a_handler_raise(daq: Dispatcher) -> None:
    for spec in COMMAND_TABLE:
        header = spec.short
        for a in NASTY:
            for params in (a, f"{a},{a}", f"TC,K,{a}", f"301,{a}", f"TC,K,1,{a},(@101)"):
                daq.execute(f"{header} {params}")  # a leaked exception fails the test
    assert len(errors(daq)) > 0


def test_the_dialect_page_carries_the_command_table() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "daq970a-dialect.md").read_text(encoding="utf-8")
    assert command_table_markdown() in page
