"""Receiving webhooks: signature schemes, secrets, dedupe and turning a delivery into an attempt."""
