"""Site configuration: TOML plus FORMATION_* environment, bad keys refused with their path."""

from __future__ import annotations

from pathlib import Path

import pytest

from formation.config import load_site_config, parse_site_config
from formation.errors import ConfigError
from formation.site_report import ReportConfig


def test_example_site_loads() -> None:
    cfg = load_site_config("examples/site.toml")
    cab = cfg.cabinet("cab1")
    assert cab.channels == 256
    assert cab.resource == "TCPIP0::127.0.0.1::5025::SOCKET"
    assert cab.sim is not None and cab.sim.preset == "ncm21700-5ah"
    assert cfg.database_url.startswith("sqlite:///") and cfg.database_url.endswith("examples/formation.db")


def test_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORMATION_DATABASE_URL", "postgresql+psycopg://x@h/db")
    monkeypatch.setenv("FORMATION_CLOCK_SCALE", "100")
    cfg = parse_site_config({})
    assert cfg.database_url == "postgresql+psycopg://x@h/db"
    assert cfg.clock_scale == 100.0


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"colour": 1}, "colour"),
        ({"cabinets": [{"name": "a"}]}, "cabinets[0].resource"),
        ({"cabinets": [{"name": "a", "resource": "r", "channels": "many"}]}, "cabinets[0].channels"),
        ({"cabinets": [{"name": "a", "resource": "r", "speed": 1}]}, "cabinets[0].speed"),
        ({"cabinets": [{"name": "a", "resource": "r", "sim": {"seed": "x"}}]}, "cabinets[0].sim.seed"),
        ({"clock": {"scale": 0}}, "clock.scale"),
        ({"mqtt": {"enabled": "maybe"}}, "mqtt.enabled"),
    ],
)
def test_bad_site_config(data: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_site_config(data)
    assert err.value.field == field


def test_unknown_cabinet_lists_known() -> None:
    cfg = parse_site_config({"cabinets": [{"name": "a", "resource": "r"}]})
    with pytest.raises(ConfigError, match=r"no cabinet named 'b' \(known: a\)"):
        cfg.cabinet("b")


@pytest.mark.parametrize(
    ("written", "enabled"),
    [("auto", "auto"), ("yes", "yes"), ("no", "no"), (True, "yes"), (False, "no")],
)
def test_mqtt_enabled_takes_the_words_and_toml_booleans(written: object, enabled: str) -> None:
    assert parse_site_config({"mqtt": {"enabled": written}}).mqtt.enabled == enabled


@pytest.mark.parametrize(("written", "formed"), [(True, True), (False, False), ("yes", True), ("no", False)])
def test_sim_formed_takes_toml_booleans_and_the_words(written: object, formed: bool) -> None:
    cfg = parse_site_config({"cabinets": [{"name": "a", "resource": "r", "sim": {"formed": written}}]})
    assert cfg.cabinet("a").sim is not None and cfg.cabinet("a").sim.formed is formed


def test_yes_no_settings_read_from_a_toml_file(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(
        '[mqtt]\nenabled = false\n[[cabinets]]\nname = "a"\nresource = "r"\n[cabinets.sim]\nformed = true\n'
    )
    cfg = load_site_config(site)
    assert cfg.mqtt.enabled == "no"
    sim = cfg.cabinet("a").sim
    assert sim is not None and sim.formed is True


@pytest.mark.parametrize(
    ("data", "field", "shown"),
    [
        ({"mqtt": {"enabled": 1}}, "mqtt.enabled", "1 is not one of auto, yes, no, true, false"),
        ({"mqtt": {"enabled": "true"}}, "mqtt.enabled", "'true' is not one of auto, yes, no, true, false"),
        ({"mqtt": {"enabled": "Yes"}}, "mqtt.enabled", "'Yes' is not one of"),
        (
            {"cabinets": [{"name": "a", "resource": "r", "sim": {"formed": "auto"}}]},
            "cabinets[0].sim.formed",
            "'auto' is not one of true, false, yes, no",
        ),
        ({"cabinets": [{"name": "a", "resource": "r", "sim": {"formed": 1}}]}, "cabinets[0].sim.formed", "1 is not"),
        ({"mqtt": "yes"}, "mqtt", "'yes' is not a table"),
        ({"cabinets": [{"name": "a", "resource": "r", "sim": True}]}, "cabinets[0].sim", "True is not a table"),
        ({"cabinets": {"name": "a"}}, "cabinets", "is not an array of tables"),
        ({"clock": 5}, "clock", "5 is not a table"),
    ],
)
def test_a_yes_no_setting_of_the_wrong_type_is_one_line_naming_the_field(data: dict, field: str, shown: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_site_config(data, source="site.toml")
    assert err.value.field == field
    assert shown in str(err.value)
    assert str(err.value).startswith(f"site.toml: {field}: ")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("env", "enabled"), [("auto", "auto"), ("yes", "yes"), ("true", "yes"), ("false", "no")])
def test_env_mqtt_enabled_takes_the_words_and_true_false(
    monkeypatch: pytest.MonkeyPatch, env: str, enabled: str
) -> None:
    monkeypatch.setenv("FORMATION_MQTT_ENABLED", env)
    assert parse_site_config({}).mqtt.enabled == enabled


@pytest.mark.parametrize(
    ("name", "value"),
    [("FORMATION_MQTT_ENABLED", "maybe"), ("FORMATION_MQTT_PORT", "mqtt"), ("FORMATION_MQTT_PORT", "70000")],
)
def test_bad_env_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        parse_site_config({})
    assert err.value.field == name
    assert repr(value) in str(err.value)


# -- chambers ------------------------------------------------------------------------------------------------------


def _chamber(**fields: object) -> dict[str, object]:
    return {"name": "ch1", "resource": "TCPIP0::127.0.0.1::5030::SOCKET", **fields}


def test_a_chamber_takes_the_defaults_and_a_cabinet_names_it() -> None:
    cfg = parse_site_config(
        {"chambers": [_chamber(sim={"seed": 3})], "cabinets": [{"name": "a", "resource": "r", "chamber": "ch1"}]}
    )
    chamber = cfg.chamber("ch1")
    assert chamber.sensors == (101, 102, 103, 104)
    assert chamber.heating_valves == (301, 302, 303, 304) and chamber.cooling_valves == (305, 306, 307, 308)
    assert (chamber.setpoint_min_c, chamber.setpoint_max_c, chamber.initial_setpoint_c) == (10.0, 60.0, 25.0)
    assert (chamber.period_s, chamber.band_c, chamber.hold_s, chamber.sample_every_s) == (5.0, 0.5, 600.0, 60.0)
    assert chamber.sim is not None and (chamber.sim.port, chamber.sim.seed, chamber.sim.ambient_c) == (5030, 3, 25.0)
    assert cfg.cabinet("a").chamber == "ch1"
    assert parse_site_config({"cabinets": [{"name": "a", "resource": "r"}]}).cabinet("a").chamber is None


def test_chamber_tuning_is_simc_of_the_plant_model_unless_given() -> None:
    chamber = parse_site_config({"chambers": [_chamber()]}).chamber("ch1")
    # SIMC on 40 °C, 1200 s, 60 s + half the 5 s period: kc = 1200 / (40 × 125), ti = 4 × 125.
    assert chamber.tuning.kc == pytest.approx(0.24) and chamber.tuning.ti_s == pytest.approx(500.0)
    given = parse_site_config({"chambers": [_chamber(kc=0.1)]}).chamber("ch1")
    assert given.tuning.kc == 0.1 and given.tuning.ti_s == pytest.approx(500.0)
    config = given.control_config()
    assert config.sensors == (101, 102, 103, 104) and config.heating_channels == (301, 302, 303, 304)
    assert config.band_c == 0.5 and config.hold_s == 600.0
    # A side fully open must move the chamber within a few dead times plus a tenth of τ: 300 s here, 40 min in an
    # ageing room of hours (its response is that much slower; a shorter wait would alarm on a healthy valve).
    assert config.stuck_response_s == 300.0
    room = parse_site_config({"chambers": [_chamber(tau_s=14400.0, dead_time_s=300.0)]}).chamber("ch1")
    assert room.control_config().stuck_response_s == pytest.approx(2340.0)


def test_chamber_settings_read_from_a_toml_file(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(
        '[[chambers]]\nname = "ch1"\nresource = "TCPIP0::127.0.0.1::5030::SOCKET"\nsensors = [101, 102]\n'
        "heating_valves = [301, 302]\ncooling_valves = [303]\nsetpoint_min_c = 15\nsetpoint_max_c = 55\n"
        '[chambers.sim]\nport = 5031\n\n[[cabinets]]\nname = "a"\nresource = "r"\nchamber = "ch1"\n'
    )
    cfg = load_site_config(site)
    chamber = cfg.chamber("ch1")
    assert chamber.sensors == (101, 102) and chamber.valves == (301, 302, 303)
    assert (chamber.setpoint_min_c, chamber.setpoint_max_c) == (15.0, 55.0)
    assert chamber.sim is not None and chamber.sim.port == 5031


def test_unknown_chamber_lists_known() -> None:
    cfg = parse_site_config({"chambers": [_chamber()]})
    with pytest.raises(ConfigError, match=r"no chamber named 'x' \(known: ch1\)"):
        cfg.chamber("x")


@pytest.mark.parametrize(
    ("chamber", "field", "shown"),
    [
        ({"sensors": []}, "sensors", "no thermocouple"),
        ({"sensors": [101, 102, 101]}, "sensors", "channel 101 is listed twice"),
        ({"heating_valves": [301, 305]}, "heating_valves", "channel 305 is listed twice (across lists)"),
        ({"cooling_valves": [301]}, "cooling_valves", "channel 301 is listed twice (across lists)"),
        ({"sensors": [101, 301]}, "sensors", "channel 301 is listed twice (across lists)"),
        (
            {"sensors": [101], "heating_valves": [101]},
            "heating_valves",
            "channel 101 is listed twice (also in sensors)",
        ),
        ({"sensors": [401]}, "sensors", "401 is not a DAQ channel"),
        ({"position_ports": [201, 201]}, "position_ports", "channel 201 is listed twice"),
        ({"position_ports": [101]}, "position_ports", "channel 101 is listed twice (across lists)"),
        (
            {
                "position_ports": [201],
                "heating_valves": [301, 302, 303, 304, 305],
                "cooling_valves": [306, 307, 308, 309],
            },
            "position_ports",
            "1 ports read 8 end switches each, the chamber has 9 valves",
        ),
        ({"sensors": ["tc1"]}, "sensors", "'tc1' is not a DAQ channel"),
        ({"sensors": 101}, "sensors", "101 is not a list"),
        ({"heating_valves": [], "cooling_valves": []}, "heating_valves", "no valve at all"),
        ({"setpoint_min_c": 50, "setpoint_max_c": 40}, "setpoint_min_c", "range 50–40 °C is empty"),
        ({"setpoint_max_c": float("inf")}, "setpoint_max_c", "inf is not a finite number"),
        ({"setpoint_min_c": float("nan")}, "setpoint_min_c", "nan is not a finite number"),
        ({"setpoint_min_c": "cold"}, "setpoint_min_c", "'cold' is not a number"),
        ({"initial_setpoint_c": 70}, "initial_setpoint_c", "70 °C is outside the set-point range 10–60 °C"),
        ({"period_s": 0}, "period_s", "0 must be > 0"),
        ({"cycle_s": -60}, "cycle_s", "-60 must be > 0"),
        ({"cycle_s": 8}, "cycle_s", "at least min_on_s + min_off_s"),
        ({"sample_every_s": float("inf")}, "sample_every_s", "inf is not a finite number"),
        ({"timeout_s": 0}, "timeout_s", "0 must be > 0"),
        ({"gain_c": float("nan")}, "gain_c", "nan is not a finite number"),
        ({"tau_s": 0}, "tau_s", "must be > 0"),
        ({"dead_time_s": -1}, "dead_time_s", "must be > 0"),
        ({"kc": -0.1}, "kc", "must be > 0"),
        ({"ti_s": 0}, "ti_s", "must be > 0"),
        ({"band_c": 0}, "band_c", "must be > 0"),
        ({"hold_s": -1}, "hold_s", "must be >= 0"),
        ({"min_on_s": float("-inf")}, "min_on_s", "is not a finite number"),
        ({"colour": "blue"}, "colour", "unknown key"),
        ({"name": ""}, "name", "is not a non-empty string"),
        ({"sim": {"port": 70000}}, "sim.port", "70000 is not a TCP port"),
        ({"sim": {"ambient_c": 100}}, "sim.ambient_c", "above 80 °C"),
    ],
)
def test_a_bad_chamber_is_one_line_naming_the_field(chamber: dict, field: str, shown: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_site_config({"chambers": [_chamber(**chamber)]}, source="site.toml")
    assert err.value.field == f"chambers[0].{field}"
    assert shown in str(err.value)
    assert str(err.value).startswith(f"site.toml: chambers[0].{field}: ") and "\n" not in str(err.value)


def test_a_chamber_without_resource_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        parse_site_config({"chambers": [{"name": "ch1"}]})
    assert err.value.field == "chambers[0].resource"


def test_duplicate_chamber_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="duplicate chamber name 'ch1'") as err:
        parse_site_config({"chambers": [_chamber(), _chamber(sensors=[105])]})
    assert err.value.field == "chambers[1].name"


def test_a_cabinet_naming_an_unknown_chamber_is_refused() -> None:
    data = {"chambers": [_chamber()], "cabinets": [{"name": "a", "resource": "r", "chamber": "ch2"}]}
    with pytest.raises(ConfigError, match=r"no chamber named 'ch2' \(known: ch1\)") as err:
        parse_site_config(data)
    assert err.value.field == "cabinets[0].chamber"
    with pytest.raises(ConfigError, match=r"\(known: none\)"):
        parse_site_config({"cabinets": [{"name": "a", "resource": "r", "chamber": "ch2"}]})


def test_chambers_must_be_an_array_of_tables() -> None:
    with pytest.raises(ConfigError, match="is not an array of tables") as err:
        parse_site_config({"chambers": {"name": "ch1"}})
    assert err.value.field == "chambers"


def test_example_site_has_a_chamber_the_cabinet_may_name() -> None:
    cfg = load_site_config("examples/site.toml")
    chamber = cfg.chamber("chamber1")
    assert chamber.resource == "TCPIP0::127.0.0.1::5030::SOCKET"
    assert chamber.sim is not None and chamber.sim.port == 5030
    assert cfg.cabinet("cab1").chamber is None  # commented out: the cabinet tour runs without a chamber


def test_report_defaults_and_a_folder_relative_to_the_site_file(tmp_path: Path) -> None:
    assert parse_site_config({}).report == ReportConfig("06:00", "reports", True)
    path = tmp_path / "site.toml"
    path.write_text('[report]\ndaily_at = "05:30"\nfolder = "daily"\nenabled = "no"\n')
    cfg = load_site_config(path)
    assert cfg.report == ReportConfig("05:30", str(tmp_path / "daily"), False)
    assert cfg.report.hour_minute == (5, 30)
    path.write_text("[report]\n")  # the default folder too is beside the site file
    assert load_site_config(path).report.folder == str(tmp_path / "reports")
    path.write_text(f'[report]\nfolder = "{tmp_path / "abs"}"\n')
    assert load_site_config(path).report.folder == str(tmp_path / "abs")


def test_report_daily_at_takes_a_toml_local_time(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text("[report]\ndaily_at = 07:15:00\n")
    assert load_site_config(path).report.daily_at == "07:15"
    path.write_text("[report]\ndaily_at = 07:15:30\n")
    with pytest.raises(ConfigError, match=r"report\.daily_at: 07:15:30 has seconds"):
        load_site_config(path)


@pytest.mark.parametrize(
    ("report", "field", "shown"),
    [
        ({"daily_at": "24:00"}, "report.daily_at", "00:00–23:59"),
        ({"daily_at": "06:60"}, "report.daily_at", "00:00–23:59"),
        ({"daily_at": "6:00"}, "report.daily_at", '"HH:MM"'),
        ({"daily_at": "06:00:00"}, "report.daily_at", '"HH:MM"'),
        ({"daily_at": "\u0660\u0666:00"}, "report.daily_at", '"HH:MM"'),  # Arabic-Indic digits
        ({"daily_at": 6}, "report.daily_at", '"HH:MM"'),
        ({"folder": ""}, "report.folder", "non-empty string"),
        ({"folder": 5}, "report.folder", "non-empty string"),
        ({"folder": "a\0b"}, "report.folder", "NUL"),
        ({"enabled": "maybe"}, "report.enabled", "true, false, yes, no"),
        ({"at": "06:00"}, "report.at", "unknown key"),
    ],
)
def test_a_bad_report_setting_is_one_line_naming_the_field(report: dict, field: str, shown: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_site_config({"report": report})
    assert err.value.field == field and shown in err.value.reason


def test_report_must_be_a_table() -> None:
    with pytest.raises(ConfigError, match="report: 5 is not a table"):
        parse_site_config({"report": 5})
