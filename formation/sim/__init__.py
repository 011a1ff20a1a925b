"""The simulated plant: cell population, BT2200-dialect cabinet, DAQ970A-dialect chamber, SCPI over real TCP."""

from formation.sim.chamber import ChamberModel, ChamberParams
from formation.sim.chamber_commands import COMMAND_TABLE as CHAMBER_COMMAND_TABLE
from formation.sim.chamber_commands import ChamberCommands
from formation.sim.chamber_server import ChamberServer
from formation.sim.commands import COMMAND_TABLE, CabinetCommands
from formation.sim.cycler import CabinetModel
from formation.sim.plant import CabinetSpec, ChamberGroup, ChamberSpec, SimulatedPlant, build_cabinet, build_chamber
from formation.sim.scpi import CommandSpec, Dispatcher
from formation.sim.server import CabinetServer, InstrumentServer

__all__ = [
    "CHAMBER_COMMAND_TABLE",
    "COMMAND_TABLE",
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
    "SimulatedPlant",
    "build_cabinet",
    "build_chamber",
]
