"""What every baseline strategy shares: preset, per-task config, the learned-task list, a T1 start."""
from __future__ import annotations

from conure_core.config import Preset, TrainConfig
from conure_core.data.types import TaskData
from conure_core.lineage import Lineage
from conure_core.strategies.engine import OpenLineage, clone_lineage
from conure_core.training import Progress


class StrategyError(RuntimeError):
    """A strategy was used out of order; the message says what to do."""


class BaselineStrategy:
    """Base of the Table 2 baselines (see ``conure_core.strategies.base.Strategy``).

    ``start``: an optional Lineage that has learned T1 only (trained, not pruned); when given, the
    strategy starts from a deep copy of it instead of training T1 again (T1 is trained identically by
    every strategy, so a benchmark trains it once per seed).
    """

    name = "baseline"

    def __init__(self, preset: Preset, num_items: int, *, overrides: dict | None = None, device: str | None = None,
                 item_vocab: list[str] | None = None, progress: Progress | None = None,
                 start: Lineage | None = None) -> None:
        self.preset = preset
        self.num_items = int(num_items)
        self.overrides = overrides or {}
        self.device = device
        self.item_vocab = item_vocab
        self.progress = progress
        self.start = start
        self.learned: list[str] = []

    def config(self, index: int, task: TaskData) -> TrainConfig:
        return self.preset.train_config(index, self.overrides.get(task.name), task.kind)

    def fresh(self, **kwargs) -> OpenLineage:
        return OpenLineage(self.preset.model, self.num_items, self.item_vocab, self.device, **kwargs)

    def t1_model(self, task: TaskData, cls=OpenLineage, **attrs) -> OpenLineage:
        """A model that has learned T1: a copy of ``start`` when it matches, else trained here."""
        if task.kind != "sequence":
            raise StrategyError(f"{self.name} learns the T1 sequence task first; got {task.kind!r} task {task.name!r}.")
        if self.start is not None and self.start.tasks == [task.name]:
            return clone_lineage(self.start, cls, **attrs)
        model = cls(self.preset.model, self.num_items, self.item_vocab, self.device, **attrs)
        model.train(task, self.config(0, task), self.progress)
        return model

    def check_learned(self, task: TaskData) -> None:
        if task.name not in self.learned:
            raise StrategyError(f"{self.name} has not learned task {task.name!r}; learned: {self.learned}.")

    def learn(self, task: TaskData) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def evaluate(self, task: TaskData, split: str = "test") -> dict[str, float]:  # pragma: no cover
        raise NotImplementedError

    def storage_bytes(self) -> int:  # pragma: no cover
        raise NotImplementedError


class ModelPerTask(BaselineStrategy):
    """Strategies that keep one model per task (SinMo, FineAll, DNN): N backbones."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.models: dict = {}

    def evaluate(self, task: TaskData, split: str = "test") -> dict[str, float]:
        self.check_learned(task)
        return self.models[task.name].evaluate(task, split)

    @property
    def num_backbones(self) -> int:
        return len(self.models)


class OneBackbone(BaselineStrategy):
    """Strategies that keep ONE model for every task (SinMoAll, FineSmax, PeterRec)."""

    policy = "all"
    num_backbones = 1

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.model = None

    def first_model(self, task: TaskData):
        """The model after T1 (``learn``'s first call)."""
        return self.t1_model(task, policy=self.policy)

    def train_later(self, task: TaskData, cfg: TrainConfig) -> None:
        """Teach a later task to ``self.model``."""
        self.model.train(task, cfg, self.progress)

    def learn(self, task: TaskData) -> None:
        if self.model is None:
            self.model = self.first_model(task)
        else:
            self.train_later(task, self.config(len(self.learned), task))
        self.learned.append(task.name)

    def evaluate(self, task: TaskData, split: str = "test") -> dict[str, float]:
        self.check_learned(task)
        return self.model.evaluate(task, split)

    def storage_bytes(self) -> int:
        return self.model.storage_bytes() if self.model is not None else 0
