"""--mqtt URLs and the [mqtt] settings: accepted forms and one-line refusals naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from formation.config import MqttConfig, apply_env, parse_site_config
from formation.errors import ConfigError
from formation.feed.url import broker_url, mqtt_from_url


def test_urls_give_host_port_credentials_and_tls() -> None:
    cfg = mqtt_from_url("mqtt://broker.plant:1884")
    assert (cfg.host, cfg.port, cfg.enabled, cfg.tls) == ("broker.plant", 1884, "yes", False)
    cfg = mqtt_from_url("mqtts://feed:s%40cret@10.0.0.5")
    assert (cfg.host, cfg.port, cfg.tls, cfg.username, cfg.password) == ("10.0.0.5", 8883, True, "feed", "s@cret")
    base = MqttConfig(username="site-user", interval_s=1.0)
    cfg = mqtt_from_url("mqtt://127.0.0.1/", base)
    assert cfg.username == "site-user" and cfg.interval_s == 1.0
    assert broker_url(mqtt_from_url("mqtt://[::1]:1883")) == "mqtt://[::1]:1883"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "empty"),
        ("http://host:1883", "scheme"),
        ("127.0.0.1:1883", "scheme"),
        ("mqtt://:1883", "no host"),
        ("mqtt://host:99999", "port"),
        ("mqtt://host:abc", "port"),
        ("mqtt://host:0", "TCP port"),
        ("mqtt://host/topic", "path"),
        ("mqtt://host?x=1", "query"),
        ("mqtt://:pw@host", "username"),
    ],
)
def test_bad_urls_are_refused_naming_the_option(url: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as info:
        mqtt_from_url(url)
    assert str(info.value).startswith("--mqtt: ")
    assert "\n" not in str(info.value)


def test_site_mqtt_settings_are_checked_at_the_edge(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked here")
    cfg = parse_site_config(
        {"mqtt": {"username": "u", "password": "p", "tls": True, "ca_file": "ca.pem", "keepalive_s": 5}},
        base_dir=tmp_path,
    )
    assert cfg.mqtt.ca_file == str(ca) and cfg.mqtt.tls and cfg.mqtt.keepalive_s == 5
    bad = {
        "port": ({"port": 70000}, "mqtt.port"),
        "interval": ({"interval_s": 0.0}, "mqtt.interval_s"),
        "nan": ({"interval_s": float("nan")}, "mqtt.interval_s"),
        "keepalive": ({"keepalive_s": 0}, "mqtt.keepalive_s"),
        "keepalive float": ({"keepalive_s": 1.5}, "mqtt.keepalive_s"),
        "username": ({"username": 5}, "mqtt.username"),
        "password alone": ({"password": "p"}, "mqtt.password"),
        "ca without tls": ({"ca_file": "ca.pem"}, "mqtt.ca_file"),
        "ca missing": ({"tls": True, "ca_file": "nope.pem"}, "mqtt.ca_file"),
        "tls word": ({"tls": "maybe"}, "mqtt.tls"),
        "host": ({"host": "a b"}, "mqtt.host"),
        "unknown": ({"colour": "red"}, "mqtt.colour"),
    }
    for name, (table, field) in bad.items():
        with pytest.raises(ConfigError) as info:
            parse_site_config({"mqtt": table}, base_dir=tmp_path)
        assert info.value.field == field, name


def test_environment_overrides_are_checked_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FORMATION_MQTT_USERNAME", "env-user")
    monkeypatch.setenv("FORMATION_MQTT_TLS", "true")
    cfg = apply_env(parse_site_config({}))
    assert cfg.mqtt.username == "env-user" and cfg.mqtt.tls
    monkeypatch.setenv("FORMATION_MQTT_CA_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError) as info:
        apply_env(parse_site_config({}))
    assert info.value.field == "FORMATION_MQTT_CA_FILE"
    monkeypatch.setenv("FORMATION_MQTT_TLS", "perhaps")
    with pytest.raises(ConfigError, match="FORMATION_MQTT_TLS"):
        apply_env(parse_site_config({}))
