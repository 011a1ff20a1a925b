"""Shared by the ageing tests: a simulated plant with a cabinet of formed cells, a chamber, a rack and a tester, and
a site file that reaches them; a lot whose runs finished on the cabinet (as after formation)."""

from __future__ import annotations

from pathlib import Path

from formation.sim.plant import CabinetSpec, ChamberSpec, SimulatedPlant
from formation.sim.rack import RackSpec
from formation.sim.tester import TesterSpec
from formation.store import Store

SHA = "b" * 64
T0_S = 1_700_000_000.0

SHORT_PLAN = """
name = "short-hot-then-room"
version = "1"
[k_value]
stage = "room"
after = "1h"
reference_c = 25.0
ocv_temp_coeff_mv_per_k = -0.1
min_points = 3
[[ageing]]
id = "hot"
setpoint_c = 45.0
duration = "2h"
checkpoints = ["0h", "2h"]
[[ageing]]
id = "room"
setpoint_c = 25.0
duration = "5h"
checkpoints = ["1h", "2h", "3h", "4h", "5h"]
"""

#: Three simulated hours (a few wall seconds at ×3000): 1 h at 45 °C, 2 h at 25 °C, K from the room stage's last
#: four checkpoints.
FAST_PLAN = """
name = "fast-hot-then-room"
version = "1"
[k_value]
stage = "room"
after = "30m"
reference_c = 25.0
ocv_temp_coeff_mv_per_k = -0.1
[[ageing]]
id = "hot"
setpoint_c = 45.0
duration = "1h"
checkpoints = ["0h", "1h"]
[[ageing]]
id = "room"
setpoint_c = 25.0
duration = "2h"
checkpoints = ["30m", "1h", "90m", "2h"]
"""


def plant(
    clock: object, *, cells: int = 8, positions: int = 16, seed: int = 3, microshorts: float = 0.0
) -> SimulatedPlant:
    """Cabinet ``cab1`` of formed cells at 30 % SOC, chamber ``ch1`` holding rack ``rack1`` read by ``t1``."""
    cabinet = CabinetSpec(
        "cab1",
        channels=cells,
        seed=seed,
        initial_soc=0.3,
        formed=True,
        defect_fraction=0.0,
        microshort_fraction=microshorts,
    )
    return SimulatedPlant(
        [cabinet],
        clock,  # type: ignore[arg-type]
        chambers=[ChamberSpec(name="ch1", seed=seed)],
        racks=[RackSpec("rack1", positions=positions, chamber="ch1", seed=seed)],
        testers=[TesterSpec("t1", ("rack1",), seed=seed)],
    )


def site_file(path: Path, url: str, sim: SimulatedPlant, scale: float, chamber: str = "") -> Path:
    """A site file reaching the plant's chamber, rack and tester (no cabinet needed to age); ``chamber``: more
    lines of its ``[[chambers]]`` table."""
    path.write_text(
        f"""
[database]
url = "{url}"
[clock]
scale = {scale}
[[chambers]]
name = "ch1"
resource = "{sim.chamber_resources["ch1"]}"
hold_s = 300.0
{chamber}
[[racks]]
name = "rack1"
positions = {sim.racks["rack1"].positions}
chamber = "ch1"
[[testers]]
name = "t1"
resource = "{sim.tester_resources["t1"]}"
racks = ["rack1"]
resistance_range_ohm = 0.3
"""
    )
    return path


def formed_lot(url: str, lot: str = "L1", n: int = 8) -> list[str]:
    """A lot of ``n`` cells whose runs on cab1 channels 101… finished."""
    with Store(url) as store:
        store.create_schema()
        ids = [f"{lot}-{k:03d}" for k in range(n)]
        store.upsert_lot_and_cells((c, lot, 5.0) for c in ids)
        store.save_recipe(SHA, "ncm21700-formation", "1.0", "NCM", 5.0, '{"steps":[]}', "")
        job = store.create_job(SHA, "cab1", f"1-{n}", 1.0, T0_S)
        runs = store.create_runs(
            job,
            [
                {
                    "cell_id": c,
                    "cabinet": "cab1",
                    "channel": k + 1,  # logical channels, as a launch stores them
                    "instrument_cell": 1001 + k,
                    "state": "running",
                    "started_s": T0_S,
                }
                for k, c in enumerate(ids)
            ],
        )
        store.update_runs([{"id": r, "state": "done"} for r in runs])
    return ids
