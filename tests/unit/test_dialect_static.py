"""The simulator's copy of the wire contract, statically: it stands alone and names what the driver names.

The wire-level proof is tests/integration/test_dialect_wire.py; this file only compares names and values, and
checks that formation/sim imports nothing from formation/instruments (they meet over TCP).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import formation.instruments.program as drv
import formation.sim.wire as sim

SIM_DIR = Path(__file__).resolve().parents[2] / "formation" / "sim"
ALLOWED = ("formation.sim", "formation.clock", "formation.errors")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names if node.module == "formation")
    return found


@pytest.mark.parametrize("path", sorted(SIM_DIR.glob("*.py")), ids=lambda p: p.name)
def test_the_simulator_imports_nothing_from_the_driver(path: Path) -> None:
    for module in imported_modules(path):
        if module == "formation" or not module.startswith("formation"):
            continue  # the package itself (its __version__) and third-party modules
        assert module.startswith(ALLOWED), f"{path.name} imports {module}"


def test_state_codes_agree() -> None:
    assert {s.name: s.value for s in drv.CellState} == {s.name: s.value for s in sim.CellState}


def test_end_codes_agree() -> None:
    names = ("NONE", "TIME", "NEXT_BASE", "FAIL_BASE", "ABORT", "WATCHDOG", "FAULT")
    assert {n: getattr(drv.EndCode, n) for n in names} == {n: getattr(sim.EndCode, n) for n in names}
    for code in range(40):
        assert drv.EndCode.describe(code) == sim.EndCode.describe(code)


def test_log_columns_agree() -> None:
    assert drv.LOG_COLUMNS == sim.LOG_COLUMNS
    assert drv.LOG_COL == sim.LOG_COL


@pytest.mark.parametrize(
    ("driver_enum", "sim_enum"),
    [
        (drv.StepMode, sim.StepMode),
        (drv.TestType, sim.TestType),
        (drv.TestWhen, sim.TestWhen),
        (drv.TestAction, sim.TestAction),
    ],
    ids=["StepMode", "TestType", "TestWhen", "TestAction"],
)
def test_every_keyword_the_driver_sends_is_one_the_simulator_parses(driver_enum: type, sim_enum: type) -> None:
    sent = {m.name: m.value for m in driver_enum}
    parsed = {m.name: m.value for m in sim_enum}
    assert sent.items() <= parsed.items()


def test_step_test_defaults_agree() -> None:
    d = drv.StepTest(drv.TestType.VOLT_GE, 4.2)
    s = sim.StepTest(sim.TestType.VOLT_GE, 4.2)
    assert (d.action.value, d.when.value, d.at_s) == (s.action.value, s.when.value, s.at_s)
