"""formation: an open orchestrator for lithium-ion cell formation, ageing and grading."""

__version__ = "0.1.0"
