"""``mqtt://[user[:password]@]host[:port]`` (``mqtts://`` for TLS) as broker settings, checked at the edge."""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import unquote, urlsplit

from formation.config import MqttConfig, check_mqtt
from formation.errors import ConfigError

#: The broker's default port for each scheme.
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


def mqtt_from_url(url: str, base: MqttConfig | None = None, *, option: str = "--mqtt") -> MqttConfig:
    """``base`` (the site's settings) with the broker of ``url``, publishing switched on.

    ConfigError naming ``option`` when the URL is not an MQTT broker address.
    """
    base = base or MqttConfig()

    def bad(reason: str) -> ConfigError:
        return ConfigError(option, f"{url!r}: {reason}")

    if not isinstance(url, str) or not url.strip():
        raise bad("an empty URL (expected mqtt://host:port)")
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise bad("the scheme must be mqtt:// or mqtts://")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise bad("a broker URL has no path, query or fragment")
    try:
        port = parts.port
    except ValueError:
        raise bad("the port is not a number in 1–65535") from None
    host = parts.hostname
    if not host:
        raise bad("no host")
    username = unquote(parts.username) if parts.username is not None else base.username
    password = unquote(parts.password) if parts.password is not None else base.password
    tls = scheme == "mqtts" or base.tls
    config = replace(
        base,
        host=host,
        port=port if port is not None else DEFAULT_PORTS[scheme],
        enabled="yes",
        username=username or None,
        password=password,
        tls=tls,
        ca_file=base.ca_file if tls else None,
    )
    try:
        return check_mqtt(config, option, None)
    except ConfigError as exc:
        raise bad(exc.reason) from None


def broker_url(config: MqttConfig) -> str:
    """The broker of ``config`` as a URL, without credentials (for messages)."""
    scheme = "mqtts" if config.tls else "mqtt"
    host = f"[{config.host}]" if ":" in config.host else config.host
    return f"{scheme}://{host}:{config.port}"
