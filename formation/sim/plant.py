"""The simulated plant: one TCP server per simulated cabinet, chamber DAQ and OCV/ACIR tester, started and stopped
together.

A cabinet placed in a chamber (``CabinetSpec.chamber``) is advanced together with it (:class:`ChamberGroup`): its
cells see the chamber air as their ambient, and the chamber receives the heat of their cells. Ageing racks
(``RackSpec``) stand in a chamber the same way; a tester (``TesterSpec``) reads the racks its scanner reaches, and
moves cells from a cabinet onto a rack (``SIM:RACK:LOAD``) with their whole state.
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
from formation.sim.rack import RackModel, RackSpec
from formation.sim.readings import CabinetReadings, Reporter
from formation.sim.server import CabinetServer
from formation.sim.tester import TesterModel, TesterSpec
from formation.sim.tester_server import TesterServer


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
    #: Share of the cells given a 10–50 µA micro-short (the preset's ``microshort_*_a``), drawn among good cells.
    microshort_fraction: float = 0.0
    #: Whether readings carry the instrument's noise and resolution (``readings.CabinetReadings``).
    reading_noise: bool = True
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

    def __init__(
        self,
        chamber: ChamberModel,
        cabinets: Sequence[CabinetModel],
        coupling_dt_s: float = 30.0,
        *,
        racks: Sequence[RackModel] = (),
    ) -> None:
        if coupling_dt_s <= 0.0:
            raise ValueError(f"coupling_dt_s must be > 0, got {coupling_dt_s}")
        self.chamber = chamber
        self.cabinets = list(cabinets)
        #: Racks in the chamber: open circuit, so no heat, but their cells follow the air.
        self.racks = list(racks)
        self.coupling_dt_s = coupling_dt_s
        for cabinet in self.cabinets:
            cabinet.ambient_c = chamber.air_c
        for rack in self.racks:
            rack.ambient_c = chamber.air_c

    def advance_to(self, t_s: float) -> None:
        """Advance the chamber and every cabinet and rack inside it to ``t_s`` (clock seconds)."""
        members: list[CabinetModel | RackModel] = [*self.cabinets, *self.racks]
        while t_s - self.chamber.time_s > 1e-9:
            t1 = min(t_s, self.chamber.time_s + self.coupling_dt_s)
            self.chamber.cell_heat_w = sum(float(cabinet.cells.heat_w.sum()) for cabinet in self.cabinets)
            air0_c = self.chamber.air_c
            self.chamber.advance_to(t1)
            for member in members:
                member.ambient_c = 0.5 * (air0_c + self.chamber.air_c)
                member.advance_to(t1)
        for member in members:
            member.advance_to(t_s)  # a member that started later than its chamber catches up


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
        microshort_fraction=spec.microshort_fraction,
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
    model.reporter = Reporter(CabinetReadings() if spec.reading_noise else None, seed=spec.seed)
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
        racks: Sequence[RackSpec] = (),
        testers: Sequence[TesterSpec] = (),
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
        _check_racks(racks, testers, chamber_names)
        self.specs = list(specs)
        self.chamber_specs = list(chambers)
        self.rack_specs = list(racks)
        self.tester_specs = list(testers)
        self.clock = clock
        self.host = host
        self.cabinets: dict[str, CabinetServer] = {}
        self.chambers: dict[str, ChamberServer] = {}
        self.testers: dict[str, TesterServer] = {}
        self.racks: dict[str, RackModel] = {}
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

    @property
    def tester_resources(self) -> dict[str, str]:
        """VISA resource string per tester name."""
        return {name: server.resource for name, server in self.testers.items()}

    def _advance_rack(self, rack: RackModel, t_s: float) -> None:
        chamber = rack.spec.chamber
        if chamber is not None:
            self.groups[chamber].advance_to(t_s)
        else:
            rack.advance_to(t_s)

    def _cabinet_now(self, name: str) -> CabinetModel:
        """The cabinet ``name``, advanced to the clock's now (KeyError when the plant has none)."""
        server = self.cabinets[name]
        server.advance(self.clock.now())
        return server.model

    async def __aenter__(self) -> SimulatedPlant:
        start_s = self.clock.now()
        chambers = {c.name: (c, build_chamber(c, start_s)) for c in self.chamber_specs}
        cabinets: list[tuple[CabinetSpec, CabinetModel]] = []
        for spec in self.specs:
            if spec.chamber is not None:
                # The cells start at the chamber's temperature, not at the cabinet's own ambient.
                spec = dataclasses.replace(spec, ambient_c=chambers[spec.chamber][1].air_c)
            cabinets.append((spec, build_cabinet(spec, start_s)))
        for r_spec in self.rack_specs:
            air_c = chambers[r_spec.chamber][1].air_c if r_spec.chamber is not None else None
            self.racks[r_spec.name] = RackModel(r_spec, start_time_s=start_s, ambient_c=air_c)
        for name, (_, chamber) in chambers.items():
            inside = [model for spec, model in cabinets if spec.chamber == name]
            racks = [rack for rack in self.racks.values() if rack.spec.chamber == name]
            self.groups[name] = ChamberGroup(chamber, inside, racks=racks)
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
            for t_spec in self.tester_specs:
                t_racks = [self.racks[name] for name in t_spec.racks]

                def advance(t_s: float, racks: list[RackModel] = t_racks) -> None:
                    for rack in racks:
                        self._advance_rack(rack, t_s)

                t_server = TesterServer(
                    TesterModel(t_spec, t_racks),
                    self.clock,
                    advance,
                    cabinets=self._cabinet_now,
                    host=self.host,
                    port=t_spec.port,
                    name=t_spec.name,
                )
                self.testers[t_spec.name] = await stack.enter_async_context(t_server)
            self._stack = stack.pop_all()  # every server started: keep them past this block
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()


def _check_racks(racks: Sequence[RackSpec], testers: Sequence[TesterSpec], chamber_names: list[str]) -> None:
    """Rack and tester names unique; racks stand in known chambers; testers reach known racks, one tester each."""
    rack_names = [r.name for r in racks]
    if len(set(rack_names)) != len(rack_names):
        raise ValueError(f"rack names must be unique, got {rack_names}")
    for rack in racks:
        if rack.chamber is not None and rack.chamber not in chamber_names:
            raise ValueError(f"rack {rack.name!r} stands in unknown chamber {rack.chamber!r}")
    tester_names = [t.name for t in testers]
    if len(set(tester_names)) != len(tester_names):
        raise ValueError(f"tester names must be unique, got {tester_names}")
    reached = [name for t in testers for name in t.racks]
    for name in reached:
        if name not in rack_names:
            raise ValueError(f"a tester reaches unknown rack {name!r}")
    if len(set(reached)) != len(reached):
        raise ValueError("a rack is reached by more than one tester")
