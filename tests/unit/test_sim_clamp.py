"""The simulated cabinet clamps every charge at or below its voltage limit (README: charges are clamped at or below
``limits.max_voltage_v``): an LFP 280 Ah cell charged at 1–2C into its steep end of charge, fresh (SEI forming) or
formed, never reads above the clamp, neither in the model after any substep nor in any logged record."""

from __future__ import annotations

import numpy as np
import pytest

from formation.sim.cells import PRESETS, CellPopulation
from formation.sim.commands import COMMAND_TABLE, CabinetCommands
from formation.sim.cycler import CabinetModel
from formation.sim.scpi import Dispatcher
from formation.sim.wire import LOG_COL

CLAMP_V = 3.65


@pytest.mark.parametrize(
    ("c_rate", "formed", "soc", "ambient_c"),
    [(1.0, True, 0.75, 25.0), (2.0, True, 0.75, 45.0), (1.5, False, 0.8, 25.0), (2.0, False, 0.8, 15.0)],
)
def test_an_lfp_charge_never_reads_above_its_clamp(c_rate: float, formed: bool, soc: float, ambient_c: float) -> None:
    cells = CellPopulation(PRESETS["lfp-280ah"], 4, seed=3, initial_soc=soc, formed=formed)
    model = CabinetModel(4, cells, start_time_s=0.0)
    model.ambient_c = ambient_c
    scpi = Dispatcher(COMMAND_TABLE, CabinetCommands(model))
    for cell in range(1, 5):
        scpi.execute(f"CELL:DEF {cell},(@{100 + cell})")
    duration_s = 0.5 * 3600.0 / c_rate
    scpi.execute(f"SEQ:STEP:DEF 1,1,CHARGE,{duration_s},{280.0 * c_rate},{CLAMP_V}")
    scpi.execute("SEQ:STEP:LOG 1,1,1,0.1")  # a record every second and every 0.1 mV
    scpi.execute("CELL:ENAB (@1:4),1;CELL:INIT (@1:4)")
    highest_v = 0.0
    for t_s in np.arange(10.0, duration_s + 20.0, 10.0):
        model.advance_to(float(t_s))
        highest_v = max(highest_v, float(model.voltage_v.max()))
    records = model.log.read(0, 10**7)
    assert scpi.execute("SYST:ERR?") == '+0,"No error"'
    assert scpi.execute("STAT:CELL:REP? (@1:4)") == "3,3,3,3"  # every step ran to its end
    assert highest_v > CLAMP_V - 0.005  # the charge did reach the clamp (CV), or the test shows nothing
    assert highest_v <= CLAMP_V
    assert float(records[:, LOG_COL["voltage_v"]].max()) <= CLAMP_V
