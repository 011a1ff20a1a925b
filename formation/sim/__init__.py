"""formation.sim."""
