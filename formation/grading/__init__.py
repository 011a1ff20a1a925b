"""formation.grading."""
