"""One simulated chamber DAQ (DAQ970A dialect) served over real TCP: the chamber model and its commands on the
reusable :class:`~formation.sim.server.InstrumentServer` (connections, ticker, link faults)."""

from __future__ import annotations

from formation.clock import Clock
from formation.sim.chamber import ChamberModel
from formation.sim.chamber_commands import COMMAND_TABLE, ChamberCommands
from formation.sim.scpi import Dispatcher
from formation.sim.server import InstrumentServer


class ChamberServer(InstrumentServer):
    """Async context manager serving one :class:`ChamberModel` through its DAQ on ``host:port`` (0 = ephemeral).

    Thermocouple k is channel ``101 + k``, valve k channel ``301 + k`` (hot valves first); docs/daq970a-dialect.md.
    """

    def __init__(
        self,
        model: ChamberModel,
        clock: Clock,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "chamber",
        tc_type: str = "K",
    ) -> None:
        super().__init__(clock, model.advance_to, host=host, port=port, name=name)
        self.model = model
        self.commands = ChamberCommands(model, faults=self, serial=f"SIM-{name}", tc_type=tc_type)
        self.dispatcher = Dispatcher(COMMAND_TABLE, self.commands)
