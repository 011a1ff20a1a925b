"""Running one job end to end: open the cabinet, launch the recipe, supervise until done, abort on cancel."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from formation.clock import Clock
from formation.config import CabinetConfig, ChamberSite
from formation.errors import InputError
from formation.instruments.bt2200 import Bt2200Cycler
from formation.instruments.scpi import ScpiSession
from formation.orchestrator.cabinet import CabinetSupervisor, PollStats
from formation.orchestrator.cabinet.temperature import check_setpoints
from formation.orchestrator.chamber_loop import open_chamber_loop
from formation.orchestrator.compile import compile_step
from formation.orchestrator.inputs import CellEntry
from formation.orchestrator.lease import CabinetLeaseKeeper, process_owner
from formation.orchestrator.timers import LineTimers
from formation.recipes import Recipe, chamber_setpoints, parse_recipe
from formation.store import Store

if TYPE_CHECKING:
    from formation.feed.sink import FeedSink

#: Wall seconds an interrupted job keeps polling for its aborts to be confirmed before it closes.
ABORT_SETTLE_S = 5.0


def assign_cells(channels: Sequence[int], cells: Sequence[CellEntry], recipe: Recipe) -> list[tuple[int, CellEntry]]:
    """Pair channels with cells in order and check every resolved current against the recipe's limit."""
    if len(cells) != len(channels):
        raise InputError(
            "cells",
            f"{len(cells)} cells in the cells file for {len(channels)} channels: give one cell per channel",
        )
    pairs = list(zip(channels, cells, strict=True))
    max_a = recipe.limits.max_current_a
    for _, cell in pairs:
        for i, step in enumerate(recipe.steps):
            program = compile_step(step, recipe, cell.nominal_capacity_ah).program
            # A dcir pulse is not its first step; a host step (chamber) has no program at all.
            current_a = max((inst.current_a for inst in program.steps), default=0.0)
            if current_a > max_a + 1e-9:
                raise InputError(
                    f"steps[{i}].current",
                    f"{current_a:.4g} A for cell {cell.cell_id} ({cell.nominal_capacity_ah:g} Ah) is above "
                    f"limits.max_current_a {max_a:g} A",
                )
    return pairs


async def run_job(
    cabinet: CabinetConfig,
    recipe: Recipe,
    assignments: Sequence[tuple[int, CellEntry]],
    store: Store,
    clock: Clock,
    *,
    on_start: Callable[[CabinetSupervisor], None] | None = None,
    on_cycle: Callable[[CabinetSupervisor, PollStats], None] | None = None,
    note: str | None = None,
    chamber: ChamberSite | None = None,
    feed: FeedSink | None = None,
) -> CabinetSupervisor:
    """Launch ``recipe`` on ``assignments`` and supervise it to the end; cancelling aborts the cells safely.

    ``chamber`` is the chamber the cabinet stands in: a recipe that asks for temperatures holds it (the job runs
    its control loop); a recipe that asks for a temperature the cabinet cannot give is refused before anything.
    """
    check_chamber(recipe, cabinet, chamber)
    holds = chamber if chamber is not None and chamber_setpoints(recipe) else None
    begin = lambda sup: sup.launch(recipe, assignments, note=note)  # noqa: E731
    return await _supervise(cabinet, store, clock, begin, on_start, on_cycle, True, holds, feed)


def queue_job(
    cabinet: CabinetConfig,
    recipe: Recipe,
    assignments: Sequence[tuple[int, CellEntry]],
    store: Store,
    clock: Clock,
    *,
    note: str | None = None,
    start_after_s: float | None = None,
) -> int:
    """Record a job for the daemon (`formation serve`): lot, cells, recipe, runs, state ``queued``; its id."""
    from formation.orchestrator.cabinet.ledger import JobLedger
    from formation.states import JobState

    ledger = JobLedger(store, clock, cabinet.name, committed_rec=lambda: 0)
    job_id, _ = ledger.record_launch(recipe, assignments, note, state=JobState.QUEUED)
    if start_after_s is not None:
        store.queue_job_start(job_id, start_after_s)
    return job_id


def check_chamber(recipe: Recipe, cabinet: CabinetConfig, chamber: ChamberSite | None) -> None:
    """Refuse a recipe whose temperatures the cabinet cannot give (no chamber, or a set point out of range)."""
    if chamber is not None and cabinet.chamber not in (None, chamber.name):
        raise InputError("chamber", f"cabinet {cabinet.name} stands in chamber {cabinet.chamber}, not {chamber.name}")
    check_setpoints(
        recipe,
        cabinet.name,
        chamber.name if chamber is not None else None,
        (chamber.setpoint_min_c, chamber.setpoint_max_c) if chamber is not None else None,
    )


async def resume_job(
    cabinet: CabinetConfig,
    job_id: int,
    store: Store,
    clock: Clock,
    *,
    on_start: Callable[[CabinetSupervisor], None] | None = None,
    on_cycle: Callable[[CabinetSupervisor, PollStats], None] | None = None,
    chamber: ChamberSite | None = None,
    feed: FeedSink | None = None,
) -> CabinetSupervisor:
    """Re-attach to a job a previous host process left running and supervise it to the end."""
    holds = None
    if chamber is not None:
        recipe = await asyncio.to_thread(job_recipe, store, job_id)
        holds = chamber if recipe is not None and chamber_setpoints(recipe) else None
    # A failed re-attach leaves the cells alone: the instrument runs their steps and its watchdog stops them.
    return await _supervise(
        cabinet, store, clock, lambda sup: sup.reattach(job_id), on_start, on_cycle, False, holds, feed
    )


async def _supervise(
    cabinet: CabinetConfig,
    store: Store,
    clock: Clock,
    begin: Callable[[CabinetSupervisor], Awaitable[int]],
    on_start: Callable[[CabinetSupervisor], None] | None,
    on_cycle: Callable[[CabinetSupervisor, PollStats], None] | None,
    abort_if_begin_fails: bool,
    chamber: ChamberSite | None = None,
    feed: FeedSink | None = None,
) -> CabinetSupervisor:
    async with contextlib.AsyncExitStack() as stack:
        # A daemon or another foreground process driving this cabinet refuses us here, before any command.
        await stack.enter_async_context(CabinetLeaseKeeper(store, cabinet.name, process_owner("foreground")))
        # The chamber loop outlives the supervisor: the cells are switched off before the chamber lets go.
        loop = await stack.enter_async_context(open_chamber_loop(chamber, clock, store, feed)) if chamber else None
        session = await stack.enter_async_context(
            ScpiSession(cabinet.resource, timeout_s=cabinet.timeout_s, name=cabinet.name)
        )
        timers = await stack.enter_async_context(LineTimers(store, clock))
        supervisor = await stack.enter_async_context(
            CabinetSupervisor(
                cabinet.name,
                Bt2200Cycler(session),
                store,
                clock,
                poll_interval_s=cabinet.poll_interval_s,
                watchdog_s=cabinet.watchdog_s,
                n_channels=cabinet.channels,
                timers=timers,
                chamber=loop,
                feed=feed,
            )
        )
        try:
            await begin(supervisor)
        except BaseException:
            # Some groups may already be running: switch them off before giving up (Ctrl-C included).
            if abort_if_begin_fails and supervisor.job_id is not None:
                await asyncio.shield(abort_and_drain(supervisor))
            raise
        if on_start is not None:
            on_start(supervisor)
        try:
            await supervisor.run_until_done(
                on_cycle=(lambda stats: on_cycle(supervisor, stats)) if on_cycle is not None else None
            )
        except BaseException:
            # Ctrl-C (or a bug): output off on every channel of the job, then keep what the instrument logged.
            await asyncio.shield(abort_and_drain(supervisor))
            raise
    return supervisor


async def abort_and_drain(supervisor: CabinetSupervisor) -> None:
    """Switch the job's channels off, keep what the instrument logged, and close the job whatever happens."""
    try:
        await supervisor.abort()  # an abort the instrument does not take is retried by the polls below
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ABORT_SETTLE_S
        while not supervisor.finished and loop.time() < deadline:
            await supervisor.poll_once()
            await asyncio.sleep(0.05)
    finally:
        await supervisor.close_job()


def job_recipe(store: Store, job_id: int) -> Recipe | None:
    """The recipe a stored job runs (None for an unknown job)."""
    job = store.get_job(job_id)
    row = store.recipe(job.recipe_sha256) if job is not None else None
    if row is None:
        return None
    return parse_recipe(json.loads(row.body_json), source=f"job {job_id} recipe", source_text=row.source_text)
