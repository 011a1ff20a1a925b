"""The simulated OCV/ACIR tester (BT3562 dialect) and its scanner over ageing racks (pure: no I/O, no clock).

The scanner closes one channel at a time: rack ``k`` of the tester's list (1-based "slot") position ``p`` is channel
``k·1000 + p`` (docs/bt3562-dialect.md). A measurement reads the cell on the closed channel: its 1 kHz resistance
(the ohmic R0 at the cell's SOC and temperature, plus the position's contact resistance) and its terminal voltage
at open circuit (the OCV plus whatever relaxation is left), each with noise scaled by the sampling rate and rounded
to the range's resolution. An empty position, an open channel or a position with the no-contact fault reads the
instrument's measurement-fault value; a value beyond its range reads the overflow value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from formation.sim.rack import RackModel
from formation.sim.scpi import scpi_error

#: What the instrument reports beyond the range (±OF) and when it cannot measure (no contact): numerically the
#: same on every range, written with the range's digits (:func:`format_resistance`, :func:`format_voltage`).
OVERFLOW = 1e9
FAULT = 1e10
#: Resistance ranges (ohm): the unit the reply is written in and its decimals (so the resolution).
R_RANGES: dict[float, tuple[float, int]] = {
    3e-3: (1e-3, 4),
    30e-3: (1e-3, 3),
    300e-3: (1e-3, 2),
    3.0: (1.0, 4),
    30.0: (1.0, 3),
    300.0: (1.0, 2),
    3000.0: (1e3, 4),
}
#: Voltage ranges (V) and their decimals.
V_RANGES: dict[float, int] = {6.0: 5, 60.0: 4}
#: A range reads up to this share of its name (3 mΩ reads to 3.1 mΩ) before it overflows.
OVER_RANGE = 31.0 / 30.0
#: Noise multiplier of each sampling rate (a faster rate integrates less).
SAMPLE_RATES: dict[str, float] = {"EXFAST": 4.0, "FAST": 2.0, "MEDIUM": 1.0, "SLOW": 0.5}
FUNCTIONS = ("RESISTANCE", "VOLTAGE", "RV")
#: Scanner channels: ``slot·1000 + position``; at most nine racks per tester.
SLOT_WIDTH = 1000
MAX_SLOTS = 9


@dataclass(frozen=True, slots=True)
class TesterSpec:
    """How to simulate one tester: the racks its scanner reaches (in slot order), TCP port, noise."""

    name: str
    racks: tuple[str, ...]
    port: int = 0
    seed: int = 0
    #: Noise σ at the MEDium rate: resistance (absolute ohm plus a share of the reading) and voltage (V).
    resistance_noise_ohm: float = 2e-6
    resistance_noise_rel: float = 2e-4
    voltage_noise_v: float = 10e-6

    def __post_init__(self) -> None:
        if not 1 <= len(self.racks) <= MAX_SLOTS:
            raise ValueError(f"tester {self.name!r}: 1..{MAX_SLOTS} racks, got {len(self.racks)}")
        if len(set(self.racks)) != len(self.racks):
            raise ValueError(f"tester {self.name!r}: a rack is listed twice")
        for name in ("resistance_noise_ohm", "resistance_noise_rel", "voltage_noise_v"):
            value = getattr(self, name)
            if not (value >= 0.0 and math.isfinite(value)):
                raise ValueError(f"tester {self.name!r}: {name} must be finite and >= 0")


def scanner_channel(slot: int, position: int) -> int:
    """Scanner channel of ``position`` (1-based) of the rack in ``slot`` (1-based)."""
    return slot * SLOT_WIDTH + position


def _range_text(mantissa_digits: str, exponent: int) -> str:
    return f"{mantissa_digits}E{exponent:+d}"


def format_resistance(value_ohm: float, range_ohm: float) -> str:
    """NR3 text of a resistance reading on ``range_ohm`` (``16.512E-3``; overflow ``100.000E+7``, fault
    ``100.000E+8`` on the 30 mΩ range)."""
    unit, decimals = R_RANGES[range_ohm]
    if value_ohm >= FAULT or value_ohm <= -FAULT:
        return _special(FAULT, decimals, sign="+")
    if abs(value_ohm) >= OVERFLOW:
        return _special(OVERFLOW, decimals, sign="-" if value_ohm < 0 else "+")
    exponent = round(math.log10(unit))
    return _range_text(f"{value_ohm / unit:.{decimals}f}", exponent)


def format_voltage(value_v: float, range_v: float) -> str:
    """NR3 text of a voltage reading on ``range_v`` (``3.61234E+0``; overflow ``1.00000E+9``, fault
    ``1.00000E+10`` on the 6 V range)."""
    decimals = V_RANGES[range_v]
    if value_v >= FAULT:
        return _special(FAULT, decimals, sign="+")
    if abs(value_v) >= OVERFLOW:
        return _special(OVERFLOW, decimals, sign="-" if value_v < 0 else "+")
    return _range_text(f"{value_v:.{decimals}f}", 0)


def _special(value: float, decimals: int, *, sign: str) -> str:
    """The overflow or fault value written with a range's digits: ``10.0000E+8`` for 4 decimals, and so on."""
    integer_digits = 6 - decimals  # every range shows six digits
    exponent = round(math.log10(value)) - (integer_digits - 1)
    mantissa = f"{10 ** (integer_digits - 1):d}.{'0' * decimals}"
    return ("-" if sign == "-" else "") + _range_text(mantissa, exponent)


def pick_range(value: float, ranges: Sequence[float]) -> float:
    """The smallest range that holds ``value`` (``:RES:RANG 0.02`` picks 30 mΩ); -222 beyond the largest."""
    for candidate in sorted(ranges):
        if abs(value) <= candidate * OVER_RANGE:
            return candidate
    raise scpi_error(-222)


class TesterModel:
    """One tester: settings (function, ranges, sampling rate), the scanner's closed channel, faults, noise."""

    def __init__(self, spec: TesterSpec, racks: Sequence[RackModel]) -> None:
        if [r.name for r in racks] != list(spec.racks):
            raise ValueError("racks must be given in the tester's slot order")
        self.spec = spec
        self.racks = list(racks)
        self._rng = np.random.default_rng([spec.seed, 0xB735])
        self.no_contact: set[int] = set()
        self.reset()

    def reset(self) -> None:
        """``*RST``: RV function, 3 Ω and 6 V ranges, MEDium rate, every scanner channel open; faults stay."""
        self.function = "RV"
        self.resistance_range_ohm = 3.0
        self.voltage_range_v = 6.0
        self.sample_rate = "MEDIUM"
        self.closed: int | None = None

    # --- scanner ------------------------------------------------------------------------------------------

    def channels(self) -> dict[int, tuple[RackModel, int]]:
        """Every scanner channel and the (rack, position) behind it."""
        return {
            scanner_channel(slot, p): (rack, p)
            for slot, rack in enumerate(self.racks, start=1)
            for p in range(1, rack.positions + 1)
        }

    def locate(self, channel: int) -> tuple[RackModel, int]:
        """The rack and position behind ``channel``; -222 when the scanner has no such channel."""
        slot, position = divmod(channel, SLOT_WIDTH)
        if not 1 <= slot <= len(self.racks):
            raise scpi_error(-222)
        rack = self.racks[slot - 1]
        if not 1 <= position <= rack.positions:
            raise scpi_error(-222)
        return rack, position

    def rack(self, name: str) -> tuple[int, RackModel]:
        """Slot and model of the rack called ``name``; -224 when the scanner does not reach it."""
        for slot, rack in enumerate(self.racks, start=1):
            if rack.name == name:
                return slot, rack
        raise scpi_error(-224)

    def close(self, channel: int) -> None:
        """Close ``channel`` (the scanner opens the previous one first)."""
        self.locate(channel)
        self.closed = channel

    # --- measurement --------------------------------------------------------------------------------------

    def measure(self) -> tuple[float, float]:
        """Resistance (ohm) and voltage (V) as read now at the closed channel: noisy, resolved, or OF / fault."""
        if self.closed is None or self.closed in self.no_contact:
            return FAULT, FAULT
        rack, position = self.locate(self.closed)
        index = rack.cell_index(position)
        if index is None or rack.cells is None:
            return FAULT, FAULT  # an empty position: the probes touch nothing
        truth = rack.cells.truth_arrays()
        true_r = float(truth["acir_ohm"][index]) + float(rack.contact_ohm[position - 1])
        true_v = float(rack.cells.terminal_voltage_v(0.0)[index])
        k = SAMPLE_RATES[self.sample_rate]
        spec = self.spec
        sigma_r = k * (spec.resistance_noise_ohm + spec.resistance_noise_rel * true_r)
        r = true_r + sigma_r * float(self._rng.standard_normal())
        v = true_v + k * spec.voltage_noise_v * float(self._rng.standard_normal())
        return self._resolve_r(r), self._resolve_v(v)

    def _resolve_r(self, value_ohm: float) -> float:
        unit, decimals = R_RANGES[self.resistance_range_ohm]
        if abs(value_ohm) > self.resistance_range_ohm * OVER_RANGE:
            return math.copysign(OVERFLOW, value_ohm)
        step = unit * 10.0**-decimals
        return round(value_ohm / step) * step

    def _resolve_v(self, value_v: float) -> float:
        if abs(value_v) > self.voltage_range_v * OVER_RANGE:
            return math.copysign(OVERFLOW, value_v)
        step = 10.0 ** -V_RANGES[self.voltage_range_v]
        return round(value_v / step) * step

    def battery_reply(self) -> str:
        """``:MEASure:BATTery?`` text: ``<R>,<V>`` in the ranges' formats."""
        r, v = self.measure()
        return f"{format_resistance(r, self.resistance_range_ohm)},{format_voltage(v, self.voltage_range_v)}"
