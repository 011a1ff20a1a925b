"""formation.recipes."""
