"""Old home of the alert e-mail tasks, kept so queued tasks and schedule rows still resolve.

django-q2 stores dotted paths: `monitoring.notify.send_task` in schedule rows made before
`setup_upstream` rewrites them, `monitoring.notify.deliver` in tasks queued by an older
evaluator. Remove in the next release; everything else imports monitoring.alerts.notify.
"""

from __future__ import annotations

from monitoring.alerts.notify import deliver, send_task

__all__ = ["deliver", "send_task"]
