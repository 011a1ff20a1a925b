"""formation.orchestrator."""
