"""One simulated OCV/ACIR tester (BT3562 dialect) and its scanner served over real TCP: the tester model and its
commands on the reusable :class:`~formation.sim.server.InstrumentServer` (connections, ticker, link faults)."""

from __future__ import annotations

from collections.abc import Callable

from formation.clock import Clock
from formation.sim.scpi import Dispatcher
from formation.sim.server import InstrumentServer
from formation.sim.tester import TesterModel
from formation.sim.tester_commands import COMMAND_TABLE, CabinetLookup, TesterCommands


class TesterServer(InstrumentServer):
    """Async context manager serving one :class:`TesterModel` on ``host:port`` (0 = ephemeral).

    ``advance`` brings the tester's racks to a clock time (the plant advances racks in a chamber with it);
    ``cabinets`` finds a cabinet model for ``SIM:RACK:LOAD``. docs/bt3562-dialect.md.
    """

    def __init__(
        self,
        model: TesterModel,
        clock: Clock,
        advance: Callable[[float], None],
        *,
        cabinets: CabinetLookup | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "tester",
    ) -> None:
        super().__init__(clock, advance, host=host, port=port, name=name)
        self.model = model
        self.commands = TesterCommands(model, cabinets, faults=self, serial=f"SIM-{name}", clock_s=clock.now)
        self.dispatcher = Dispatcher(COMMAND_TABLE, self.commands)
