"""The error raised by conure_core.data for input it cannot read or prepare."""
from __future__ import annotations

from conure_core.errors import ConureError


class DataError(ConureError, ValueError):
    """Bad input data: the message is one sentence naming the file, column/row and the fix.

    ``data_contracts.errors.ContractError`` subclasses this, so catching ``DataError`` catches both.
    """

    bad_input = True

    def __init__(self, message: str, *, file: str | None = None, column: str | None = None,
                 expectation: str | None = None, examples: list | None = None):
        super().__init__(message)
        self.file = file
        self.column = column
        self.expectation = expectation
        self.examples = list(examples or [])
