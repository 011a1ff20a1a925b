"""Chamber temperature control, the pure core: no I/O, no clock reads (callers pass ``now_s`` / ``dt_s``).

Parts: ``PidController`` (+ ``simc_tuning``), ``ValveArray`` (staged valve arrays with time-proportioning of the
remainder and wear rotation), ``SensorVoter``, ``StabilityDetector``, ``StuckValveDetector``, and
``ChamberController`` composing them for one chamber. The figures behind it are in docs/domain.md, section 8.
"""

from formation.chamber.control import ChamberConfig, ChamberController, ControlStep
from formation.chamber.faults import StuckValveDetector, ValveFault
from formation.chamber.pid import PidController, PidTuning
from formation.chamber.sensors import SensorFault, SensorId, SensorVote, SensorVoter
from formation.chamber.stability import StabilityDetector, StabilityStatus
from formation.chamber.tuning import simc_tuning
from formation.chamber.valves import ValveArray, ValveCommand

__all__ = [
    "ChamberConfig",
    "ChamberController",
    "ControlStep",
    "PidController",
    "PidTuning",
    "SensorFault",
    "SensorId",
    "SensorVote",
    "SensorVoter",
    "StabilityDetector",
    "StabilityStatus",
    "StuckValveDetector",
    "ValveArray",
    "ValveCommand",
    "ValveFault",
    "simc_tuning",
]
