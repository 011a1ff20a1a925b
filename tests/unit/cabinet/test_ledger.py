"""JobLedger: what the database refuses is kept and written on a later poll; supervision never stops (no socket)."""

from __future__ import annotations

import sqlalchemy as sa

from formation.orchestrator.cabinet.ledger import JobLedger
from formation.orchestrator.compile import compile_step
from formation.orchestrator.run import ChannelRun
from formation.recipes import load_builtin
from formation.states import JobState, RunState
from formation.store import Store
from formation.store.records import StepDetails, StepResultRecord

RECIPE = load_builtin("ncm21700-capacity")


def _launch(store: Store) -> tuple[int, ChannelRun]:
    store.upsert_lot_and_cells([("C1", "L", 5.0)])
    store.save_recipe(
        RECIPE.sha256, RECIPE.name, RECIPE.version, RECIPE.chemistry, RECIPE.nominal_capacity_ah,
        RECIPE.canonical_json(), RECIPE.source_text,
    )  # fmt: skip
    job_id = store.create_job(RECIPE.sha256, "cab", "1", 1.0, 0.0)
    (run_id,) = store.create_runs(
        job_id,
        [
            {
                "cell_id": "C1",
                "cabinet": "cab",
                "channel": 1,
                "instrument_cell": 1001,
                "state": "pending",
                "started_s": 0.0,
            }
        ],
    )
    run = ChannelRun(run_id, "C1", "L", 1, 5.0, RECIPE)
    run.begin_step(0, compile_step(RECIPE.steps[0], RECIPE, 5.0))
    run.transition(RunState.RUNNING)
    return job_id, run


def _result(run: ChannelRun) -> StepResultRecord:
    return StepResultRecord(
        run.run_id, 0, "charge", "charge", 0.0, 3600.0, 3600.0, 2.5, 9.5, 3.6, 4.2, "voltage", StepDetails(end_code=11)
    )


def _rename(store: Store, old: str, new: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.text(f'ALTER TABLE "{old}" RENAME TO "{new}"'))


async def test_refused_results_and_journal_are_kept_and_written_later(store: Store, ledger: JobLedger) -> None:
    job_id, run = _launch(store)
    ledger.job_id = job_id
    _rename(store, "step_result", "step_result_away")  # the database refuses these writes for a while
    _rename(store, "run", "run_away")
    await ledger.save_results([_result(run)])
    await ledger.journal([run])
    await ledger.alarm("warning", "test", "the database refuses step results and the journal")
    assert ledger.pending == 2
    await ledger.retry()  # still refused: nothing lost, nothing raised
    assert ledger.pending == 2
    _rename(store, "alarm", "alarm_away")
    await ledger.alarm("warning", "refused", "raised while the database refuses alarms too")
    raised_s = ledger.clock.now()
    assert ledger.pending == 3
    await ledger.retry()
    assert ledger.pending == 3
    _rename(store, "step_result_away", "step_result")
    _rename(store, "run_away", "run")
    _rename(store, "alarm_away", "alarm")
    await ledger.retry()
    assert ledger.pending == 0
    results = store.step_results(job_id=job_id)
    assert results["ah"].tolist() == [2.5] and results["end_reason"].tolist() == ["voltage"]
    stored = store.get_run(run.run_id)
    assert stored is not None and stored.state == RunState.RUNNING
    alarms = store.alarms(job_id=job_id)
    assert [a.code for a in alarms] == ["test", "refused"]
    assert alarms[1].ts_s <= raised_s  # stored later with the time it was raised


async def test_finish_job_writes_the_end_state(store: Store, ledger: JobLedger) -> None:
    job_id, _ = _launch(store)
    ledger.job_id = job_id
    await ledger.finish_job(JobState.DONE)
    job = store.get_job(job_id)
    assert job is not None and job.state == JobState.DONE and job.ended_s is not None
