"""The bundled MovieLens-100K suites by name: ``default`` (the paper-style six tasks) and ``signal``."""
from __future__ import annotations

from pathlib import Path

from .errors import DataError

SUITES = ("default", "signal")


def suite_task_names(suite: str) -> tuple[str, ...]:
    """Task names of a bundled suite, in learning order."""
    check_suite(suite)
    if suite == "signal":
        from .signal_suite import SIGNAL_TASK_NAMES
        return SIGNAL_TASK_NAMES
    from .movielens import TASK_NAMES
    return TASK_NAMES


def write_suite(suite: str, dest: Path) -> list[Path]:
    """Write a bundled suite's task folders under ``dest``; their paths in learning order."""
    check_suite(suite)
    if suite == "signal":
        from .signal_suite import write_signal_tasks
        return write_signal_tasks(dest)
    from .movielens import write_bundled_tasks
    return write_bundled_tasks(dest)


def check_suite(suite: str) -> None:
    if suite not in SUITES:
        raise DataError(f"unknown bundled suite {suite!r}; choose one of {', '.join(SUITES)}.")
