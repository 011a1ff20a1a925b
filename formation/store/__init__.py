"""formation.store."""
