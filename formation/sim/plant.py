"""The simulated plant: one TCP server per simulated cabinet, started and stopped together."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

from formation.clock import Clock
from formation.sim.cells import PRESETS, CellPopulation
from formation.sim.cycler import CabinetModel
from formation.sim.server import CabinetServer


@dataclass(frozen=True, slots=True)
class CabinetSpec:
    """How to simulate one cabinet: channels, cell preset and population, TCP port (0 = ephemeral).

    The cells' temperature follows ``ambient_c`` (the cabinet's air) through each cell's thermal node.
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
    """Async context manager running every cabinet of ``specs`` on its own TCP port, sharing ``clock``."""

    def __init__(self, specs: Sequence[CabinetSpec], clock: Clock, host: str = "127.0.0.1") -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"cabinet names must be unique, got {names}")
        self.specs = list(specs)
        self.clock = clock
        self.host = host
        self.cabinets: dict[str, CabinetServer] = {}
        self._stack = contextlib.AsyncExitStack()

    @property
    def resources(self) -> dict[str, str]:
        """VISA resource string per cabinet name."""
        return {name: server.resource for name, server in self.cabinets.items()}

    async def __aenter__(self) -> SimulatedPlant:
        async with contextlib.AsyncExitStack() as stack:
            for spec in self.specs:
                model = build_cabinet(spec, self.clock.now())
                server = CabinetServer(model, self.clock, host=self.host, port=spec.port, name=spec.name)
                self.cabinets[spec.name] = await stack.enter_async_context(server)
            self._stack = stack.pop_all()  # every server started: keep them past this block
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()
