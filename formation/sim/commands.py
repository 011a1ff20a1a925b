"""Every command the simulated BT2200 cabinet accepts (``COMMAND_TABLE``) and their handlers.

``ext=True`` marks extensions beyond the public Keysight BT2200 set (docs/bt2200-dialect.md).

``SIM:CELL:TRUTH? <id>`` (simulator only) replies with one line of JSON: ``{"cell": <id>, "channel": <BT2200
channel>, ...}`` plus every key of ``CellPopulation.truth(i)``: capacity_ah, soc, ocv_v, temperature_c, r0_ohm,
r1_ohm, tau1_s, r2_ohm, tau2_s, r3_ohm, tau3_s, dcir_10s_ohm, acir_ohm, leak_a (A at the present temperature),
sei_growth_a (the decaying SEI-growth current now), self_discharge_a (their sum), hysteresis_v, ocv_slope_v
(dOCV/dSOC, V per unit SOC, of the segment the self-discharge moves into), k_mv_per_day (self_discharge_a × 24 h /
capacity × ocv_slope_v, in mV/day, now), sei_remaining_ah, defect. Every value is the truth: the measured replies
(``MEAS:CELL:*?``, ``STAT:CELL:VERB?``, the data log) carry the instrument's noise and resolution.

``SIM:CELL:DCIR? <id>,<current_a>,<t_s>[,<t_s>...]`` (simulator only) replies with ΔV/ΔI in ohms at each time
(``%.9g``, comma-separated, in the order asked): a constant-current pulse of ``current_a`` (+ charge, − discharge)
from the cell's present state, run on a copy in substeps of at most 0.1 s, against the present terminal voltage
and current. At most :data:`MAX_DCIR_TIMES` times, each 0 < t ≤ :data:`MAX_DCIR_S`; -224 if ``current_a`` is the
present current.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Protocol

import numpy as np

import formation
from formation.sim.cycler import MAX_SEQ, MAX_STEPS, CabinetModel
from formation.sim.datalog import format_records
from formation.sim.scpi import (
    IEEE488_COMMANDS,
    CommandSpec,
    Ieee488Instrument,
    definite_block,
    expect_count,
    parse_channel_list,
    parse_choice,
    parse_float,
    parse_int,
    scpi_error,
)
from formation.sim.steptests import MAX_TESTS
from formation.sim.wire import StepMode, StepTest, TestAction, TestType, TestWhen

_C = CommandSpec
COMMAND_TABLE: tuple[CommandSpec, ...] = (
    *IEEE488_COMMANDS,
    _C("CELL:DEFine", False, "c_cell_def", False, "CELL:DEF <id>,(@<chan>): define a cell on a channel"),
    _C("CELL:DEFine:CLEar", False, "c_cell_def_cle", False, "CELL:DEF:CLE (@<ids>): forget cells"),
    _C("CELL:ENABle", False, "c_cell_enab", False, "CELL:ENAB (@<ids>),<seq>: bind cells to a sequence"),
    _C("CELL:INITiate", False, "c_cell_init", False, "CELL:INIT (@<ids>): start enabled cells at step 1"),
    _C("CELL:ABORt", False, "c_cell_abort", False,
       "CELL:ABORT (@<ids>)|0: stop now (0: every cell), output off, ABORTED"),
    _C("SEQuence:STEP:DEFine", False, "c_seq_step_def", False,
       "SEQ:STEP:DEF <seq>,<step>,CHARGE|DISCHARGE,<dur_s>,<I_A>,<V_V> (CC, CV clamp) or "
       "<seq>,<step>,REST,<dur_s>[,<I_A>[,<V_V>]]: define a step"),
    _C("SEQuence:STEP:LOG", False, "c_seq_step_log", True,
       "SEQ:STEP:LOG <seq>,<step>,<every_s>,<every_mv>: record rule of a step (default 60,5; 0 disables)"),
    _C("SEQuence:STEP:COUNt", True, "q_seq_step_coun", False, "SEQ:STEP:COUN? <seq>: steps defined"),
    _C("SEQuence:TEST:DEFine", False, "c_seq_test_def", False,
       "SEQ:TEST:DEF <seq>,<step>,<n>,<type>,<value>,AT|AFTER|BEFORE,<t_s>,NEXT|FAIL: a step test"),
    _C("SEQuence:CLEar", False, "c_seq_cle", False, "SEQ:CLE <seq>|0: forget a sequence (0: every one), not in use"),
    _C("STATus:CELL:REPort", True, "q_stat_rep", True, "STAT:CELL:REP? (@<ids>): state code per cell"),
    _C("STATus:CELL:STEP", True, "q_stat_step", True, "STAT:CELL:STEP? (@<ids>): <seq>:<step> per cell"),
    _C("STATus:CELL:VERBose", True, "q_stat_verb", False,
       "STAT:CELL:VERB? <id>: status,seq,step,step_time_s,V,A,step_ah,temp_c,last_end,\"text\""),
    _C("MEASure:CELL:VOLTage", True, "q_meas_volt", False, "MEAS:CELL:VOLT? (@<ids>): terminal voltage, V"),
    _C("MEASure:CELL:CURRent", True, "q_meas_curr", False, "MEAS:CELL:CURR? (@<ids>): current, A (+ charge)"),
    _C("MEASure:CELL:CAPacity:AHR", True, "q_meas_ahr", False, "MEAS:CELL:CAP:AHR? (@<ids>): step Ah"),
    _C("MEASure:CELL:TEMPerature", True, "q_meas_temp", False, "MEAS:CELL:TEMP? (@<ids>): cell °C"),
    _C("DATA:LOG", True, "q_data_log", True,
       "DATA:LOG? <from_rec>,<max_rows>: ack rec < from_rec, return records as a definite-length CSV block"),
    _C("DATA:LOG:NEXT", True, "q_data_log_next", True, "DATA:LOG:NEXT?: the rec the next record will get"),
    _C("DATA:LOG:LOST", True, "q_data_log_lost", True, "DATA:LOG:LOST?: records dropped on overflow"),
    _C("SYSTem:COMMunicate:WATCHdog|WDOG", False, "c_wdog", True,
       "SYST:COMM:WDOG <s>: abort running cells after <s> wall seconds without any command (0 disarms)"),
    _C("SYSTem:COMMunicate:WATCHdog|WDOG", True, "q_wdog", True, "SYST:COMM:WDOG?: the watchdog setting, s"),
    _C("SYSTem:DATE", True, "q_syst_date", False, "SYST:DATE?: the instrument clock's date (UTC), yyyy,mm,dd"),
    _C("SYSTem:TIME", True, "q_syst_time", False, "SYST:TIME?: the instrument clock's time (UTC), hh,mm,ss.sss"),
    _C("SIM:FAULT:DROP", False, "c_fault_drop", True, "SIM:FAULT:DROP: close every other connection"),
    _C("SIM:FAULT:STALL", False, "c_fault_stall", True,
       "SIM:FAULT:STALL <s>: stop reading and answering all connections for <s> wall seconds"),
    _C("SIM:FAULT:GARBage", False, "c_fault_garb", True,
       "SIM:FAULT:GARB <n>: the next n replies to MEAS:*? and STAT:CELL:REP? are garbage text"),
    _C("SIM:FAULT:LOSE", False, "c_fault_lose", True,
       "SIM:FAULT:LOSE <n>: the next n lines without a query are dropped unread (a connection closing under them)"),
    _C("SIM:FAULT:REFuse", False, "c_fault_refuse", True,
       "SIM:FAULT:REF <n>: the next n CELL:INIT are refused with -221,\"Settings conflict\" (nothing starts)"),
    _C("SIM:FAULT:SHORt", False, "c_fault_short", True,
       "SIM:FAULT:SHORT <id>,<leak_a>: add an internal short (leak, A at 25 °C) to a cell"),
    _C("SIM:FAULT:CLEar", False, "c_fault_cle", True, "SIM:FAULT:CLE: clear every injected fault"),
    _C("SIM:TIME", True, "q_sim_time", True, "SIM:TIME?: the plant clock, unix seconds"),
    _C("SIM:CELL:TRUTH", True, "q_sim_truth", True,
       "SIM:CELL:TRUTH? <id>: ground truth, one JSON line (incl. k_mv_per_day, ocv_slope_v)"),
    _C("SIM:CELL:DCIR", True, "q_sim_dcir", True,
       "SIM:CELL:DCIR? <id>,<current_a>,<t_s>[,<t_s>...]: true ΔV/ΔI (ohm) at each time of a pulse from now"),
)  # fmt: skip

GARBAGE_REPLY = "?!@#garbage#@!?"
#: Bounds of a step's current magnitude and voltage limit (``SEQ:STEP:DEF``).
MAX_CURRENT_A = 1e4
MAX_VOLTAGE_V = 100.0
#: Longest step duration, record period and test time (about 31 years: anything longer is a broken number).
MAX_DURATION_S = 1e9
#: Largest voltage-record threshold of ``SEQ:STEP:LOG`` (mV).
MAX_EVERY_MV = 1e6
#: Largest magnitude of a test value (any unit): beyond it the number is broken.
MAX_TEST_VALUE = 1e12
#: Bounds of ``SIM:CELL:DCIR?`` (the copy is integrated in 0.1 s substeps, so the longest pulse bounds its cost).
MAX_DCIR_TIMES = 32
MAX_DCIR_S = 3600.0


class FaultHooks(Protocol):
    """What the transport offers for the connection faults (the server implements it)."""

    def drop_other_clients(self, client: object) -> None: ...

    def stall(self, seconds: float) -> None: ...

    def clear_faults(self) -> None: ...


class NoFaults:
    """Fault hooks when there is no transport (in-process use, unit tests): connection faults do nothing."""

    def drop_other_clients(self, client: object) -> None:
        """No other connections exist."""

    def stall(self, seconds: float) -> None:
        """Nothing to stall."""

    def clear_faults(self) -> None:
        """Nothing to clear."""


def _ids(text: str) -> list[int]:
    return parse_channel_list(text)


def _is_all(text: str) -> bool:
    """Whether a cell-list parameter is the bare ``0`` the public set uses for "every cell" (``CELL:ABORT 0``)."""
    return text.strip() == "0"


def _fmt(values: np.ndarray, spec: str) -> str:
    return ",".join(spec % v for v in values.tolist())


class CabinetCommands(Ieee488Instrument):
    """The handlers of :data:`COMMAND_TABLE`, binding SCPI text to a :class:`CabinetModel`."""

    def __init__(self, model: CabinetModel, faults: FaultHooks | None = None) -> None:
        super().__init__()
        self.model = model
        self.faults: FaultHooks = faults or NoFaults()
        self.garbage_left = 0
        self.refuse_left = 0

    def idn(self) -> str:
        """``Formation,BT2200-SIM,<serial>,<version>``."""
        return f"Formation,BT2200-SIM,{self.model.serial},{formation.__version__}"

    def reset(self) -> None:
        """``*RST`` on the model; injected faults stay (clear them with ``SIM:FAULT:CLE``)."""
        self.model.reset()

    # cells and sequences ----------

    def c_cell_def(self, args: list[str], client: object) -> None:
        expect_count(args, 2)
        channels = _ids(args[1])
        if len(channels) != 1:
            raise scpi_error(-224)
        self.model.define_cell(parse_int(args[0], 1, 65535), channels[0])

    def c_cell_def_cle(self, args: list[str], client: object) -> None:
        expect_count(args, 1)
        self.model.clear_cells(_ids(args[0]))

    def c_cell_enab(self, args: list[str], client: object) -> None:
        expect_count(args, 2)
        self.model.enable(_ids(args[0]), parse_int(args[1], 1, MAX_SEQ))

    def c_cell_init(self, args: list[str], client: object) -> None:
        expect_count(args, 1)
        channels = _ids(args[0])
        if self.refuse_left > 0:  # SIM:FAULT:REF: the instrument refuses the start, as a real one may
            self.refuse_left -= 1
            raise scpi_error(-221)
        self.model.init(channels)

    def c_cell_abort(self, args: list[str], client: object) -> None:
        expect_count(args, 1)
        self.model.abort(None if _is_all(args[0]) else _ids(args[0]))

    def c_seq_step_def(self, args: list[str], client: object) -> None:
        if len(args) < 4:
            raise scpi_error(-109)
        if len(args) > 6:
            raise scpi_error(-108)
        seq, step = parse_int(args[0], 1, MAX_SEQ), parse_int(args[1], 1, MAX_STEPS)
        mode = parse_choice(args[2], StepMode)
        duration_s = parse_float(args[3], 0.0, MAX_DURATION_S)
        if duration_s <= 0.0:
            raise scpi_error(-222)
        if mode != StepMode.REST and len(args) < 6:
            raise scpi_error(-109)  # a charge or discharge needs its current and its voltage limit
        # A REST step takes only a duration; a current or voltage given to it is checked, then ignored (0 A).
        current_a = parse_float(args[4], 0.0, MAX_CURRENT_A) if len(args) > 4 else 0.0
        voltage_v = parse_float(args[5], 0.0, MAX_VOLTAGE_V) if len(args) > 5 else 0.0
        if mode == StepMode.REST:
            current_a = voltage_v = 0.0
        self.model.define_step(seq, step, mode, duration_s, current_a, voltage_v)

    def c_seq_step_log(self, args: list[str], client: object) -> None:
        expect_count(args, 4)
        seq, step = parse_int(args[0], 1, MAX_SEQ), parse_int(args[1], 1, MAX_STEPS)
        every_s, every_mv = parse_float(args[2], 0.0, MAX_DURATION_S), parse_float(args[3], 0.0, MAX_EVERY_MV)
        self.model.set_step_log(seq, step, every_s, every_mv)

    def q_seq_step_coun(self, args: list[str], client: object) -> str:
        expect_count(args, 1)
        return str(self.model.step_count(parse_int(args[0], 1, MAX_SEQ)))

    def c_seq_test_def(self, args: list[str], client: object) -> None:
        expect_count(args, 8)
        seq, step = parse_int(args[0], 1, MAX_SEQ), parse_int(args[1], 1, MAX_STEPS)
        n = parse_int(args[2], 1, MAX_TESTS)
        test = StepTest(
            type=parse_choice(args[3], TestType),
            value=parse_float(args[4], -MAX_TEST_VALUE, MAX_TEST_VALUE),
            when=parse_choice(args[5], TestWhen),
            at_s=parse_float(args[6], 0.0, MAX_DURATION_S),
            action=parse_choice(args[7], TestAction),
        )
        self.model.define_test(seq, step, n, test)

    def c_seq_cle(self, args: list[str], client: object) -> None:
        expect_count(args, 1)
        seq = parse_int(args[0], 0, MAX_SEQ)
        if seq == 0:
            self.model.clear_all_sequences()
        else:
            self.model.clear_sequence(seq)

    # status and measurement ----------

    def q_stat_rep(self, args: list[str], client: object) -> str:
        expect_count(args, 1)
        codes = self.model.status(_ids(args[0]))
        if self.garbage_left > 0:
            self.garbage_left -= 1
            return GARBAGE_REPLY
        return _fmt(codes, "%d")

    def q_stat_step(self, args: list[str], client: object) -> str:
        expect_count(args, 1)
        ids = _ids(args[0])
        status = self.model.status(ids)
        parts = []
        for cell_id, code in zip(ids, status.tolist(), strict=True):
            if code < 0:
                parts.append("0:0")
            else:
                k = int(self.model.indices([cell_id])[0])
                parts.append(f"{self.model.seq[k]}:{self.model.step[k]}")
        return ",".join(parts)

    def q_stat_verb(self, args: list[str], client: object) -> str:
        expect_count(args, 1)
        return self.model.verbose(parse_int(args[0], 1, 65535))

    def _measure(self, args: list[str], values: np.ndarray, spec: str) -> str:
        expect_count(args, 1)
        idx = self.model.indices(_ids(args[0]))
        if self.garbage_left > 0:
            self.garbage_left -= 1
            return GARBAGE_REPLY
        return _fmt(values[idx], spec)

    def q_meas_volt(self, args: list[str], client: object) -> str:
        return self._measure(args, self.model.reporter.voltage_v(self.model.voltage_v), "%.6f")

    def q_meas_curr(self, args: list[str], client: object) -> str:
        return self._measure(args, self.model.reporter.current_a(self.model.current_a), "%.6f")

    def q_meas_ahr(self, args: list[str], client: object) -> str:
        return self._measure(args, self.model.step_ah, "%.9g")

    def q_meas_temp(self, args: list[str], client: object) -> str:
        return self._measure(args, self.model.reporter.temperature_c(self.model.cells.temperature_c), "%.3f")

    # data log ----------

    def q_data_log(self, args: list[str], client: object) -> str:
        expect_count(args, 2)
        from_rec = parse_int(args[0], 0, 2**53)
        max_rows = parse_int(args[1], 0, 10_000_000)
        return definite_block(format_records(self.model.log.read(from_rec, max_rows)))

    def q_data_log_next(self, args: list[str], client: object) -> str:
        expect_count(args, 0)
        return str(self.model.log.next_rec)

    def q_data_log_lost(self, args: list[str], client: object) -> str:
        expect_count(args, 0)
        return str(self.model.log.lost)

    # watchdog and simulator-only ---------------------------------------------------------------------------

    def c_wdog(self, args: list[str], client: object) -> None:
        expect_count(args, 1)
        self.model.watchdog_s = parse_float(args[0], 0.0, 86400.0)

    def q_wdog(self, args: list[str], client: object) -> str:
        expect_count(args, 0)
        return f"{self.model.watchdog_s:g}"

    def q_syst_date(self, args: list[str], client: object) -> str:
        expect_count(args, 0)
        now = datetime.fromtimestamp(self.model.time_s, UTC)
        return f"{now.year:04d},{now.month:02d},{now.day:02d}"

    def q_syst_time(self, args: list[str], client: object) -> str:
        expect_count(args, 0)
        # The clock the data log's time_s comes from, to the millisecond (SCPI's seconds field takes a fraction).
        now = datetime.fromtimestamp(self.model.time_s, UTC)
        return f"{now.hour:02d},{now.minute:02d},{now.second:02d}.{now.microsecond // 1000:03d}"

    def c_fault_drop(self, args: list[str], client: object) -> None:
        expect_count(args, 0)
        self.faults.drop_other_clients(client)

    def c_fault_stall(self, args: list[str], client: object) -> None:
        expect_count(args, 1)
        self.faults.stall(parse_float(args[0], 0.0, 3600.0))

    def c_fault_garb(self, args: list[str], client: object) -> None:
        expect_count(args, 1)
        self.garbage_left = parse_int(args[0], 0, 1_000_000)

    def c_fault_lose(self, args: list[str], client: object) -> None:
        expect_count(args, 1)
        self.lines_to_lose = parse_int(args[0], 0, 1_000_000)

    def c_fault_refuse(self, args: list[str], client: object) -> None:
        expect_count(args, 1)
        self.refuse_left = parse_int(args[0], 0, 1_000_000)

    def c_fault_short(self, args: list[str], client: object) -> None:
        expect_count(args, 2)
        index = int(self.model.indices([parse_int(args[0], 1, 65535)])[0])
        self.model.cells.add_leak_a(index, parse_float(args[1], 0.0, 1000.0))

    def c_fault_cle(self, args: list[str], client: object) -> None:
        expect_count(args, 0)
        self.garbage_left = 0
        self.refuse_left = 0
        self.lines_to_lose = 0
        self.faults.clear_faults()

    def q_sim_time(self, args: list[str], client: object) -> str:
        expect_count(args, 0)
        return f"{self.model.time_s:.3f}"

    def q_sim_truth(self, args: list[str], client: object) -> str:
        expect_count(args, 1)
        return json.dumps(self.model.truth(parse_int(args[0], 1, 65535)), default=float)

    def q_sim_dcir(self, args: list[str], client: object) -> str:
        if len(args) < 3:
            raise scpi_error(-109)
        if len(args) > 2 + MAX_DCIR_TIMES:
            raise scpi_error(-108)
        cell_id = parse_int(args[0], 1, 65535)
        current_a = parse_float(args[1], -1e4, 1e4)
        times_s = [parse_float(a, 0.0, MAX_DCIR_S) for a in args[2:]]
        if min(times_s) <= 0.0:
            raise scpi_error(-222)
        return _fmt(self.model.truth_dcir_ohm(cell_id, current_a, times_s), "%.9g")


def command_table_markdown() -> str:
    """The README's table of every accepted command (kept in step by tests/unit/test_readme.py)."""
    lines = ["| command | EXT | what it does |", "|---|---|---|"]
    for spec in COMMAND_TABLE:
        header = spec.header.replace("|", "` or `") + ("?" if spec.query else "")
        lines.append(f"| `{header}` | {'EXT' if spec.ext else ''} | {spec.description.replace('|', '/')} |")
    return "\n".join(lines)
