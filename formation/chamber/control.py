"""One chamber's control step: sensors voted, PID demand, valve arrays, stability and fault checks.

Pure: the caller reads the thermocouples and the valve read-back, calls ``update`` with its clock's ``now_s``,
writes the returned command to the valves, and stores what it needs from the step.

Fail-safe policy: with no healthy sensor every valve closes at once (heating and cooling alike, minimum on-times
notwithstanding) and the PID holds its state. Heating blind can overheat cells; cooling blind can chill them
below the dew point; with both closed the chamber drifts toward ambient, which no cell minds for a while.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from formation.chamber._checks import finite, non_negative
from formation.chamber.faults import StuckValveDetector, ValveFault
from formation.chamber.pid import PidController, PidTuning
from formation.chamber.sensors import Readings, SensorFault, SensorId, SensorVoter
from formation.chamber.stability import StabilityDetector, StabilityStatus
from formation.chamber.valves import ValveArray, ValveCommand
from formation.errors import ConfigError


@dataclass(frozen=True)
class ChamberConfig:
    """One chamber's control settings; every value is checked here (ConfigError naming the field)."""

    heating_channels: tuple[int, ...]
    cooling_channels: tuple[int, ...]
    sensors: tuple[SensorId, ...]
    tuning: PidTuning
    #: Valve arrays: time-proportioning cycle of the fractional valve and the minimum times of every valve.
    cycle_s: float = 60.0
    min_on_s: float = 5.0
    min_off_s: float = 5.0
    #: Sensor voting.
    valid_range_c: tuple[float, float] = (-40.0, 150.0)
    disagree_limit_c: float = 2.0
    #: Band, hold time before "stable", out-of-band alarm delay, optional settle timeout.
    band_c: float = 0.5
    hold_s: float = 600.0
    alarm_delay_s: float = 300.0
    settle_timeout_s: float | None = None
    #: Stuck-valve response check: a side fully open this long must move the temperature this much.
    stuck_response_s: float = 300.0
    stuck_min_change_c: float = 0.5
    #: Share of a set-point step applied at once (0: bumpless, the integral carries it; 1: full P kick).
    setpoint_weight: float = 0.0

    def __post_init__(self) -> None:
        for name in ("heating_channels", "cooling_channels", "sensors", "valid_range_c"):
            value = getattr(self, name)
            if isinstance(value, str | bytes) or not isinstance(value, Sequence):
                raise ConfigError(name, f"must be a list, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        if not isinstance(self.tuning, PidTuning):
            raise ConfigError("tuning", f"must be a PidTuning, got {type(self.tuning).__name__}")
        # Building the parts once checks every field with the parts' own rules.
        _parts(self)


@dataclass(frozen=True)
class ControlStep:
    """What one update decided, and what the loop stores, shows and alarms on.

    ``out_of_band_s`` is the current excursion; the K clock of an age step pauses for the growth of
    ``out_of_band_total_s`` between two steps. ``alarms`` are "code: detail" strings, codes: ``sensor_open``,
    ``sensor_out_of_range``, ``sensor_disagrees``, ``fail_safe``, ``out_of_band``, ``not_settled``,
    ``valve_readback``, ``valve_response``.
    """

    command: ValveCommand
    demand: float
    temperature_c: float
    setpoint_c: float
    failed_sensors: tuple[SensorFault, ...]
    fail_safe: bool
    in_band: bool
    stable: bool
    out_of_band_s: float
    out_of_band_total_s: float
    valve_faults: tuple[ValveFault, ...]
    alarms: tuple[str, ...]


def _parts(
    config: ChamberConfig,
) -> tuple[SensorVoter, PidController, ValveArray, StabilityDetector, StuckValveDetector]:
    voter = SensorVoter(config.sensors, valid_range_c=config.valid_range_c, disagree_limit_c=config.disagree_limit_c)
    pid = PidController(config.tuning, setpoint_weight=config.setpoint_weight)
    valves = ValveArray(
        config.heating_channels,
        config.cooling_channels,
        cycle_s=config.cycle_s,
        min_on_s=config.min_on_s,
        min_off_s=config.min_off_s,
    )
    stability = StabilityDetector(
        config.band_c, config.hold_s, alarm_delay_s=config.alarm_delay_s, settle_timeout_s=config.settle_timeout_s
    )
    stuck = StuckValveDetector(
        config.heating_channels,
        config.cooling_channels,
        response_s=config.stuck_response_s,
        min_change_c=config.stuck_min_change_c,
    )
    return voter, pid, valves, stability, stuck


def _setpoint(setpoint_c: float) -> float:
    value = finite("setpoint_c", setpoint_c)
    non_negative("setpoint_c", value + 273.15)  # below absolute zero is a typo, not a set point
    return value


class ChamberController:
    """Closed-loop control of one chamber around ``setpoint_c``, one ``update`` per control period."""

    def __init__(self, config: ChamberConfig, setpoint_c: float) -> None:
        if not isinstance(config, ChamberConfig):
            raise ConfigError("config", f"must be a ChamberConfig, got {type(config).__name__}")
        self.config = config
        self._voter, self._pid, self._valves, self._stability, self._stuck = _parts(config)
        self._setpoint_c = _setpoint(setpoint_c)
        self._last_now_s: float | None = None
        self._command = self._valves.command

    @property
    def setpoint_c(self) -> float:
        """The set point in force."""
        return self._setpoint_c

    def set_setpoint(self, setpoint_c: float) -> None:
        """A new set point from the next update on (bumpless unless ``setpoint_weight`` > 0; stability restarts)."""
        self._setpoint_c = _setpoint(setpoint_c)

    @property
    def switch_counts(self) -> dict[int, int]:
        """Switchings per valve channel since construction."""
        return self._valves.switch_counts

    @property
    def valves(self) -> ValveArray:
        """The valve arrays (switch counts, open seconds, current command)."""
        return self._valves

    @property
    def pid(self) -> PidController:
        """The PID (its integral is the chamber's load estimate)."""
        return self._pid

    def update(self, readings_c: Readings, valve_readback: frozenset[int] | None, now_s: float) -> ControlStep:
        """One control step at clock time ``now_s``.

        ``readings_c``: thermocouple -> °C (NaN or missing when open). ``valve_readback``: the valve channels
        reading open (end switches) or energised (``ROUT:CLOS?``), after the previous command was written; None
        when not read. A valve found stuck is taken out of service; its side's other valves carry the demand.
        """
        vote = self._voter.vote(readings_c)
        out = self._valves.out_of_service
        faults = self._stuck.update(self._command, valve_readback, vote.temperature_c, now_s, out)
        for fault in faults:
            if fault.channel is not None:
                self._valves.take_out_of_service(fault.channel)
        if vote.fail_safe:
            demand = 0.0
            command = self._valves.close_all(now_s)
            self._last_now_s = None  # the PID's first step after recovery integrates nothing
        else:
            dt_s = 0.0 if self._last_now_s is None else now_s - self._last_now_s
            if math.isfinite(now_s):
                self._last_now_s = now_s
            demand = self._pid.update(self._setpoint_c, vote.temperature_c, dt_s)
            command = self._valves.update(demand, now_s)
        self._command = command
        status = self._stability.update(vote.temperature_c, self._setpoint_c, now_s)
        return ControlStep(
            command=command,
            demand=demand,
            temperature_c=vote.temperature_c,
            setpoint_c=self._setpoint_c,
            failed_sensors=vote.failed,
            fail_safe=vote.fail_safe,
            in_band=status.in_band,
            stable=status.stable,
            out_of_band_s=status.out_of_band_for_s,
            out_of_band_total_s=status.out_of_band_total_s,
            valve_faults=faults,
            alarms=self._alarms(vote.failed, vote.fail_safe, vote.temperature_c, status, faults),
        )

    def _alarms(
        self,
        failed: tuple[SensorFault, ...],
        fail_safe: bool,
        temperature_c: float,
        status: StabilityStatus,
        faults: tuple[ValveFault, ...],
    ) -> tuple[str, ...]:
        alarms: list[str] = []
        for fault in failed:
            value = "no reading" if math.isnan(fault.value_c) else f"reads {fault.value_c:.2f} °C"
            alarms.append(f"sensor_{fault.reason}: {fault.sensor} {value}")
        if fail_safe:
            alarms.append("fail_safe: no healthy sensor; all heating and cooling valves closed")
        if status.out_of_band_alarm:
            alarms.append(
                f"out_of_band: {temperature_c:.2f} °C against {self._setpoint_c:.2f} ± {self.config.band_c:g} °C "
                f"for {status.out_of_band_for_s:.0f} s"
            )
        if status.settle_alarm:
            timeout_s = self.config.settle_timeout_s
            alarms.append(f"not_settled: not stable at {self._setpoint_c:.2f} °C within {timeout_s:g} s")
        for valve in faults:
            code = "valve_readback" if valve.channel is not None else "valve_response"
            which = f"{valve.side} valve {valve.channel}" if valve.channel is not None else f"{valve.side} side"
            alarms.append(f"{code}: {which} {valve.reason}")
        return tuple(alarms)
