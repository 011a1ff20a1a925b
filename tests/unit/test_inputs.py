"""Cells files and channel lists are refused before anything starts, naming the line and field."""

from __future__ import annotations

import pytest

from formation.errors import CellsFileError, InputError
from formation.orchestrator.inputs import (
    format_channel_list,
    load_cells_file,
    parse_cells_csv,
    parse_channel_list,
)


def test_cells_csv_parses_in_order() -> None:
    cells = parse_cells_csv("cell_id,lot,nominal_capacity_ah\nA1,L1,5.0\nA2,L1,5.1\n")
    assert [c.cell_id for c in cells] == ["A1", "A2"]
    assert cells[1].nominal_capacity_ah == pytest.approx(5.1)
    assert cells[0].lot == "L1"


def test_duplicate_cell_id_names_both_lines() -> None:
    with pytest.raises(CellsFileError) as err:
        parse_cells_csv("cell_id,lot,nominal_capacity_ah\nA1,L1,5\nA2,L1,5\nA1,L1,5\n", source="c.csv")
    assert err.value.field == "line 4.cell_id"
    assert "duplicate cell id 'A1' (first on line 2)" in str(err.value)
    assert str(err.value).startswith("c.csv: ")


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        ("cell_id,lot\nA1,L1\n", "header", "missing column(s) nominal_capacity_ah"),
        (
            "cell_id,lot,nominal_capacity_ah\nA1,L1,abc\n",
            "line 2.nominal_capacity_ah",
            "'abc' is not a number",
        ),
        ("cell_id,lot,nominal_capacity_ah\nA1,L1,-5\n", "line 2.nominal_capacity_ah", "-5 must be > 0"),
        ("cell_id,lot,nominal_capacity_ah\n,L1,5\n", "line 2.cell_id", "empty"),
        ("cell_id,lot,nominal_capacity_ah\nA1,,5\n", "line 2.lot", "empty"),
        ("cell_id,lot,nominal_capacity_ah\n", "", "no cells"),
    ],
)
def test_bad_cells_files(text: str, field: str, reason: str) -> None:
    with pytest.raises(CellsFileError) as err:
        parse_cells_csv(text)
    assert err.value.field == field
    assert err.value.reason == reason


def test_example_cells_file_loads() -> None:
    cells = load_cells_file("examples/cells.csv")
    assert len(cells) == 32
    assert len({c.cell_id for c in cells}) == 32


def test_missing_cells_file_is_input_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CellsFileError, match="cannot read cells file"):
        load_cells_file(tmp_path / "nope.csv")


def test_channel_lists() -> None:
    assert parse_channel_list("1-4", 256) == [1, 2, 3, 4]
    assert parse_channel_list("5, 1-2 ,9", 16) == [1, 2, 5, 9]
    assert format_channel_list([1, 2, 3, 7, 9, 10]) == "1-3,7,9-10"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("1-300", "channel 257 is outside the cabinet (1-256)"),
        ("0-3", "channel 0 is outside the cabinet (1-256)"),
        ("4-1", "range '4-1' runs backwards"),
        ("a-b", "'a-b' is not a channel number or range"),
        ("1,1", "a channel is listed twice"),
        ("", "no channels given"),
    ],
)
def test_bad_channel_lists(text: str, reason: str) -> None:
    with pytest.raises(InputError) as err:
        parse_channel_list(text, 256, field="--channels")
    assert err.value.reason == reason
    assert err.value.field == "--channels"
