"""Exit codes of the ``conure`` command, and the one function that maps an error to its code.

A scheduler tells apart what to do from the code alone: fix the data (3), fix the request or wait
(4), report a bug (1). Every error Conure raises on purpose derives from ``ConureError``; those that
mean bad input set ``ConureError.bad_input`` (``DataError`` and so ``ContractError``).
"""
from __future__ import annotations

from conure_core.errors import ConureError

OK = 0
INTERNAL = 1  # unexpected error (a bug, a crash): re-run with --debug for the traceback
USAGE = 2  # wrong command line (typer/click's own code)
BAD_INPUT = 3  # a task folder broke its data contract (validation failed, unreadable table, ...)
REFUSED = 4  # the request cannot be done as asked: unknown lineage, lineage busy, no capacity, bad preset
INTERRUPTED = 130  # Ctrl-C

HELP = ("Exit codes: 0 ok, 1 internal error, 2 usage, 3 bad input (a task folder broke its contract), "
        "4 refused (unknown lineage, lineage busy, no free capacity, bad preset), 130 interrupted.")

def is_own(exc: BaseException) -> bool:
    """One of Conure's errors, whose message is already one sentence for a person."""
    return isinstance(exc, ConureError)


def exit_code(exc: BaseException) -> int:
    """The exit code for an error that reached the top of the command."""
    if not isinstance(exc, ConureError):
        return INTERNAL
    return BAD_INPUT if exc.bad_input else REFUSED
