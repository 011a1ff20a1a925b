"""The daily lot report of a site file: ``[report]`` (when `formation serve` writes it, where, whether at all).
Read by :mod:`formation.config`.

```toml
[report]
daily_at = "06:00"      # HH:MM, the host's local time; the report covers the day ending then
folder = "reports"      # relative to the site file; lot-report-YYYY-MM-DD.csv files
enabled = true
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import time
from pathlib import Path
from typing import Any

from formation.config_values import _check_keys, _table, _text_value, _yes_no
from formation.errors import ConfigError

_REPORT_KEYS = {"daily_at", "folder", "enabled"}
#: ``HH:MM``, ASCII digits only (``re``'s ``\d`` would take any script's digits).
_HH_MM = re.compile(r"([0-9]{2}):([0-9]{2})")


@dataclass(frozen=True)
class ReportConfig:
    """When (``daily_at``, local time of the host) and where (``folder``) `formation serve` writes its lot report."""

    daily_at: str = "06:00"
    folder: str = "reports"
    enabled: bool = True

    @property
    def hour_minute(self) -> tuple[int, int]:
        """``daily_at`` as (hour, minute)."""
        hour, minute = self.daily_at.split(":")
        return int(hour), int(minute)


def parse_daily_at(value: Any, path: str, source: str | None) -> str:
    """A time of day as ``"HH:MM"`` (00:00–23:59); a TOML local time (``06:00:00``) is taken too."""
    if isinstance(value, time):
        if value.second or value.microsecond:
            raise ConfigError(path, f"{value.isoformat()} has seconds: give hours and minutes", source=source)
        return f"{value.hour:02d}:{value.minute:02d}"
    match = _HH_MM.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ConfigError(path, f'{value!r} is not a time of day as "HH:MM" (e.g. "06:00")', source=source)
    hour, minute = int(match[1]), int(match[2])
    if hour > 23 or minute > 59:
        raise ConfigError(path, f"{value!r} is not a time of day (00:00–23:59)", source=source)
    return value


def parse_report(value: Any, source: str, base_dir: Path | None) -> ReportConfig:
    """``[report]``: a time of day, a folder (relative to ``base_dir``, the site file's folder), a yes/no."""
    table = _table(value, "report", source)
    _check_keys(table, _REPORT_KEYS, "report", source)
    defaults = ReportConfig()
    daily_at = parse_daily_at(table["daily_at"], "report.daily_at", source) if "daily_at" in table else "06:00"
    folder = _text_value(table.get("folder", defaults.folder), "report.folder", source)
    if "\0" in folder:  # the system refuses such a name only when the first report is written
        raise ConfigError("report.folder", "contains a NUL character", source=source)
    if base_dir is not None and not Path(folder).is_absolute():
        folder = str(base_dir / folder)
    enabled = _yes_no(table["enabled"], "report.enabled", source) if "enabled" in table else defaults.enabled
    return ReportConfig(daily_at=daily_at, folder=folder, enabled=enabled)
