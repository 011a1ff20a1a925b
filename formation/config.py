"""Site configuration: cabinets, chambers, database, MQTT, clock, simulated plant — a TOML file plus FORMATION_* env."""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from formation.bounds import CABINET_BOUNDS, MAX_CLOCK_SCALE, check_document, read_input_text
from formation.config_values import (
    _check_keys,
    _dataclass_from,
    _finite,
    _mqtt_enabled,
    _number,
    _table,
    _text_value,
    _yes_no,
)
from formation.errors import ConfigError
from formation.site_ageing import RackSite, TesterSite, parse_racks, parse_testers
from formation.site_report import ReportConfig, parse_report

if TYPE_CHECKING:
    from formation.chamber import ChamberConfig, PidTuning


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
    #: The chamber the cabinet stands in (a ``[[chambers]]`` name), or None.
    chamber: str | None = None


@dataclass(frozen=True)
class ChamberSimSpec:
    """How ``formation sim serve`` / the demo simulate one chamber and its DAQ."""

    port: int = 5030
    seed: int = 0
    ambient_c: float = 25.0


@dataclass(frozen=True)
class ChamberSite:
    """One temperature chamber as the host reaches it: its DAQ, wiring, set-point range and control settings.

    Channels are DAQ channels (``<slot><2-digit channel>``). Without ``kc`` / ``ti_s`` the PI gains come from
    SIMC tuning of the plant model (``gain_c``, ``tau_s``, ``dead_time_s``). Times are clock seconds.
    """

    name: str
    resource: str
    sensors: tuple[int, ...] = (101, 102, 103, 104)
    heating_valves: tuple[int, ...] = (301, 302, 303, 304)
    cooling_valves: tuple[int, ...] = (305, 306, 307, 308)
    #: Digital input ports reading the valves' open end switches (bit k of the ports in turn = ``valves[k]``);
    #: empty when the valves have none (stuck valves are then found from the temperature response only).
    position_ports: tuple[int, ...] = ()
    setpoint_min_c: float = 10.0
    setpoint_max_c: float = 60.0
    gain_c: float = 40.0
    tau_s: float = 1200.0
    dead_time_s: float = 60.0
    kc: float | None = None
    ti_s: float | None = None
    period_s: float = 5.0
    cycle_s: float = 60.0
    min_on_s: float = 5.0
    min_off_s: float = 5.0
    band_c: float = 0.5
    hold_s: float = 600.0
    alarm_delay_s: float = 300.0
    sample_every_s: float = 60.0
    timeout_s: float = 2.0
    initial_setpoint_c: float = 25.0
    sim: ChamberSimSpec | None = None

    @property
    def valves(self) -> tuple[int, ...]:
        """Every valve channel, heating first."""
        return self.heating_valves + self.cooling_valves

    @property
    def tuning(self) -> PidTuning:
        """The PI gains: ``kc`` / ``ti_s`` where given, SIMC tuning of the plant model for the rest."""
        from formation.chamber import PidTuning, simc_tuning

        # SIMC for a sampled loop: half a control period adds to the dead time.
        simc = simc_tuning(self.gain_c, self.tau_s, self.dead_time_s + 0.5 * self.period_s)
        return PidTuning(kc=simc.kc if self.kc is None else self.kc, ti_s=simc.ti_s if self.ti_s is None else self.ti_s)

    def control_config(self) -> ChamberConfig:
        """The settings of the control core (:class:`formation.chamber.ChamberController`)."""
        from formation.chamber import ChamberConfig

        return ChamberConfig(
            heating_channels=self.heating_valves,
            cooling_channels=self.cooling_valves,
            sensors=self.sensors,
            tuning=self.tuning,
            cycle_s=self.cycle_s,
            min_on_s=self.min_on_s,
            min_off_s=self.min_off_s,
            band_c=self.band_c,
            hold_s=self.hold_s,
            alarm_delay_s=self.alarm_delay_s,
            stuck_response_s=self.stuck_response_s,
        )

    @property
    def stuck_response_s(self) -> float:
        """How long a fully open side may go without moving the temperature: a few dead times plus a tenth of the
        time constant (300 s for the formation chamber; an ageing room of hours answers that much slower)."""
        return max(300.0, 3.0 * self.dead_time_s + 0.1 * self.tau_s)


@dataclass(frozen=True)
class MqttConfig:
    """The status-feed broker; ``enabled = "auto"`` publishes when a broker answers.

    ``enabled`` is always one of ``"auto"``, ``"yes"``, ``"no"``; the file may also say ``true`` / ``false``.
    """

    host: str = "127.0.0.1"
    port: int = 1883
    enabled: str = "auto"  # "auto" | "yes" | "no"
    interval_s: float = 5.0
    username: str | None = None
    password: str | None = None
    #: TLS to the broker; ``ca_file`` (PEM, relative to the site file) replaces the system's trusted CAs.
    tls: bool = False
    ca_file: str | None = None
    #: MQTT keepalive: the broker publishes the offline will about 1.5 × this after the orchestrator vanished.
    keepalive_s: int = 15


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
    chambers: tuple[ChamberSite, ...] = ()
    #: The ageing room: racks and the OCV/ACIR testers reaching them (``formation/site_ageing.py``).
    racks: tuple[RackSite, ...] = ()
    testers: tuple[TesterSite, ...] = ()
    #: The daily lot report `formation serve` writes (``formation/site_report.py``): on by default in a site file;
    #: a site built in code (a test, a tool) writes none unless given one.
    report: ReportConfig = field(default_factory=lambda: ReportConfig(enabled=False))

    def rack(self, name: str) -> RackSite:
        """The rack called ``name``; ConfigError listing the known ones otherwise."""
        for rack in self.racks:
            if rack.name == name:
                return rack
        known = ", ".join(r.name for r in self.racks) or "none"
        raise ConfigError("--rack", f"no rack named {name!r} in the site (known: {known})", source=self.source)

    def tester_of(self, rack: str) -> TesterSite | None:
        """The tester whose scanner reaches ``rack``, or None."""
        return next((t for t in self.testers if rack in t.racks), None)

    def cabinet(self, name: str) -> CabinetConfig:
        """The cabinet called ``name``; ConfigError listing the known ones otherwise."""
        for cab in self.cabinets:
            if cab.name == name:
                return cab
        known = ", ".join(c.name for c in self.cabinets) or "none"
        raise ConfigError("cabinet", f"no cabinet named {name!r} (known: {known})", source=self.source)

    def chamber(self, name: str) -> ChamberSite:
        """The chamber called ``name``; ConfigError listing the known ones otherwise."""
        for chamber in self.chambers:
            if chamber.name == name:
                return chamber
        known = ", ".join(c.name for c in self.chambers) or "none"
        raise ConfigError("chamber", f"no chamber named {name!r} (known: {known})", source=self.source)


_TOP_KEYS = {"site", "line", "database", "clock", "cabinets", "chambers", "mqtt", "racks", "testers", "report"}
_CAB_KEYS = {"name", "resource", "channels", "poll_interval_s", "timeout_s", "watchdog_s", "sim", "chamber"}


#: Chamber settings that must be finite and > 0, and those that must be finite and >= 0.
_CHAMBER_POSITIVE = frozenset(
    {"gain_c", "tau_s", "dead_time_s", "kc", "ti_s", "period_s", "cycle_s", "band_c", "sample_every_s", "timeout_s"}
)
_CHAMBER_NON_NEGATIVE = frozenset({"min_on_s", "min_off_s", "hold_s", "alarm_delay_s"})
_CHAMBER_TEMPERATURES = ("setpoint_min_c", "setpoint_max_c", "initial_setpoint_c")
_CHAMBER_CHANNELS = ("sensors", "heating_valves", "cooling_valves", "position_ports")
_CHAMBER_KEYS = set(ChamberSite.__dataclass_fields__)
#: The control core's field names, as the site file spells them.
_CORE_FIELDS = {"heating_channels": "heating_valves", "cooling_channels": "cooling_valves"}


def _daq_channels(value: Any, path: str, source: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise ConfigError(path, f"{value!r} is not a list of DAQ channels", source=source)
    for channel in value:
        slot, number = divmod(channel, 100) if isinstance(channel, int) and not isinstance(channel, bool) else (0, 0)
        if not 1 <= slot <= 3 or not 1 <= number <= 99:
            raise ConfigError(path, f"{channel!r} is not a DAQ channel (<slot 1-3><01-99>, e.g. 101)", source=source)
    return tuple(value)


def _parse_chamber(table: Any, where: str, source: str) -> ChamberSite:
    _check_keys(_table(table, where, source), _CHAMBER_KEYS, where, source)
    for req in ("name", "resource"):
        if req not in table:
            raise ConfigError(f"{where}.{req}", "missing", source=source)
        if not isinstance(table[req], str) or not table[req]:
            raise ConfigError(f"{where}.{req}", f"{table[req]!r} is not a non-empty string", source=source)
    values: dict[str, Any] = {"name": table["name"], "resource": table["resource"]}
    seen: dict[int, str] = {}
    for key in _CHAMBER_CHANNELS:
        if key not in table:
            continue
        channels = _daq_channels(table[key], f"{where}.{key}", source)
        for channel in channels:
            if channel in seen:
                also = "" if seen[channel] == key else f" (also in {seen[channel]})"
                raise ConfigError(f"{where}.{key}", f"channel {channel} is listed twice{also}", source=source)
            seen[channel] = key
        values[key] = channels
    for key in (*sorted(_CHAMBER_POSITIVE | _CHAMBER_NON_NEGATIVE), *_CHAMBER_TEMPERATURES):
        if key in table:
            minimum = None if key in _CHAMBER_TEMPERATURES else 0.0
            path = f"{where}.{key}"
            values[key] = _finite(table[key], path, source, minimum=minimum, strict=key in _CHAMBER_POSITIVE)
    if "sim" in table:
        sim = _dataclass_from(ChamberSimSpec, table["sim"], f"{where}.sim", source)
        if not 0 <= sim.port <= 65535:
            raise ConfigError(f"{where}.sim.port", f"{sim.port} is not a TCP port", source=source)
        ambient_c = _finite(sim.ambient_c, f"{where}.sim.ambient_c", source, minimum=-60.0)
        if ambient_c > 80.0:  # the simulated chamber's range
            raise ConfigError(f"{where}.sim.ambient_c", f"{ambient_c:g} °C is above 80 °C", source=source)
        values["sim"] = replace(sim, ambient_c=ambient_c)
    chamber = ChamberSite(**values)
    # Channels kept from the defaults may collide with ones given (e.g. heating_valves = [305]).
    # The lists given are the ones to blame, not the defaults they collide with.
    for key in sorted(_CHAMBER_CHANNELS, key=lambda k: k not in table):
        others = {c for k in _CHAMBER_CHANNELS if k != key for c in getattr(chamber, k)}
        clash = sorted(set(getattr(chamber, key)) & others)
        if clash:
            raise ConfigError(f"{where}.{key}", f"channel {clash[0]} is listed twice (across lists)", source=source)
    if not chamber.sensors:
        raise ConfigError(f"{where}.sensors", "no thermocouple: at least one sensor is needed", source=source)
    if chamber.position_ports and 8 * len(chamber.position_ports) < len(chamber.valves):
        ports, valves = len(chamber.position_ports), len(chamber.valves)
        reason = f"{ports} ports read 8 end switches each, the chamber has {valves} valves"
        raise ConfigError(f"{where}.position_ports", reason, source=source)
    low, high = chamber.setpoint_min_c, chamber.setpoint_max_c
    if low > high:
        raise ConfigError(f"{where}.setpoint_min_c", f"the set-point range {low:g}–{high:g} °C is empty", source=source)
    if not low <= chamber.initial_setpoint_c <= high:
        reason = f"{chamber.initial_setpoint_c:g} °C is outside the set-point range {low:g}–{high:g} °C"
        raise ConfigError(f"{where}.initial_setpoint_c", reason, source=source)
    try:
        chamber.control_config()  # the control core's own rules (a valve at all, cycle >= min on + min off)
    except ConfigError as exc:
        name = _CORE_FIELDS.get(exc.field, exc.field)
        raise ConfigError(f"{where}.{name}", exc.reason, source=source) from None
    return chamber


def _parse_chambers(listed: Any, source: str) -> tuple[ChamberSite, ...]:
    if not isinstance(listed, list):
        raise ConfigError("chambers", f"{listed!r} is not an array of tables ([[chambers]])", source=source)
    chambers: list[ChamberSite] = []
    for i, table in enumerate(listed):
        chamber = _parse_chamber(table, f"chambers[{i}]", source)
        if any(c.name == chamber.name for c in chambers):
            raise ConfigError(f"chambers[{i}].name", f"duplicate chamber name {chamber.name!r}", source=source)
        chambers.append(chamber)
    return tuple(chambers)


def parse_site_config(data: dict[str, Any], source: str = "<site>", base_dir: Path | None = None) -> SiteConfig:
    """Build a SiteConfig from a parsed TOML table, refusing unknown keys and wrong types."""
    _check_keys(data, _TOP_KEYS, "", source)
    for key in ("site", "line"):
        if key in data:
            _text_value(data[key], key, source)
    db = _table(data.get("database", {}), "database", source)
    _check_keys(db, {"url", "path"}, "database", source)
    if "url" in db:
        database_url = _text_value(db["url"], "database.url", source)
    elif "path" in db:
        path = Path(_text_value(db["path"], "database.path", source))
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        database_url = f"sqlite:///{path}"
    else:
        database_url = SiteConfig.database_url
    clock = _table(data.get("clock", {}), "clock", source)
    _check_keys(clock, {"scale"}, "clock", source)
    scale = float(_number(clock.get("scale", 1.0), "clock.scale", source, bounds=(0.0, MAX_CLOCK_SCALE)))
    chambers = _parse_chambers(data.get("chambers", []), source)
    racks = parse_racks(data.get("racks", []), [c.name for c in chambers], source)
    testers = parse_testers(data.get("testers", []), racks, source)
    report = parse_report(data.get("report", {}), source, base_dir)
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
            _text_value(cab[req], f"{where}.{req}", source)
        if cab["name"] in names:
            raise ConfigError(f"{where}.name", f"duplicate cabinet name {cab['name']!r}", source=source)
        names.add(cab["name"])
        channels = _number(cab.get("channels", 256), f"{where}.channels", source, integer=True)
        if channels > 1024:
            raise ConfigError(f"{where}.channels", f"{channels} is above 1024", source=source)
        sim = _dataclass_from(SimSpec, cab["sim"], f"{where}.sim", source) if "sim" in cab else None
        chamber = cab.get("chamber")
        if chamber is not None and chamber not in {c.name for c in chambers}:
            known = ", ".join(c.name for c in chambers) or "none"
            raise ConfigError(f"{where}.chamber", f"no chamber named {chamber!r} (known: {known})", source=source)
        cabinets.append(
            CabinetConfig(
                name=str(cab["name"]),
                resource=str(cab["resource"]),
                channels=int(channels),
                poll_interval_s=float(_cabinet_number(cab, "poll_interval_s", 2.0, where, source)),
                timeout_s=float(_cabinet_number(cab, "timeout_s", 2.0, where, source)),
                watchdog_s=float(_cabinet_number(cab, "watchdog_s", 30.0, where, source)),
                sim=sim,
                chamber=chamber,
            )
        )
    mqtt_table = dict(_table(data.get("mqtt", {}), "mqtt", source))
    if "enabled" in mqtt_table:
        mqtt_table["enabled"] = _mqtt_enabled(mqtt_table["enabled"], "mqtt.enabled", source)
    for key in ("username", "password", "ca_file"):
        if key in mqtt_table and not isinstance(mqtt_table[key], str):
            raise ConfigError(f"mqtt.{key}", f"{mqtt_table[key]!r} is not a string", source=source)
    if isinstance(mqtt_table.get("ca_file"), str) and base_dir is not None:
        mqtt_table["ca_file"] = str(Path(base_dir) / mqtt_table["ca_file"])
    mqtt = check_mqtt(_dataclass_from(MqttConfig, mqtt_table, "mqtt", source), "mqtt", source)
    config = SiteConfig(
        site=str(data.get("site", "site")),
        line=str(data.get("line", "line1")),
        database_url=database_url,
        clock_scale=scale,
        cabinets=tuple(cabinets),
        mqtt=mqtt,
        source=source,
        chambers=chambers,
        racks=racks,
        testers=testers,
        report=report,
    )
    return apply_env(config)


def _cabinet_number(cab: dict[str, Any], key: str, default: float, where: str, source: str) -> Any:
    positive = key != "watchdog_s"  # a watchdog of 0 is disarmed
    return _number(cab.get(key, default), f"{where}.{key}", source, positive=positive, bounds=CABINET_BOUNDS[key])


def load_site_config(path: str | Path) -> SiteConfig:
    """Read a site TOML file; ConfigError with the file name and the reason when it cannot be used."""
    p = Path(path)
    text = read_input_text(p, "site file", lambda field, reason: ConfigError(field, reason, source=str(p)))
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"invalid TOML: {exc}", source=str(p)) from exc
    except RecursionError:
        raise ConfigError("", "invalid TOML: nested too deeply", source=str(p)) from None
    check_document(data, lambda field, reason: ConfigError(field, reason, source=str(p)))
    return parse_site_config(data, source=str(p), base_dir=p.parent)


def check_mqtt(mqtt: MqttConfig, where: str = "mqtt", source: str | None = "<site>") -> MqttConfig:
    """``mqtt`` if every setting is usable; ConfigError naming the first bad one (``where.key``) otherwise."""

    def bad(key: str, reason: str) -> ConfigError:
        # From the environment the variable is named, as the user wrote it.
        field = f"FORMATION_MQTT_{key.upper()}" if where == "env" else f"{where}.{key}"
        return ConfigError(field, reason, source=source)

    if not mqtt.host or any(c.isspace() or c in "/@" for c in mqtt.host):
        raise bad("host", f"{mqtt.host!r} is not a host name or address")
    if not 1 <= mqtt.port <= 65535:
        raise bad("port", f"{mqtt.port} is not a TCP port (1–65535)")
    if not math.isfinite(mqtt.interval_s) or not 0.05 <= mqtt.interval_s <= 3600:
        raise bad("interval_s", f"{mqtt.interval_s!r} is outside 0.05–3600 s")
    if not 1 <= mqtt.keepalive_s <= 65535:
        raise bad("keepalive_s", f"{mqtt.keepalive_s} is outside 1–65535 s")
    if mqtt.password is not None and mqtt.username is None:
        raise bad("password", "a password needs a username")
    if mqtt.ca_file is not None:
        if not mqtt.tls:
            raise bad("ca_file", "a CA file needs tls = true")
        if not Path(mqtt.ca_file).is_file():
            raise bad("ca_file", f"{mqtt.ca_file} is not a readable file")
    return mqtt


def apply_env(config: SiteConfig) -> SiteConfig:
    """FORMATION_DATABASE_URL, FORMATION_CLOCK_SCALE and FORMATION_MQTT_HOST/PORT/ENABLED/USERNAME/PASSWORD/TLS/
    CA_FILE override the file."""
    env = os.environ
    changes: dict[str, Any] = {}
    if url := env.get("FORMATION_DATABASE_URL"):
        changes["database_url"] = url
    if scale := env.get("FORMATION_CLOCK_SCALE"):
        try:
            scale_value = float(scale)
        except ValueError:
            raise ConfigError("FORMATION_CLOCK_SCALE", f"{scale!r} is not a number") from None
        if not 0 < scale_value <= MAX_CLOCK_SCALE:  # also refuses nan and inf
            raise ConfigError("FORMATION_CLOCK_SCALE", f"{scale!r} is outside 0–{MAX_CLOCK_SCALE:g} (0 excluded)")
        changes["clock_scale"] = scale_value
    mqtt_changes: dict[str, Any] = {}
    if host := env.get("FORMATION_MQTT_HOST"):
        mqtt_changes["host"] = host
    if port := env.get("FORMATION_MQTT_PORT"):
        if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
            raise ConfigError("FORMATION_MQTT_PORT", f"{port!r} is not a TCP port")
        mqtt_changes["port"] = int(port)
    if enabled := env.get("FORMATION_MQTT_ENABLED"):
        # The environment has no booleans: "true"/"false" stand for TOML's true/false.
        word = {"true": True, "false": False}.get(enabled, enabled)
        mqtt_changes["enabled"] = _mqtt_enabled(word, "FORMATION_MQTT_ENABLED", None)
    for key in ("username", "password", "ca_file"):
        if value := env.get(f"FORMATION_MQTT_{key.upper()}"):
            mqtt_changes[key] = value
    if tls := env.get("FORMATION_MQTT_TLS"):
        mqtt_changes["tls"] = _yes_no({"true": True, "false": False}.get(tls, tls), "FORMATION_MQTT_TLS", None)
    if mqtt_changes:
        changes["mqtt"] = check_mqtt(replace(config.mqtt, **mqtt_changes), "env", None)
    return replace(config, **changes) if changes else config
