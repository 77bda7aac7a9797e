"""Template tags and filters for the dashboard: units on every number, links that keep filters."""
