"""The line's control: compiling recipe steps, channel runs, cabinet supervision, timers, launch and resume."""

from formation.orchestrator.cabinet import CabinetSupervisor, PollStats
from formation.orchestrator.compile import CompiledStep, compile_step
from formation.orchestrator.inputs import CellEntry, load_cells_file, parse_channel_list
from formation.orchestrator.job import assign_cells, resume_job, run_job
from formation.orchestrator.run import ChannelRun, RunState
from formation.orchestrator.timers import LineTimers

__all__ = [
    "CabinetSupervisor",
    "CellEntry",
    "ChannelRun",
    "CompiledStep",
    "LineTimers",
    "PollStats",
    "RunState",
    "assign_cells",
    "compile_step",
    "load_cells_file",
    "parse_channel_list",
    "resume_job",
    "run_job",
]
