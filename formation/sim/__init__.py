"""The simulated plant: cell population, BT2200-dialect cabinet, DAQ970A-dialect chamber, ageing racks and a
BT3562-dialect OCV/ACIR tester, SCPI over real TCP."""

from formation.sim.chamber import ChamberModel, ChamberParams
from formation.sim.chamber_commands import COMMAND_TABLE as CHAMBER_COMMAND_TABLE
from formation.sim.chamber_commands import ChamberCommands
from formation.sim.chamber_server import ChamberServer
from formation.sim.commands import COMMAND_TABLE, CabinetCommands
from formation.sim.cycler import CabinetModel
from formation.sim.plant import CabinetSpec, ChamberGroup, ChamberSpec, SimulatedPlant, build_cabinet, build_chamber
from formation.sim.rack import RackModel, RackSpec
from formation.sim.scpi import CommandSpec, Dispatcher
from formation.sim.server import CabinetServer, InstrumentServer
from formation.sim.tester import TesterModel, TesterSpec, scanner_channel
from formation.sim.tester_commands import COMMAND_TABLE as TESTER_COMMAND_TABLE
from formation.sim.tester_commands import TesterCommands
from formation.sim.tester_server import TesterServer

__all__ = [
    "CHAMBER_COMMAND_TABLE",
    "COMMAND_TABLE",
    "TESTER_COMMAND_TABLE",
    "CabinetCommands",
    "CabinetModel",
    "CabinetServer",
    "CabinetSpec",
    "ChamberCommands",
    "ChamberGroup",
    "ChamberModel",
    "ChamberParams",
    "ChamberServer",
    "ChamberSpec",
    "CommandSpec",
    "Dispatcher",
    "InstrumentServer",
    "RackModel",
    "RackSpec",
    "SimulatedPlant",
    "TesterCommands",
    "TesterModel",
    "TesterServer",
    "TesterSpec",
    "build_cabinet",
    "build_chamber",
    "scanner_channel",
]
