"""One SCPI session over one pyvisa resource (pyvisa-py backend): atomic exchanges, typed errors, reconnect.

Blocking VISA calls run on one worker thread per session; an asyncio lock makes every write+read pair
atomic. pyvisa and socket exceptions become :mod:`formation.errors` in exactly one place,
:meth:`ScpiSession._translate`.

Resynchronisation: after a timeout the session closes the connection and opens a fresh one before the
next command. Draining pending input "briefly" cannot tell how late a stalled reply will be; a new
connection guarantees that a late reply can never be taken as the answer to the next query.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

import pyvisa
from pyvisa import constants
from pyvisa.errors import InvalidSession, VisaIOError

from formation.errors import (
    InstrumentDisconnected,
    InstrumentError,
    InstrumentProtocolError,
    InstrumentTimeout,
    ScpiError,
)

T = TypeVar("T")

#: Delays (wall seconds) before each reconnect attempt; the number of entries bounds the attempts.
DEFAULT_BACKOFF_S: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0, 2.0)
#: Error queue depth of the dialect (32) plus one: a drain never loops forever on a broken instrument.
MAX_ERROR_DRAIN = 33
_ERROR_RE = re.compile(r'^\s*([+-]?\d+)\s*,\s*"(.*)"\s*$')
_BLOCK_CHUNK_BYTES = 1 << 20


class VisaResource(Protocol):
    """The part of pyvisa's MessageBasedResource the session uses (a scripted resource also fits)."""

    timeout: float | None
    read_termination: str | None

    def write(self, message: str) -> int: ...

    def read(self) -> str: ...

    def read_bytes(self, count: int, chunk_size: int | None = None, break_on_termchar: bool = False) -> bytes: ...

    def close(self) -> None: ...


#: Opens a resource: ``factory(resource, visa_timeout_s)`` -> an open resource with "\n" terminations.
ResourceFactory = Callable[[str, float], VisaResource]


class _NotSent(Exception):
    """The link was found closed before anything was sent: resending is safe for any command."""


_RM_LOCK = threading.Lock()
_RM: pyvisa.ResourceManager | None = None


def _resource_manager() -> pyvisa.ResourceManager:
    """The process-wide pyvisa-py resource manager (shared; see ``ScpiSession._close_sync``)."""
    global _RM
    with _RM_LOCK:
        if _RM is not None:
            try:
                _ = _RM.session
            except InvalidSession:
                # pyvisa hands out one ResourceManager per library, so any other code's rm.close() closes
                # ours too: open a fresh one.
                _RM = None
        if _RM is None:
            _RM = pyvisa.ResourceManager("@py")
        return _RM


class ScpiSession:
    """An async SCPI session on one VISA resource (``TCPIP0::host::port::SOCKET``)."""

    def __init__(
        self,
        resource: str,
        *,
        timeout_s: float = 2.0,
        name: str | None = None,
        resource_factory: ResourceFactory | None = None,
        backoff_s: Sequence[float] = DEFAULT_BACKOFF_S,
    ) -> None:
        self.resource = resource
        self.name = name
        self.timeout_s = float(timeout_s)
        # The VISA timeout fires first; the asyncio guard only catches a worker that is stuck beyond it
        # (a block read is a few VISA reads, hence the multiple).
        self.guard_timeout_s = 4.0 * self.timeout_s + 1.0
        self.backoff_s = tuple(backoff_s)
        self.reconnects = 0
        self.timeouts = 0
        self._factory = resource_factory or self._open_visa
        self._rm: pyvisa.ResourceManager | None = None
        self._res: VisaResource | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._lock = asyncio.Lock()
        self._opened = False
        self._resync = False

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """Whether the session is open (it may be between connections, reconnecting on next use)."""
        return self._opened

    async def open(self) -> None:
        """Open the connection (one attempt); raises InstrumentDisconnected if it cannot."""
        if self._opened:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"scpi-{self.name or 'x'}")
        self._opened = True
        try:
            async with self._lock:
                await self._worker(self._connect_sync, command=None)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the connection and stop the worker thread."""
        if self._executor is None:
            return
        self._opened = False
        executor, self._executor = self._executor, None
        loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):
            await loop.run_in_executor(executor, self._close_sync, True)
        executor.shutdown(wait=True)

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def reconnect(self) -> None:
        """Close the connection and open a new one, with bounded backoff."""
        async with self._lock:
            await self._reconnect_locked()

    # -- I/O -------------------------------------------------------------------------------------

    async def write(self, cmd: str, *, retry: bool = False) -> None:
        """Send a command with no reply; resent after a reconnect only if ``retry`` (not idempotent)."""
        await self._exchange(cmd, lambda res: res.write(cmd), retry=retry)

    async def query(self, cmd: str, *, retry: bool = True) -> str:
        """Send a query and return its reply line (stripped); idempotent queries are retried once."""

        def run(res: VisaResource) -> str:
            res.write(cmd)
            return res.read().strip()

        return await self._exchange(cmd, run, retry=retry)

    async def query_block(self, cmd: str, *, retry: bool = True) -> bytes:
        """Send a query answered by an IEEE 488.2 definite-length block; return the payload bytes."""
        return await self._exchange(cmd, lambda res: self._read_block(res, cmd), retry=retry)

    async def check_errors(self, command: str | None = None) -> list[ScpiError]:
        """Drain the error queue (``SYST:ERR?`` until ``+0``); ``command`` is attached as context."""
        errors: list[ScpiError] = []
        for _ in range(MAX_ERROR_DRAIN):
            reply = await self.query("SYST:ERR?")
            match = _ERROR_RE.match(reply)
            if match is None:
                raise self._protocol_error(f"unparseable error-queue reply {reply!r}", "SYST:ERR?")
            code = int(match.group(1))
            if code == 0:
                return errors
            errors.append(ScpiError(code, match.group(2), command, resource=self.resource, cabinet=self.name))
        raise self._protocol_error(f"error queue not empty after {MAX_ERROR_DRAIN} reads", "SYST:ERR?")

    async def raise_on_errors(self, command: str | None = None) -> None:
        """Drain the error queue and raise the first error found (the rest are in its ``others``)."""
        errors = await self.check_errors(command)
        if errors:
            first = errors[0]
            first.others = errors[1:]  # type: ignore[attr-defined]
            raise first

    # -- internals -------------------------------------------------------------------------------

    async def _exchange(self, cmd: str, fn: Callable[[VisaResource], T], *, retry: bool) -> T:
        if not self._opened:
            raise InstrumentDisconnected("session is not open", resource=self.resource, command=cmd)
        async with self._lock:
            retried = False
            for _ in range(len(self.backoff_s) + 2):
                if self._res is None or self._resync:
                    await self._reconnect_locked()
                try:
                    return await self._worker(self._call_sync, fn, cmd, command=cmd)
                except _NotSent:
                    continue  # nothing reached the instrument: reconnect and send, whatever the command
                except InstrumentDisconnected:
                    if retried or not retry:
                        raise
                    retried = True
            raise InstrumentDisconnected(
                "the link keeps closing before a command can be sent",
                resource=self.resource,
                command=cmd,
                cabinet=self.name,
            )

    async def _reconnect_locked(self) -> None:
        last: InstrumentError | None = None
        for delay_s in self.backoff_s:
            if delay_s > 0:
                # Link backoff is wall time whatever the simulation scale, like the instrument's watchdog.
                await asyncio.sleep(delay_s)
            try:
                await self._worker(self._connect_sync, command=None)
            except InstrumentDisconnected as exc:
                last = exc
                continue
            self.reconnects += 1
            return
        raise InstrumentDisconnected(
            f"reconnect failed after {len(self.backoff_s)} attempts ({last})",
            resource=self.resource,
            cabinet=self.name,
        ) from last

    async def _worker(self, fn: Callable[..., T], *args: Any, command: str | None) -> T:
        """Run ``fn`` on the session's worker thread, translating every lower-layer error."""
        if self._executor is None:
            raise InstrumentDisconnected("session is closed", resource=self.resource, command=command)
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, fn, *args)
        try:
            return await asyncio.wait_for(future, self.guard_timeout_s)
        except (_NotSent, InstrumentError):
            raise
        except TimeoutError as exc:
            # The worker is stuck past the VISA timeout; the next exchange reconnects (on the same thread,
            # so only once the stuck call has returned).
            self._resync = True
            self.timeouts += 1
            raise InstrumentTimeout(
                f"no reply within {self.guard_timeout_s:g} s",
                resource=self.resource,
                command=command,
                cabinet=self.name,
            ) from exc

    def _call_sync(self, fn: Callable[[VisaResource], T], command: str) -> T:
        res = self._res
        if res is None:
            raise _NotSent
        if self._peer_closed(res):
            self._close_sync()
            raise _NotSent
        try:
            return fn(res)
        except InstrumentProtocolError:
            self._close_sync()  # the rest of a malformed reply may still be in flight: resynchronise
            raise
        except (VisaIOError, InvalidSession, OSError, UnicodeDecodeError) as exc:
            raise self._translate(exc, res, command) from exc
        except (TypeError, AttributeError) as exc:
            # pyvisa-py drops its socket object when the peer closes mid-read, then fails inside select()
            # with a TypeError: that is a lost link, not a bug of ours.
            self._close_sync()
            raise InstrumentDisconnected(
                f"link lost: {exc}", resource=self.resource, cabinet=self.name, command=command
            ) from exc

    def _translate(self, exc: Exception, res: VisaResource | None, command: str | None) -> InstrumentError:
        """The one place where pyvisa / socket / decoding exceptions become formation errors."""
        ctx: dict[str, Any] = {"resource": self.resource, "cabinet": self.name, "command": command}
        if isinstance(exc, UnicodeDecodeError):
            return InstrumentProtocolError(f"reply is not ASCII: {exc}", **ctx)
        visa_timeout = isinstance(exc, VisaIOError) and exc.error_code == constants.StatusCode.error_timeout
        timed_out = visa_timeout or isinstance(exc, TimeoutError)
        # pyvisa-py reports a peer that closed the socket as a read timeout: probe the link to tell.
        closed = res is None or self._peer_closed(res)
        self._close_sync()
        if timed_out and not closed:
            self.timeouts += 1
            return InstrumentTimeout(f"no reply within {self.timeout_s:g} s", **ctx)
        if res is None:
            return InstrumentDisconnected(f"cannot open: {exc}", **ctx)
        if isinstance(exc, VisaIOError | InvalidSession | OSError) or closed:
            return InstrumentDisconnected(f"link lost: {exc}", **ctx)
        return InstrumentProtocolError(f"unexpected transport failure: {exc!r}", **ctx)

    def _connect_sync(self) -> None:
        self._close_sync()
        try:
            res = self._factory(self.resource, self.timeout_s)
        except Exception as exc:
            # pyvisa-py raises a bare Exception("could not connect: ...") when the socket cannot be made.
            raise self._translate(exc, None, None) from exc
        if self._peer_closed(res):
            # pyvisa-py's non-blocking connect "succeeds" on a refused port; the probe sees the reset.
            with contextlib.suppress(Exception):
                res.close()
            raise InstrumentDisconnected("connection refused or closed", resource=self.resource, cabinet=self.name)
        self._res = res
        self._resync = False

    def _close_sync(self, close_rm: bool = False) -> None:
        res, self._res = self._res, None
        if res is not None:
            with contextlib.suppress(Exception):
                res.close()
        # The resource manager is never closed here: pyvisa shares one library session between every
        # ResourceManager("@py") of the process, so closing it would cut every other session's reconnects.
        if close_rm:
            self._rm = None

    def _open_visa(self, resource: str, timeout_s: float) -> VisaResource:
        """The default factory: open ``resource`` with pyvisa-py, "\\n" terminations, the VISA timeout."""
        if self._rm is None:
            self._rm = _resource_manager()
        timeout_ms = round(timeout_s * 1000)
        res = self._rm.open_resource(
            resource,
            open_timeout=timeout_ms,
            read_termination="\n",
            write_termination="\n",
            timeout=timeout_ms,
        )
        _no_delay(res)
        return res  # type: ignore[return-value]

    @staticmethod
    def _peer_closed(res: VisaResource) -> bool:
        """Whether the instrument closed the link (EOF or reset pending on the socket)."""
        probe = getattr(res, "peer_closed", None)
        if callable(probe):
            return bool(probe())
        try:
            sock = res.visalib.sessions[res.session].interface  # type: ignore[attr-defined]
        except (AttributeError, KeyError, TypeError, InvalidSession):
            return False
        if not isinstance(sock, socket.socket):
            return False
        try:
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def _read_block(self, res: VisaResource, cmd: str) -> bytes:
        """Write ``cmd`` and read ``#<d><len><payload>\\n``; the payload may hold newlines."""
        res.write(cmd)
        head = res.read_bytes(2)
        if head[:1] != b"#" or not head[1:2].isdigit() or head[1:2] == b"0":
            raise self._protocol_error(f"not a definite-length block header: {head!r}", cmd)
        digits = int(head[1:2])
        size_text = res.read_bytes(digits)
        if not size_text.isdigit():
            raise self._protocol_error(f"bad block length {size_text!r}", cmd)
        size = int(size_text)
        # Without the terminator as end-of-read, pyvisa-py reads the payload in chunks, not line by line.
        saved = res.read_termination
        res.read_termination = None
        try:
            payload = res.read_bytes(size, chunk_size=_BLOCK_CHUNK_BYTES) if size else b""
            tail = res.read_bytes(1)
        finally:
            res.read_termination = saved
        if tail != b"\n":
            raise self._protocol_error(f"block not followed by a newline (got {tail!r})", cmd)
        return payload

    def _protocol_error(self, message: str, command: str | None) -> InstrumentProtocolError:
        return InstrumentProtocolError(message, resource=self.resource, command=command, cabinet=self.name)


def _no_delay(res: object) -> None:
    """Set TCP_NODELAY on a pyvisa-py socket resource. With Nagle's algorithm on, a write followed by a query
    waits for the peer's delayed ACK (about 40 ms a pair): a valve write then costs a control period at ×1000."""
    # Another backend or no socket (a serial or GPIB resource): leave it as it is.
    with contextlib.suppress(AttributeError, KeyError, TypeError, OSError):
        sock = res.visalib.sessions[res.session].interface  # type: ignore[attr-defined]
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
