"""Instrument drivers: the SCPI session over pyvisa, the BT2200-dialect cycler, the DAQ970A-dialect chamber DAQ and
the BT3562-dialect OCV/ACIR tester.

SCPI text lives here (and in its simulator twin) only; callers use typed programs and numpy arrays.
"""

from formation.instruments.bt2200 import Bt2200Cycler, Measurement, compress_ids
from formation.instruments.bt3562 import Bt3562Tester, ReadingFault, TesterReading, scanner_channel
from formation.instruments.daq970a import Daq970aChamber
from formation.instruments.program import (
    LOG_COL,
    LOG_COLUMNS,
    CellState,
    EndCode,
    InstrumentStep,
    StepMode,
    StepProgram,
    StepTest,
    TestAction,
    TestType,
    TestWhen,
    cell_id_to_channel,
    channel_to_cell_id,
    channel_to_instrument,
    empty_log_block,
)
from formation.instruments.scpi import ResourceFactory, ScpiSession, VisaResource

__all__ = [
    "LOG_COL",
    "LOG_COLUMNS",
    "Bt2200Cycler",
    "Bt3562Tester",
    "CellState",
    "Daq970aChamber",
    "EndCode",
    "InstrumentStep",
    "Measurement",
    "ReadingFault",
    "ResourceFactory",
    "ScpiSession",
    "StepMode",
    "StepProgram",
    "StepTest",
    "TestAction",
    "TestType",
    "TestWhen",
    "TesterReading",
    "VisaResource",
    "cell_id_to_channel",
    "channel_to_cell_id",
    "channel_to_instrument",
    "compress_ids",
    "empty_log_block",
    "scanner_channel",
]
