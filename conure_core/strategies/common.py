"""What every baseline strategy shares: preset, per-task config, the learned-task list, a T1 start."""
from __future__ import annotations

import copy

from conure_core.config import Preset, TrainConfig
from conure_core.data.types import TaskData
from conure_core.errors import ConureError
from conure_core.kinds import kind_of
from conure_core.learner import Learner
from conure_core.lineage import Lineage
from conure_core.model import TaskModel
from conure_core.policies import OpenPolicy
from conure_core.training import Progress


class StrategyError(ConureError, RuntimeError):
    """A strategy was used out of order; the message says what to do."""


class BaselineStrategy:
    """Base of the Table 2 baselines (see ``conure_core.strategies.base.Strategy``).

    ``start``: an optional Lineage that has learned T1 only (trained, not pruned); when given, the
    strategy starts from a deep copy of its model instead of training T1 again (T1 is trained
    identically by every strategy, so a benchmark trains it once per seed).
    """

    name = "baseline"

    def __init__(self, preset: Preset, num_items: int, *, overrides: dict | None = None, device: str | None = None,
                 item_vocab: list[str] | None = None, progress: Progress | None = None,
                 start: Lineage | None = None) -> None:
        self.preset = preset.for_items(num_items)
        self.num_items = int(num_items)
        self.overrides = overrides or {}
        self.device = device
        self.item_vocab = item_vocab
        self.progress = progress
        self.start = start
        self.learned: list[str] = []

    def config(self, index: int, task: TaskData) -> TrainConfig:
        return self.preset.train_config(index, self.overrides.get(task.name), task.kind)

    def new_model(self) -> TaskModel:
        """A fresh, seeded task model of the preset's backbone."""
        return TaskModel(self.preset.model, self.num_items, self.item_vocab, self.device)

    def t1_learner(self, task: TaskData, make_policy=lambda model: OpenPolicy()) -> Learner:
        """A learner that has learned T1: a copy of ``start``'s model when it matches, else trained here."""
        if not kind_of(task.kind).t1:
            raise StrategyError(f"{self.name} learns the T1 sequence task first; got {task.kind!r} task {task.name!r}.")
        if self.start is not None and self.start.tasks == [task.name]:
            self.start.drop_cache()  # the per-task user cache holds task tensors: never copy them
            model = copy.deepcopy(self.start.model)
            return Learner(model, make_policy(model))
        model = self.new_model()
        learner = Learner(model, make_policy(model))
        learner.train(task, self.config(0, task), self.progress)
        return learner

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
    """Strategies that keep one learner per task (SinMo, FineAll, DNN): N backbones."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.learners: dict[str, Learner] = {}

    def evaluate(self, task: TaskData, split: str = "test") -> dict[str, float]:
        self.check_learned(task)
        return self.learners[task.name].evaluate(task, split)

    @property
    def num_backbones(self) -> int:
        return len(self.learners)


class OneBackbone(BaselineStrategy):
    """Strategies that keep ONE learner for every task (SinMoAll, FineSmax, PeterRec)."""

    num_backbones = 1

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.learner: Learner | None = None

    def make_policy(self, model: TaskModel):  # pragma: no cover - abstract
        raise NotImplementedError

    def train_later(self, task: TaskData, cfg: TrainConfig) -> None:
        """Teach a later task to ``self.learner``."""
        self.learner.train(task, cfg, self.progress)

    def learn(self, task: TaskData) -> None:
        if self.learner is None:
            self.learner = self.t1_learner(task, self.make_policy)
        else:
            self.train_later(task, self.config(len(self.learned), task))
        self.learned.append(task.name)

    def evaluate(self, task: TaskData, split: str = "test") -> dict[str, float]:
        self.check_learned(task)
        return self.learner.evaluate(task, split)

    def storage_bytes(self) -> int:
        return self.learner.storage_bytes() if self.learner is not None else 0
