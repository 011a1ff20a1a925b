"""`formation sim serve`: the simulated plant over real TCP."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from formation.cli.app import console
from formation.config import load_site_config
from formation.errors import ConfigError, InputError

if TYPE_CHECKING:
    from formation.config import ChamberSite, SiteConfig
    from formation.sim.plant import CabinetSpec, ChamberSpec
    from formation.sim.rack import RackSpec
    from formation.sim.tester import TesterSpec

app = typer.Typer(help="The simulated plant.", no_args_is_help=True)


@app.command("serve")
def serve(
    port: Annotated[int, typer.Option(help="TCP port of the cabinet (ignored with --site)")] = 5025,
    channels: Annotated[int, typer.Option(help="Channels in the cabinet")] = 256,
    preset: Annotated[str, typer.Option(help="Cell preset: ncm21700-5ah or lfp-280ah")] = "ncm21700-5ah",
    seed: Annotated[int, typer.Option(help="Seed of the cell population", min=0, max=2**32 - 1)] = 0,
    scale: Annotated[float, typer.Option(help="Clock scale (simulated seconds per wall second)")] = 1.0,
    host: Annotated[str, typer.Option(help="Address to bind; loopback unless told otherwise")] = "127.0.0.1",
    site: Annotated[
        Path | None,
        typer.Option(
            help="Serve every cabinet and chamber of this site file with a \\[cabinets.sim] / \\[chambers.sim] table"
        ),
    ] = None,
    chamber_port: Annotated[
        int | None, typer.Option(help="Also serve a chamber DAQ (chamber1) on this TCP port (ignored with --site)")
    ] = None,
    tester_port: Annotated[
        int | None,
        typer.Option(help="Also serve an OCV/ACIR tester (tester1) reaching rack1 on this TCP port (not with --site)"),
    ] = None,
    rack_positions: Annotated[int, typer.Option(help="Positions of rack1 (in chamber1 when there is one)")] = 256,
) -> None:
    """Serve simulated cabinets and chambers until Ctrl-C."""
    import asyncio

    from formation.bounds import MAX_CLOCK_SCALE
    from formation.sim.cells import PRESETS
    from formation.sim.plant import CabinetSpec, ChamberSpec
    from formation.sim.rack import MAX_POSITIONS, RackSpec
    from formation.sim.tester import TesterSpec

    racks: list[RackSpec] = []
    testers: list[TesterSpec] = []
    if tester_port is not None:
        if site is not None:
            raise InputError(
                "--tester-port", "racks and testers are not in the site file yet: serve them without --site"
            )
        if not 0 <= tester_port <= 65535:
            raise InputError("--tester-port", f"{tester_port} is not a TCP port")
        if not 1 <= rack_positions <= MAX_POSITIONS:
            raise InputError("--rack-positions", f"{rack_positions} is outside 1-{MAX_POSITIONS}")
        in_chamber = "chamber1" if chamber_port is not None else None
        racks = [RackSpec("rack1", positions=rack_positions, chamber=in_chamber, seed=seed)]
        testers = [TesterSpec("tester1", ("rack1",), port=tester_port, seed=seed)]
    if not 0 < scale <= MAX_CLOCK_SCALE:  # also refuses nan and inf
        raise InputError("--scale", f"{scale:g} is outside 0–{MAX_CLOCK_SCALE:g} (0 excluded)")

    if site is not None:
        cfg = load_site_config(site)
        chambers = _chamber_specs(cfg, str(site))
        specs = [
            CabinetSpec(
                name=c.name,
                channels=c.channels,
                preset=c.sim.preset,
                seed=c.sim.seed,
                port=c.sim.port,
                formed=c.sim.formed,
                initial_soc=c.sim.initial_soc,
                ambient_c=c.sim.ambient_c,
                defect_fraction=c.sim.defect_fraction,
                chamber=c.chamber if c.chamber in {ch.name for ch in chambers} else None,
            )
            for c in cfg.cabinets
            if c.sim is not None
        ]
        if not specs and not chambers:
            raise ConfigError("cabinets", "no cabinet has a [cabinets.sim] table", source=str(site))
        scale = cfg.clock_scale
    else:
        if not 1 <= channels <= 1024:
            raise InputError("--channels", f"{channels} is outside 1-1024")
        if not 0 <= port <= 65535:
            raise InputError("--port", f"{port} is not a TCP port")
        specs = [CabinetSpec(name="cab1", channels=channels, preset=preset, seed=seed, port=port)]
        chambers = []
        if chamber_port is not None:
            if not 0 <= chamber_port <= 65535:
                raise InputError("--chamber-port", f"{chamber_port} is not a TCP port")
            chambers = [ChamberSpec(name="chamber1", port=chamber_port, seed=seed)]
    for spec in specs:
        if spec.preset not in PRESETS:
            raise InputError("preset", f"unknown preset {spec.preset!r} (known: {', '.join(sorted(PRESETS))})")
    try:
        asyncio.run(_serve(specs, chambers, scale, host, racks, testers))
    except KeyboardInterrupt:
        console.print("stopped")


def _chamber_specs(cfg: SiteConfig, source: str) -> list[ChamberSpec]:
    """The site's chambers with a ``[chambers.sim]`` table, wired as the simulated DAQ is (docs/daq970a-dialect.md)."""
    from formation.sim.chamber import ChamberParams
    from formation.sim.plant import ChamberSpec

    specs = []
    for i, chamber in enumerate(cfg.chambers):
        if chamber.sim is None:
            continue
        _check_sim_wiring(chamber, f"chambers[{i}]", source)
        params = ChamberParams(
            hot_valves=len(chamber.heating_valves),
            cold_valves=len(chamber.cooling_valves),
            thermocouples=len(chamber.sensors),
            ambient_c=chamber.sim.ambient_c,
        )
        specs.append(ChamberSpec(name=chamber.name, params=params, seed=chamber.sim.seed, port=chamber.sim.port))
    return specs


def _check_sim_wiring(chamber: ChamberSite, where: str, source: str) -> None:
    """The simulated DAQ wires thermocouples from 101 and valves from 301, heating first, at least one of each."""
    n_tc, n_hot, n_cold = len(chamber.sensors), len(chamber.heating_valves), len(chamber.cooling_valves)
    wired = {
        "sensors": tuple(range(101, 101 + n_tc)),
        "heating_valves": tuple(range(301, 301 + n_hot)),
        "cooling_valves": tuple(range(301 + n_hot, 301 + n_hot + n_cold)),
    }
    if chamber.position_ports:
        wired["position_ports"] = tuple(range(201, 201 + -(-(n_hot + n_cold) // 8)))
    for key, channels in wired.items():
        if getattr(chamber, key) != channels or not channels or len(channels) > 20 or n_hot + n_cold > 20:
            reason = (
                "the simulated DAQ wires thermocouples 101.., heating valves 301.. then cooling valves, at least one "
                "and at most 20 of each, their end switches on ports 201.. "
                f"(here: {', '.join(str(c) for c in channels) or 'none'})"
            )
            raise ConfigError(f"{where}.{key}", reason, source=source)


async def _serve(
    specs: list[CabinetSpec],
    chambers: list[ChamberSpec],
    scale: float,
    host: str,
    racks: list[RackSpec] | None = None,
    testers: list[TesterSpec] | None = None,
) -> None:
    import asyncio

    from formation.clock import make_clock
    from formation.sim.plant import SimulatedPlant

    clock = make_clock(scale)
    async with SimulatedPlant(
        specs, clock, host=host, chambers=chambers, racks=racks or (), testers=testers or ()
    ) as plant:
        for name, server in plant.cabinets.items():
            console.print(f"[bold]{escape(name)}[/] serving on {server.resource}  (clock ×{scale:g})")
        for name, c_server in plant.chambers.items():
            console.print(f"[bold]{escape(name)}[/] chamber DAQ on {c_server.resource}  (clock ×{scale:g})")
        for name, t_server in plant.testers.items():
            reach = ", ".join(t_server.model.spec.racks)
            console.print(
                f"[bold]{escape(name)}[/] tester ({escape(reach)}) on {t_server.resource}  (clock ×{scale:g})"
            )
        await asyncio.Event().wait()
