"""Modules imported on first use, for the task kinds: their facts (name, metric, contract, direction)
are read by cached re-runs, reports and the data contracts, none of which needs torch (about a second
to import); what computes imports it on its first call."""
from __future__ import annotations

import functools
import importlib
from types import ModuleType


class Deferred:
    """Module ``name``, imported on the first attribute access (``Deferred("torch").topk``)."""

    __slots__ = ("_name", "_module")

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str):
        return getattr(self.module(), attr)

    def module(self) -> ModuleType:
        if self._module is None:  # kept: the kinds read it in their batch loops
            self._module = importlib.import_module(self._name)
        return self._module

    def __repr__(self) -> str:
        return f"<deferred module {self._name!r}>"


def no_grad(fn):
    """``@torch.no_grad()`` that imports torch at the first call rather than where the function is defined."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import torch

        with torch.no_grad():
            return fn(*args, **kwargs)

    return wrapper
