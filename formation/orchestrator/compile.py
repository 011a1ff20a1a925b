"""Compile one recipe step, for one cell, into the instrument's program (typed; the driver makes the SCPI).

The instrument owns step ends and safety limits (docs/decisions/0001): every program carries the recipe's
limits as FAIL tests and every charge is clamped at or below ``limits.max_voltage_v``, so a host that stalls or
dies can never push a cell past its recipe limit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from formation.instruments.program import (
    EndCode,
    InstrumentStep,
    StepMode,
    StepProgram,
    StepTest,
    TestAction,
    TestType,
    TestWhen,
)
from formation.recipes import (
    AgeStep,
    ChamberStep,
    ChargeStep,
    DcirStep,
    DischargeStep,
    HoldStep,
    PrecheckStep,
    Recipe,
    RestStep,
    Step,
    WaitStep,
)

#: A FAIL test sits this far beyond a limit that a clamp already enforces, so it only trips on a real fault.
LIMIT_MARGIN_V = 0.010
#: The FAIL test on current sits this factor above limits.max_current_a (regulation overshoot is not a fault).
CURRENT_MARGIN = 1.05
#: A voltage end this close to the step's clamp is moved inside the clamp by this much.
CLAMP_TEST_GUARD_V = 0.0005
#: A taper-current end is only tested after this much step time, so the CC start never ends the step at once.
TAPER_HOLDOFF_S = 5.0
#: Backstop duration for a step whose recipe gives no duration: this many times its nominal charge time.
BACKSTOP_FACTOR = 2.0
BACKSTOP_MIN_S = 3600.0
#: A step cut short with less time than this left is not restarted (the instrument takes durations > 0 s).
MIN_REMAINDER_S = 0.1


@dataclass(frozen=True, slots=True)
class CompiledStep:
    """A program plus what each of its end codes means in the recipe's words.

    A *host step* (``host_step``) has no instrument program: the supervisor runs it (a ``chamber`` step sets the
    chamber and waits for it) while the cell rests with its output off, as between any two steps.
    """

    program: StepProgram
    end_reasons: dict[int, str]
    has_duration: bool
    host_step: bool = False
    #: The host may end this step early from the log (a rest's dV/dt end, a wait's temperature): it then aborts
    #: the channel (a resting cell: nothing changes but the step) and the abort record ends the step.
    host_judged: bool = False
    #: The end reason of the instrument's time end, when not ``duration`` (a wait step that timed out).
    time_reason: str | None = None

    def end_reason(self, code: int) -> str:
        """The recipe-level name of an instrument end code (``voltage``, ``current``, ``limit:max_voltage``…)."""
        if code == EndCode.TIME:
            if self.time_reason is not None:
                return self.time_reason
            return "duration" if self.has_duration else "backstop"
        return self.end_reasons.get(code, EndCode.describe(code))


def _safety_tests(recipe: Recipe) -> list[tuple[StepTest, str]]:
    lim = recipe.limits
    tests: list[tuple[StepTest, str]] = []
    # The clamp already holds charges at or below max_voltage_v; the FAIL test catches anything else.
    tests.append((StepTest(TestType.VOLT_GE, lim.max_voltage_v + LIMIT_MARGIN_V, TestAction.FAIL), "limit:max_voltage"))
    tests.append((StepTest(TestType.VOLT_LE, lim.min_voltage_v - LIMIT_MARGIN_V, TestAction.FAIL), "limit:min_voltage"))
    if lim.max_cell_temperature_c is not None:
        tests.append((StepTest(TestType.TEMP_GE, lim.max_cell_temperature_c, TestAction.FAIL), "limit:max_temperature"))
    # Currents are checked against the limit at launch; this catches a channel that overshoots on its own.
    tests.append((StepTest(TestType.CURR_GE, lim.max_current_a * CURRENT_MARGIN, TestAction.FAIL), "limit:max_current"))
    return tests


def _backstop_s(current_a: float, nominal_ah: float) -> float:
    if current_a <= 0:
        return BACKSTOP_MIN_S
    return max(BACKSTOP_MIN_S, BACKSTOP_FACTOR * nominal_ah / current_a * 3600.0)


def _numbered(tests: list[tuple[StepTest, str]]) -> dict[int, str]:
    end_reasons: dict[int, str] = {}
    for n, (test, name) in enumerate(tests, start=1):
        base = EndCode.FAIL_BASE if test.action is TestAction.FAIL else EndCode.NEXT_BASE
        end_reasons[base + n] = name
    return end_reasons


def _instrument_step(
    mode: StepMode, duration_s: float, current_a: float, clamp_v: float, tests: list[tuple[StepTest, str]], record: Any
) -> InstrumentStep:
    return InstrumentStep(
        mode=mode,
        duration_s=float(duration_s),
        current_a=float(current_a),
        voltage_v=float(clamp_v),
        tests=tuple(t for t, _ in tests),
        every_s=float(record.every_s),
        every_mv=float(record.every_mv),
    )


def compile_step(step: Step, recipe: Recipe, nominal_capacity_ah: float) -> CompiledStep:
    """The instrument program for ``step`` on a cell of ``nominal_capacity_ah``."""
    match step:
        case ChargeStep() | DischargeStep():
            return _compile_current_step(step, recipe, nominal_capacity_ah)
        case RestStep():
            return _compile_rest(step, recipe, _rises_at_rest(step, recipe))
        case DcirStep():
            return _compile_dcir(step, recipe, nominal_capacity_ah)
        case AgeStep():
            safety = _safety_tests(recipe)
            inst = _instrument_step(StepMode.REST, step.duration_s, 0.0, 0.0, safety, step.record)
            return CompiledStep(StepProgram((inst,)), _numbered(safety), True)
        case ChamberStep() | HoldStep():
            return CompiledStep(StepProgram(()), {}, False, host_step=True)
        case WaitStep():
            # The instrument rests the cell for the whole timeout (its backstop); the host ends it once cool.
            safety = _safety_tests(recipe)
            inst = _instrument_step(StepMode.REST, step.timeout_s, 0.0, 0.0, safety, step.record)
            return CompiledStep(StepProgram((inst,)), _numbered(safety), True, host_judged=True, time_reason="timeout")
        case PrecheckStep():
            # Open circuit: the OCV and the drop over the rest are judged by the host from the start and end records.
            safety = _safety_tests(recipe)
            inst = _instrument_step(StepMode.REST, step.rest_s, 0.0, 0.0, safety, step.record)
            return CompiledStep(StepProgram((inst,)), _numbered(safety), True)
        case _:  # pragma: no cover - the recipe parser refuses other kinds
            raise NotImplementedError(f"step kind {step.kind!r} cannot be compiled yet")


def _compile_current_step(step: ChargeStep | DischargeStep, recipe: Recipe, nominal_capacity_ah: float) -> CompiledStep:
    lim = recipe.limits
    until = step.until
    ends: list[tuple[StepTest, str]] = []
    charging = isinstance(step, ChargeStep)
    mode = StepMode.CHARGE if charging else StepMode.DISCHARGE
    current_a = step.current.resolve_a(nominal_capacity_ah)
    if step.cv_voltage_v is not None:
        clamp_v = step.cv_voltage_v
    else:
        clamp_v = lim.max_voltage_v if charging else lim.min_voltage_v
    if until.voltage_v is not None:
        vtype = TestType.VOLT_GE if charging else TestType.VOLT_LE
        end_v = until.voltage_v
        if abs(end_v - clamp_v) < CLAMP_TEST_GUARD_V:
            # A clamp regulates to a hair short of its value; a test at the very same value might never
            # hold, so it sits just inside the clamp.
            end_v = clamp_v - CLAMP_TEST_GUARD_V if charging else clamp_v + CLAMP_TEST_GUARD_V
        ends.append((StepTest(vtype, end_v), "voltage"))
    if until.current is not None:
        taper_a = until.current.resolve_a(nominal_capacity_ah)
        ends.append((StepTest(TestType.CURR_LE, taper_a, when=TestWhen.AFTER, at_s=TAPER_HOLDOFF_S), "current"))
    charge_ah = until.charge_limit_ah(nominal_capacity_ah)
    if charge_ah is not None:
        ends.append((StepTest(TestType.AMPH_GE, charge_ah), "charge"))
    duration_s = until.duration_s or _backstop_s(current_a, nominal_capacity_ah)
    # FAIL tests are numbered first so the end code says at once that a limit tripped.
    tests = _safety_tests(recipe) + ends
    inst = _instrument_step(mode, duration_s, current_a, clamp_v, tests, step.record)
    return CompiledStep(StepProgram((inst,)), _numbered(tests), until.duration_s is not None)


def _rises_at_rest(step: RestStep, recipe: Recipe) -> bool:
    """Whether the voltage recovers upwards in this rest: it follows a discharge (or a discharge pulse)."""
    index = next((i for i, s in enumerate(recipe.steps) if s is step), 0)
    if index == 0:
        return False
    before = recipe.steps[index - 1]
    return before.kind == "discharge" or (isinstance(before, DcirStep) and before.direction == "discharge")


def _compile_rest(step: RestStep, recipe: Recipe, rising: bool) -> CompiledStep:
    until = step.until
    ends: list[tuple[StepTest, str]] = []
    if until.voltage_v is not None:
        # After a discharge the voltage relaxes upwards, after a charge downwards: end when it gets there.
        vtype = TestType.VOLT_GE if rising else TestType.VOLT_LE
        ends.append((StepTest(vtype, until.voltage_v), "voltage"))
    tests = _safety_tests(recipe) + ends
    inst = _instrument_step(StepMode.REST, until.duration_s or BACKSTOP_MIN_S, 0.0, 0.0, tests, step.record)
    # A dV/dt end is judged by the host from the log; the rest's duration stays on the instrument as its backstop.
    judged = until.dvdt_mv_per_h is not None
    return CompiledStep(StepProgram((inst,)), _numbered(tests), until.duration_s is not None, host_judged=judged)


def _compile_dcir(step: DcirStep, recipe: Recipe, nominal_capacity_ah: float) -> CompiledStep:
    """Baseline rest, then one pulse (single) or two (IEC 61960), all in one sequence so no host gap."""
    lim = recipe.limits
    charging = step.direction == "charge"
    mode = StepMode.CHARGE if charging else StepMode.DISCHARGE
    clamp_v = lim.max_voltage_v if charging else lim.min_voltage_v
    safety = _safety_tests(recipe)
    steps = [_instrument_step(StepMode.REST, step.rest_s, 0.0, 0.0, safety, recipe.record)]
    if step.method == "iec61960":
        assert step.low_current is not None and step.low_duration_s is not None
        low_a = step.low_current.resolve_a(nominal_capacity_ah)
        steps.append(_instrument_step(mode, step.low_duration_s, low_a, clamp_v, safety, step.record))
    current_a = step.current.resolve_a(nominal_capacity_ah)
    steps.append(_instrument_step(mode, step.duration_s, current_a, clamp_v, safety, step.record))
    return CompiledStep(StepProgram(tuple(steps)), _numbered(safety), True)


def remaining_step(compiled: CompiledStep, done_s: float, done_ah: float) -> CompiledStep | None:
    """What is left of a step the instrument stopped early (its watchdog), after ``done_s`` of step time and
    ``done_ah`` moved: the same program with its duration and its charge end reduced by what was done, and the same
    clamp, FAIL tests and other ends (the recipe's limits stay on the instrument). None when nothing is left.

    A program of several instrument steps (a dcir: rest, then pulse) is returned whole: a pulse cut in two yields
    no resistance, so the sequence runs again from its baseline rest.
    """
    steps = compiled.program.steps
    if compiled.host_step or not steps:
        return None
    if len(steps) > 1:
        return compiled
    (inst,) = steps
    left_s = inst.duration_s - done_s
    if left_s < MIN_REMAINDER_S:
        return None
    tests: list[StepTest] = []
    for test in inst.tests:
        if test.type is TestType.AMPH_GE and test.action is TestAction.NEXT:
            left_ah = test.value - abs(done_ah)
            if left_ah <= 0.0:
                return None
            test = replace(test, value=left_ah)
        tests.append(test)
    return replace(compiled, program=StepProgram((replace(inst, duration_s=left_s, tests=tuple(tests)),)))
