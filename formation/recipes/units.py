"""Quantities of the recipe language: durations, currents, charge throughput, and their normal forms.

Parsers raise ``ValueError`` whose message is the human reason; the recipe parser attaches the field path.
Every quantity is bounded (``formation.bounds``, docs/inputs.md): durations 0.1 s to 90 days, currents 0.1 mA to
10 kA or C/10000 to 100C, charge throughputs up to 4000 Ah or 200 % of nominal. Every number is rounded to 12
significant digits so that equivalent spellings (``"C/20"`` and ``"0.05C"``,
``"0.1h"`` and ``"6min"``) normalise to the same float and therefore the same recipe hash.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from formation.bounds import (
    MAX_C_RATE,
    MAX_CHARGE_FRACTION,
    MAX_CURRENT_A,
    MAX_DURATION_S,
    MIN_C_RATE,
    MIN_CURRENT_A,
    MIN_DURATION_S,
    finite_float,
)

_NUM = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
#: A number inside a compound duration: unsigned, so "2h-1h" is refused instead of read as 1 h.
_UNUM = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"

_DURATION_UNITS_S: dict[str, float] = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1.0),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60.0),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600.0),
    **dict.fromkeys(("d", "day", "days"), 86400.0),
}
_DURATION_TOKEN = re.compile(rf"\s*({_UNUM})\s*([a-z]+)\s*")
_AMPS = re.compile(rf"^\s*({_NUM})\s*(a|ma)\s*$", re.IGNORECASE)
_C_MULT = re.compile(rf"^\s*({_NUM})\s*c\s*$", re.IGNORECASE)
_C_DIV = re.compile(rf"^\s*c\s*/\s*({_NUM})\s*$", re.IGNORECASE)
_AH = re.compile(rf"^\s*({_NUM})\s*(ah|mah)\s*$", re.IGNORECASE)
_PERCENT = re.compile(rf"^\s*({_NUM})\s*%\s*$")


def clean(value: float) -> float:
    """``value`` rounded to 12 significant digits (absorbs float noise such as ``0.1 * 3600``)."""
    return float(f"{value:.12g}")


def fmt(value: float) -> str:
    """A number for human messages: ``4.5``, ``3.75``, ``280``."""
    return f"{value:g}"


def is_number(value: object) -> bool:
    """True for int/float values that are not bool (TOML and JSON both give these)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _show(text: object) -> str:
    """A value for a message: a string quoted, a number compact (``1.5552e+07``), a huge integer by its size."""
    if isinstance(text, int) and not isinstance(text, bool) and abs(text) > 10**15:
        return f"an integer of {len(str(abs(text)))} digits"
    if is_number(text):
        return fmt(float(text))  # type: ignore[arg-type]
    return repr(text)


def _positive(value: float | int, text: object) -> float:
    try:
        number = finite_float(value)
    except ValueError as exc:
        reason = "is too large" if "too large" in str(exc) else "is not a finite number"
        raise ValueError(f"{_show(text)} {reason}") from None
    if number <= 0:
        raise ValueError(f"{_show(text)} must be positive")
    return clean(number)


def _within(value: float, low: float, high: float, text: object, unit: str) -> float:
    """``value`` when within ``low``–``high`` (``unit`` names them in the reason); ValueError otherwise."""
    if not low <= value <= high:
        raise ValueError(f"{_show(text)} is outside {fmt(low)}–{fmt(high)} {unit}")
    return value


def _duration_bounds(seconds: float, text: object) -> float:
    shown = f"{_show(text)} s" if is_number(text) else _show(text)
    if seconds < MIN_DURATION_S:
        raise ValueError(f"{shown} is shorter than {fmt(MIN_DURATION_S)} s")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"{shown} is longer than {fmt(MAX_DURATION_S / 86400)} days")
    return seconds


def parse_duration_s(value: object) -> float:
    """Seconds from ``"90s"``, ``"2h"``, ``"7d"``, ``"1h30m"``, ``"10 minutes"`` or a number of seconds."""
    if is_number(value):
        return _duration_bounds(_positive(value, value), value)  # type: ignore[arg-type]
    if not isinstance(value, str):
        raise ValueError(f"expected a duration such as '2h' or a number of seconds, got {type(value).__name__}")
    text = value.strip().lower()
    if re.fullmatch(_NUM, text):
        return _duration_bounds(_positive(float(text), value), value)
    # One sign, in front of the whole duration ("-1h" is negative, refused below); none between its parts.
    sign = -1.0 if text.startswith("-") else 1.0
    total_s = 0.0
    pos = 1 if text[:1] in "+-" and text else 0
    start = pos
    while pos < len(text):
        match = _DURATION_TOKEN.match(text, pos)
        if match is None or match.group(2) not in _DURATION_UNITS_S:
            raise ValueError(f"cannot read duration {value!r} (use e.g. '90s', '10min', '2h', '1h30m', '7d')")
        total_s += float(match.group(1)) * _DURATION_UNITS_S[match.group(2)]
        pos = match.end()
    if pos == start:
        raise ValueError(f"cannot read duration {value!r} (use e.g. '90s', '10min', '2h', '1h30m', '7d')")
    return _duration_bounds(_positive(sign * total_s, value), value)


def format_duration(seconds: float) -> str:
    """Compact human duration: ``90`` -> ``1m30s``, ``7200`` -> ``2h``, ``5400`` -> ``1h30m``."""
    if seconds < 1 or seconds != int(seconds):
        return f"{seconds:g}s" if seconds < 60 else f"{seconds / 3600:.3g}h"
    rest = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class CurrentSpec:
    """A current magnitude: fixed ``amps`` or a ``c_rate`` of the cell's nominal capacity (exactly one)."""

    amps: float | None = None
    c_rate: float | None = None

    def __post_init__(self) -> None:
        if (self.amps is None) == (self.c_rate is None):
            raise ValueError("CurrentSpec needs exactly one of amps or c_rate")

    def resolve_a(self, nominal_capacity_ah: float) -> float:
        """The current in amps for a cell of ``nominal_capacity_ah`` (1C = nominal capacity in one hour)."""
        if self.amps is not None:
            return self.amps
        assert self.c_rate is not None
        return clean(self.c_rate * nominal_capacity_ah)

    def to_canonical(self) -> dict[str, float]:
        """``{"a": amps}`` or ``{"c_rate": c}``: the canonical JSON form."""
        return {"a": self.amps} if self.amps is not None else {"c_rate": self.c_rate}  # type: ignore[dict-item]

    def __str__(self) -> str:
        if self.amps is not None:
            return f"{self.amps * 1000:g}mA" if self.amps < 1 else f"{self.amps:g}A"
        assert self.c_rate is not None
        divisor = 1.0 / self.c_rate
        if self.c_rate < 1 and abs(divisor - round(divisor)) < 1e-9:
            return f"C/{round(divisor)}"
        return f"{self.c_rate:g}C"


def parse_current(value: object) -> CurrentSpec:
    """A current from ``"2.5A"``, ``"500mA"``, ``"C/20"``, ``"0.5C"``, a number of amps, or the canonical
    ``{"a": x}`` / ``{"c_rate": x}``."""
    if is_number(value):
        return _amps(_positive(value, value), value)  # type: ignore[arg-type]
    if isinstance(value, dict):
        if set(value) == {"a"} and is_number(value["a"]):
            return _amps(_positive(value["a"], value["a"]), value["a"])
        if set(value) == {"c_rate"} and is_number(value["c_rate"]):
            return _c_rate(_positive(value["c_rate"], value["c_rate"]), value["c_rate"])
        raise ValueError(f"a current table is {{a = <amps>}} or {{c_rate = <C>}}, got {value!r}")
    if not isinstance(value, str):
        raise ValueError(f"expected a current such as '2.5A' or 'C/20', got {type(value).__name__}")
    if match := _AMPS.match(value):
        scale = 1e-3 if match.group(2).lower() == "ma" else 1.0
        return _amps(clean(_positive(float(match.group(1)), value) * scale), value)
    if match := _C_MULT.match(value):
        return _c_rate(_positive(float(match.group(1)), value), value)
    if match := _C_DIV.match(value):
        divisor = _positive(float(match.group(1)), value)
        return _c_rate(clean(1.0 / divisor), value)
    raise ValueError(f"cannot read current {value!r} (use amps '2.5A', '500mA' or a C-rate 'C/20', '0.5C')")


def _amps(amps: float, text: object) -> CurrentSpec:
    return CurrentSpec(amps=_within(amps, MIN_CURRENT_A, MAX_CURRENT_A, text, "A"))


def _c_rate(c_rate: float, text: object) -> CurrentSpec:
    return CurrentSpec(c_rate=_within(c_rate, MIN_C_RATE, MAX_C_RATE, text, "C"))


#: Largest charge throughput in Ah (twice the largest nominal capacity, as a share of nominal may be 200 %).
MAX_CHARGE_AH = 4000.0


def parse_charge(value: object) -> tuple[float | None, float | None]:
    """Charge throughput as ``(ah, fraction_of_nominal)``, exactly one set, from ``"1.5Ah"``, ``"1500mAh"``,
    ``"30%"``, a number of Ah, or the canonical ``{"ah": x}`` / ``{"fraction": x}``."""
    if is_number(value):
        return _ah(_positive(value, value), value), None  # type: ignore[arg-type]
    if isinstance(value, dict):
        if set(value) == {"ah"} and is_number(value["ah"]):
            return _ah(_positive(value["ah"], value["ah"]), value["ah"]), None
        if set(value) == {"fraction"} and is_number(value["fraction"]):
            share = _positive(value["fraction"], value["fraction"])
            return None, _within(share, 0.0, MAX_CHARGE_FRACTION, value["fraction"], "of nominal")
        raise ValueError(f"a charge table is {{ah = <Ah>}} or {{fraction = <0..1>}}, got {value!r}")
    if not isinstance(value, str):
        raise ValueError(f"expected a charge such as '1.5Ah' or '30%', got {type(value).__name__}")
    if match := _AH.match(value):
        scale = 1e-3 if match.group(2).lower() == "mah" else 1.0
        return _ah(clean(_positive(float(match.group(1)), value) * scale), value), None
    if (fraction := parse_percent(value)) is not None:
        return None, fraction
    raise ValueError(f"cannot read charge {value!r} (use Ah '1.5Ah' or a share of nominal '30%')")


def _ah(ah: float, text: object) -> float:
    return _within(ah, MIN_CURRENT_A, MAX_CHARGE_AH, text, "Ah")


def parse_percent(value: object) -> float | None:
    """A fraction from ``"30%"`` (0.3); None when ``value`` is not a percent string; raises when not in 0–200 %."""
    if not isinstance(value, str) or not (match := _PERCENT.match(value)):
        return None
    fraction = clean(_positive(float(match.group(1)), value) / 100.0)
    if fraction > MAX_CHARGE_FRACTION:
        raise ValueError(f"{_show(value)} is above {fmt(MAX_CHARGE_FRACTION * 100)} %")
    return fraction


def parse_voltage_text(text: str) -> float:
    """Volts from ``"4.2 V"`` or ``"4.2V"`` (the PyBaMM spelling)."""
    match = re.fullmatch(rf"\s*({_NUM})\s*v\s*", text, re.IGNORECASE)
    if match is None:
        raise ValueError(f"cannot read voltage {text!r} (use e.g. '4.2 V')")
    return _positive(float(match.group(1)), text)
