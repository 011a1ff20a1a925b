"""A scripted pyvisa-like resource for driver unit tests: replays exact command/response pairs.

Not a mock and not the simulator: a :class:`ScriptedInstrument` holds an ordered script of
``(command, reply)`` exchanges and hands out :class:`ScriptedResource` connections (use
``instrument.open`` as the ``resource_factory`` of a :class:`~formation.instruments.scpi.ScpiSession`).
Any command that is not the next one in the script fails the test (:class:`ScriptMismatch`), and
``assert_done()`` fails if exchanges are left over.

Replies model what pyvisa-py does on a real socket:

- ``str``: a reply line (``"\\n"`` appended); ``bytes``: raw bytes as sent (include the terminator);
  ``None``: a command without a reply.
- :data:`TIMEOUT`: no reply; the read raises ``VisaIOError(error_timeout)``.
- :class:`Late`: no reply in time, then the reply arrives late on the same connection (a stale reply a
  session that does not resynchronise would take as the answer to its next query).
- :data:`DROP`: the instrument closes the connection; as with pyvisa-py the read then times out (EOF is
  not reported), ``peer_closed()`` turns true, and further writes raise ``BrokenPipeError``.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from pyvisa import constants
from pyvisa.errors import VisaIOError


class _Event(Enum):
    TIMEOUT = "timeout"
    DROP = "drop"


#: The instrument does not answer this command.
TIMEOUT = _Event.TIMEOUT
#: The instrument closes the connection instead of answering.
DROP = _Event.DROP


@dataclass(frozen=True, slots=True)
class Late:
    """A reply that arrives only after the reader has timed out."""

    reply: str | bytes


Reply = str | bytes | None | _Event | Late


class ScriptMismatch(AssertionError):
    """The code under test sent a command the script did not expect."""


class ScriptedInstrument:
    """An ordered script of exchanges shared by every connection opened on it."""

    def __init__(self, exchanges: Iterable[tuple[str, Reply]] = (), *, refuse_opens: int = 0) -> None:
        self._script: deque[tuple[str, Reply]] = deque(exchanges)
        self._lock = threading.Lock()
        self.refuse_opens = refuse_opens
        self.opens = 0
        self.sent: list[str] = []
        self.failures: list[str] = []

    def expect(self, command: str, reply: Reply = None) -> None:
        """Append one exchange to the script."""
        self._script.append((command, reply))

    def open(self, resource: str, timeout_s: float) -> ScriptedResource:
        """Open a connection (the ``resource_factory`` signature of ScpiSession)."""
        if self.refuse_opens > 0:
            self.refuse_opens -= 1
            raise ConnectionRefusedError(111, f"scripted refusal of {resource}")
        self.opens += 1
        return ScriptedResource(self, resource, timeout_s)

    def assert_done(self) -> None:
        """Fail if a command was unexpected or an exchange of the script was never sent."""
        assert not self.failures, self.failures
        assert not self._script, f"script not consumed: {list(self._script)}"

    def _next(self, command: str) -> Reply:
        with self._lock:
            self.sent.append(command)
            if not self._script:
                msg = f"unexpected command {command!r}: script is exhausted"
            elif self._script[0][0] != command:
                msg = f"unexpected command {command!r}: expected {self._script[0][0]!r}"
            else:
                return self._script.popleft()[1]
            self.failures.append(msg)
            raise ScriptMismatch(msg)


class ScriptedResource:
    """One scripted connection with the pyvisa message-based API the session uses."""

    def __init__(self, instrument: ScriptedInstrument, resource: str, timeout_s: float) -> None:
        self._instrument = instrument
        self.resource_name = resource
        self.timeout: float | None = timeout_s * 1000.0
        self.read_termination: str | None = "\n"
        self.write_termination = "\n"
        self._input = bytearray()
        self._late: bytes | None = None
        self._peer_closed = False
        self.closed = False

    def peer_closed(self) -> bool:
        """Whether the instrument closed this connection (the session's link probe)."""
        return self._peer_closed

    def write(self, message: str) -> int:
        """Send one command; queue its scripted reply."""
        if self.closed:
            raise VisaIOError(constants.StatusCode.error_invalid_object)
        if self._peer_closed:
            raise BrokenPipeError(32, "Broken pipe")
        reply = self._instrument._next(message)
        match reply:
            case None | _Event.TIMEOUT:
                pass
            case _Event.DROP:
                self._peer_closed = True
            case Late(late):
                self._late = late.encode() + b"\n" if isinstance(late, str) else late
            case str():
                self._input += reply.encode() + b"\n"
            case bytes():
                self._input += reply
        return len(message) + 1

    def read(self) -> str:
        """Read one line, without its terminator."""
        end = self._input.find(b"\n")
        if end < 0:
            self._time_out()
        line = bytes(self._input[:end])
        del self._input[: end + 1]
        return line.decode("ascii")

    def read_bytes(self, count: int, chunk_size: int | None = None, break_on_termchar: bool = False) -> bytes:
        """Read exactly ``count`` bytes (newlines included)."""
        if len(self._input) < count:
            self._time_out()
        data = bytes(self._input[:count])
        del self._input[:count]
        return data

    def close(self) -> None:
        """Close the connection."""
        self.closed = True

    def _time_out(self) -> None:
        # A late reply lands only after this read has given up, as on a real stalled link.
        if self._late is not None:
            self._input += self._late
            self._late = None
        raise VisaIOError(constants.StatusCode.error_timeout)
