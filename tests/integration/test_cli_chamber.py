"""`run launch` refuses, before anything is written, a recipe temperature its cabinet cannot give."""

from __future__ import annotations

from pathlib import Path

import pytest

from formation.cli.app import main

RECIPE = """
name = "warm-rest"
version = "1"
nominal_capacity_ah = 5.0
[limits]
max_voltage_v = 4.25
min_voltage_v = 2.45
[[steps]]
text = "Rest for 1 hour"
chamber_c = 45.0
"""


@pytest.mark.parametrize(
    ("cabinet_extra", "chambers", "expected"),
    [
        ("", "", "steps[0].chamber_c: 45 °C asked of cabinet cab1, which stands in no chamber"),
        (
            'chamber = "ch1"\n',
            '[[chambers]]\nname = "ch1"\nresource = "TCPIP0::127.0.0.1::5999::SOCKET"\nsetpoint_max_c = 40.0\n',
            "steps[0].chamber_c: 45 °C is outside 10–40 °C of chamber ch1",
        ),
    ],
    ids=["no-chamber", "out-of-range"],
)
def test_launch_refuses_a_temperature_the_cabinet_cannot_give(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cabinet_extra: str, chambers: str, expected: str
) -> None:
    (tmp_path / "site.toml").write_text(
        f'[database]\npath = "line.db"\n{chambers}'
        f'[[cabinets]]\nname = "cab1"\nresource = "TCPIP0::127.0.0.1::5998::SOCKET"\nchannels = 8\n{cabinet_extra}'
    )
    (tmp_path / "warm.toml").write_text(RECIPE)
    (tmp_path / "cells.csv").write_text("cell_id,lot,nominal_capacity_ah\nW-1,LOT-W,5.0\n")
    code = main(
        [
            "run", "launch", "--foreground", str(tmp_path / "warm.toml"), "--site", str(tmp_path / "site.toml"),
            "--cabinet", "cab1", "--channels", "1", "--cells", str(tmp_path / "cells.csv"),
        ]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert err.strip().splitlines() == [f"error: {expected}"]
    assert not (tmp_path / "line.db").exists()  # refused before anything was written
