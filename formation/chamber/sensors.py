"""Thermocouple voting: which sensors to trust, and the control temperature from the healthy ones.

A sensor fails as ``open`` (NaN or no reading: a broken thermocouple reads open-circuit), ``out_of_range``
(outside the valid range), or ``disagrees`` (further than the limit from the median of the others). Outliers are
removed one at a time, worst first, so one wild sensor cannot make good ones look wrong. Two sensors that
disagree cannot be told apart: both fail, and with none left the vote is fail-safe.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from formation.chamber._checks import finite, positive, unique
from formation.errors import ConfigError

#: A thermocouple's name: its DAQ channel (e.g. 101) or a label.
SensorId = int | str
FaultReason = Literal["open", "out_of_range", "disagrees"]
#: Readings by sensor (keys typed Any: a ``dict[int, float]`` or ``dict[str, float]`` both fit, Mapping keys being
#: invariant).
Readings = Mapping[Any, float]


@dataclass(frozen=True)
class SensorFault:
    """One sensor left out of the vote, why, and what it read (NaN when open)."""

    sensor: SensorId
    reason: FaultReason
    value_c: float


@dataclass(frozen=True)
class SensorVote:
    """The control temperature (median of the healthy sensors; NaN when fail-safe) and who was left out."""

    temperature_c: float
    healthy: tuple[SensorId, ...]
    failed: tuple[SensorFault, ...]
    fail_safe: bool


def _as_float(reading: object) -> float:
    """A reading as a plain float (numpy scalars included); None or anything unreadable is NaN (open)."""
    try:
        return float(reading)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


class SensorVoter:
    """Votes the readings of a fixed set of thermocouples (in configuration order) into one temperature."""

    def __init__(
        self,
        sensors: Sequence[SensorId],
        *,
        valid_range_c: tuple[float, float] = (-40.0, 150.0),
        disagree_limit_c: float = 2.0,
    ) -> None:
        self.sensors = tuple(sensors)
        if not self.sensors:
            raise ConfigError("sensors", "at least one thermocouple is needed")
        unique("sensors", self.sensors)
        if len(valid_range_c) != 2:
            raise ConfigError("valid_range_c", f"must be (low, high), got {valid_range_c!r}")
        low = finite("valid_range_c", valid_range_c[0])
        high = finite("valid_range_c", valid_range_c[1])
        if low >= high:
            raise ConfigError("valid_range_c", f"low must be below high, got ({low:g}, {high:g})")
        self.valid_range_c = (low, high)
        self.disagree_limit_c = positive("disagree_limit_c", disagree_limit_c)

    def vote(self, readings_c: Readings) -> SensorVote:
        """Vote ``readings_c`` (sensor -> °C, NaN or None when open); a configured sensor missing counts as open.

        Readings of sensors not configured are ignored.
        """
        low, high = self.valid_range_c
        failed: list[SensorFault] = []
        candidates: list[tuple[SensorId, float]] = []
        for sensor in self.sensors:
            value = _as_float(readings_c.get(sensor))
            if math.isnan(value):
                failed.append(SensorFault(sensor, "open", math.nan))
            elif not low <= value <= high:
                failed.append(SensorFault(sensor, "out_of_range", value))
            else:
                candidates.append((sensor, value))
        candidates, outliers = self._drop_outliers(candidates)
        failed.extend(outliers)
        healthy = tuple(sensor for sensor, _ in candidates)
        temperature_c = statistics.median(v for _, v in candidates) if candidates else math.nan
        return SensorVote(temperature_c=temperature_c, healthy=healthy, failed=tuple(failed), fail_safe=not healthy)

    def _drop_outliers(
        self, candidates: list[tuple[SensorId, float]]
    ) -> tuple[list[tuple[SensorId, float]], list[SensorFault]]:
        dropped: list[SensorFault] = []
        while len(candidates) >= 2:
            deviations = [
                abs(value - statistics.median(v for j, (_, v) in enumerate(candidates) if j != i))
                for i, (_, value) in enumerate(candidates)
            ]
            worst = max(range(len(candidates)), key=deviations.__getitem__)
            if deviations[worst] <= self.disagree_limit_c:
                break
            if len(candidates) == 2:
                dropped.extend(SensorFault(sensor, "disagrees", value) for sensor, value in candidates)
                return [], dropped
            sensor, value = candidates.pop(worst)
            dropped.append(SensorFault(sensor, "disagrees", value))
        return candidates, dropped
