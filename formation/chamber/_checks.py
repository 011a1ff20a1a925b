"""Configuration checks shared by the chamber modules: each raises ConfigError(field, reason)."""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable

from formation.errors import ConfigError


def finite(field: str, value: float) -> float:
    """``value`` as a float, or ConfigError when it is not a finite number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(field, f"must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(field, f"must be finite, got {value!r}")
    return number


def positive(field: str, value: float) -> float:
    """``value`` if finite and > 0, else ConfigError."""
    number = finite(field, value)
    if number <= 0.0:
        raise ConfigError(field, f"must be > 0, got {number:g}")
    return number


def non_negative(field: str, value: float) -> float:
    """``value`` if finite and >= 0, else ConfigError."""
    number = finite(field, value)
    if number < 0.0:
        raise ConfigError(field, f"must be >= 0, got {number:g}")
    return number


def unique(field: str, items: Iterable[Hashable]) -> None:
    """ConfigError naming the first item listed twice."""
    seen: set[Hashable] = set()
    for item in items:
        if item in seen:
            raise ConfigError(field, f"{item!r} is listed twice")
        seen.add(item)
