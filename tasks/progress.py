"""A process-wide sink for the learner's progress dicts (the CLI turns them into progress bars).

Prefect task parameters must be serialisable, so callbacks are not passed through tasks; the tasks
publish here instead. Events: the learner's ``{"event": "epoch", ...}`` / ``{"event": "prune", ...}``
plus the pipeline's ``stage_start``, ``stage_end`` and ``cached``.
"""
from __future__ import annotations

from typing import Callable

Sink = Callable[[dict], None]
_sinks: list[Sink] = []


def add_sink(sink: Sink) -> None:
    _sinks.append(sink)


def remove_sink(sink: Sink) -> None:
    if sink in _sinks:
        _sinks.remove(sink)


def emit(event: dict) -> None:
    """Send one event to every sink; a failing sink never breaks training."""
    for sink in list(_sinks):
        try:
            sink(dict(event))
        except Exception:  # noqa: BLE001 - display problems must not stop a run
            pass
