"""SCPI line handling for simulated instruments: parsing, dispatch, error queue, IEEE 488.2 basics.

Generic over instruments: a command table (:class:`CommandSpec` rows) names a handler method on a target
object (an :class:`Ieee488Instrument` subclass). Handlers raise :class:`formation.errors.ScpiError`; the
dispatcher turns that into an error-queue entry, as an instrument would. Dialect: docs/bt2200-dialect.md.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from formation.errors import ScpiError

ERROR_MESSAGES: dict[int, str] = {
    0: "No error",
    -100: "Command error",
    -102: "Syntax error",
    -108: "Parameter not allowed",
    -109: "Missing parameter",
    -113: "Undefined header",
    -221: "Settings conflict",
    -222: "Data out of range",
    -223: "Too much data",
    -224: "Illegal parameter value",
    -350: "Queue overflow",
}

ERROR_QUEUE_MAX = 32
#: Most elements a channel list may expand to (-223 beyond): every cell id of the instrument, 1–65535.
MAX_LIST_ITEMS = 65535
#: Range of every number in a channel list (cell ids 1–65535; channels 101–832 fall inside).
LIST_NUMBER_RANGE = (1, 65535)

# IEEE 488.2 event status register bits.
ESR_QUERY_ERROR = 4
ESR_DEVICE_ERROR = 8
ESR_EXECUTION_ERROR = 16
ESR_COMMAND_ERROR = 32
# Status byte bits.
STB_ERROR_QUEUE = 4
STB_ESB = 32


def scpi_error(code: int, command: str | None = None) -> ScpiError:
    """The :class:`ScpiError` for a standard ``code`` (message from :data:`ERROR_MESSAGES`)."""
    return ScpiError(code, ERROR_MESSAGES.get(code, "Command error"), command)


def format_error(code: int) -> str:
    """``SYST:ERR?`` text of an error code: ``-113,"Undefined header"``, ``+0,"No error"``."""
    sign = "+" if code >= 0 else ""
    return f'{sign}{code},"{ERROR_MESSAGES.get(code, "Command error")}"'


class ErrorQueue:
    """FIFO error queue (max 32, overflow replaces the last entry with -350) and the event status register."""

    def __init__(self) -> None:
        self._codes: deque[int] = deque()
        self.esr = 0

    def push(self, code: int) -> None:
        """Queue an error and set its ESR class bit."""
        if -200 < code <= -100:
            self.esr |= ESR_COMMAND_ERROR
        elif -300 < code <= -200:
            self.esr |= ESR_EXECUTION_ERROR
        elif -400 < code <= -300:
            self.esr |= ESR_DEVICE_ERROR
        elif -500 < code <= -400:
            self.esr |= ESR_QUERY_ERROR
        if len(self._codes) >= ERROR_QUEUE_MAX:
            self._codes[-1] = -350
        else:
            self._codes.append(code)

    def pop(self) -> int:
        """Oldest error code, or 0 when empty."""
        return self._codes.popleft() if self._codes else 0

    def clear(self) -> None:
        """Empty the queue and the ESR (``*CLS``)."""
        self._codes.clear()
        self.esr = 0

    def __len__(self) -> int:
        return len(self._codes)

    @property
    def stb(self) -> int:
        """Status byte: bit 2 error queue not empty, bit 5 ESR summary."""
        return (STB_ERROR_QUEUE if self._codes else 0) | (STB_ESB if self.esr else 0)


# ----------
# Lexical helpers


def _split_outside(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes and parentheses."""
    parts: list[str] = []
    depth = 0
    quoted = False
    start = 0
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def split_compound(line: str) -> list[str]:
    """The ``;``-separated commands of one line (each treated as a complete command from the root)."""
    return [p.strip() for p in _split_outside(line, ";") if p.strip()]


def split_params(text: str) -> list[str]:
    """Comma-separated parameters, keeping channel lists ``(@...)`` and quoted strings whole."""
    text = text.strip()
    return [p.strip() for p in _split_outside(text, ",")] if text else []


def parse_channel_list(text: str) -> list[int]:
    """``(@1001:1004,1010)`` → ``[1001, 1002, 1003, 1004, 1010]`` (ranges inclusive, in list order).

    -224 if not a list or an element is not an integer, -222 if a number is outside 1–65535, -223 if the list
    expands to more than :data:`MAX_LIST_ITEMS` elements.
    """
    body = text.strip()
    if not (body.startswith("(@") and body.endswith(")")):
        raise scpi_error(-224)
    out: list[int] = []
    lo_ok, hi_ok = LIST_NUMBER_RANGE
    for item in body[2:-1].split(","):
        lo_text, sep, hi_text = item.strip().partition(":")
        try:
            lo = int(lo_text)
            hi = int(hi_text) if sep else lo
        except ValueError:
            raise scpi_error(-224) from None
        if not (lo_ok <= lo <= hi_ok and lo_ok <= hi <= hi_ok):
            raise scpi_error(-222)
        if len(out) + abs(hi - lo) + 1 > MAX_LIST_ITEMS:
            raise scpi_error(-223)
        step = 1 if hi >= lo else -1
        out.extend(range(lo, hi + step, step))
    return out


def definite_block(payload: str) -> str:
    """IEEE 488.2 definite-length block ``#<d><len><payload>`` of an ASCII payload (empty → ``#10``)."""
    size = str(len(payload))
    return f"#{len(size)}{size}{payload}"


def expect_count(args: Sequence[str], n: int) -> None:
    """Raise -109 when fewer than ``n`` parameters, -108 when more."""
    if len(args) < n:
        raise scpi_error(-109)
    if len(args) > n:
        raise scpi_error(-108)


def parse_float(text: str, lo: float = float("-inf"), hi: float = float("inf")) -> float:
    """A finite numeric parameter in [lo, hi]; -224 if not a number, -222 if not finite or out of range."""
    try:
        value = float(text)
    except ValueError:
        raise scpi_error(-224) from None
    if not math.isfinite(value) or not lo <= value <= hi:
        raise scpi_error(-222)
    return value


def parse_int(text: str, lo: int, hi: int) -> int:
    """An integer parameter in [lo, hi]; -224 if not an integer, -222 if out of range."""
    value = parse_float(text)
    if value != int(value):
        raise scpi_error(-224)
    if not lo <= int(value) <= hi:
        raise scpi_error(-222)
    return int(value)


E = TypeVar("E")


def parse_choice(text: str, choices: Callable[[str], E]) -> E:
    """An enumerated parameter (e.g. a ``StrEnum`` class); -224 when not one of them."""
    try:
        return choices(text.strip().upper())
    except ValueError:
        raise scpi_error(-224) from None


# ----------
# Command table and dispatch


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One accepted command: header in SCPI case form (``SEQuence:STEP:DEFine``; ``A|B`` alternatives)."""

    header: str
    query: bool
    handler: str
    ext: bool
    description: str

    def node_forms(self) -> list[frozenset[str]]:
        """Accepted upper-case spellings of each header node (short and long forms)."""
        nodes = []
        for node in self.header.lstrip(":").split(":"):
            forms: set[str] = set()
            for alt in node.split("|"):
                forms.add(alt.upper())
                short = "".join(ch for ch in alt if not ch.islower())
                forms.add(short.upper())
            nodes.append(frozenset(forms))
        return nodes

    @property
    def short(self) -> str:
        """Canonical short form, e.g. ``SEQ:STEP:DEF`` or ``*IDN?``."""
        nodes = ["".join(ch for ch in node.split("|")[-1] if not ch.islower()) for node in self.header.split(":")]
        return ":".join(nodes) + ("?" if self.query else "")


Handler = Callable[[list[str], object], str | None]


class Ieee488Instrument:
    """Base of a simulated instrument: error queue and the IEEE 488.2 common commands."""

    def __init__(self) -> None:
        self.errors = ErrorQueue()
        #: Lines without a query to drop unread (``SIM:FAULT:LOSE``): what a connection closing under them loses.
        self.lines_to_lose = 0

    def idn(self) -> str:
        """``*IDN?`` reply."""
        raise NotImplementedError

    def reset(self) -> None:
        """``*RST``."""
        raise NotImplementedError

    def q_idn(self, args: list[str], client: object) -> str:
        expect_count(args, 0)
        return self.idn()

    def c_rst(self, args: list[str], client: object) -> None:
        expect_count(args, 0)
        self.reset()

    def c_cls(self, args: list[str], client: object) -> None:
        expect_count(args, 0)
        self.errors.clear()

    def q_opc(self, args: list[str], client: object) -> str:
        expect_count(args, 0)
        return "1"

    def q_esr(self, args: list[str], client: object) -> str:
        expect_count(args, 0)
        esr, self.errors.esr = self.errors.esr, 0  # reading the ESR clears it (IEEE 488.2)
        return str(esr)

    def q_stb(self, args: list[str], client: object) -> str:
        expect_count(args, 0)
        return str(self.errors.stb)

    def q_syst_err(self, args: list[str], client: object) -> str:
        expect_count(args, 0)
        return format_error(self.errors.pop())


IEEE488_COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec("*IDN", True, "q_idn", False, "Identification: maker,model,serial,version"),
    CommandSpec("*RST", False, "c_rst", False, "Reset: abort all cells, clear sequences, cells, log, watchdog"),
    CommandSpec("*CLS", False, "c_cls", False, "Clear the error queue and the event status register"),
    CommandSpec("*OPC", True, "q_opc", False, "Operation complete: always 1 (commands complete in order)"),
    CommandSpec("*ESR", True, "q_esr", False, "Event status register (32 command, 16 execution, 4 query error)"),
    CommandSpec("*STB", True, "q_stb", False, "Status byte (4 error queue not empty, 32 ESR summary)"),
    CommandSpec("SYSTem:ERRor", True, "q_syst_err", False, 'Pop the oldest error: code,"message"'),
)


class Dispatcher:
    """Executes SCPI lines against an instrument object according to a command table.

    ``recorder``, when set, is called with the header of every command received (as sent, before it is looked up):
    the tests use it to see every command a host wrote.
    """

    def __init__(self, table: Iterable[CommandSpec], target: Ieee488Instrument) -> None:
        self.target = target
        self.recorder: Callable[[str], None] | None = None
        self._specs: dict[tuple[int, bool], list[tuple[list[frozenset[str]], CommandSpec, Handler]]] = {}
        for spec in table:
            forms = spec.node_forms()
            handler: Handler = getattr(target, spec.handler)
            self._specs.setdefault((len(forms), spec.query), []).append((forms, spec, handler))
        self._cache: dict[str, tuple[CommandSpec, Handler] | None] = {}

    def resolve(self, header: str) -> CommandSpec | None:
        """The table entry that ``header`` names (any case, short or long form, ``?`` for queries), or None."""
        found = self._lookup(header)
        return None if found is None else found[0]

    def _lookup(self, header: str) -> tuple[CommandSpec, Handler] | None:
        key = header.upper()
        if key in self._cache:
            return self._cache[key]
        query = key.endswith("?")
        nodes = key.rstrip("?").lstrip(":").split(":")
        found = None
        for forms, spec, handler in self._specs.get((len(nodes), query), []):
            if all(node in allowed for node, allowed in zip(nodes, forms, strict=True)):
                found = (spec, handler)
                break
        if len(self._cache) < 4096:  # bounded: a client sending random headers must not grow memory
            self._cache[key] = found
        return found

    def execute(self, line: str, client: object = None) -> str | None:
        """Run every command of ``line``; the joined replies of its queries, or None when there are none."""
        if self.target.lines_to_lose > 0 and "?" not in line:
            self.target.lines_to_lose -= 1
            return None
        replies: list[str] = []
        for command in split_compound(line):
            header, *rest = command.split(None, 1)
            if self.recorder is not None:
                self.recorder(header)
            found = self._lookup(header)
            if found is None:
                self.target.errors.push(-113)
                continue
            spec, handler = found
            try:
                reply = handler(split_params(rest[0] if rest else ""), client)
            except ScpiError as exc:
                self.target.errors.push(exc.code)
                continue
            if spec.query and reply is not None:
                replies.append(reply)
        return ";".join(replies) if replies else None
