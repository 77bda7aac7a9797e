"""The preset registry under its first name: ``monitoring.presets`` holds it now."""

from __future__ import annotations

from monitoring.presets import ALL, DEFAULT, Preset, choices, get  # noqa: F401
from monitoring.presets.catalog import GENERIC, OPENPANEL, PAUBOX  # noqa: F401
