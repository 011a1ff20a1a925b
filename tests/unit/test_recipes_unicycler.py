"""aurora-unicycler in and out through the package itself: the documentation's examples import, a round trip keeps
the recipe hash, Neware XML parses with the expected steps, and what has no equivalent is refused in one line."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from formation.cli.app import main
from formation.recipes import load_recipe, loads_recipe
from formation.recipes.unicycler import export_recipe, import_protocol

# The two examples of aurora-unicycler's README and docs/protocol.md (0.4.x), as JSON.
README_EXAMPLE = {
    "record": {"time_s": 10, "voltage_V": 0.1},
    "safety": {"max_voltage_V": 5, "min_voltage_V": 0, "max_current_mA": 10, "min_current_mA": -10},
    "method": [
        {"step": "tag", "tag": "my_tag"},
        {"step": "constant_current", "rate_C": 0.5, "until_voltage_V": 4.2, "until_time_s": 3 * 3600},
        {"step": "constant_voltage", "voltage_V": 4.2, "until_rate_C": 0.05, "until_time_s": 3600},
        {"step": "constant_current", "rate_C": -0.5, "until_voltage_V": 3.5, "until_time_s": 3 * 3600},
        {"step": "loop", "loop_to": "my_tag", "cycle_count": 100},
    ],
}
DICT_EXAMPLE = {
    "record": {"time_s": 10, "voltage_V": 0.1},
    "safety": {"max_voltage_V": 5},
    "method": [
        {"step": "open_circuit_voltage", "until_time_s": 1},
        {"step": "tag", "tag": "tag1"},
        {"step": "constant_current", "rate_C": 0.5, "until_voltage_V": 4.2},
        {"step": "constant_voltage", "voltage_V": 4.2, "until_rate_C": 0.05},
        {"step": "constant_current", "rate_C": -0.5, "until_voltage_V": 3.0},
        {"step": "loop", "loop_to": "tag1", "cycle_count": 100},
    ],
}
# The docs leave the capacity to export time and use 0 V / no lower limit: the line needs both.
OPTIONS = {"capacity_ah": 0.01, "min_voltage_v": 2.8}


def _write(tmp_path: Path, data: object, name: str = "p.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.mark.parametrize("example", [README_EXAMPLE, DICT_EXAMPLE], ids=["readme", "protocol-md"])
def test_documented_examples_import_and_round_trip_to_the_same_hash(example: dict, tmp_path: Path) -> None:
    first = import_protocol(_write(tmp_path, example), name="doc", **OPTIONS)
    assert first.cycles.count(100) == 3 and first.limits.max_voltage_v == 5.0
    hold = next(s for s in first.steps if getattr(s, "cv_voltage_v", None) is not None)
    assert hold.current.amps == first.limits.max_current_a and hold.until.current.c_rate == 0.05
    back = tmp_path / "back.json"
    back.write_text(export_recipe(first, "unicycler"), encoding="utf-8")
    again = import_protocol(back)  # name, capacity and limits now come from the exported protocol
    assert again.sha256 == first.sha256 and again.steps == first.steps


def test_neware_xml_parses_with_the_expected_step_count_and_pybamm_unrolls(tmp_path: Path) -> None:
    recipe = import_protocol(_write(tmp_path, README_EXAMPLE), name="doc", **OPTIONS)
    root = ET.fromstring(export_recipe(recipe, "neware"))
    info = root.find("config/Step_Info")
    assert info is not None
    steps = list(info)
    # CC, CV, CC, the loop step, and Neware's end step (the tag becomes the loop's start index).
    assert int(info.attrib["Num"]) == len(steps) == 5
    assert [s.attrib["Step_Type"] for s in steps] == ["1", "3", "2", "5", "6"]
    loop = steps[3].find("Limit/Other")
    assert loop is not None and loop.find("Cycle_Count").attrib["Value"] == "100"  # type: ignore[union-attr]
    experiment = export_recipe(recipe, "pybamm").splitlines()
    assert len(experiment) == 300 and experiment[0] == "Charge at 0.5C for 3 hours or until 4.2 V"
    assert "Modulo Bat" in export_recipe(recipe, "biologic")


CCCV = """
name = "cccv"
nominal_capacity_ah = 5.0
[limits]
max_voltage_v = 4.25
min_voltage_v = 2.45
[[steps]]
id = "charge"
kind = "charge"
current = "C/2"
cv_voltage_v = 4.2
until = { current = "C/20", duration = "4h" }
[[steps]]
id = "capacity"
kind = "discharge"
current = "C/5"
until = { voltage_v = 2.5, duration = "6h" }
"""


def test_a_cccv_step_exports_as_cc_then_cv_and_that_imports_stably(tmp_path: Path) -> None:
    recipe = loads_recipe(CCCV, "toml")
    exported = json.loads(export_recipe(recipe, "unicycler"))
    kinds = [m["step"] for m in exported["method"]]
    assert "constant_voltage" in kinds and kinds[kinds.index("constant_voltage") - 1] == "constant_current"
    once = import_protocol(_write(tmp_path, exported))
    twice = import_protocol(_write(tmp_path, json.loads(export_recipe(once, "unicycler")), "p2.json"))
    assert twice.sha256 == once.sha256


REFUSED = [
    ({**README_EXAMPLE, "method": [{"step": "open_circuit_voltage", "until_time_s": 60},
                                   {"step": "impedance_spectroscopy", "amplitude_V": 0.01, "start_frequency_Hz": 1e5,
                                    "end_frequency_Hz": 0.1}]},
     "method[1]: impedance_spectroscopy has no equivalent in the recipe language"),
    ({**README_EXAMPLE, "method": [{"step": "voltage_scan", "start_voltage_V": 3, "end_voltage_V": 4,
                                    "scan_rate_mV_per_s": 1}]},
     "method[0]: voltage_scan has no equivalent in the recipe language"),
    ({**README_EXAMPLE, "record": {"time_s": 10, "current_mA": 1}},
     "record.current_mA: no equivalent: the recipe logs on time and voltage changes only"),
    ({**README_EXAMPLE, "method": [{"step": "tag", "tag": "a"}, {"step": "loop", "loop_to": "b", "cycle_count": 2}]},
     "refused by aurora-unicycler: Value error, Tag 'b' is missing."),
    ({**README_EXAMPLE, "safety": {"max_voltage_V": 4.2}}, "safety.min_voltage_V: missing: the recipe needs a voltage"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "expected"), REFUSED, ids=["eis", "scan", "record-current", "tag", "min-v"])
def test_what_has_no_equivalent_is_refused_in_one_line(
    data: dict, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, data)
    assert main(["recipe", "import", str(path), "--capacity-ah", "0.01"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines


def test_cli_import_export_and_their_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, README_EXAMPLE)
    out = tmp_path / "r.json"
    assert (
        main(["recipe", "import", str(path), "--capacity-ah", "0.01", "--min-voltage", "2.8", "--out", str(out)]) == 0
    )
    assert load_recipe(out).sha256 == import_protocol(path, **OPTIONS).sha256
    xml = tmp_path / "r.xml"
    assert main(["recipe", "export", str(out), "--to", "neware", "--out", str(xml)]) == 0
    assert ET.parse(xml).getroot().find("config/Step_Info") is not None
    capsys.readouterr()
    cases = [
        (["recipe", "import", str(path), "--capacity-ah", "nan"], "error: --capacity-ah: nan is not a finite positive"),
        (["recipe", "import", str(path)], "error: " + str(path) + ": sample.capacity_mAh: missing"),
        (["recipe", "export", str(out), "--to", "maccor"], "error: " + str(out) + ": --to: unknown format 'maccor'"),
        (["recipe", "export", "ncm21700-formation", "--to", "neware"],
         "error: builtin:ncm21700-formation: steps[1]: a charge step like 'form' has no unicycler equivalent"),
    ]  # fmt: skip
    for argv, expected in cases:
        assert main(argv) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(expected), lines
