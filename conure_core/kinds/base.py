"""The task-kind contract: everything that differs between kinds of task, behind one small class.

A kind (RecBole's one-file-per-model spirit: ``sequence.py``, ``item.py``, ``classification.py``,
``regression.py``) owns its head, the representation of a user it reads, its loss, its metrics
(``evaluate``), its predict answer, its floor baseline, its contract checks and its display name.
``TaskModel`` only asks ``kind_of(info.kind)``; adding a kind is one file plus ``kinds.register``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from conure_core.deferred import Deferred

# torch and the modules that compute load on first use: a kind's facts need neither (conure_core/deferred.py)
torch = Deferred("torch")
heads = Deferred("conure_core.heads")
metric_ops = Deferred("conure_core.metrics")

if TYPE_CHECKING:  # the model calls the kinds; the kinds only receive it
    from conure_core.config import ModelConfig, TrainConfig
    from conure_core.data.types import TaskData
    from conure_core.model import TaskInfo, TaskModel

    Weights = dict[str, torch.Tensor] | None


class TaskKind:
    """One kind of task. Subclasses set the class attributes and override what differs."""

    name: ClassVar[str]  # as written in task.yaml's ``kind``
    display: ClassVar[str]  # how reports and the CLI name it
    metric: ClassVar[str]  # the one figure of the accuracy matrix
    metrics: ClassVar[tuple[str, ...]]  # every figure ``evaluate`` reports besides ``loss``
    higher_is_better: ClassVar[bool] = True
    t1: ClassVar[bool] = False  # the lineage's first task (the T1 sequences): only one kind is
    # Contract of the task's table (data_contracts): labels are "ids" (an item or a class) or "numbers";
    # ``one_row_per_user``: a user holds one label; ``label_bounds``: distinct labels allowed by default.
    labels: ClassVar[str] = "ids"
    one_row_per_user: ClassVar[bool] = False
    label_bounds: ClassVar[tuple[int, int]] = (1, 10_000_000)
    per_user: ClassVar[bool] = False  # trains with the preset's per-user config (``Preset.classes``)
    columns: ClassVar[str] = "user_id, label"  # the table a folder of this kind holds (README, errors)
    ranks_items: ClassVar[bool] = False  # answers rank item ids: serving may leave out a history's own items

    # ---- head ------------------------------------------------------------------------------------
    def representation(self, config: "ModelConfig", num_items: int) -> str:
        """The user vector this kind's head reads (``ModelConfig.user_repr``'s values)."""
        return config.repr_of(self.name, num_items)

    def head_shape(self, config: "ModelConfig", num_items: int) -> dict[str, int]:
        """The size arguments of this kind's head beyond width and labels (``bag``, ``wide_items``)."""
        return {"bag": num_items if self.representation(config, num_items) == "mean_bag" else 0, "wide_items": 0}

    def prior(self, task: TaskData) -> torch.Tensor:
        """The train-split statistic the head's bias starts from (ids: label counts)."""
        rows = task.rows("train")
        return torch.bincount(task.labels[rows], minlength=task.num_labels)[: task.num_labels]

    def build_head(self, width: int, num_labels: int, generator: torch.Generator | None = None,
                   prior: torch.Tensor | None = None, init_scale: float = 1.0, normalize: bool = False,
                   bag: int = 0, wide_items: int = 0) -> heads.LinearHead:
        """A fresh head; the bias starts at log(count + 1) of ``prior`` (the popularity / class-prior model)."""
        bias = None if prior is None else torch.log(prior.double() + 1.0).float()
        return heads.LinearHead(width, num_labels, generator, bias, init_scale, normalize, bag)

    def head_l2(self, cfg: "TrainConfig") -> float:
        return cfg.head_l2

    # ---- stages ----------------------------------------------------------------------------------
    def loss(self, model: "TaskModel", task: TaskData, info: "TaskInfo", cfg: "TrainConfig",
             generator: torch.Generator):
        """The batch loss of a stage: ``loss(rows, weights)``, ``order(generator)``, ``count(rows)``, ``num_rows``."""
        raise NotImplementedError

    def evaluate(self, model: "TaskModel", task: TaskData, split: str, info: "TaskInfo", weights: Weights,
                 batch_size: int) -> dict[str, float]:
        """``metrics`` and ``loss`` of one split under ``weights``."""
        raise NotImplementedError

    def better(self, value: float, than: float) -> bool:
        """Whether metric ``value`` beats ``than`` (strictly)."""
        return value > than if self.higher_is_better else value < than

    def within(self, value: float, reference: float, epsilon: float) -> bool:
        """Whether ``value`` is no worse than ``reference`` by more than ``epsilon`` (relative)."""
        slack = epsilon * abs(reference)
        return value >= reference - slack if self.higher_is_better else value <= reference + slack

    # ---- answers -----------------------------------------------------------------------------------
    def predict(self, model: "TaskModel", info: "TaskInfo", sequences: torch.Tensor, weights: Weights,
                k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(label positions [B, k], scores [B, k]) for T1 sequences [B, L] on the model's device."""
        raise NotImplementedError

    def answer_vocab(self, info: "TaskInfo", item_vocab: list[str]) -> list[str]:
        """The labels ``predict``'s positions index."""
        return info.vocab

    def answer_width(self, k: int, vocab: list[str]) -> int:
        """How many positions ``predict`` returns for a request of ``k``."""
        return min(k, len(vocab))

    def answers(self, positions: list[list[int]], scores: list[list[float]], vocab: list[str]) -> list[dict]:
        """One JSON-safe answer per row (ids: ``items`` + ``scores``)."""
        return [{"items": [str(vocab[i]) for i in row], "scores": [round(float(s), 6) for s in vals]}
                for row, vals in zip(positions, scores)]

    def floor(self, task: TaskData, split: str = "test", t1_targets: str = "all") -> tuple[str, dict[str, float]]:
        """(name, metrics) of the non-personalised reference this kind must beat, fitted on TRAIN."""
        raise NotImplementedError

    # ---- contracts ----------------------------------------------------------------------------------
    def check_task(self, task: TaskData) -> None:
        """Raise ValueError with one sentence when ``task``'s tensors do not fit this kind."""
        if task.labels is None or task.labels.numel() != task.sequences.shape[0]:
            raise ValueError(f"task {task.name!r} ({self.name}) needs one label per row.")


class RanksItems:
    """Mixin of the kinds whose answer is a ranking of item ids (T1, item tasks): the ranking figures."""

    metric = "mrr@5"
    metrics = ("mrr@5", "hr@5", "ndcg@5")
    ranks_items = True


class UserKind(TaskKind):
    """Kinds after T1: one label per row, read from the user vector g of the row's T1 sequence."""

    def user_rows(self, model: "TaskModel", task: TaskData, split: str, weights: Weights, batch_size: int):
        """Yield (g [b, C'], labels [b]) over the split's rows; each user's g is encoded once."""
        rows = task.rows(split)
        uniq, inverse = model.users(task)
        users, row_user = torch.unique(inverse[rows], return_inverse=True)
        vectors = torch.cat([model.user_vectors(uniq[users[s:s + batch_size]].to(model.device).long(), weights, self.name)
                             for s in range(0, users.numel(), batch_size)]) if users.numel() else None
        labels = task.labels[rows]
        for start in range(0, rows.numel(), batch_size):
            yield vectors[row_user[start:start + batch_size].to(model.device)], labels[start:start + batch_size].to(model.device)

    def evaluate(self, model, task, split, info, weights, batch_size):
        head = model.heads[info.name]
        acc = metric_ops.MetricAccumulator()
        for g, y in self.user_rows(model, task, split, weights, batch_size):
            self.score_batch(acc, head, g, y)
        return acc.means()

    def score_batch(self, acc: metric_ops.MetricAccumulator, head: heads.LinearHead, g: torch.Tensor,
                    y: torch.Tensor) -> None:
        """Add one batch of rows to ``acc``."""
        raise NotImplementedError

    def predict(self, model, info, sequences, weights, k):
        return top_k(model.heads[info.name], model.user_vectors(sequences, weights, self.name), k)


class UserLoss:
    """The batch loss of a kind after T1: rows of one user share one forward of the backbone.

    Subclasses give ``objective(g, y)``; every random draw comes from the stage's ``generator``.
    """

    def __init__(self, model: "TaskModel", task: TaskData, info: "TaskInfo", cfg: "TrainConfig",
                 generator: torch.Generator) -> None:
        self.model, self.info, self.cfg, self.generator = model, info, cfg, generator
        self.head = model.heads[info.name]
        train_rows = task.rows("train")
        self.num_rows = int(train_rows.numel())
        self.uniq, inverse = model.users(task)
        self.row_users = inverse[train_rows]
        self.labels = task.labels[train_rows]

    def order(self, generator: torch.Generator) -> torch.Tensor:
        """Row order of one epoch."""
        return torch.randperm(self.num_rows, generator=generator)

    def count(self, idx: torch.Tensor) -> int:
        """How many terms the mean of ``self(idx)`` is over (data-parallel stages weight gradients by it)."""
        return int(idx.numel())

    def __call__(self, idx: torch.Tensor, weights: Weights = None) -> torch.Tensor:
        device = self.model.device
        users, row_user = torch.unique(self.row_users[idx], return_inverse=True)
        g = self.model.user_vectors(self.uniq[users].to(device).long(), weights, self.info.kind)[row_user.to(device)]
        return self.objective(g, self.labels[idx].to(device), idx)

    def objective(self, g: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def rank_into(acc: metric_ops.MetricAccumulator, head: heads.LinearHead, h: torch.Tensor, y: torch.Tensor,
              offset: torch.Tensor | None = None) -> None:
    """Add the cross-entropy and full-ranking ranks of targets ``y`` under ``head`` to ``acc``.

    Up to ``metric_ops.FULL_SCORES`` scores the whole [rows x items] matrix is made at once (as always); past
    it the ranking streams over blocks (``metric_ops.streamed_ranking``): equal ranks, bounded memory.
    ``offset`` (T1's wide scores, already [rows x items]) is added to the logits.
    """
    if offset is not None or head.bag is not None or h.shape[0] * head.weight.shape[0] <= metric_ops.FULL_SCORES:
        scores = head.scores(h, offset)
        acc.add_loss(scores, y)
        acc.add_ranks(metric_ops.target_ranks(scores, y))
        return
    ranks, loss = metric_ops.streamed_ranking(head._prep(h).float(), head.weight.float(), head.bias.float(), y)
    acc.sums["loss"] = acc.sums.get("loss", 0.0) + loss
    acc.add_ranks(ranks)


def top_k(head: heads.LinearHead, h: torch.Tensor, k: int, offset: torch.Tensor | None = None
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k (positions, scores) of ``head`` on inputs h, streamed over item blocks past ``metric_ops.FULL_SCORES``."""
    if offset is None and head.bag is None and h.shape[0] * head.weight.shape[0] > metric_ops.FULL_SCORES:
        return metric_ops.streamed_topk(head._prep(h), head.weight, head.bias, k)
    scores = head.scores(h, offset)
    top = torch.topk(scores, min(k, scores.shape[1]), dim=1)
    return top.indices, top.values


def popularity_floor(counts: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Ranking metrics of ranking every target by ``counts`` (the most-popular model)."""
    acc = metric_ops.MetricAccumulator()
    acc.add_ranks(metric_ops.target_ranks(counts.double().expand(targets.numel(), -1), targets))
    return acc.means()
