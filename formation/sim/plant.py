"""The simulated plant: one TCP server per simulated cabinet and per chamber DAQ, started and stopped together.

A cabinet placed in a chamber (``CabinetSpec.chamber``) is advanced together with it (:class:`ChamberGroup`): its
cells see the chamber air as their ambient, and the chamber receives the heat of their cells.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType

from formation.clock import Clock
from formation.sim.cells import PRESETS, CellPopulation
from formation.sim.chamber import ChamberModel, ChamberParams
from formation.sim.chamber_server import ChamberServer
from formation.sim.cycler import CabinetModel
from formation.sim.server import CabinetServer


@dataclass(frozen=True, slots=True)
class CabinetSpec:
    """How to simulate one cabinet: channels, cell preset and population, TCP port (0 = ephemeral).

    The cells' temperature follows ``ambient_c`` (the cabinet's air) through each cell's thermal node; in a
    chamber (``chamber`` names a :class:`ChamberSpec` of the plant) they follow the chamber air instead, from the
    chamber's ambient at the start, and ``ambient_c`` is not used.
    """

    name: str
    channels: int = 256
    preset: str = "ncm21700-5ah"
    seed: int = 0
    port: int = 0
    formed: bool = False
    initial_soc: float = 0.0
    ambient_c: float = 25.0
    defect_fraction: float = 0.03
    watchdog_s: float = 0.0
    #: Longest integration substep while every running cell rests (open circuit integrates exactly).
    max_rest_dt_s: float = 60.0
    #: Name of the chamber the cabinet stands in, or None (the cells then follow ``ambient_c``).
    chamber: str | None = None


@dataclass(frozen=True, slots=True)
class ChamberSpec:
    """How to simulate one chamber and its DAQ: physics, noise seed, TCP port (0 = ephemeral)."""

    name: str
    params: ChamberParams = field(default_factory=ChamberParams)
    seed: int = 0
    port: int = 0
    #: Thermocouple type wired to the DAQ (``MEAS:TEMP?`` must name it).
    tc_type: str = "K"


def build_chamber(spec: ChamberSpec, start_time_s: float) -> ChamberModel:
    """The chamber model described by ``spec``."""
    return ChamberModel(spec.params, start_time_s=start_time_s, seed=spec.seed)


class ChamberGroup:
    """A chamber and the cabinets inside it, advanced together in steps of at most ``coupling_dt_s``.

    Per step: the chamber receives the heat the cells generated in the previous step (``CellPopulation.heat_w``
    summed over every cabinet inside), advances, and each cabinet advances with the mean chamber air over the
    step as its ambient. Every server of the group advances through :meth:`advance_to`.
    """

    def __init__(self, chamber: ChamberModel, cabinets: Sequence[CabinetModel], coupling_dt_s: float = 30.0) -> None:
        if coupling_dt_s <= 0.0:
            raise ValueError(f"coupling_dt_s must be > 0, got {coupling_dt_s}")
        self.chamber = chamber
        self.cabinets = list(cabinets)
        self.coupling_dt_s = coupling_dt_s
        for cabinet in self.cabinets:
            cabinet.ambient_c = chamber.air_c

    def advance_to(self, t_s: float) -> None:
        """Advance the chamber and every cabinet inside it to ``t_s`` (clock seconds)."""
        while t_s - self.chamber.time_s > 1e-9:
            t1 = min(t_s, self.chamber.time_s + self.coupling_dt_s)
            self.chamber.cell_heat_w = sum(float(cabinet.cells.heat_w.sum()) for cabinet in self.cabinets)
            air0_c = self.chamber.air_c
            self.chamber.advance_to(t1)
            for cabinet in self.cabinets:
                cabinet.ambient_c = 0.5 * (air0_c + self.chamber.air_c)
                cabinet.advance_to(t1)
        for cabinet in self.cabinets:
            cabinet.advance_to(t_s)  # a cabinet that started later than its chamber catches up


def build_cabinet(spec: CabinetSpec, start_time_s: float) -> CabinetModel:
    """The cabinet model (with its cell population) described by ``spec``."""
    try:
        preset = PRESETS[spec.preset]
    except KeyError:
        raise ValueError(f"unknown cell preset {spec.preset!r}; known: {', '.join(sorted(PRESETS))}") from None
    cells = CellPopulation(
        preset,
        spec.channels,
        seed=spec.seed,
        formed=spec.formed,
        initial_soc=spec.initial_soc,
        ambient_c=spec.ambient_c,
        defect_fraction=spec.defect_fraction,
    )
    model = CabinetModel(
        spec.channels,
        cells,
        start_time_s=start_time_s,
        ambient_c=spec.ambient_c,
        max_rest_dt_s=spec.max_rest_dt_s,
        serial=f"SIM-{spec.name}",
    )
    model.watchdog_s = spec.watchdog_s
    return model


class SimulatedPlant:
    """Async context manager running every cabinet of ``specs`` and every chamber of ``chambers`` on its own TCP
    port, sharing ``clock``."""

    def __init__(
        self,
        specs: Sequence[CabinetSpec],
        clock: Clock,
        host: str = "127.0.0.1",
        *,
        chambers: Sequence[ChamberSpec] = (),
    ) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"cabinet names must be unique, got {names}")
        chamber_names = [c.name for c in chambers]
        if len(set(chamber_names)) != len(chamber_names):
            raise ValueError(f"chamber names must be unique, got {chamber_names}")
        for spec in specs:
            if spec.chamber is not None and spec.chamber not in chamber_names:
                raise ValueError(f"cabinet {spec.name!r} stands in unknown chamber {spec.chamber!r}")
        self.specs = list(specs)
        self.chamber_specs = list(chambers)
        self.clock = clock
        self.host = host
        self.cabinets: dict[str, CabinetServer] = {}
        self.chambers: dict[str, ChamberServer] = {}
        self.groups: dict[str, ChamberGroup] = {}
        self._stack = contextlib.AsyncExitStack()

    @property
    def resources(self) -> dict[str, str]:
        """VISA resource string per cabinet name."""
        return {name: server.resource for name, server in self.cabinets.items()}

    @property
    def chamber_resources(self) -> dict[str, str]:
        """VISA resource string per chamber name (its DAQ)."""
        return {name: server.resource for name, server in self.chambers.items()}

    async def __aenter__(self) -> SimulatedPlant:
        start_s = self.clock.now()
        chambers = {c.name: (c, build_chamber(c, start_s)) for c in self.chamber_specs}
        cabinets: list[tuple[CabinetSpec, CabinetModel]] = []
        for spec in self.specs:
            if spec.chamber is not None:
                # The cells start at the chamber's temperature, not at the cabinet's own ambient.
                spec = dataclasses.replace(spec, ambient_c=chambers[spec.chamber][1].air_c)
            cabinets.append((spec, build_cabinet(spec, start_s)))
        for name, (_, chamber) in chambers.items():
            inside = [model for spec, model in cabinets if spec.chamber == name]
            self.groups[name] = ChamberGroup(chamber, inside)
        async with contextlib.AsyncExitStack() as stack:
            for name, (c_spec, chamber) in chambers.items():
                c_server = ChamberServer(
                    chamber, self.clock, host=self.host, port=c_spec.port, name=name, tc_type=c_spec.tc_type
                )
                c_server.advance = self.groups[name].advance_to
                self.chambers[name] = await stack.enter_async_context(c_server)
            for spec, model in cabinets:
                server = CabinetServer(model, self.clock, host=self.host, port=spec.port, name=spec.name)
                if spec.chamber is not None:
                    server.advance = self.groups[spec.chamber].advance_to
                self.cabinets[spec.name] = await stack.enter_async_context(server)
            self._stack = stack.pop_all()  # every server started: keep them past this block
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()
