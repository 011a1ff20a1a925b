"""Typed driver of a formation cabinet speaking the BT2200 dialect (docs/bt2200-dialect.md).

Every SCPI command of the dialect appears once, in the method that sends it, beside its units and range.
Channels handed to the driver are LOGICAL channels (1-based); the driver maps them to instrument
channels (``channel_to_instrument``) and cell ids (``channel_to_cell_id``) and compresses cell lists into
ranges, so a whole cabinet is read with one query per quantity, never one per channel. Every reply is
validated (count, finiteness, plausible range) before it leaves the driver: garbage raises
:class:`~formation.errors.InstrumentProtocolError` naming the command.

Extension commands the driver uses beyond the public BT2200 set (**EXT**, mirrored by the simulator):
``SEQ:STEP:LOG`` (record rule per step), ``STAT:CELL:STEP?``, the ``STAT:CELL:REP?`` code table
(:class:`CellState`), ``STEPTIME_GE`` tests, ``SYST:COMM:WDOG`` (communication watchdog), ``DATA:LOG?`` /
``DATA:LOG:NEXT?`` (acknowledging data log); ``SEQ:STEP:COUN?`` (public) checks a download.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from formation.instruments.base import ScpiInstrument
from formation.instruments.program import (
    LOG_COL,
    LOG_COLUMNS,
    CellState,
    InstrumentStep,
    StepProgram,
    channel_to_cell_id,
    channel_to_instrument,
    empty_log_block,
)
from formation.instruments.scpi import ScpiSession

#: Sequence ids the instrument accepts (``SEQ:STEP:DEF`` seq 1–1024).
SEQ_IDS = range(1, 1025)
#: Steps per sequence (1–64) and tests per step (1–8).
MAX_STEPS = 64
MAX_TESTS = 8
#: Commands joined with ";" per line when defining many cells (keeps lines a few kB).
DEF_CELLS_PER_LINE = 64
#: Plausible ranges of measured values; anything outside is a broken reply, not a measurement.
VOLTAGE_RANGE_V = (-1.0, 10.0)
CURRENT_RANGE_A = (-5000.0, 5000.0)
STEP_AH_RANGE = (-1e5, 1e5)
TEMPERATURE_RANGE_C = (-80.0, 250.0)
_STATE_CODES = np.array(sorted(int(s) for s in CellState), dtype=np.int64)


@dataclass(frozen=True, slots=True)
class Measurement:
    """One batched measurement, one array element per requested channel, in request order."""

    voltage_v: np.ndarray
    current_a: np.ndarray
    step_ah: np.ndarray
    temperature_c: np.ndarray


def compress_ids(ids: Iterable[int]) -> str:
    """A SCPI channel list in request order with consecutive runs as ranges: ``(@1001:1032,1040)``."""
    arr = np.asarray(list(ids), dtype=np.int64)
    if arr.size == 0:
        raise ValueError("empty channel list")
    breaks = np.flatnonzero(np.diff(arr) != 1) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [arr.size])) - 1
    pairs = zip(starts.tolist(), ends.tolist(), strict=True)
    parts = [str(arr[s]) if s == e else f"{arr[s]}:{arr[e]}" for s, e in pairs]
    return "(@" + ",".join(parts) + ")"


def _num(value: float) -> str:
    """A number as SCPI text, with enough digits to round-trip."""
    return f"{float(value):.10g}"


class Bt2200Cycler(ScpiInstrument):
    """Async driver of one BT2200-dialect cabinet over an :class:`ScpiSession`."""

    def __init__(self, session: ScpiSession, *, seq_ids: Sequence[int] = SEQ_IDS) -> None:
        super().__init__(session)
        self._seq_ids = list(seq_ids)
        self._next_seq = 0
        self._programs: dict[StepProgram, int] = {}
        self._reserved: set[int] = set()

    # -- common commands -------------------------------------------------------------------------

    async def reset(self) -> None:
        """``*RST``: abort all cells, clear sequences, cells, log and watchdog; forget cached programs."""
        await self.session.write("*RST")
        await self._opc()
        self.forget_programs()

    async def clear_status(self) -> None:
        """``*CLS``: clear the event status register and the error queue."""
        await self.session.write("*CLS")

    async def set_watchdog(self, seconds: float) -> None:
        """``SYST:COMM:WDOG <s>`` (EXT): abort running cells after that much host silence; 0 disarms."""
        if seconds < 0:
            raise ValueError(f"watchdog must be >= 0 s, got {seconds}")
        cmd = f"SYST:COMM:WDOG {_num(seconds)}"
        await self.session.write(cmd)
        await self.session.raise_on_errors(cmd)

    # -- cells and sequences ---------------------------------------------------------------------

    async def define_cells(self, channels: Sequence[int]) -> None:
        """``CELL:DEF <id>,(@<chan>)`` per logical channel (id 1000+channel), joined into compound lines."""
        cmds = [f"CELL:DEF {channel_to_cell_id(ch)},(@{channel_to_instrument(ch)})" for ch in channels]
        for i in range(0, len(cmds), DEF_CELLS_PER_LINE):
            line = ";".join(cmds[i : i + DEF_CELLS_PER_LINE])
            await self.session.write(line)
            await self.session.raise_on_errors(line)

    async def load_program(self, program: StepProgram) -> int:
        """Download ``program`` as one sequence and return its id; an identical program is downloaded once.

        Per instrument step: ``SEQ:STEP:DEF <seq>,<step>,CHARGE|DISCHARGE|REST,<dur_s>,<I_A>,<V_V>``
        (dur > 0 s, I >= 0 A magnitude, V the CV clamp), ``SEQ:STEP:LOG <seq>,<step>,<every_s>,<every_mv>``
        (EXT) and ``SEQ:TEST:DEF <seq>,<step>,<n>,<type>,<value>,AT|AFTER|BEFORE,<t_s>,NEXT|FAIL`` (n 1–8).
        The sequence is cleared first (``SEQ:CLE <seq>``); ids are reused oldest-first once all are used.
        """
        cached = self._programs.get(program)
        if cached is not None:
            return cached
        if not 1 <= len(program.steps) <= MAX_STEPS:
            raise ValueError(f"a program has 1..{MAX_STEPS} steps, got {len(program.steps)}")
        seq = self._allocate_seq()
        clear = f"SEQ:CLE {seq}"
        await self.session.write(clear)
        await self.session.raise_on_errors(clear)
        for number, step in enumerate(program.steps, start=1):
            line = ";".join(self._step_commands(seq, number, step))
            await self.session.write(line)
            await self.session.raise_on_errors(line)
        # A line written just before the connection dropped may never have been read, and the error queue asked
        # over the new connection says nothing of it: count what the instrument holds before trusting it.
        count = f"SEQ:STEP:COUN? {seq}"
        held = self._floats(await self.session.query(count), 1, count)[0]
        if held != len(program.steps):
            raise self._garbage(
                f"sequence {seq} holds {held:g} step(s) after a download of {len(program.steps)}: a command was lost",
                count,
            )
        self._programs[program] = seq
        return seq

    def forget_programs(self) -> None:
        """Forget which programs are downloaded (after ``*RST`` or when the instrument was replaced)."""
        self._programs.clear()

    def forget_program(self, program: StepProgram) -> None:
        """Forget that ``program`` is downloaded: the next ``load_program`` downloads it again (after a refused
        start, the sequence may not be what the host thinks)."""
        self._programs.pop(program, None)

    async def start(self, channels: Sequence[int], seq_id: int) -> None:
        """``CELL:ENAB (@ids),<seq>`` then ``CELL:INIT (@ids)``, each checked by ``*OPC?`` and error queue."""
        cells = self._cells(channels)
        enable = f"CELL:ENAB {cells},{seq_id}"
        await self.session.write(enable)
        await self._opc()
        # Initiating after a refused enable would start the cells on whatever they were bound to before.
        await self.session.raise_on_errors(enable)
        init = f"CELL:INIT {cells}"
        await self.session.write(init)
        await self._opc()
        await self.session.raise_on_errors(init)

    async def abort(self, channels: Sequence[int]) -> None:
        """``CELL:ABORT (@ids)``: output off now, end record with code 30, status ABORTED."""
        cmd = f"CELL:ABORT {self._cells(channels)}"
        # An abort is safe to repeat, so it is resent after a reconnect.
        await self.session.write(cmd, retry=True)
        await self._opc()
        await self.session.raise_on_errors(cmd)

    # -- batched reads ---------------------------------------------------------------------------

    async def status(self, channels: Sequence[int]) -> np.ndarray:
        """``STAT:CELL:REP? (@ids)`` (EXT code table) -> int64 :class:`CellState` codes in channel order."""
        cmd = f"STAT:CELL:REP? {self._cells(channels)}"
        codes = self._floats(await self.session.query(cmd), len(channels), cmd)
        ints = codes.astype(np.int64)
        if np.any(ints != codes) or not np.all(np.isin(ints, _STATE_CODES)):
            raise self._garbage("status code outside the CellState table", cmd)
        return ints

    async def step_positions(self, channels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """``STAT:CELL:STEP? (@ids)`` (EXT) -> (sequence ids, step numbers), ``0:0`` when not bound."""
        cmd = f"STAT:CELL:STEP? {self._cells(channels)}"
        reply = await self.session.query(cmd)
        pairs = self._floats(reply.replace(":", ","), 2 * len(channels), cmd)
        if np.any(pairs != np.round(pairs)) or np.any(pairs < 0):
            raise self._garbage("sequence/step positions are not non-negative integers", cmd)
        pos = pairs.astype(np.int64).reshape(-1, 2)
        return pos[:, 0].copy(), pos[:, 1].copy()

    async def last_end(self, channel: int) -> int:
        """The end code of the cell's last finished step, from ``STAT:CELL:VERB? <id>`` (one cell; not a hot path).

        Reply: ``<status>,<seq>,<step>,<step_time_s>,<V>,<A>,<step_ah>,<temp_c>,<last_end>,"<text>"``.
        """
        cmd = f"STAT:CELL:VERB? {channel_to_cell_id(channel)}"
        reply = await self.session.query(cmd)
        fields = reply.split(",", 9)
        try:
            return int(fields[8])
        except (IndexError, ValueError):
            raise self._garbage(f"verbose status {reply!r} has no end code", cmd) from None

    async def measure(self, channels: Sequence[int]) -> Measurement:
        """One compound line over the whole list: ``MEAS:CELL:VOLT?`` V, ``MEAS:CELL:CURR?`` A (+charge),
        ``MEAS:CELL:CAP:AHR?`` Ah of the current step (signed), ``MEAS:CELL:TEMP?`` °C."""
        cells = self._cells(channels)
        quantities = (
            ("MEAS:CELL:VOLT?", VOLTAGE_RANGE_V),
            ("MEAS:CELL:CURR?", CURRENT_RANGE_A),
            ("MEAS:CELL:CAP:AHR?", STEP_AH_RANGE),
            ("MEAS:CELL:TEMP?", TEMPERATURE_RANGE_C),
        )
        cmd = ";".join(f"{header} {cells}" for header, _ in quantities)
        parts = (await self.session.query(cmd)).split(";")
        if len(parts) != len(quantities):
            raise self._garbage(f"{len(parts)} reply groups for {len(quantities)} queries", cmd)
        arrays = []
        for part, (header, (low, high)) in zip(parts, quantities, strict=True):
            values = self._floats(part, len(channels), f"{header} {cells}")
            if np.any(values < low) or np.any(values > high):
                raise self._garbage(f"value outside [{low:g}, {high:g}]", f"{header} {cells}")
            arrays.append(values)
        return Measurement(*arrays)

    async def read_log(self, from_rec: int, max_rows: int = 100_000) -> np.ndarray:
        """``DATA:LOG? <from_rec>,<max_rows>`` (EXT) -> (n, 12) float64 in LOG_COLUMNS order.

        Asking from ``from_rec`` acknowledges every record before it, so a lost reply is simply asked again.
        """
        if from_rec < 1 or max_rows < 1:
            raise ValueError(f"from_rec and max_rows must be >= 1, got {from_rec}, {max_rows}")
        cmd = f"DATA:LOG? {from_rec},{max_rows}"
        payload = await self.session.query_block(cmd)
        if not payload.strip():
            return empty_log_block()
        try:
            block = np.loadtxt(io.BytesIO(payload), delimiter=",", dtype=np.float64, ndmin=2)
        except ValueError as exc:
            raise self._garbage(f"log block does not parse: {exc}", cmd) from exc
        if block.shape[1] != len(LOG_COLUMNS):
            raise self._garbage(f"log rows have {block.shape[1]} columns, expected {len(LOG_COLUMNS)}", cmd)
        if block.shape[0] > max_rows or not np.all(np.isfinite(block)):
            raise self._garbage("log block has too many rows or non-finite values", cmd)
        rec = block[:, LOG_COL["rec"]]
        if rec[0] < from_rec or np.any(np.diff(rec) <= 0):
            raise self._garbage("log records are not increasing from the requested rec", cmd)
        return block

    async def instrument_time_s(self) -> float:
        """``SYST:DATE?;SYST:TIME?`` (SCPI standard, one line so both read one instant) -> the instrument clock in
        unix seconds, read as UTC: the clock its data log's ``time_s`` comes from (yyyy,mm,dd;hh,mm,ss[.fff])."""
        cmd = "SYST:DATE?;SYST:TIME?"
        reply = await self.session.query(cmd)
        try:
            date, clock = reply.split(";")
            year, month, day = (int(float(x)) for x in date.split(","))
            hour, minute, second = clock.split(",")
            seconds = float(second)
            if not 0.0 <= seconds < 61.0:
                raise ValueError(f"seconds {seconds!r}")
            stamp = datetime(year, month, day, int(float(hour)), int(float(minute)), tzinfo=UTC)
        except ValueError as exc:
            raise self._garbage(f"date and time {reply!r} do not parse: {exc}", cmd) from None
        return stamp.timestamp() + seconds

    async def log_next_rec(self) -> int:
        """``DATA:LOG:NEXT?`` (EXT) -> the rec number the next log record will get."""
        cmd = "DATA:LOG:NEXT?"
        value = self._floats(await self.session.query(cmd), 1, cmd)[0]
        if value < 1 or value != int(value):
            raise self._garbage(f"next rec {value!r} is not a positive integer", cmd)
        return int(value)

    # -- helpers ---------------------------------------------------------------------------------

    async def _opc(self) -> None:
        """``*OPC?`` -> ``1`` once every previous command has completed."""
        reply = await self.session.query("*OPC?")
        if reply != "1":
            raise self._garbage(f"*OPC? answered {reply!r}", "*OPC?")

    def _step_commands(self, seq: int, number: int, step: InstrumentStep) -> list[str]:
        if step.duration_s <= 0 or step.current_a < 0:
            raise ValueError(f"step {number}: duration must be > 0 s and current >= 0 A")
        if len(step.tests) > MAX_TESTS:
            raise ValueError(f"step {number}: at most {MAX_TESTS} tests, got {len(step.tests)}")
        cmds = [
            f"SEQ:STEP:DEF {seq},{number},{step.mode.value},{_num(step.duration_s)},"
            f"{_num(step.current_a)},{_num(step.voltage_v)}",
            f"SEQ:STEP:LOG {seq},{number},{_num(step.every_s)},{_num(step.every_mv)}",
        ]
        cmds += [
            f"SEQ:TEST:DEF {seq},{number},{n},{t.type.value},{_num(t.value)},{t.when.value},"
            f"{_num(t.at_s)},{t.action.value}"
            for n, t in enumerate(step.tests, start=1)
        ]
        return cmds

    def reserve_sequences(self, seq_ids: Sequence[int]) -> None:
        """Never allocate these ids (sequences another host process downloaded and cells may still use)."""
        self._reserved.update(int(s) for s in seq_ids if s)

    def _allocate_seq(self) -> int:
        for _ in range(len(self._seq_ids)):
            seq = self._seq_ids[self._next_seq % len(self._seq_ids)]
            self._next_seq += 1
            if seq not in self._reserved:
                break
        # Reusing an id: the program that held it is no longer downloaded.
        for prog, held in list(self._programs.items()):
            if held == seq:
                del self._programs[prog]
        return seq

    @staticmethod
    def _cells(channels: Sequence[int]) -> str:
        if min(channels, default=1) < 1:
            raise ValueError(f"logical channels are 1-based, got {min(channels)}")
        return compress_ids(channel_to_cell_id(ch) for ch in channels)
