"""Simulator speed: 256 NCM 21700 cells through a 24 h recipe on one simulated cabinet.

The sequence (CC charge, CC-CV charge, rest, CC discharge) is downloaded through the SCPI dispatcher
in-process, then the model is advanced in large chunks. Prints wall time (target < 15 s), substeps and
log records.

    python bench/bench_sim_speed.py
"""

from __future__ import annotations

import time

from formation.sim.cells import PRESETS, CellPopulation
from formation.sim.commands import COMMAND_TABLE, CabinetCommands
from formation.sim.cycler import CabinetModel
from formation.sim.scpi import Dispatcher

N_CELLS = 256
HORIZON_S = 24 * 3600.0
CHUNK_S = 600.0
T0_S = 1_700_000_000.0

SEQUENCE = (
    "SEQ:STEP:DEF 1,1,CHARGE,21600,0.25,4.2",  # C/20 formation charge, 6 h
    "SEQ:STEP:DEF 1,2,CHARGE,18000,2.5,4.2",  # C/2 CC-CV to 4.2 V
    "SEQ:TEST:DEF 1,2,1,CURR_LE,0.1,AFTER,60,NEXT",  # taper end
    "SEQ:TEST:DEF 1,2,2,VOLT_GE,4.25,AFTER,0,FAIL",  # recipe max as a FAIL test
    "SEQ:STEP:DEF 1,3,REST,7200,0,0",
    "SEQ:STEP:LOG 1,3,30,1",
    "SEQ:STEP:DEF 1,4,DISCHARGE,18000,2.5,2.5",  # C/2 to 2.5 V
    "SEQ:TEST:DEF 1,4,1,VOLT_LE,2.5,AFTER,0,NEXT",
)


def main() -> None:
    """Run the benchmark and print its figures."""
    cells = CellPopulation(PRESETS["ncm21700-5ah"], N_CELLS, seed=0)
    model = CabinetModel(N_CELLS, cells, start_time_s=T0_S)
    scpi = Dispatcher(COMMAND_TABLE, CabinetCommands(model))
    ids = f"(@1001:{1000 + N_CELLS})"
    for n in range(1, N_CELLS + 1):
        channel = ((n - 1) // 32 + 1) * 100 + (n - 1) % 32 + 1
        scpi.execute(f"CELL:DEF {1000 + n},(@{channel})")
    for line in SEQUENCE:
        scpi.execute(line)
    scpi.execute(f"CELL:ENAB {ids},1;CELL:INIT {ids}")
    assert scpi.execute("SYST:ERR?") == '+0,"No error"'

    started = time.perf_counter()
    records = 0
    peak_v = 0.0
    next_rec = 1
    t_s = T0_S
    while t_s < T0_S + HORIZON_S:
        t_s = min(t_s + CHUNK_S, T0_S + HORIZON_S)
        model.advance_to(t_s)
        rows = model.log.read(next_rec, 10**7)  # drain like a host would (without formatting)
        records += rows.shape[0]
        peak_v = max(peak_v, float(rows[:, 6].max(initial=0.0)))
        next_rec += rows.shape[0]
    wall_s = time.perf_counter() - started

    states = scpi.execute(f"STAT:CELL:REP? {ids}")
    assert states is not None
    print(f"{N_CELLS} cells, {HORIZON_S / 3600:.0f} h simulated in {wall_s:.2f} s wall (target < 15 s)")
    print(f"substeps: {model.substeps}, log records: {records}, lost: {model.log.lost}")
    print(f"final states: {sorted(set(states.split(',')))}; peak logged voltage {peak_v:.6f} V")


if __name__ == "__main__":
    main()
