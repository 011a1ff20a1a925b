"""Every class of bad input issue 11 lists, through the CLI in this process: refused with exit 2 and one `error:`
line on stderr naming the field and the reason, no traceback, and nothing written (the folder the command runs in
holds only the input files afterwards). Bounds: docs/inputs.md."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from formation.cli.app import main

RECIPE = """
name = "r"
nominal_capacity_ah = {cap}
[limits]
max_voltage_v = 4.2
min_voltage_v = 2.5
[record]
every_s = {every}
[[steps]]
{step}
"""
REST = 'kind = "rest"\nuntil = { duration = "1h" }'
SITE = """
site = "s"
[database]
path = "x.db"
[clock]
scale = {scale}
[[cabinets]]
name = "cab1"
resource = "TCPIP0::127.0.0.1::5025::SOCKET"
poll_interval_s = {poll}
timeout_s = {timeout}
watchdog_s = {wd}
[cabinets.sim]
initial_soc = {soc}
ambient_c = {amb}
port = {port}
defect_fraction = {defect}
"""
CELLS = "cell_id,lot,nominal_capacity_ah\nA,L,5.0\nB,L,5.0\n"
BIG_INT = "1" + "0" * 400
#: A folder nothing can be written in, even by root (sysfs); a read-only folder would not stop root.
UNWRITABLE = "/sys" if os.geteuid() == 0 else None


def recipe(cap: str = "5.0", every: str = "60", step: str = REST) -> str:
    return RECIPE.format(cap=cap, every=every, step=step)


def site(**changes: str) -> str:
    values = {"scale": "1.0", "poll": "2.0", "timeout": "2.0", "wd": "30.0", "soc": "0.0", "amb": "25.0"}
    values |= {"port": "5025", "defect": "0.03"}
    return SITE.format(**(values | changes))


@dataclass(frozen=True)
class Case:
    """Arguments, input files (name -> text or bytes), environment, and what the one line must name."""

    args: tuple[str, ...]
    files: dict[str, str | bytes] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    names: tuple[str, ...] = ()


def _validate(text: str | bytes, *names: str, suffix: str = "toml") -> Case:
    return Case(("recipe", "validate", f"r.{suffix}"), {f"r.{suffix}": text}, names=names)


def _rest(duration: str) -> str:
    return f'kind = "rest"\nuntil = {{ duration = {duration} }}'


def _site(text: str, *names: str, **env: str) -> Case:
    return Case(("run", "list", "--site", "s.toml"), {"s.toml": text}, env=env, names=names)


LAUNCH = ("run", "launch", "--foreground", "ncm21700-formation", "--site", "s.toml", "--cabinet", "cab1", "--channels")


def _launch(cells: str | bytes, *names: str, channels: str = "1-2") -> Case:
    return Case((*LAUNCH, channels, "--cells", "c.csv"), {"s.toml": site(), "c.csv": cells}, names=names)


def _rules(text: str | bytes, *names: str) -> Case:
    return Case(("grade", "L", "--rules", "g.toml", "--db", "sqlite:///g.db"), {"g.toml": text}, names=names)


CASES: dict[str, Case] = {
    # recipes
    "record every_s 1e-9": _validate(recipe(every="1e-9"), "record.every_s", "below 0.1 s"),
    "duration 1e-300 s": _validate(recipe(step=_rest("1e-300")), "until.duration", "shorter than 0.1 s"),
    "duration 1e300 s": _validate(recipe(step=_rest("1e300")), "until.duration", "longer than 90 days"),
    "duration 99999999999999d": _validate(recipe(step=_rest('"99999999999999d"')), "longer than 90 days"),
    "duration 2h-1h": _validate(recipe(step=_rest('"2h-1h"')), "until.duration", "cannot read duration"),
    "duration 91 days": _validate(recipe(step=_rest('"91d"')), "until.duration", "longer than 90 days"),
    "current 1e-300A": _validate(
        recipe(step='kind = "charge"\ncurrent = "1e-300A"\nuntil = { duration = "1h" }'), "current", "0.0001–10000 A"
    ),
    "current C/1e9": _validate(
        recipe(step='kind = "charge"\ncurrent = "C/1e9"\nuntil = { duration = "1h" }'), "current", "C"
    ),
    "capacity 1e300 Ah": _validate(recipe(cap="1e300"), "nominal_capacity_ah", "0.01–2000 Ah"),
    "capacity 0.001 Ah": _validate(recipe(cap="0.001"), "nominal_capacity_ah", "0.01–2000 Ah"),
    "capacity nan": _validate(recipe(cap="nan"), "nominal_capacity_ah", "finite"),
    "capacity inf": _validate(recipe(cap="inf"), "nominal_capacity_ah", "finite"),
    "integer above 1e308 (TOML)": _validate(recipe(cap=BIG_INT), "nominal_capacity_ah", "too large"),
    "integer above 1e308 (JSON)": _validate(
        '{"name": "r", "nominal_capacity_ah": ' + BIG_INT + ', "steps": []}', "too large", suffix="json"
    ),
    "TOML nested 5000 deep": _validate("a = " + "[" * 5000 + "]" * 5000 + "\n", "nested"),
    "JSON nested 100000 deep": _validate("[" * 100_000 + "]" * 100_000, "nested", suffix="json"),
    "JSON nested 40 deep": _validate('{"name": ' + "[" * 40 + "]" * 40 + "}", "nested", suffix="json"),
    "lone surrogate name": _validate(
        json.dumps({"name": "\ud800", "nominal_capacity_ah": 5, "steps": []}), "name", "Unicode", suffix="json"
    ),
    "recipe not UTF-8": _validate(b'name = "\xff"\n', "not UTF-8"),
    "recipe path over 255 characters": Case(("recipe", "validate", "a" * 300 + ".toml")),
    # site.toml
    "clock.scale nan": _site(site(scale="nan"), "clock.scale", "finite"),
    "clock.scale inf": _site(site(scale="inf"), "clock.scale", "finite"),
    "clock.scale -1": _site(site(scale="-1"), "clock.scale"),
    "clock.scale above 1e6": _site(site(scale="1e7"), "clock.scale"),
    "watchdog_s nan": _site(site(wd="nan"), "watchdog_s", "finite"),
    "watchdog_s negative": _site(site(wd="-5"), "watchdog_s"),
    "poll_interval_s inf": _site(site(poll="inf"), "poll_interval_s", "finite"),
    "poll_interval_s 0": _site(site(poll="0"), "poll_interval_s"),
    "timeout_s nan": _site(site(timeout="nan"), "timeout_s", "finite"),
    "sim.initial_soc 5": _site(site(soc="5"), "sim.initial_soc", "0–1"),
    "sim.ambient_c nan": _site(site(amb="nan"), "sim.ambient_c", "finite"),
    "sim.port 99999": _site(site(port="99999"), "sim.port"),
    "sim.defect_fraction -1": _site(site(defect="-1"), "sim.defect_fraction"),
    "site integer above 1e308": _site(site(poll=BIG_INT), "poll_interval_s", "too large"),
    "cabinets = [1]": _site("cabinets = [1]\n", "cabinets[0]"),
    "clock = 5": _site("clock = 5\n", "clock", "not a table"),
    "database = 5": _site("database = 5\n", "database", "not a table"),
    "mqtt = 5": _site("mqtt = 5\n", "mqtt", "not a table"),
    "sim = 5": _site('[[cabinets]]\nname = "c"\nresource = "r"\nsim = 5\n', "cabinets[0].sim", "not a table"),
    'site = ["x"]': _site('site = ["x"]\n', "site", "string"),
    "line = 1": _site("line = 1\n", "line", "string"),
    "cabinet name = 5": _site('[[cabinets]]\nname = 5\nresource = "r"\n', "cabinets[0].name", "string"),
    "database.path = 5": _site("[database]\npath = 5\n", "database.path", "string"),
    "mqtt.port 99999": _site("[mqtt]\nport = 99999\n", "mqtt.port"),
    "site nested": _site("a = " + "[" * 5000 + "]" * 5000 + "\n", "nested"),
    "site not UTF-8": _site(b'site = "\xff"\n', "not UTF-8"),
    "report.daily_at 25:00": _site('[report]\ndaily_at = "25:00"\n', "report.daily_at", "00:00–23:59"),
    "report.daily_at 6am": _site('[report]\ndaily_at = "6am"\n', "report.daily_at", "HH:MM"),
    "report.folder = 5": _site("[report]\nfolder = 5\n", "report.folder", "string"),
    "report.enabled maybe": _site('[report]\nenabled = "maybe"\n', "report.enabled"),
    "report = 5": _site("report = 5\n", "report", "not a table"),
    "serve: report.folder under a missing folder": Case(
        ("serve", "--site", "s.toml"),
        {"s.toml": site() + '[report]\nfolder = "no/such/reports"\n'},
        names=("report.folder", "does not exist"),
    ),
    # environment
    "FORMATION_CLOCK_SCALE=nan": _site(site(), "FORMATION_CLOCK_SCALE", FORMATION_CLOCK_SCALE="nan"),
    "FORMATION_CLOCK_SCALE=0": _site(site(), "FORMATION_CLOCK_SCALE", FORMATION_CLOCK_SCALE="0"),
    "FORMATION_MQTT_PORT=abc": _site(site(), "FORMATION_MQTT_PORT", FORMATION_MQTT_PORT="abc"),
    "FORMATION_MQTT_PORT=Arabic-Indic 3": _site(site(), "FORMATION_MQTT_PORT", FORMATION_MQTT_PORT="\u0663"),
    # cells and channels
    "cells not UTF-8": _launch(b"cell_id,lot,nominal_capacity_ah\n\xff,L,5\n", "not UTF-8"),
    "cells extra field": _launch(CELLS + "C,L,5.0,extra\n", "line 4", "fields"),
    "cells field over 128 KiB": _launch(CELLS + "C" * (128 * 1024 + 1) + ",L,5.0\n", "CSV"),
    "cells id with an escape": _launch(CELLS.replace("B,", "B\x1b[2J,"), "line 3.cell_id", "control"),
    "cells capacity 1e300": _launch(CELLS.replace("B,L,5.0", "B,L,1e300"), "nominal_capacity_ah", "2000 Ah"),
    "--channels 1-99999999999": _launch(CELLS, "--channels", "outside the cabinet", channels="1-99999999999"),
    "--channels with a huge number": _launch(CELLS, "--channels", channels="1-" + "9" * 5000),
    # rules
    "rules not UTF-8": _rules(b'name = "\xff"\n', "not UTF-8"),
    "rules integer above 1e308": _rules(
        'name = "g"\nversion = "1"\n[metrics]\ncapacity_ah = { step = "c" }\n[[grades]]\nname = "A"\n'
        f"capacity_ah = {{ min = {BIG_INT} }}\n",
        "capacity_ah.min",
        "too large",
    ),
    "rules nested": _rules("a = " + "[" * 5000 + "]" * 5000 + "\n", "nested"),
    # the daily lot report by hand
    "report daily --date 2026-13-01": Case(("report", "daily", "--date", "2026-13-01"), names=("--date", "month")),
    "report daily --date yesterday": Case(("report", "daily", "--date", "yesterday"), names=("--date", "YYYY-MM-DD")),
    "report daily --date 20261202": Case(("report", "daily", "--date", "20261202"), names=("--date", "YYYY-MM-DD")),
    "report daily --db of no file": Case(
        ("report", "daily", "--db", "sqlite:///missing.db"), names=("--db", "no SQLite database file")
    ),
    "report daily --db not a URL": Case(("report", "daily", "--db", "not a url"), names=("--db",)),
    "report daily --out a file": Case(
        ("report", "daily", "--out", "c.csv"), {"c.csv": CELLS}, names=("--out", "not a folder")
    ),
    "report daily --out under a missing folder": Case(
        ("report", "daily", "--out", "no/such"), names=("--out", "does not exist")
    ),
    "report daily: site report.daily_at 24:00": Case(
        ("report", "daily", "--site", "s.toml"), {"s.toml": '[report]\ndaily_at = "24:00"\n'}, names=("daily_at",)
    ),
    # ids and numbers on the command line
    "run show 99999999999999999999999": Case(("run", "show", "99999999999999999999999"), names=("job",)),
    "export --run 99999999999999999999999": Case(("export", "X", "--run", "99999999999999999999999")),
    "demo --scale inf": Case(("demo", "--scale", "inf"), names=("--scale",)),
    "demo --scale nan": Case(("demo", "--scale", "nan"), names=("--scale",)),
    "demo --scale 0": Case(("demo", "--scale", "0"), names=("--scale",)),
    "demo --seed -1": Case(("demo", "--seed", "-1"), names=("--seed",)),
    "sim serve --scale nan": Case(("sim", "serve", "--scale", "nan", "--port", "0"), names=("--scale",)),
    "sim serve --scale 0": Case(("sim", "serve", "--scale", "0", "--port", "0"), names=("--scale",)),
    "sim serve --seed -1": Case(("sim", "serve", "--seed", "-1", "--port", "0"), names=("--seed",)),
    "sim serve --seed 2**70": Case(("sim", "serve", "--seed", str(2**70), "--port", "0"), names=("--seed",)),
}
if UNWRITABLE is not None or os.geteuid() != 0:
    ro = UNWRITABLE or "ro"
    CASES |= {
        "grade --out unwritable": Case(("grade", "L", "--rules", "ncm21700-formation", "--out", f"{ro}/r.csv")),
        "grade --plots unwritable": Case(("grade", "L", "--rules", "ncm21700-formation", "--plots", f"{ro}/p")),
        "export --out unwritable": Case(("export", "X", "--out", f"{ro}/x.csv"), names=("--out",)),
        "demo --out unwritable": Case(("demo", "--out", f"{ro}/demo"), names=("--out",)),
        "report daily --out unwritable": Case(("report", "daily", "--out", f"{ro}/reports"), names=("--out",)),
        "serve: report.folder unwritable": Case(
            ("serve", "--site", "s.toml"),
            {"s.toml": site() + f'[report]\nfolder = "{ro}/reports"\n'},
            names=("report.folder",),
        ),
    }


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input_is_one_line_and_exit_2_with_nothing_written(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    for name, content in case.files.items():
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    if UNWRITABLE is None:  # not root: a folder without write permission stops the process
        (tmp_path / "ro").mkdir(mode=0o555)
    before = sorted(p.name for p in tmp_path.iterdir())
    capsys.readouterr()
    code = main(list(case.args))
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for name in case.names:
        assert name in lines[0], (name, lines[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "something was written"


def test_recipe_show_escapes_control_characters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "r.toml"
    text = recipe().replace('name = "r"', 'name = "r\\u001b[31mRED"\ndescription = "x\\u0007\\u001b[2J"')
    path.write_text(text)
    assert main(["recipe", "show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "r\\x1b[31mRED" in out and "x\\x07\\x1b[2J" in out
