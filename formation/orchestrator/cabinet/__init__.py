"""Supervision of one cabinet: the supervisor and the parts it is composed of."""

from formation.orchestrator.cabinet.supervisor import CabinetSupervisor, PollStats, job_end_state

__all__ = ["CabinetSupervisor", "PollStats", "job_end_state"]
