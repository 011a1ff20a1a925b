"""What is left of a step the instrument's watchdog cut short (pure), how a run restarts it, and how a re-attached
host rebuilds the same remainder and the step's account from the journal and the stored samples (no socket)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from formation.instruments.program import LOG_COL, LOG_COLUMNS, EndCode, StepMode, TestAction, TestType
from formation.orchestrator.cabinet import resume
from formation.orchestrator.cabinet.watchdog import describe_left, may_resume
from formation.orchestrator.compile import MIN_REMAINDER_S, compile_step, remaining_step
from formation.orchestrator.records import EndRecord
from formation.orchestrator.run import ChannelRun
from formation.recipes import Recipe, loads_recipe
from formation.states import JobState, RunState, StartState
from formation.store import Store

RECIPE_TEXT = """
name = "wd"
nominal_capacity_ah = 5.0
[limits]
max_voltage_v = 4.2
min_voltage_v = 2.5
[resume]
after_watchdog = "resume"
[[steps]]
id = "form"
kind = "charge"
current = "C/2"
until = { charge = "20%", duration = "2h", voltage_v = 4.1 }
[[steps]]
id = "dcir"
kind = "dcir"
rest = "60s"
current = "1C"
duration = "30s"
sample_at = ["1s", "10s", "30s"]
[[steps]]
id = "age"
kind = "age"
duration = "1h"
ocv_at = ["10min", "1h"]
"""


@pytest.fixture
def recipe() -> Recipe:
    return loads_recipe(RECIPE_TEXT, "toml", source="wd.toml")


def _running(recipe: Recipe, index: int) -> ChannelRun:
    run = ChannelRun(1, "C1", "L", 1, 5.0, recipe)
    run.begin_step(index, compile_step(recipe.steps[index], recipe, 5.0))
    run.start_transition(StartState.SENT)
    run.start_transition(StartState.STARTED)
    run.transition(RunState.RUNNING)
    run.note_start(1000.0, 3.6)
    return run


def _watchdog_end(time_s: float, step_time_s: float, step_ah: float, sub_step: int = 1) -> EndRecord:
    return EndRecord(time_s, 3.9, step_ah, step_ah * 3.8, step_time_s, sub_step, EndCode.WATCHDOG)


def test_the_remainder_keeps_clamp_and_limits_and_gets_what_is_left_of_time_and_charge(recipe: Recipe) -> None:
    whole = compile_step(recipe.steps[0], recipe, 5.0)
    left = remaining_step(whole, 1800.0, 0.4)
    assert left is not None
    (inst,), (orig,) = left.program.steps, whole.program.steps
    assert inst.duration_s == pytest.approx(7200.0 - 1800.0)
    assert inst.mode is StepMode.CHARGE and inst.voltage_v == orig.voltage_v <= recipe.limits.max_voltage_v
    assert inst.current_a == orig.current_a
    charge = [t for t in inst.tests if t.type is TestType.AMPH_GE]
    assert [t.value for t in charge] == [pytest.approx(1.0 - 0.4)]
    # Every other test (the FAIL limits, the voltage end) is the same, in the same order: end codes keep meaning.
    assert [t for t in inst.tests if t.type is not TestType.AMPH_GE] == [
        t for t in orig.tests if t.type is not TestType.AMPH_GE
    ]
    assert [t.type for t in inst.tests] == [t.type for t in orig.tests]
    assert any(t.action is TestAction.FAIL and t.type is TestType.VOLT_GE for t in inst.tests)
    assert left.end_reasons == whole.end_reasons and left.end_reason(EndCode.TIME) == "duration"
    # Nothing left: not restarted.
    assert remaining_step(whole, 7200.0 - MIN_REMAINDER_S / 2, 0.4) is None
    assert remaining_step(whole, 100.0, 1.0) is None
    assert remaining_step(whole, 100.0, -1.2) is None  # |Ah|: a discharge counts the same way


def test_a_dcir_runs_its_whole_sequence_again_and_an_age_step_its_remaining_time(recipe: Recipe) -> None:
    dcir = compile_step(recipe.steps[1], recipe, 5.0)
    assert remaining_step(dcir, 70.0, -0.01) is dcir
    age = compile_step(recipe.steps[2], recipe, 5.0)
    left = remaining_step(age, 600.0, 0.0)
    assert left is not None and left.program.steps[0].duration_s == pytest.approx(3000.0)


def test_a_run_restarts_once_per_watchdog_end_and_journals_it(recipe: Recipe) -> None:
    run = _running(recipe, 0)
    end = _watchdog_end(1600.0, 600.0, 0.42)
    assert may_resume(run, end)
    assert run.restart_after_watchdog(end)
    assert run.start is StartState.AWAITING and run.seq_id is None and run.program_t0_s is None
    assert run.account.started_s == 1000.0  # the step's start stays: it is the same step
    assert (run.account.ah, run.account.duration_s) == (pytest.approx(0.42), pytest.approx(600.0))
    assert run.compiled is not None and run.compiled.program.steps[0].duration_s == pytest.approx(6600.0)
    assert "110 min, 0.58 Ah" in describe_left(run)
    assert run.restart_after_watchdog(end)  # the same record read again: applied once
    assert run.account.ah == pytest.approx(0.42) and run.restarts == 1
    journal = json.loads(run.journal())
    assert journal["restart_s"] == 1600.0 and journal["restarts"] == 1
    assert journal["carried"] == [pytest.approx(0.42), pytest.approx(0.42 * 3.8), 600.0]
    # The remainder starts: its start record is not the step's start (no new anchor), and it ends the step.
    run.start_transition(StartState.SENT)
    run.start_transition(StartState.STARTED)
    assert run.note_start(1700.0, 3.95) is False and run.program_t0_s == 1700.0
    result = run.note_end(EndRecord(3000.0, 4.0, 0.58, 2.3, 1300.0, 1, EndCode.NEXT_BASE + 6))
    assert result is not None and result.end_reason == "charge"
    assert result.ah == pytest.approx(1.0) and result.duration_s == pytest.approx(1900.0)
    assert result.started_s == 1000.0


def test_the_policy_applies_only_to_watchdog_ends_of_running_runs_when_the_recipe_asks(recipe: Recipe) -> None:
    run = _running(recipe, 0)
    assert not may_resume(run, replace(_watchdog_end(1600.0, 600.0, 0.4), end_code=EndCode.ABORT))
    fault = _running(replace(recipe, after_watchdog="fault"), 0)
    assert not may_resume(fault, _watchdog_end(1600.0, 600.0, 0.4))
    run.transition(RunState.ABORTING)
    assert not may_resume(run, _watchdog_end(1600.0, 600.0, 0.4))
    done = _running(recipe, 0)
    assert not done.restart_after_watchdog(_watchdog_end(9000.0, 7199.99, 0.5))  # nothing left: faulted as before


def test_a_dcir_restart_drops_the_cut_pulse_records(recipe: Recipe) -> None:
    run = _running(recipe, 1)
    run.captured = [np.zeros((3, len(LOG_COLUMNS)))]
    assert run.restart_after_watchdog(_watchdog_end(1075.0, 15.0, -0.02, sub_step=2))
    assert run.captured == [] and run.compiled is not None and len(run.compiled.program.steps) == 2


# -- re-attach ---------------------------------------------------------------------------------------------------


def _job(store: Store, recipe: Recipe, journal: dict[str, object]) -> tuple[int, int]:
    store.upsert_lot_and_cells([("C1", "L", 5.0)])
    store.save_recipe(recipe.sha256, recipe.name, recipe.version, recipe.chemistry, 5.0, recipe.canonical_json(), "")
    job_id = store.create_job(recipe.sha256, "cab", "1", 1.0, 0.0, state=JobState.INTERRUPTED)
    (run_id,) = store.create_runs(
        job_id,
        [{"cell_id": "C1", "cabinet": "cab", "channel": 1, "instrument_cell": 1001, "state": "running",
          "step_index": int(journal["step_index"]), "journal": json.dumps(journal), "started_s": 0.0}],  # type: ignore[call-overload]
    )  # fmt: skip
    return job_id, run_id


def _segment(run_id: int, rec0: int, t0: float, n: int, sub_step: int, amps: float, step_index: int) -> np.ndarray:
    """Stored samples of one instrument step: run id, rec, time, step, step time, V, A, Ah, °C, cycle, sub-step."""
    st = np.arange(n) * 10.0
    return np.column_stack(
        [np.full(n, run_id), rec0 + np.arange(n), t0 + st, np.full(n, step_index), st, np.full(n, 3.9),
         np.full(n, amps), st * amps / 3600.0, np.full(n, 25.0), np.zeros(n), np.full(n, sub_step)]
    )  # fmt: skip


@pytest.fixture
def store(tmp_path: object) -> Store:
    s = Store(f"sqlite:///{tmp_path}/r.db")
    s.create_schema()
    yield s
    s.close()


def test_a_reattached_host_rebuilds_the_remainder_and_the_account_of_a_restarted_step(
    store: Store, recipe: Recipe
) -> None:
    journal = {"step_index": 0, "start": "started", "started_s": 1000.0, "start_voltage_v": 3.6,
               "restart_s": 1600.0, "restarts": 1, "carried": [0.42, 1.6, 600.0]}  # fmt: skip
    job_id, run_id = _job(store, recipe, journal)
    store.write_samples(_segment(run_id, 1, 1000.0, 61, 1, 2.5, 0))  # the cut program, to its watchdog end
    store.write_samples(_segment(run_id, 100, 1700.0, 5, 1, 2.5, 0))  # the remainder, still running
    (run,) = resume.restore_job(store, job_id).runs
    assert run.restart_s == 1600.0 and run.restarts == 1
    assert run.compiled is not None and run.compiled.program.steps[0].duration_s == pytest.approx(6600.0)
    assert run.account.started_s == 1000.0 and run.program_t0_s == 1700.0 and run.start is StartState.STARTED
    assert (run.account.ah, run.account.duration_s) == (pytest.approx(0.42), pytest.approx(600.0))


def test_a_reattached_dcir_keeps_its_finished_rest_and_measures_the_pulse_from_stored_sub_steps(
    store: Store, recipe: Recipe
) -> None:
    job_id, run_id = _job(store, recipe, {"step_index": 1, "start": "started"})
    rest = _segment(run_id, 1, 1000.0, 7, 1, 0.0, 1)  # 60 s rest: records at 0..60 s, the last its end
    pulse = _segment(run_id, 8, 1060.0, 2, 2, -5.0, 1)  # the pulse's first records, then the host died
    pulse[:, 4] = [0.0, 1.0]
    pulse[:, 2] = 1060.0 + pulse[:, 4]
    pulse[:, 5] = [3.85, 3.80]
    store.write_samples(np.concatenate([rest, pulse]))
    (run,) = resume.restore_job(store, job_id).runs
    assert run.account.duration_s == pytest.approx(60.0)  # the rest is over: its time counts
    (rows,) = run.captured
    assert rows[:, LOG_COL["step"]].tolist() == [1] * 7 + [2] * 2
    # The rest of the pulse comes from the instrument; the resistance is computed across both.
    more = np.zeros((29, len(LOG_COLUMNS)))
    more[:, LOG_COL["step"]] = 2
    more[:, LOG_COL["step_time_s"]] = np.arange(2, 31)
    more[:, LOG_COL["time_s"]] = 1060.0 + more[:, LOG_COL["step_time_s"]]
    more[:, LOG_COL["voltage_v"]] = 3.80 - 0.001 * np.arange(29)
    more[:, LOG_COL["current_a"]] = -5.0
    run.captured.append(more)
    result = run.note_end(EndRecord(1090.0, more[-1, LOG_COL["voltage_v"]], -0.04, -0.15, 30.0, 2, EndCode.TIME))
    assert result is not None and result.details.error is None
    dcir = result.details.measurement
    assert dcir.dcir_mohm["1"] == pytest.approx((3.80 - 3.9) / -5.0 * 1000.0)
    assert result.duration_s == pytest.approx(90.0)


@pytest.mark.parametrize(
    ("table", "shown"),
    [
        ('[resume]\nafter_watchdog = "later"\n', "resume.after_watchdog: 'later' is not one of: fault, resume"),
        ("[resume]\nafter_watchdog = 3\n", "resume.after_watchdog: number is not one of: fault, resume"),
        ("[resume]\nretries = 1\n", "resume.retries: unknown key (expected one of: after_watchdog)"),
        ('resume = "yes"\n', "resume: expected a table, got string"),
    ],
)
def test_a_bad_resume_policy_is_refused_in_one_line_naming_the_field(
    tmp_path: object, capsys: pytest.CaptureFixture[str], table: str, shown: str
) -> None:
    from pathlib import Path

    from formation.cli.app import main

    body = RECIPE_TEXT.replace('[resume]\nafter_watchdog = "resume"\n', "")
    path = Path(str(tmp_path)) / "bad.toml"
    path.write_text(body.replace("[limits]", table + "[limits]", 1))
    assert main(["recipe", "validate", str(path)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and shown in lines[0], lines


def test_the_default_policy_keeps_a_recipes_hash_and_resume_round_trips(recipe: Recipe) -> None:
    from formation.recipes import parse_recipe

    plain = loads_recipe(RECIPE_TEXT.replace('[resume]\nafter_watchdog = "resume"\n', ""), "toml")
    assert plain.after_watchdog == "fault" and "resume" not in plain.to_canonical()
    assert recipe.sha256 != plain.sha256
    assert parse_recipe(json.loads(recipe.canonical_json())).after_watchdog == "resume"
