"""The registry of task kinds (``base.TaskKind``): a task.yaml's ``kind`` names one of them.

A new kind is one module here with a ``TaskKind`` subclass, registered below.
"""
from __future__ import annotations

from conure_core.errors import ConureError
from conure_core.kinds.base import TaskKind
from conure_core.kinds.classification import ClassKind
from conure_core.kinds.item import ItemKind
from conure_core.kinds.regression import RegressionKind
from conure_core.kinds.sequence import SequenceKind

KINDS: dict[str, TaskKind] = {}
T1_KIND = "sequence"  # the kind of every lineage's first task


class KindError(ConureError, ValueError):
    """A task names a kind no module registers."""


def register(kind: TaskKind) -> TaskKind:
    """Make ``kind`` available under ``kind.name``."""
    KINDS[kind.name] = kind
    return kind


def kind_of(name: str) -> TaskKind:
    """The registered kind called ``name``."""
    try:
        return KINDS[name]
    except KeyError:
        raise KindError(f"task kind {name!r} is not known; use one of {list(KINDS)}.") from None


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of the matrix metric ``metric`` is better (as the kinds reporting it say)."""
    return all(kind.higher_is_better for kind in KINDS.values() if kind.metric == metric)


def metric_of(name: str) -> str:
    """The accuracy matrix's metric of tasks of kind ``name``."""
    return kind_of(name).metric


for _kind in (SequenceKind(), ItemKind(), ClassKind(), RegressionKind()):
    register(_kind)
