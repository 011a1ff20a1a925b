"""formation.feed."""
