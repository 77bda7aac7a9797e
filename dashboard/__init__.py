"""Upstream's Django project and its web face."""
