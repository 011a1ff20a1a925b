"""Every command the simulated chamber DAQ (DAQ970A dialect) accepts (``COMMAND_TABLE``) and their handlers.

``ext=True`` marks extensions beyond the public Keysight DAQ970A / 34970A set (docs/daq970a-dialect.md).

Wiring of the simulated DAQ: thermocouple k (0-based) on channel ``101 + k`` (slot 1, a multiplexer), valve k on
channel ``301 + k`` (slot 3, an actuator module): the hot-loop valves first, then the chilled-loop valves.
Closing an actuator channel (``ROUT:CLOS``) energises its normally-closed solenoid valve: the valve opens.
``ROUT:CLOS?`` reads back the relay state the instrument set (a stuck valve does not show there; its true
position is in ``SIM:CHAM:TRUTH?``). Each valve's open end switch is wired to a digital input: valve k is bit
``k % 8`` of port ``201 + k // 8`` (slot 2, a digital I/O module), read with ``SENS:DIG:DATA:BYTE?``; a stuck
valve shows there.

``SIM:CHAMber:TRUTH?`` (simulator only) replies with one line of JSON: ``tc_channels`` and ``valve_channels``
(instrument channel numbers, in the order of the per-channel lists) plus every key of
:meth:`ChamberModel.truth`: time_s, air_c, mass_c, ambient_c, door_open, door_left_s, cell_heat_w, valve_heat_w
(heat of the valves as they stand, W), delivered_valve_heat_w (the heat reaching the air now, a dead time
later), valve_open (true position), valve_commanded (relay state), valve_stuck (null, "OPEN" or "CLOSED"),
switch_counts (per valve), tc_c (junction temperatures), tc_offset_c, tc_open.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

import formation
from formation.sim.chamber import OVERLOAD, ChamberModel
from formation.sim.commands import FaultHooks, NoFaults
from formation.sim.scpi import (
    IEEE488_COMMANDS,
    CommandSpec,
    Ieee488Instrument,
    expect_count,
    parse_float,
    parse_int,
    scpi_error,
)

_C = CommandSpec
_RST = "Reset: every relay open (every valve commanded closed); injected faults stay"
COMMAND_TABLE: tuple[CommandSpec, ...] = (
    *(dataclasses.replace(c, description=_RST) if c.header == "*RST" else c for c in IEEE488_COMMANDS),
    _C("MEASure:TEMPerature", True, "q_meas_temp", False,
       "MEAS:TEMP? [{TC|DEF}[,{K|DEF}[,1[,{<res>|MIN|MAX|DEF}]]],](@<tc>): °C per channel, NR3, list order; "
       "open thermocouple +9.9E+37"),
    _C("ROUTe:CLOSe", False, "c_rout_clos", False, "ROUT:CLOS (@<valves>): close the relays (open the valves)"),
    _C("ROUTe:CLOSe:EXCLusive", False, "c_rout_clos_excl", False,
       "ROUT:CLOS:EXCL (@<valves>): open every relay of the module, then close these"),
    _C("ROUTe:OPEN", False, "c_rout_open", False, "ROUT:OPEN (@<valves>): open the relays (close the valves)"),
    _C("ROUTe:OPEN:ALL", False, "c_rout_open_all", False, "ROUT:OPEN:ALL [ALL|<slot>]: open every relay"),
    _C("ROUTe:CLOSe", True, "q_rout_clos", False, "ROUT:CLOS? (@<valves>): 1 closed / 0 open per channel"),
    _C("ROUTe:OPEN", True, "q_rout_open", False, "ROUT:OPEN? (@<valves>): 1 open / 0 closed per channel"),
    _C("SENSe:DIGital:DATA:BYTE", True, "q_dig_byte", False,
       "SENS:DIG:DATA:BYTE? (@<ports>): the valves' open end switches, one decimal byte per port (bit k of port "
       "201 + j: valve 8j + k, 1 = open)"),
    _C("SIM:FAULT:TC", False, "c_fault_tc", True, "SIM:FAULT:TC <chan>: open thermocouple (reads +9.9E+37)"),
    _C("SIM:FAULT:VALVe", False, "c_fault_valve", True,
       "SIM:FAULT:VALV <chan>,OPEN|CLOSED: the valve sticks there (commands accepted, valve stays)"),
    _C("SIM:FAULT:AMBient", False, "c_fault_ambient", True, "SIM:FAULT:AMB <c>: step the ambient to <c> °C"),
    _C("SIM:FAULT:DOOR", False, "c_fault_door", True,
       "SIM:FAULT:DOOR <s>: door open for <s> clock seconds (large extra loss to ambient; 0 closes)"),
    _C("SIM:FAULT:DROP", False, "c_fault_drop", True, "SIM:FAULT:DROP: close every other connection"),
    _C("SIM:FAULT:STALL", False, "c_fault_stall", True,
       "SIM:FAULT:STALL <s>: stop reading and answering all connections for <s> wall seconds"),
    _C("SIM:FAULT:CLEar", False, "c_fault_cle", True,
       "SIM:FAULT:CLE: repair thermocouples, free valves, close the door, restore the ambient, end a stall"),
    _C("SIM:TIME", True, "q_sim_time", True, "SIM:TIME?: the plant clock, unix seconds"),
    _C("SIM:CHAMber:TRUTH", True, "q_sim_truth", True,
       "SIM:CHAM:TRUTH?: ground truth, one JSON line (air, mass, ambient, valves, switch counts)"),
)  # fmt: skip

#: Slot of the thermocouple multiplexer, of the digital inputs (valve end switches) and of the valve actuators.
TC_SLOT = 1
FEEDBACK_SLOT = 2
VALVE_SLOT = 3
#: End switches per digital input port.
BITS_PER_PORT = 8
SLOTS = (1, 2, 3)
#: Thermocouple types of the public ``MEAS:TEMP?`` set; ``DEF`` is type J.
TC_TYPES = ("B", "E", "J", "K", "N", "R", "S", "T")
DEFAULT_TC_TYPE = "J"
#: Probe keywords: ``TC``/``TCouple`` (and ``DEF``, which is TCouple) are simulated; the others are public but
#: this DAQ has only thermocouples wired.
PROBE_TC = ("TC", "TCOUPLE", "DEF")
#: Most elements one channel list may name (-223 beyond).
MAX_LIST_ITEMS = 256
#: Resolution parameter of ``MEAS:TEMP?`` (°C): accepted and checked, the readings keep the sensor resolution.
RESOLUTION_RANGE_C = (1e-6, 10.0)
AMBIENT_RANGE_C = (-60.0, 80.0)
MAX_DOOR_S = 86400.0
MAX_STALL_S = 3600.0
OVERLOAD_TEXT = "+9.9E+37"


def tc_channel(index: int) -> int:
    """Instrument channel of thermocouple ``index`` (0 → 101)."""
    return TC_SLOT * 100 + index + 1


def valve_channel(index: int) -> int:
    """Instrument channel of valve ``index`` (0 → 301; hot valves first, then cold)."""
    return VALVE_SLOT * 100 + index + 1


def feedback_port(index: int) -> int:
    """Digital input port of port ``index`` (0 → 201): valves ``8·index`` … ``8·index + 7``."""
    return FEEDBACK_SLOT * 100 + index + 1


def parse_scan_list(text: str, wired: dict[int, int]) -> list[int]:
    """A channel list over the channels in ``wired`` (channel → index) → indices, in list order.

    ``(@101)``, ``(@101,103)``, ``(@101:104)``, ``(@104:101)``. A range takes every wired channel between its
    ends and skips the rest (the public rule: invalid channels inside a range are ignored, both ends must be
    valid). -224 if not a list or an element is not an integer, -222 if a channel (or a range end) is not one
    of ``wired``, -223 beyond :data:`MAX_LIST_ITEMS` elements.
    """
    body = text.strip()
    if not (body.startswith("(@") and body.endswith(")")):
        raise scpi_error(-224)
    out: list[int] = []
    for item in body[2:-1].split(","):
        lo_text, sep, hi_text = item.strip().partition(":")
        try:
            lo = int(lo_text)
            hi = int(hi_text) if sep else lo
        except ValueError:
            raise scpi_error(-224) from None
        if lo not in wired or hi not in wired:
            raise scpi_error(-222)
        inside = sorted(ch for ch in wired if min(lo, hi) <= ch <= max(lo, hi))
        if hi < lo:
            inside.reverse()
        if len(out) + len(inside) > MAX_LIST_ITEMS:
            raise scpi_error(-223)
        out.extend(wired[ch] for ch in inside)
    return out


def format_reading(value: float) -> str:
    """NR3 text of one reading (``+2.50100000E+01``); the overload value as ``+9.9E+37``."""
    return OVERLOAD_TEXT if value >= OVERLOAD else f"{value:+.8E}"


def _keyword(text: str) -> str:
    return text.strip().upper()


class ChamberCommands(Ieee488Instrument):
    """The handlers of :data:`COMMAND_TABLE`, binding DAQ970A-dialect text to a :class:`ChamberModel`."""

    def __init__(
        self, model: ChamberModel, faults: FaultHooks | None = None, *, serial: str = "SIM0001", tc_type: str = "K"
    ) -> None:
        super().__init__()
        if tc_type not in TC_TYPES:
            raise ValueError(f"thermocouple type must be one of {TC_TYPES}, got {tc_type!r}")
        self.model = model
        self.faults: FaultHooks = faults or NoFaults()
        self.serial = serial
        self.tc_type = tc_type
        p = model.params
        self.tc_channels: dict[int, int] = {tc_channel(k): k for k in range(p.thermocouples)}
        self.valve_channels: dict[int, int] = {valve_channel(k): k for k in range(p.valves)}
        ports = -(-p.valves // BITS_PER_PORT)
        self.feedback_ports: dict[int, int] = {feedback_port(j): j for j in range(ports)}

    def idn(self) -> str:
        """``Formation,DAQ970A-SIM,<serial>,<version>``."""
        return f"Formation,DAQ970A-SIM,{self.serial},{formation.__version__}"

    def reset(self) -> None:
        """``*RST``: every relay open; injected faults stay (clear them with ``SIM:FAULT:CLE``)."""
        self.model.reset()

    # measurement ----------

    def q_meas_temp(self, args: list[str], client: object) -> str:
        if not args or not args[-1].strip().startswith("(@"):
            raise scpi_error(-109)  # no channel list: the internal DMM input is not simulated
        options = args[:-1]
        if len(options) > 4:
            raise scpi_error(-108)
        probe, tc_type, scale, resolution = (*options, *("DEF", "DEF", "1", "DEF")[len(options) :])
        if _keyword(probe) not in PROBE_TC:
            raise scpi_error(-224)
        wanted = _keyword(tc_type)
        wanted = DEFAULT_TC_TYPE if wanted == "DEF" else wanted
        if wanted not in TC_TYPES or wanted != self.tc_type:
            raise scpi_error(-224)  # a type other than the wired thermocouples' would read a wrong temperature
        if parse_float(scale) != 1.0:
            raise scpi_error(-224)
        if _keyword(resolution) not in ("MIN", "MAX", "DEF"):
            parse_float(resolution, *RESOLUTION_RANGE_C)
        indices = parse_scan_list(args[-1], self.tc_channels)
        return ",".join(format_reading(v) for v in self.model.read_thermocouples(indices).tolist())

    # switching ----------

    def _valves(self, args: list[str]) -> list[int]:
        expect_count(args, 1)
        return parse_scan_list(args[0], self.valve_channels)

    def c_rout_clos(self, args: list[str], client: object) -> None:
        self.model.command_valves(self._valves(args), True)

    def c_rout_clos_excl(self, args: list[str], client: object) -> None:
        self.model.command_only(self._valves(args))

    def c_rout_open(self, args: list[str], client: object) -> None:
        self.model.command_valves(self._valves(args), False)

    def c_rout_open_all(self, args: list[str], client: object) -> None:
        if len(args) > 1:
            raise scpi_error(-108)
        slot = VALVE_SLOT if not args or _keyword(args[0]) == "ALL" else parse_int(args[0], min(SLOTS), max(SLOTS))
        if slot == VALVE_SLOT:  # the multiplexer slots hold no closed relay
            self.model.command_valves(np.arange(self.model.params.valves), False)

    def q_rout_clos(self, args: list[str], client: object) -> str:
        return ",".join("1" if c else "0" for c in self.model.valve_commanded[self._valves(args)].tolist())

    def q_rout_open(self, args: list[str], client: object) -> str:
        return ",".join("0" if c else "1" for c in self.model.valve_commanded[self._valves(args)].tolist())

    # valve end switches ----------

    def q_dig_byte(self, args: list[str], client: object) -> str:
        expect_count(args, 1)
        ports = parse_scan_list(args[0], self.feedback_ports)
        bits = np.zeros(len(self.feedback_ports) * BITS_PER_PORT, dtype=np.int64)
        bits[: self.model.params.valves] = self.model.valve_open
        weights = 1 << np.arange(BITS_PER_PORT)
        return ",".join(str(int(bits[j * BITS_PER_PORT : (j + 1) * BITS_PER_PORT] @ weights)) for j in ports)

    # simulator-only ----------

    def _one_channel(self, text: str, wired: dict[int, int]) -> int:
        if text.strip().startswith("(@"):
            indices = parse_scan_list(text, wired)
            if len(indices) != 1:
                raise scpi_error(-224)
            return indices[0]
        channel = parse_int(text, 0, 10**6)
        if channel not in wired:
            raise scpi_error(-222)
        return wired[channel]

    def c_fault_tc(self, args: list[str], client: object) -> None:
        expect_count(args, 1)
        self.model.open_thermocouple(self._one_channel(args[0], self.tc_channels))

    def c_fault_valve(self, args: list[str], client: object) -> None:
        expect_count(args, 2)
        index = self._one_channel(args[0], self.valve_channels)
        state = _keyword(args[1])
        if state not in ("OPEN", "CLOSED"):
            raise scpi_error(-224)
        self.model.stick_valve(index, state == "OPEN")

    def c_fault_ambient(self, args: list[str], client: object) -> None:
        expect_count(args, 1)
        self.model.set_ambient(parse_float(args[0], *AMBIENT_RANGE_C))

    def c_fault_door(self, args: list[str], client: object) -> None:
        expect_count(args, 1)
        self.model.open_door(parse_float(args[0], 0.0, MAX_DOOR_S))

    def c_fault_drop(self, args: list[str], client: object) -> None:
        expect_count(args, 0)
        self.faults.drop_other_clients(client)

    def c_fault_stall(self, args: list[str], client: object) -> None:
        expect_count(args, 1)
        self.faults.stall(parse_float(args[0], 0.0, MAX_STALL_S))

    def c_fault_cle(self, args: list[str], client: object) -> None:
        expect_count(args, 0)
        self.model.clear_faults()
        self.faults.clear_faults()

    def q_sim_time(self, args: list[str], client: object) -> str:
        expect_count(args, 0)
        return f"{self.model.time_s:.3f}"

    def q_sim_truth(self, args: list[str], client: object) -> str:
        expect_count(args, 0)
        truth = {"tc_channels": list(self.tc_channels), "valve_channels": list(self.valve_channels)}
        return json.dumps({**truth, **self.model.truth()})


def command_table_markdown() -> str:
    """The command table of docs/daq970a-dialect.md (kept in step by tests/unit/test_chamber_sim.py)."""
    lines = ["| command | EXT | what it does |", "|---|---|---|"]
    for spec in COMMAND_TABLE:
        header = spec.header.replace("|", "` or `") + ("?" if spec.query else "")
        lines.append(f"| `{header}` | {'EXT' if spec.ext else ''} | {spec.description.replace('|', '/')} |")
    return "\n".join(lines)
