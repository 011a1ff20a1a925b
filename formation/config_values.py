"""Checks of single values read from a site file (TOML accepts inf, nan, any type anywhere): each returns the
value or raises ConfigError naming its path. Used by :mod:`formation.config`."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from formation.bounds import SITE_BOUNDS
from formation.errors import ConfigError

#: How a yes/no setting may be written: the words, or TOML's booleans (``true`` / ``false``).
_YES_NO: dict[str, bool] = {"yes": True, "no": False}
_MQTT_ENABLED = ("auto", "yes", "no")


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


def _number(
    value: Any,
    path: str,
    source: str,
    *,
    positive: bool = True,
    integer: bool = False,
    bounds: tuple[float, float] | None = None,
) -> Any:
    """A finite number (an integer with ``integer``), > 0 with ``positive``, within ``bounds``; else ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
        kind = "an integer" if integer else "a number"
        raise ConfigError(path, f"{value!r} is not {kind}", source=source)
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int beyond the float range
        raise ConfigError(path, f"an integer of {len(str(abs(value)))} digits is too large", source=source) from None
    if not finite:
        raise ConfigError(path, f"{value!r} is not a finite number", source=source)
    if positive and value <= 0:
        raise ConfigError(path, f"{value!r} must be > 0", source=source)
    if bounds is not None and not bounds[0] <= value <= bounds[1]:
        raise ConfigError(path, f"{value!r} is outside {bounds[0]:g}–{bounds[1]:g}", source=source)
    return value


def _text_value(value: Any, path: str, source: str, *, empty: bool = False) -> str:
    """A string (non-empty unless ``empty``); ConfigError naming ``path`` otherwise."""
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise ConfigError(path, f"{value!r} is not a {'' if empty else 'non-empty '}string", source=source)
    return value


def _dataclass_from(cls: type, table: Any, path: str, source: str) -> Any:
    defaults = cls()
    fields = set(defaults.__dataclass_fields__)
    _check_keys(_table(table, path, source), fields, path, source)
    values: dict[str, Any] = {}
    bounds = SITE_BOUNDS.get(cls.__name__, {})
    for key, value in table.items():
        default = getattr(defaults, key)
        if isinstance(default, bool):
            value = _yes_no(value, f"{path}.{key}", source)
        elif isinstance(default, int | float):
            integer = isinstance(default, int)
            _number(value, f"{path}.{key}", source, positive=False, integer=integer, bounds=bounds.get(key))
        elif isinstance(default, str) and not isinstance(value, str):
            raise ConfigError(f"{path}.{key}", f"{value!r} is not a string", source=source)
        values[key] = value
    return replace(defaults, **values)


def _finite(value: Any, path: str, source: str, *, minimum: float | None = None, strict: bool = False) -> float:
    """A finite number (TOML accepts inf and nan), optionally > or >= ``minimum``; ConfigError naming ``path``."""
    _number(value, path, source, positive=False)
    if not math.isfinite(value):
        raise ConfigError(path, f"{value!r} is not a finite number", source=source)
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise ConfigError(path, f"{value!r} must be {'>' if strict else '>='} {minimum:g}", source=source)
    return float(value)
