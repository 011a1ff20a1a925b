"""Simulated instruments served over real TCP (raw SCPI socket, ``\\n`` terminated): the reusable
:class:`InstrumentServer` (connections, ticker, link faults) and :class:`CabinetServer` (one cabinet, its
communication watchdog)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

from formation.clock import Clock
from formation.sim.commands import COMMAND_TABLE, CabinetCommands
from formation.sim.cycler import CabinetModel
from formation.sim.scpi import Dispatcher

log = logging.getLogger(__name__)

#: Wall seconds between ticker passes (advance the model to the clock, check the watchdog).
TICK_WALL_S = 0.02
_READ_LIMIT = 1 << 20


class InstrumentServer:
    """Async context manager serving one simulated instrument on ``host:port`` (port 0 = ephemeral).

    A subclass sets :attr:`dispatcher` (its command table over its handlers) before entering. ``advance`` brings
    the instrument's model to a clock time; it runs on every tick and before every command line, and the plant
    may replace it (to advance a chamber together with the cabinets inside it). Several clients may connect;
    they share the instrument. The link faults (:meth:`drop_other_clients`, :meth:`stall`) are the
    ``FaultHooks`` of the command handlers.
    """

    dispatcher: Dispatcher

    def __init__(
        self,
        clock: Clock,
        advance: Callable[[float], None],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "instrument",
    ) -> None:
        self.clock = clock
        self.advance = advance
        self.host = host
        self.name = name
        self.port = port
        self._server: asyncio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._clients: dict[asyncio.StreamWriter, asyncio.Task[None]] = {}
        # Link faults and the watchdog are about the host link, so they count wall seconds: monotonic.
        self._last_command_wall = time.monotonic()
        self._stall_until_wall = 0.0

    @property
    def resource(self) -> str:
        """VISA resource string of this instrument (``TCPIP0::<host>::<port>::SOCKET``)."""
        return f"TCPIP0::{self.host}::{self.port}::SOCKET"

    async def __aenter__(self) -> Self:
        self.advance(self.clock.now())
        self._server = await asyncio.start_server(self._serve_client, self.host, self.port, limit=_READ_LIMIT)
        self.port = self._server.sockets[0].getsockname()[1]
        self._last_command_wall = time.monotonic()
        self._ticker = asyncio.create_task(self._tick_loop(), name=f"sim-{self.name}-ticker")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._server is not None:
            self._server.close()
        tasks = list(self._clients.values())
        for writer in list(self._clients):
            writer.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # fault hooks (commands.FaultHooks) ----------

    def drop_other_clients(self, client: object) -> None:
        """``SIM:FAULT:DROP``: close every connection but ``client``'s."""
        for writer in list(self._clients):
            if writer is not client:
                writer.close()

    def stall(self, seconds: float) -> None:
        """``SIM:FAULT:STALL``: read and answer nothing for ``seconds`` of wall time."""
        self._stall_until_wall = time.monotonic() + seconds

    def clear_faults(self) -> None:
        """``SIM:FAULT:CLE``: end a stall."""
        self._stall_until_wall = 0.0

    # loops ----------

    def on_tick(self) -> None:
        """Called on every tick after the model has advanced (the cabinet checks its watchdog here)."""

    async def _tick_loop(self) -> None:
        while True:
            # Wall-time pacing on purpose: the tick bounds CPU per wall second whatever the clock scale.
            await asyncio.sleep(TICK_WALL_S)
            self.advance(self.clock.now())
            self.on_tick()

    async def _wait_stall(self) -> None:
        while (left := self._stall_until_wall - time.monotonic()) > 0:
            await asyncio.sleep(left)  # a wall-time fault by definition

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients[writer] = task
        try:
            while True:
                raw = await reader.readline()
                if not raw.endswith(b"\n"):
                    break  # EOF (possibly mid-line)
                await self._wait_stall()
                self._last_command_wall = time.monotonic()
                reply = self._execute(raw.decode("ascii", errors="replace").strip(), writer)
                if reply is None:
                    continue
                await self._wait_stall()
                writer.write(reply.encode("ascii", errors="replace") + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass  # the peer went away or sent an absurd line: drop that connection only
        finally:
            self._clients.pop(writer, None)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    def _execute(self, line: str, client: object) -> str | None:
        self.advance(self.clock.now())
        try:
            return self.dispatcher.execute(line, client)
        except Exception:
            # A handler bug must not take the instrument down; it shows as a command error.
            log.exception("%s: command %r failed", self.name, line)
            self.dispatcher.target.errors.push(-100)
            return None


class CabinetServer(InstrumentServer):
    """Async context manager serving one :class:`CabinetModel` on ``host:port`` (port 0 = ephemeral)."""

    def __init__(
        self,
        model: CabinetModel,
        clock: Clock,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "cabinet",
    ) -> None:
        super().__init__(clock, model.advance_to, host=host, port=port, name=name)
        self.model = model
        self.commands = CabinetCommands(model, faults=self)
        self.dispatcher = Dispatcher(COMMAND_TABLE, self.commands)
        self.watchdog_trips = 0

    def on_tick(self) -> None:
        """The communication watchdog: abort every running cell after ``watchdog_s`` wall seconds of silence."""
        wdog_s = self.model.watchdog_s
        silent_s = time.monotonic() - self._last_command_wall
        if wdog_s > 0 and silent_s >= wdog_s and self.model.watchdog_abort():
            self.watchdog_trips += 1
            log.warning("%s: watchdog after %.1f s of host silence, cells aborted", self.name, wdog_s)
