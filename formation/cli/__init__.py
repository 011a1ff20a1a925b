"""formation.cli."""
