"""Site configuration: TOML plus FORMATION_* environment, bad keys refused with their path."""

from __future__ import annotations

from pathlib import Path

import pytest

from formation.config import load_site_config, parse_site_config
from formation.errors import ConfigError


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
