"""Probes: scheduled synthetic checks of a provider, with assertions, state and history.

``run`` makes one run over HTTP and touches no database; ``schedule`` claims due probes,
dispatches their runs and records what they found; ``assertions`` judges a response,
``netguard`` keeps runs off private networks, ``forms`` validates a probe's configuration.
"""

from __future__ import annotations

# The dotted path ``monitoring.probes.dispatch_task`` is what existing django-q2 schedule
# rows carry. Remove next release, once setup_upstream has rewritten them.
from monitoring.probes.schedule import dispatch_task

__all__ = ["dispatch_task"]
