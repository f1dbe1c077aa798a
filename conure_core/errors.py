"""The one base class of every error Conure raises on purpose.

Each subclass also derives from the built-in type it refines (``ValueError``, ``RuntimeError``), so
``except ValueError`` keeps working; callers that show errors to people (the CLI) catch
``ConureError`` and print its message, which is one sentence saying what went wrong and what to do.
"""
from __future__ import annotations


class ConureError(Exception):
    """A failure Conure anticipated; ``str(exc)`` is meant for the person running it.

    ``bad_input``: the input data broke its contract (fix the data), as opposed to a request that
    cannot be done as asked (fix the request, or wait); the CLI's exit codes tell them apart.
    """

    bad_input = False
