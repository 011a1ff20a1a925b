"""formation.instruments."""
