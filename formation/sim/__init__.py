"""The simulated plant: cell population, BT2200-dialect cabinet, SCPI over real TCP."""

from formation.sim.commands import COMMAND_TABLE, CabinetCommands
from formation.sim.cycler import CabinetModel
from formation.sim.plant import CabinetSpec, SimulatedPlant, build_cabinet
from formation.sim.scpi import CommandSpec, Dispatcher
from formation.sim.server import CabinetServer

__all__ = [
    "COMMAND_TABLE",
    "CabinetCommands",
    "CabinetModel",
    "CabinetServer",
    "CabinetSpec",
    "CommandSpec",
    "Dispatcher",
    "SimulatedPlant",
    "build_cabinet",
]
