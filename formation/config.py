"""Site configuration: cabinets, database, MQTT, clock, simulated plant — a TOML file plus FORMATION_* env."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from formation.errors import ConfigError


@dataclass(frozen=True)
class SimSpec:
    """How ``formation sim serve`` / the demo simulate one cabinet."""

    preset: str = "ncm21700-5ah"
    seed: int = 0
    port: int = 5025
    formed: bool = False
    initial_soc: float = 0.0
    ambient_c: float = 25.0
    defect_fraction: float = 0.03


@dataclass(frozen=True)
class CabinetConfig:
    """One formation cabinet (cycler) as the host reaches it."""

    name: str
    resource: str
    channels: int = 256
    poll_interval_s: float = 2.0
    timeout_s: float = 2.0
    watchdog_s: float = 30.0
    sim: SimSpec | None = None


@dataclass(frozen=True)
class MqttConfig:
    """The status-feed broker; ``enabled = "auto"`` publishes when a broker answers.

    ``enabled`` is always one of ``"auto"``, ``"yes"``, ``"no"``; the file may also say ``true`` / ``false``.
    """

    host: str = "127.0.0.1"
    port: int = 1883
    enabled: str = "auto"  # "auto" | "yes" | "no"
    interval_s: float = 5.0


@dataclass(frozen=True)
class SiteConfig:
    """Everything the host needs to run one line."""

    site: str = "site"
    line: str = "line1"
    database_url: str = "sqlite:///formation.db"
    clock_scale: float = 1.0
    cabinets: tuple[CabinetConfig, ...] = ()
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    source: str = "<defaults>"

    def cabinet(self, name: str) -> CabinetConfig:
        """The cabinet called ``name``; ConfigError listing the known ones otherwise."""
        for cab in self.cabinets:
            if cab.name == name:
                return cab
        known = ", ".join(c.name for c in self.cabinets) or "none"
        raise ConfigError("cabinet", f"no cabinet named {name!r} (known: {known})", source=self.source)


_TOP_KEYS = {"site", "line", "database", "clock", "cabinets", "mqtt"}
#: How a yes/no setting may be written: the words, or TOML's booleans (``true`` / ``false``).
_YES_NO: dict[str, bool] = {"yes": True, "no": False}
_MQTT_ENABLED = ("auto", "yes", "no")
_CAB_KEYS = {"name", "resource", "channels", "poll_interval_s", "timeout_s", "watchdog_s", "sim"}


def _check_keys(table: dict[str, Any], allowed: set[str], path: str, source: str) -> None:
    for key in table:
        if key not in allowed:
            where = f"{path}.{key}" if path else key
            raise ConfigError(where, f"unknown key (allowed: {', '.join(sorted(allowed))})", source=source)


def _table(value: Any, path: str, source: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(path, f"{value!r} is not a table", source=source)
    return value


def _yes_no(value: Any, path: str, source: str | None = "<site>") -> bool:
    """A yes/no setting: ``true``/``false`` or ``"yes"``/``"no"``; ConfigError naming ``path`` otherwise."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value in _YES_NO:
        return _YES_NO[value]
    raise ConfigError(path, f"{value!r} is not one of true, false, yes, no", source=source)


def _mqtt_enabled(value: Any, path: str = "mqtt.enabled", source: str | None = "<site>") -> str:
    """``mqtt.enabled`` as ``"auto"``, ``"yes"`` or ``"no"``; ``true``/``false`` mean yes/no."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str) and value in _MQTT_ENABLED:
        return value
    raise ConfigError(path, f"{value!r} is not one of auto, yes, no, true, false", source=source)


def _number(value: Any, path: str, source: str, *, positive: bool = True, integer: bool = False) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
        kind = "an integer" if integer else "a number"
        raise ConfigError(path, f"{value!r} is not {kind}", source=source)
    if positive and value <= 0:
        raise ConfigError(path, f"{value!r} must be > 0", source=source)
    return value


def _dataclass_from(cls: type, table: Any, path: str, source: str) -> Any:
    defaults = cls()
    fields = set(defaults.__dataclass_fields__)
    _check_keys(_table(table, path, source), fields, path, source)
    values: dict[str, Any] = {}
    for key, value in table.items():
        default = getattr(defaults, key)
        if isinstance(default, bool):
            value = _yes_no(value, f"{path}.{key}", source)
        elif isinstance(default, int | float):
            _number(value, f"{path}.{key}", source, positive=False, integer=isinstance(default, int))
        elif isinstance(default, str) and not isinstance(value, str):
            raise ConfigError(f"{path}.{key}", f"{value!r} is not a string", source=source)
        values[key] = value
    return replace(defaults, **values)


def parse_site_config(data: dict[str, Any], source: str = "<site>", base_dir: Path | None = None) -> SiteConfig:
    """Build a SiteConfig from a parsed TOML table, refusing unknown keys and wrong types."""
    _check_keys(data, _TOP_KEYS, "", source)
    db = _table(data.get("database", {}), "database", source)
    _check_keys(db, {"url", "path"}, "database", source)
    if "url" in db:
        database_url = str(db["url"])
    elif "path" in db:
        path = Path(db["path"])
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        database_url = f"sqlite:///{path}"
    else:
        database_url = SiteConfig.database_url
    clock = _table(data.get("clock", {}), "clock", source)
    _check_keys(clock, {"scale"}, "clock", source)
    scale = float(_number(clock.get("scale", 1.0), "clock.scale", source))
    cabinets: list[CabinetConfig] = []
    names: set[str] = set()
    listed = data.get("cabinets", [])
    if not isinstance(listed, list):
        raise ConfigError("cabinets", f"{listed!r} is not an array of tables ([[cabinets]])", source=source)
    for i, cab in enumerate(listed):
        where = f"cabinets[{i}]"
        _check_keys(_table(cab, where, source), _CAB_KEYS, where, source)
        for req in ("name", "resource"):
            if req not in cab:
                raise ConfigError(f"{where}.{req}", "missing", source=source)
        if cab["name"] in names:
            raise ConfigError(f"{where}.name", f"duplicate cabinet name {cab['name']!r}", source=source)
        names.add(cab["name"])
        channels = _number(cab.get("channels", 256), f"{where}.channels", source, integer=True)
        if channels > 1024:
            raise ConfigError(f"{where}.channels", f"{channels} is above 1024", source=source)
        sim = _dataclass_from(SimSpec, cab["sim"], f"{where}.sim", source) if "sim" in cab else None
        cabinets.append(
            CabinetConfig(
                name=str(cab["name"]),
                resource=str(cab["resource"]),
                channels=int(channels),
                poll_interval_s=float(_number(cab.get("poll_interval_s", 2.0), f"{where}.poll_interval_s", source)),
                timeout_s=float(_number(cab.get("timeout_s", 2.0), f"{where}.timeout_s", source)),
                watchdog_s=float(_number(cab.get("watchdog_s", 30.0), f"{where}.watchdog_s", source, positive=False)),
                sim=sim,
            )
        )
    mqtt_table = dict(_table(data.get("mqtt", {}), "mqtt", source))
    if "enabled" in mqtt_table:
        mqtt_table["enabled"] = _mqtt_enabled(mqtt_table["enabled"], "mqtt.enabled", source)
    mqtt = _dataclass_from(MqttConfig, mqtt_table, "mqtt", source)
    config = SiteConfig(
        site=str(data.get("site", "site")),
        line=str(data.get("line", "line1")),
        database_url=database_url,
        clock_scale=scale,
        cabinets=tuple(cabinets),
        mqtt=mqtt,
        source=source,
    )
    return apply_env(config)


def load_site_config(path: str | Path) -> SiteConfig:
    """Read a site TOML file; ConfigError with the file name and the reason when it cannot be used."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read site file: {exc.strerror}", source=str(p)) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"invalid TOML: {exc}", source=str(p)) from exc
    return parse_site_config(data, source=str(p), base_dir=p.parent)


def apply_env(config: SiteConfig) -> SiteConfig:
    """FORMATION_DATABASE_URL, FORMATION_CLOCK_SCALE, FORMATION_MQTT_HOST/PORT/ENABLED override the file."""
    env = os.environ
    changes: dict[str, Any] = {}
    if url := env.get("FORMATION_DATABASE_URL"):
        changes["database_url"] = url
    if scale := env.get("FORMATION_CLOCK_SCALE"):
        try:
            changes["clock_scale"] = float(scale)
        except ValueError as exc:
            raise ConfigError("FORMATION_CLOCK_SCALE", f"{scale!r} is not a number") from exc
    mqtt_changes: dict[str, Any] = {}
    if host := env.get("FORMATION_MQTT_HOST"):
        mqtt_changes["host"] = host
    if port := env.get("FORMATION_MQTT_PORT"):
        if not port.isdigit() or int(port) > 65535:
            raise ConfigError("FORMATION_MQTT_PORT", f"{port!r} is not a TCP port")
        mqtt_changes["port"] = int(port)
    if enabled := env.get("FORMATION_MQTT_ENABLED"):
        # The environment has no booleans: "true"/"false" stand for TOML's true/false.
        word = {"true": True, "false": False}.get(enabled, enabled)
        mqtt_changes["enabled"] = _mqtt_enabled(word, "FORMATION_MQTT_ENABLED", None)
    if mqtt_changes:
        changes["mqtt"] = replace(config.mqtt, **mqtt_changes)
    return replace(config, **changes) if changes else config
