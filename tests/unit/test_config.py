"""Site configuration: TOML plus FORMATION_* environment, bad keys refused with their path."""

from __future__ import annotations

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
