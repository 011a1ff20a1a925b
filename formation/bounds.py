"""The documented bounds of every number formation reads, and the checks every input file goes through first.

Pure (imports nothing of ours but ``errors``). The table of bounds is ``docs/inputs.md``; every value outside them
is refused at the edge with one line naming the field and the reason (an :class:`~formation.errors.InputError`,
CLI exit code 2), before anything is written.

A file is read with :func:`read_input_text` (missing, unreadable, too large, a name the system refuses, not UTF-8)
and its parsed document is walked by :func:`check_document` (nesting, integers beyond float range, strings that
are not valid Unicode) before any field is looked at, so no parser below ever meets those.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from formation.errors import InputError

#: Shortest and longest duration a recipe may give (a step end, a pulse, a checkpoint time, a hold): 0.1 s is the
#: instrument's resolution; 90 days is longer than any formation or ageing route (docs/domain.md: 7–28 days).
MIN_DURATION_S = 0.1
MAX_DURATION_S = 90 * 86400.0
#: Shortest record interval (``every_s``; 0 switches the time rule off): a finer grid buys nothing and costs the
#: simulator wall time (at 1e-9 s it needed 27 s of wall time per 0.05 s).
MIN_RECORD_S = 0.1
#: Nominal capacity of one cell, Ah: a coin cell to the largest prismatic storage cells.
MIN_CAPACITY_AH = 0.01
MAX_CAPACITY_AH = 2000.0
#: A current in amps (a step, a taper end, a limit): 0.1 mA to the instrument's 10 kA.
MIN_CURRENT_A = 1e-4
MAX_CURRENT_A = 1e4
#: A current as a C-rate: C/10000 to 100C.
MIN_C_RATE = 1e-4
MAX_C_RATE = 100.0
#: A charge throughput as a share of nominal (``"30%"``): up to 200 % (a first charge with its SEI loss fits).
MAX_CHARGE_FRACTION = 2.0
#: Clock scale (simulated seconds per wall second) anywhere: site file, environment, ``sim serve``.
MAX_CLOCK_SCALE = 1e6
#: Deepest nesting of tables and arrays in a recipe, site or rules document (real ones use 3 or 4).
MAX_NESTING = 32
#: Largest integer magnitude in a document: beyond 2**53 a float no longer holds it exactly.
MAX_DOCUMENT_INT = 2**53
#: Largest input file read (recipe, site, rules, cells): far above any real one.
MAX_FILE_BYTES = 16 * 1024 * 1024
#: Longest text field of a cells file (cell id, lot) and of names in documents.
MAX_ID_CHARS = 128

#: Bounds of the site file's numbers, by dataclass of ``formation.config`` and field (the [mqtt] table checks its own).
SITE_BOUNDS: dict[str, dict[str, tuple[float, float]]] = {
    "SimSpec": {
        "seed": (0, 2**32 - 1),
        "port": (0, 65535),
        "initial_soc": (0.0, 1.0),
        "ambient_c": (-60.0, 80.0),
        "defect_fraction": (0.0, 1.0),
    },
    "ChamberSimSpec": {"seed": (0, 2**32 - 1)},
}
#: A cabinet's poll interval (clock s), command timeout and watchdog (wall s; 0 disarms the watchdog).
CABINET_BOUNDS: dict[str, tuple[float, float]] = {
    "poll_interval_s": (0.01, 3600.0),
    "timeout_s": (0.01, 600.0),
    "watchdog_s": (0.0, 86400.0),
}

ErrorFactory = Callable[[str, str], InputError]


def finite_float(value: object) -> float:
    """``value`` as a finite float; ValueError with the reason when it is not a number, too large or not finite."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{value!r} is not a number")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError("is too large (beyond the float range)") from None
    except ValueError:
        raise ValueError(f"{value!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def check_range(number: float, low: float, high: float, unit: str = "") -> float:
    """``number`` when ``low <= number <= high``; ValueError naming the range otherwise."""
    if not low <= number <= high:
        suffix = f" {unit}" if unit else ""
        raise ValueError(f"{number:g}{suffix} is outside {low:g}–{high:g}{suffix}")
    return number


def read_input_text(path: str | Path, what: str, error: ErrorFactory, *, encoding: str = "utf-8") -> str:
    """The text of an input file; ``error(field, reason)`` (an InputError) when it cannot be read as text."""
    p = Path(path)
    try:
        with p.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise error("", f"cannot read {what}: {exc.strerror or type(exc).__name__}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise error("", f"{what} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise error("", f"{what} is not UTF-8 text (byte {exc.start}: {raw[exc.start]:#04x})") from None


def is_file(path: str | Path) -> bool:
    """Whether ``path`` names an existing file; False for a name the system refuses (too long, a NUL byte)."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def check_document(data: object, error: ErrorFactory) -> None:
    """Refuse, before any field is read, a parsed TOML/JSON document a parser below must never meet.

    Nested deeper than :data:`MAX_NESTING`, an integer beyond ±:data:`MAX_DOCUMENT_INT`, a string or key that is
    not valid Unicode (a lone surrogate from JSON's ``"\\ud800"``). Iterative: any depth is walked safely.
    """
    stack: list[tuple[object, str, int]] = [(data, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth >= MAX_NESTING:
                raise error(path or "<document>", f"nested deeper than {MAX_NESTING} levels")
            items: Any = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str):
                    _check_text(key, path or "<document>", error)
                    where = f"{path}.{key}" if path else key
                else:
                    where = f"{path}[{key}]"
                stack.append((item, where, depth + 1))
        elif isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > MAX_DOCUMENT_INT:
                raise error(path, f"integer with {len(str(abs(value)))} digits is too large")
        elif isinstance(value, str):
            _check_text(value, path, error)


def _check_text(text: str, path: str, error: ErrorFactory) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise error(path, f"not valid Unicode (lone surrogate at character {exc.start})") from None


def printable(text: str) -> str:
    """``text`` with control characters (terminal escapes, bells, newlines) shown as ``\\x1b``-style escapes."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def toml_document(text: str, error: ErrorFactory) -> dict[str, Any]:
    """Parse TOML text and refuse what :func:`check_document` refuses; ``error(field, reason)`` builds the error."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error("", f"not valid TOML: {exc}") from None
    except RecursionError:
        raise error("", "not valid TOML: nested too deeply") from None
    check_document(data, error)
    return data
