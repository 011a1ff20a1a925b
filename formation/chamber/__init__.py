"""formation.chamber."""
