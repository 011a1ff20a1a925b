"""The README's command table is the simulator's COMMAND_TABLE, not a copy that drifts."""

from __future__ import annotations

from pathlib import Path

from formation.sim.commands import COMMAND_TABLE, command_table_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_command_table_matches_the_simulator() -> None:
    text = README.read_text(encoding="utf-8")
    start = text.index("<!-- COMMAND TABLE")
    end = text.index("<!-- END COMMAND TABLE -->")
    table = text[text.index("\n", start) + 1 : end].strip()
    assert table == command_table_markdown()
    assert table.count("\n") == len(COMMAND_TABLE) + 1
    assert "| `SIM:FAULT:DROP` | EXT |" in table
