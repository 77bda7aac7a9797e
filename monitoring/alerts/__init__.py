"""Alerting: rule kinds (rules), the data they read (snapshot), the alert lifecycle, e-mails.

Import the modules themselves (`monitoring.alerts.lifecycle`, `.rules`, `.notify`, …). The one
name here is for django-q2: schedule rows and queued tasks made before the package existed
carry the dotted path `monitoring.alerts.evaluate_task`; remove it in the next release.
"""

from __future__ import annotations

from monitoring.alerts.lifecycle import evaluate_task

__all__ = ["evaluate_task"]
