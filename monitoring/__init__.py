"""Upstream's engine: models, client, recorder, probes, rollups, alerts, notifications."""
