"""The pipeline's own error type: one sentence saying what went wrong and where to look."""
from __future__ import annotations

from conure_core.errors import ConureError


class PipelineError(ConureError, RuntimeError):
    """A run cannot go on; the message is one sentence plus where to look (shown as-is by the CLI)."""
