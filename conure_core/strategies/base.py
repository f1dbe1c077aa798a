"""The interface every continual-learning strategy (Conure and the paper's baselines) offers."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from conure_core.data.types import TaskData


@runtime_checkable
class Strategy(Protocol):
    """Learns tasks one at a time and answers for every task learned so far.

    Construction convention (so the pipeline can build any strategy by name):
    ``StrategyClass(preset: conure_core.config.Preset, num_items: int, *, overrides: dict | None = None,
    device: str | None = None)`` where ``overrides`` maps task name -> TrainConfig overrides.
    """

    name: str
    num_backbones: int  # backbones stored (1 for Conure; N for SinMo / FineAll after N tasks)

    def learn(self, task: TaskData) -> None:
        """Learn the next task (the first one is T1, the sequence task)."""
        ...

    def evaluate(self, task: TaskData, split: str = "test") -> dict[str, float]:
        """Metrics of an already learned task on one split (MRR/HR/NDCG@5 or accuracy)."""
        ...

    def storage_bytes(self) -> int:
        """Bytes of everything the strategy must keep to serve all its tasks."""
        ...
