"""Every command the simulated OCV/ACIR tester (BT3562 dialect) accepts (``COMMAND_TABLE``) and their handlers.

``ext=True`` marks extensions beyond the public Hioki BT3562 set (docs/bt3562-dialect.md): the scanner (a separate
switching unit on a real line, its command set not public to us), the racks and the faults.

``SIM:RACK:LIST?`` replies with one JSON line: a list of ``{"rack", "slot", "positions", "chamber", "occupied"}``
in slot order. ``SIM:RACK:TRUTH? <rack>,<pos>`` replies with one JSON line: rack, position, cabinet, channel, cell
(the BT2200 cell id it had), loaded_s, contact_ohm, then every key of ``CellPopulation.truth``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable

import formation
from formation.sim.commands import FaultHooks, NoFaults
from formation.sim.cycler import CabinetModel, instrument_channel_index
from formation.sim.rack import Origin
from formation.sim.scpi import (
    IEEE488_COMMANDS,
    CommandSpec,
    Ieee488Instrument,
    expect_count,
    parse_float,
    parse_int,
    scpi_error,
)
from formation.sim.tester import R_RANGES, V_RANGES, TesterModel, pick_range

_C = CommandSpec


def _ieee(spec: CommandSpec) -> CommandSpec:
    if spec.header == "*RST":
        return dataclasses.replace(spec, description="Reset: RV, 3 Ω and 6 V ranges, MEDium rate, scanner open")
    if spec.header == "SYSTem:ERRor":
        return dataclasses.replace(spec, ext=True)  # not confirmed for the BT3562 (docs/bt3562-dialect.md)
    return spec


COMMAND_TABLE: tuple[CommandSpec, ...] = (
    *(_ieee(c) for c in IEEE488_COMMANDS),
    _C(":FUNCtion", False, "c_function", False, ":FUNC RESistance|VOLTage|RV: what a measurement reads (RV: both)"),
    _C(":FUNCtion", True, "q_function", False, ":FUNC?: RESISTANCE, VOLTAGE or RV"),
    _C(":RESistance:RANGe", False, "c_res_range", False,
       ":RES:RANG <ohm>: the smallest of 3m/30m/300m/3/30/300/3000 Ω that holds <ohm>"),
    _C(":RESistance:RANGe", True, "q_res_range", False, ":RES:RANG?: the range, NR3 (30E-3)"),
    _C(":VOLTage:RANGe", False, "c_volt_range", False, ":VOLT:RANG <v>: 6 or 60 V (the smallest that holds <v>)"),
    _C(":VOLTage:RANGe", True, "q_volt_range", False, ":VOLT:RANG?: the range, NR3 (6E+0)"),
    _C(":SAMPle:RATE", False, "c_sample_rate", False,
       ":SAMP:RATE EXFast|FAST|MEDium|SLOW: integration time (slower: quieter)"),
    _C(":SAMPle:RATE", True, "q_sample_rate", False, ":SAMP:RATE?: EXFAST, FAST, MEDIUM or SLOW"),
    _C(":MEASure:BATTery", True, "q_meas_battery", False,
       ":MEAS:BATT?: <R_ohm>,<V_v> NR3 at the closed scanner channel (RV only); overflow ±1E+9, no contact 1E+10 "
       "in the range's digits"),
    _C(":ROUTe:CLOSe", False, "c_rout_clos", True, ":ROUT:CLOS (@<slot·1000 + position>): close one scanner channel"),
    _C(":ROUTe:CLOSe", True, "q_rout_clos", True, ":ROUT:CLOS?: the closed scanner channel, 0 when none"),
    _C(":ROUTe:OPEN:ALL", False, "c_rout_open_all", True, ":ROUT:OPEN:ALL: open the scanner"),
    _C("SIM:RACK:LOAD", False, "c_rack_load", True,
       "SIM:RACK:LOAD <rack>,<pos>,<cabinet>,<channel>: move the cell on a cabinet's BT2200 channel to a position"),
    _C("SIM:RACK:UNLoad", False, "c_rack_unload", True, "SIM:RACK:UNL <rack>,<pos>: take the cell off a position"),
    _C("SIM:RACK:LIST", True, "q_rack_list", True, "SIM:RACK:LIST?: the racks the scanner reaches, one JSON line"),
    _C("SIM:RACK:TRUTH", True, "q_rack_truth", True,
       "SIM:RACK:TRUTH? <rack>,<pos>: ground truth of the cell there and where it came from, one JSON line"),
    _C("SIM:FAULT:CONTact", False, "c_fault_contact", True,
       "SIM:FAULT:CONT <chan>: the probes of that scanner channel lose contact (reads the fault value)"),
    _C("SIM:FAULT:DROP", False, "c_fault_drop", True, "SIM:FAULT:DROP: close every other connection"),
    _C("SIM:FAULT:STALL", False, "c_fault_stall", True,
       "SIM:FAULT:STALL <s>: stop reading and answering all connections for <s> wall seconds"),
    _C("SIM:FAULT:CLEar", False, "c_fault_cle", True, "SIM:FAULT:CLE: restore every contact, end a stall"),
    _C("SIM:TIME", True, "q_sim_time", True, "SIM:TIME?: the plant clock, unix seconds"),
)  # fmt: skip

#: Resolves a cabinet name to its model, advanced to now (KeyError when the plant has no such cabinet).
CabinetLookup = Callable[[str], CabinetModel]
MAX_STALL_S = 3600.0
_FUNCTION_WORDS = {"RES": "RESISTANCE", "RESISTANCE": "RESISTANCE", "VOLT": "VOLTAGE", "VOLTAGE": "VOLTAGE", "RV": "RV"}
_RATE_WORDS = {"EXF": "EXFAST", "FAST": "FAST", "MED": "MEDIUM", "SLOW": "SLOW"}


def _word(text: str, words: dict[str, str]) -> str:
    key = text.strip().upper()
    for short, long in words.items():
        if key in (short, long):
            return long
    raise scpi_error(-224)


def _name(text: str) -> str:
    """A rack or cabinet name parameter, bare or double-quoted."""
    name = text.strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = name[1:-1]
    if not name:
        raise scpi_error(-224)
    return name


def _range_text(value: float) -> str:
    """``30E-3``, ``6E+0``, ``3E+3``: the range in NR3 with its significant digits only."""
    exponent = 3 * math.floor(math.log10(value) / 3 + 1e-9)
    return f"{round(value / 10.0**exponent):d}E{exponent:+d}"


class TesterCommands(Ieee488Instrument):
    """The handlers of :data:`COMMAND_TABLE`, binding BT3562-dialect text to a :class:`TesterModel`."""

    def __init__(
        self,
        model: TesterModel,
        cabinets: CabinetLookup | None = None,
        faults: FaultHooks | None = None,
        *,
        serial: str = "SIM0001",
        clock_s: Callable[[], float] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.cabinets = cabinets
        self.faults: FaultHooks = faults or NoFaults()
        self.serial = serial
        self._clock_s = clock_s

    def idn(self) -> str:
        """``Formation,BT3562-SIM,<serial>,<version>``."""
        return f"Formation,BT3562-SIM,{self.serial},{formation.__version__}"

    def reset(self) -> None:
        """``*RST``: default settings, scanner open; faults and the racks' cells stay."""
        self.model.reset()

    # settings ----------

    def c_function(self, args: list[str], client: object) -> None:
        expect_count(args, 1)
        self.model.function = _word(args[0], _FUNCTION_WORDS)

    def q_function(self, args: list[str], client: object) -> str:
        expect_count(args, 0)
        return self.model.function

    def c_res_range(self, args: list[str], client: object) -> None:
        expect_count(args, 1)
        self.model.resistance_range_ohm = pick_range(parse_float(args[0], 0.0, 3100.0), tuple(R_RANGES))

    def q_res_range(self, args: list[str], client: object) -> str:
        expect_count(args, 0)
        return _range_text(self.model.resistance_range_ohm)

    def c_volt_range(self, args: list[str], client: object) -> None:
        expect_count(args, 1)
        self.model.voltage_range_v = pick_range(parse_float(args[0], -62.0, 62.0), tuple(V_RANGES))

    def q_volt_range(self, args: list[str], client: object) -> str:
        expect_count(args, 0)
        return _range_text(self.model.voltage_range_v)

    def c_sample_rate(self, args: list[str], client: object) -> None:
        expect_count(args, 1)
        self.model.sample_rate = _word(args[0], _RATE_WORDS)

    def q_sample_rate(self, args: list[str], client: object) -> str:
        expect_count(args, 0)
        return self.model.sample_rate

    # measurement ----------

    def q_meas_battery(self, args: list[str], client: object) -> str:
        expect_count(args, 0)
        if self.model.function != "RV":
            raise scpi_error(-221)  # the public set: an execution error outside RV mode
        return self.model.battery_reply()

    # scanner ----------

    def _channel(self, text: str) -> int:
        body = text.strip()
        if body.startswith("(@") and body.endswith(")"):
            body = body[2:-1]
        channel = parse_int(body, 0, 10**6)
        self.model.locate(channel)
        return channel

    def c_rout_clos(self, args: list[str], client: object) -> None:
        expect_count(args, 1)
        self.model.close(self._channel(args[0]))

    def q_rout_clos(self, args: list[str], client: object) -> str:
        expect_count(args, 0)
        return str(self.model.closed or 0)

    def c_rout_open_all(self, args: list[str], client: object) -> None:
        expect_count(args, 0)
        self.model.closed = None

    # racks (simulator only) ----------

    def _position(self, args: list[str]) -> tuple[int, int]:
        slot, rack = self.model.rack(_name(args[0]))
        return slot, rack.check_position(parse_int(args[1], 1, 10**6)) + 1

    def c_rack_load(self, args: list[str], client: object) -> None:
        expect_count(args, 4)
        slot, position = self._position(args)
        rack = self.model.racks[slot - 1]
        if rack.occupied(position):
            raise scpi_error(-221)
        if self.cabinets is None:
            raise scpi_error(-224)
        try:
            cabinet = self.cabinets(_name(args[2]))
        except KeyError:
            raise scpi_error(-224) from None
        channel = parse_int(args[3], 101, 10**6)
        index = instrument_channel_index(channel, cabinet.n)
        if rack.cells is not None and cabinet.cells.preset != rack.cells.preset:
            raise scpi_error(-224)
        cell = cabinet.take_cell(index)
        rack.load(position, cell, Origin(_name(args[2]), channel, int(cabinet.cell_id[index]), rack.time_s))

    def c_rack_unload(self, args: list[str], client: object) -> None:
        expect_count(args, 2)
        slot, position = self._position(args)
        self.model.racks[slot - 1].unload(position)

    def q_rack_list(self, args: list[str], client: object) -> str:
        expect_count(args, 0)
        return json.dumps(
            [
                {
                    "rack": rack.name,
                    "slot": slot,
                    "positions": rack.positions,
                    "chamber": rack.spec.chamber,
                    "occupied": int((rack.slot >= 0).sum()),
                }
                for slot, rack in enumerate(self.model.racks, start=1)
            ]
        )

    def q_rack_truth(self, args: list[str], client: object) -> str:
        expect_count(args, 2)
        slot, position = self._position(args)
        return json.dumps(self.model.racks[slot - 1].truth(position), default=float)

    # faults ----------

    def c_fault_contact(self, args: list[str], client: object) -> None:
        expect_count(args, 1)
        self.model.no_contact.add(self._channel(args[0]))

    def c_fault_drop(self, args: list[str], client: object) -> None:
        expect_count(args, 0)
        self.faults.drop_other_clients(client)

    def c_fault_stall(self, args: list[str], client: object) -> None:
        expect_count(args, 1)
        self.faults.stall(parse_float(args[0], 0.0, MAX_STALL_S))

    def c_fault_cle(self, args: list[str], client: object) -> None:
        expect_count(args, 0)
        self.model.no_contact.clear()
        self.faults.clear_faults()

    def q_sim_time(self, args: list[str], client: object) -> str:
        expect_count(args, 0)
        now = self._clock_s() if self._clock_s is not None else max(r.time_s for r in self.model.racks)
        return f"{now:.3f}"


def command_table_markdown() -> str:
    """The command table of docs/bt3562-dialect.md (kept in step by tests/unit/test_sim_tester.py)."""
    lines = ["| command | EXT | what it does |", "|---|---|---|"]
    for spec in COMMAND_TABLE:
        header = spec.header.replace("|", "` or `") + ("?" if spec.query else "")
        lines.append(f"| `{header}` | {'EXT' if spec.ext else ''} | {spec.description.replace('|', '/')} |")
    return "\n".join(lines)
