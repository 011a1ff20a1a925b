"""One simulated cabinet served over real TCP (raw SCPI socket, ``\\n`` terminated), ticker and watchdog."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from types import TracebackType

from formation.clock import Clock
from formation.sim.commands import COMMAND_TABLE, CabinetCommands
from formation.sim.cycler import CabinetModel
from formation.sim.scpi import Dispatcher

log = logging.getLogger(__name__)

#: Wall seconds between ticker passes (advance the model to the clock, check the watchdog).
TICK_WALL_S = 0.02
_READ_LIMIT = 1 << 20


class CabinetServer:
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
        self.model = model
        self.clock = clock
        self.host = host
        self.name = name
        self.port = port
        self.commands = CabinetCommands(model, faults=self)
        self.dispatcher = Dispatcher(COMMAND_TABLE, self.commands)
        self.watchdog_trips = 0
        self._server: asyncio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._clients: dict[asyncio.StreamWriter, asyncio.Task[None]] = {}
        # The watchdog guards the host link, so it counts wall seconds whatever the clock scale: monotonic.
        self._last_command_wall = time.monotonic()
        self._stall_until_wall = 0.0

    @property
    def resource(self) -> str:
        """VISA resource string of this cabinet (``TCPIP0::<host>::<port>::SOCKET``)."""
        return f"TCPIP0::{self.host}::{self.port}::SOCKET"

    async def __aenter__(self) -> CabinetServer:
        self.model.advance_to(self.clock.now())
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

    async def _tick_loop(self) -> None:
        while True:
            # Wall-time pacing on purpose: the tick bounds CPU per wall second whatever the clock scale.
            await asyncio.sleep(TICK_WALL_S)
            self.model.advance_to(self.clock.now())
            wdog_s = self.model.watchdog_s
            silent_s = time.monotonic() - self._last_command_wall
            if wdog_s > 0 and silent_s >= wdog_s and self.model.watchdog_abort():
                self.watchdog_trips += 1
                log.warning("%s: watchdog after %.1f s of host silence, cells aborted", self.name, wdog_s)

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
        self.model.advance_to(self.clock.now())
        try:
            return self.dispatcher.execute(line, client)
        except Exception:
            # A handler bug must not take the instrument down; it shows as a command error.
            log.exception("%s: command %r failed", self.name, line)
            self.commands.errors.push(-100)
            return None
