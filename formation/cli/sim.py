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
    from formation.sim.plant import CabinetSpec

app = typer.Typer(help="The simulated plant.", no_args_is_help=True)


@app.command("serve")
def serve(
    port: Annotated[int, typer.Option(help="TCP port of the cabinet (ignored with --site)")] = 5025,
    channels: Annotated[int, typer.Option(help="Channels in the cabinet")] = 256,
    preset: Annotated[str, typer.Option(help="Cell preset: ncm21700-5ah or lfp-280ah")] = "ncm21700-5ah",
    seed: Annotated[int, typer.Option(help="Seed of the cell population")] = 0,
    scale: Annotated[float, typer.Option(help="Clock scale (simulated seconds per wall second)")] = 1.0,
    host: Annotated[str, typer.Option(help="Address to bind; loopback unless told otherwise")] = "127.0.0.1",
    site: Annotated[
        Path | None, typer.Option(help="Serve every cabinet of this site file that has a \\[cabinets.sim] table")
    ] = None,
) -> None:
    """Serve simulated cabinets until Ctrl-C."""
    import asyncio

    from formation.sim.cells import PRESETS
    from formation.sim.plant import CabinetSpec

    if site is not None:
        cfg = load_site_config(site)
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
            )
            for c in cfg.cabinets
            if c.sim is not None
        ]
        if not specs:
            raise ConfigError("cabinets", "no cabinet has a [cabinets.sim] table", source=str(site))
        scale = cfg.clock_scale
    else:
        if not 1 <= channels <= 1024:
            raise InputError("--channels", f"{channels} is outside 1-1024")
        if not 0 <= port <= 65535:
            raise InputError("--port", f"{port} is not a TCP port")
        specs = [CabinetSpec(name="cab1", channels=channels, preset=preset, seed=seed, port=port)]
    for spec in specs:
        if spec.preset not in PRESETS:
            raise InputError("preset", f"unknown preset {spec.preset!r} (known: {', '.join(sorted(PRESETS))})")
    try:
        asyncio.run(_serve(specs, scale, host))
    except KeyboardInterrupt:
        console.print("stopped")


async def _serve(specs: list[CabinetSpec], scale: float, host: str) -> None:
    import asyncio

    from formation.clock import make_clock
    from formation.sim.plant import SimulatedPlant

    clock = make_clock(scale)
    async with SimulatedPlant(specs, clock, host=host) as plant:
        for name, server in plant.cabinets.items():
            console.print(f"[bold]{escape(name)}[/] serving on {server.resource}  (clock ×{scale:g})")
        await asyncio.Event().wait()
