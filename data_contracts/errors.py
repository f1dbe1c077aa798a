"""ContractError: the single error type of bad task input."""
from __future__ import annotations

from conure_core.data.errors import DataError


class ContractError(DataError):
    """A task folder broke its contract; the message is one sentence: file, expectation, column,
    example values and what to do. ``report_dir`` is where the GX result was written (or None)."""

    def __init__(self, message: str, *, file: str | None = None, column: str | None = None,
                 expectation: str | None = None, examples: list | None = None, report_dir=None):
        super().__init__(message, file=file, column=column, expectation=expectation, examples=examples)
        self.report_dir = report_dir

    @classmethod
    def from_data_error(cls, exc: DataError, *, file: str | None = None) -> "ContractError":
        """Wrap a conure_core.data error (reading, types) keeping its message and fields."""
        if isinstance(exc, cls):
            return exc
        return cls(str(exc), file=exc.file or file, column=exc.column, expectation=exc.expectation,
                   examples=exc.examples)
