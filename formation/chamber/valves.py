"""Valve arrays: a signed demand becomes on/off commands for parallel heating and cooling solenoid valves.

Demand d on one side of N valves means d × N valves open on average. The whole part stays open steadily and only
the fractional remainder is time-proportioned over ``cycle_s`` on one valve, so a cycle long enough to spare the
valves still gives a small ripple (one valve's share of the power, not the whole chamber's). Which valve opens or
closes is chosen each time by the fewest switchings so far, which rotates both the proportioning role and the
steady ones and spreads the wear evenly. A valve never switches again before ``min_on_s`` / ``min_off_s`` have
passed (only ``close_all``, the fail-safe, overrides that), and heating and cooling are never open together.

Time proportioning is done with a carry: the valve-seconds owed (demand minus what was actually open, including
the rounding to update instants and delays from the minimum times) are added to the next cycle's on-time, so the
average open fraction matches the demand at any control period.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from formation.chamber._checks import non_negative, positive, unique
from formation.errors import ConfigError


@dataclass(frozen=True)
class ValveCommand:
    """Every valve's commanded state after an update; ``changed`` when any valve switched in that update."""

    open: frozenset[int]
    closed: frozenset[int]
    changed: bool


def _channels(field: str, channels: Sequence[int]) -> tuple[int, ...]:
    out: list[int] = []
    for channel in channels:
        if isinstance(channel, bool) or not isinstance(channel, int) or channel < 0:
            raise ConfigError(field, f"channels are non-negative integers, got {channel!r}")
        out.append(channel)
    unique(field, out)
    return tuple(out)


class ValveArray:
    """Heating and cooling valve arrays of one chamber, driven by ``update(demand, now_s)``."""

    def __init__(
        self,
        heating_channels: Sequence[int],
        cooling_channels: Sequence[int],
        *,
        cycle_s: float = 60.0,
        min_on_s: float = 5.0,
        min_off_s: float = 5.0,
    ) -> None:
        self.heating_channels = _channels("heating_channels", heating_channels)
        self.cooling_channels = _channels("cooling_channels", cooling_channels)
        shared = sorted(set(self.heating_channels) & set(self.cooling_channels))
        if shared:
            raise ConfigError("cooling_channels", f"channel {shared[0]} is also a heating channel")
        if not self.heating_channels and not self.cooling_channels:
            raise ConfigError("heating_channels", "no valve at all: give heating and/or cooling channels")
        self.cycle_s = positive("cycle_s", cycle_s)
        self.min_on_s = non_negative("min_on_s", min_on_s)
        self.min_off_s = non_negative("min_off_s", min_off_s)
        if self.min_on_s + self.min_off_s > self.cycle_s:
            raise ConfigError(
                "cycle_s", f"must be at least min_on_s + min_off_s ({self.min_on_s + self.min_off_s:g} s)"
            )
        self._all = self.heating_channels + self.cooling_channels
        self._order = {channel: index for index, channel in enumerate(self._all)}
        self._is_open = dict.fromkeys(self._all, False)
        self._switched_at: dict[int, float | None] = dict.fromkeys(self._all)
        self._counts = dict.fromkeys(self._all, 0)
        self._open_s = dict.fromkeys(self._all, 0.0)
        self._out: set[int] = set()
        self._worn = dict.fromkeys(self._all, 0)  # switchings before this array existed (stored totals)
        # Local time advances by the positive steps of now_s only, so a clock stepping back cannot freeze valves.
        self._t = 0.0
        self._last_now_s: float | None = None
        self._side = 0  # +1 heating, -1 cooling, 0 none
        self._target_valves = 0.0
        self._owed_s = 0.0
        self._carry_s = 0.0
        self._cycle_t0: float | None = None

    # -- read-only views -----------------------------------------------------------------------------------------
    @property
    def switch_counts(self) -> dict[int, int]:
        """Switchings (open or close, each counts one) per channel since construction."""
        return dict(self._counts)

    @property
    def open_s(self) -> dict[int, float]:
        """Seconds each channel has been commanded open since construction."""
        return dict(self._open_s)

    @property
    def out_of_service(self) -> frozenset[int]:
        """Channels taken out of service (stuck valves): commanded closed, never chosen again."""
        return frozenset(self._out)

    def seed_wear(self, switchings: dict[int, int]) -> None:
        """Switchings each valve made before this array existed (the stored totals): the rotation then evens out
        lifetime wear, not only this run's. ``switch_counts`` still counts from construction."""
        for channel, count in switchings.items():
            if channel in self._worn:
                self._worn[channel] = max(0, int(count))

    def take_out_of_service(self, channel: int) -> None:
        """Stop using ``channel`` (a stuck valve): the other valves of its side carry the demand from the next
        update on. It stays out until the array is rebuilt (a repaired valve comes back with a restart)."""
        if channel in self._order:
            self._out.add(channel)

    @property
    def command(self) -> ValveCommand:
        """The current command (``changed`` False: nothing switches by reading it)."""
        return self._command(changed=False)

    # -- updates -------------------------------------------------------------------------------------------------
    def update(self, demand: float, now_s: float) -> ValveCommand:
        """Command the valves for ``demand`` in [-1, +1] (clamped; NaN is 0) at clock time ``now_s``."""
        self._advance(now_s)
        forced = False
        for channel in self._out:
            if self._is_open[channel]:  # minimum on-time notwithstanding: a stuck valve gets nothing from waiting
                self._switch(channel, False)
                forced = True
        d = float(demand)
        d = min(1.0, max(-1.0, d)) if math.isfinite(d) else 0.0
        side = (d > 0.0) - (d < 0.0)
        if side != self._side:
            self._side, self._owed_s, self._carry_s, self._cycle_t0 = side, 0.0, 0.0, None
        valves = self._side_channels(side)
        self._target_valves = abs(d) * len(valves)
        if side == 0:
            return self._command(changed=self._close(self._all, 0) or forced)
        switched = self._close(self._side_channels(-side), 0) or forced
        # While the other side is inside its minimum on-time this side waits: never both open.
        if not any(self._is_open[c] for c in self._side_channels(-side)):
            wanted = self._wanted_open(len(valves))
            switched = self._open(valves, wanted) | self._close(valves, wanted) | switched
        return self._command(changed=switched)

    def close_all(self, now_s: float) -> ValveCommand:
        """Fail-safe: close every valve now, minimum on-times notwithstanding (safety outranks valve wear)."""
        self._advance(now_s)
        switched = False
        for channel in self._all:
            if self._is_open[channel]:
                self._switch(channel, False)
                switched = True
        self._side, self._target_valves, self._owed_s, self._carry_s, self._cycle_t0 = 0, 0.0, 0.0, 0.0, None
        return self._command(changed=switched)

    # -- internals -----------------------------------------------------------------------------------------------
    def _advance(self, now_s: float) -> None:
        now_s = float(now_s)
        dt_s = 0.0
        if self._last_now_s is not None and math.isfinite(now_s):
            dt_s = max(0.0, now_s - self._last_now_s)
        if math.isfinite(now_s):
            self._last_now_s = now_s
        if dt_s == 0.0:
            return
        self._t += dt_s
        for channel in self._all:
            if self._is_open[channel]:
                self._open_s[channel] += dt_s
        if self._side:
            opened = sum(self._is_open[c] for c in self._side_channels(self._side))
            owed = self._owed_s + (self._target_valves - opened) * dt_s
            # Bounded memory: a long lock-out (minimum times, side change) must not be repaid for many cycles.
            self._owed_s = min(self.cycle_s, max(-self.cycle_s, owed))

    def _side_channels(self, side: int) -> tuple[int, ...]:
        if side > 0:
            return tuple(c for c in self.heating_channels if c not in self._out)
        if side < 0:
            return tuple(c for c in self.cooling_channels if c not in self._out)
        return ()

    def _wanted_open(self, n: int) -> int:
        """How many valves of the active side should be open now: the whole part, plus one in the on-phase."""
        if self._cycle_t0 is None or self._t - self._cycle_t0 >= 2.0 * self.cycle_s:
            self._cycle_t0, self._carry_s = self._t, self._owed_s
        elif self._t - self._cycle_t0 >= self.cycle_s:
            self._cycle_t0 += self.cycle_s
            self._carry_s = self._owed_s
        whole = min(n, math.floor(self._target_valves))
        if whole >= n:
            return n
        on_s = (self._target_valves - whole) * self.cycle_s + self._carry_s
        if on_s < self.min_on_s:
            return whole  # too short a pulse: owed to a later cycle
        if on_s > self.cycle_s - self.min_off_s:
            return whole + 1  # too short a gap: stay open, the excess is repaid later
        return whole + (self._t - self._cycle_t0 < on_s)

    def _elapsed_s(self, channel: int) -> float:
        at = self._switched_at[channel]
        return math.inf if at is None else self._t - at

    def _open(self, channels: Sequence[int], wanted: int) -> bool:
        closed = [c for c in channels if not self._is_open[c]]
        missing = wanted - (len(channels) - len(closed))
        ready = [c for c in closed if self._elapsed_s(c) >= self.min_off_s]
        # Least switched first, then least used, so the proportioning role and the steady ones rotate.
        ready.sort(key=lambda c: (self._worn[c] + self._counts[c], self._open_s[c], self._order[c]))
        for channel in ready[: max(0, missing)]:
            self._switch(channel, True)
        return missing > 0 and bool(ready)

    def _close(self, channels: Sequence[int], wanted: int) -> bool:
        opened = [c for c in channels if self._is_open[c]]
        excess = len(opened) - wanted
        ready = [c for c in opened if self._elapsed_s(c) >= self.min_on_s]
        # Least switched first, then the one open longest.
        ready.sort(key=lambda c: (self._worn[c] + self._counts[c], -self._elapsed_s(c), self._order[c]))
        for channel in ready[: max(0, excess)]:
            self._switch(channel, False)
        return excess > 0 and bool(ready)

    def _switch(self, channel: int, is_open: bool) -> None:
        self._is_open[channel] = is_open
        self._switched_at[channel] = self._t
        self._counts[channel] += 1

    def _command(self, *, changed: bool) -> ValveCommand:
        opened = frozenset(c for c in self._all if self._is_open[c])
        return ValveCommand(open=opened, closed=frozenset(self._all) - opened, changed=changed)
