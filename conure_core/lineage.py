"""Lineage: one backbone accumulating tasks without forgetting (Conure, SPEC section 3).

Stages per task k: ``train`` (all weights in the forward, gradients to free weights only),
``prune`` (the task keeps its largest free weights), ``retrain`` (forward with owner in 1..k,
gradients to the task's own weights). Task j then reads ``W * (1 <= owner <= j)`` forever.
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from conure_core.backbones import build_backbone
from conure_core.config import ModelConfig, TrainConfig
from conure_core.data.types import TaskData
from conure_core.heads import NextItemHead, build_head
from conure_core.losses import bpr_loss, class_loss, next_item_loss
from conure_core.naive import label_counts
from conure_core.metrics import METRIC_OF_KIND, MetricAccumulator, t1_target_mask, target_ranks
from conure_core.ownership import MAX_TASKS, CapacityError, Ownership
from conure_core.samplers import PopularitySampler
from conure_core.seeding import stage_generator
from conure_core.training import Progress, StageResult, grouped_order, run_stage

__all__ = ["Lineage", "LineageError", "CapacityError", "TaskInfo", "resolve_device"]


class LineageError(RuntimeError):
    """A lineage was asked for something its state does not allow; the message says what to do."""


@dataclass
class TaskInfo:
    """What the lineage remembers about a learned task (JSON-safe)."""

    name: str
    kind: str
    index: int  # 1-based learning position = owner value
    num_labels: int
    metric: str
    vocab: list[str] = field(default_factory=list)
    pruned: bool = False
    retrained: bool = False
    prune_ratio: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Lineage:
    """The state of one model that learns tasks in order; see the module docstring."""

    def __init__(self, config: ModelConfig, num_items: int, item_vocab: list[str] | None = None,
                 device: str | torch.device | None = None) -> None:
        self.config = config
        self.num_items = int(num_items)
        self.item_vocab = list(item_vocab or [])
        self.device = resolve_device(str(device)) if device is not None else resolve_device(config.device)
        if self.device.type == "cpu":
            # Adam states filling with denormals doubled CPU epoch time (DESIGN.md, measured facts).
            torch.set_flush_denormal(True)
        self.backbone = build_backbone(config, self.num_items, stage_generator(config.seed, 0, "backbone"))
        self.backbone.to(self.device)
        self._params: dict[str, torch.nn.Parameter] = dict(self.backbone.named_parameters())
        prunable = self.backbone.prunable_names()
        if config.prune_embedding:
            prunable = ["embedding.weight", *prunable]
        self.ownership = Ownership({n: self._params[n] for n in prunable})
        self.heads: dict[str, NextItemHead] = {}
        self.infos: list[TaskInfo] = []
        self._encode_fn = torch.compile(self.backbone) if config.compile else self.backbone
        self._user_cache: dict[int, tuple[TaskData, torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def new(cls, config: ModelConfig, num_items: int, item_vocab: list[str] | None = None,
            device: str | torch.device | None = None) -> "Lineage":
        """A fresh lineage for a T1 vocabulary of ``num_items`` items."""
        return cls(config, num_items, item_vocab, device)

    # ---- introspection -----------------------------------------------------------------------
    @property
    def tasks(self) -> list[str]:
        """Learned task names, in learning order."""
        return [i.name for i in self.infos]

    def info(self, task_name: str) -> TaskInfo:
        for info in self.infos:
            if info.name == task_name:
                return info
        raise LineageError(f"task {task_name!r} is not in this lineage; learned tasks: {self.tasks}.")

    def free_capacity(self) -> dict[str, float]:
        """Fraction of free prunable weights: 'total' and one entry per tensor."""
        return self.ownership.free_capacity()

    def owner_maps(self) -> dict[str, torch.Tensor]:
        """A CPU copy of every owner map (uint8; 0 free, t owned by the t-th task)."""
        return {n: m.detach().cpu().clone() for n, m in self.ownership.maps.items()}

    @property
    def params(self) -> dict[str, torch.nn.Parameter]:
        return self._params

    # ---- forward -----------------------------------------------------------------------------
    def _autocast(self):
        if self.config.bf16 and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def encode(self, tokens: torch.Tensor, weights: dict | None = None) -> torch.Tensor:
        """Hidden states [B, L, C] (float32) of tokens [B, L]; ``weights`` override parameters by name."""
        with self._autocast():
            return self._encode_fn(tokens, weights).float()

    def user_vectors(self, sequences: torch.Tensor, weights: dict | None = None) -> torch.Tensor:
        """User representation g for tasks after T1: hidden state at an appended separator (or last item)."""
        if self.config.user_repr == "separator":
            sep = torch.full((sequences.shape[0], 1), self.num_items + 1, dtype=sequences.dtype, device=sequences.device)
            sequences = torch.cat([sequences, sep], dim=1)
        return self.encode(sequences, weights)[:, -1]

    def _users(self, task: TaskData) -> tuple[torch.Tensor, torch.Tensor]:
        """(unique sequences [U, L], row -> unique index [N]); rows of one user share one forward."""
        hit = self._user_cache.get(id(task))
        if hit is not None and hit[0] is task:
            return hit[1], hit[2]
        uniq, inverse = torch.unique(task.sequences, dim=0, return_inverse=True)
        if len(self._user_cache) >= 16:
            self._user_cache.clear()
        self._user_cache[id(task)] = (task, uniq, inverse)
        return uniq, inverse

    def _weights_for(self, info: TaskInfo) -> dict[str, torch.Tensor]:
        """Inference weights of a learned task (an unpruned last task still reads its free weights)."""
        return self.ownership.effective(self._params, info.index, include_free=not info.pruned)

    def drop_cache(self) -> None:
        """Forget cached per-task tensors and effective weights (e.g. before a deepcopy)."""
        self._user_cache = {}
        self.ownership.invalidate()

    def replace_backbone(self, backbone: torch.nn.Module) -> None:
        """Swap in another encoder (same ``forward(tokens, weights)`` contract, uncompiled) before any task;
        its ``prunable_names()`` become the owned set."""
        if self.infos:
            raise LineageError(f"the backbone can only be replaced before the first task; learned: {self.tasks}.")
        self.backbone = backbone.to(self.device)
        self._params = dict(self.backbone.named_parameters())
        self.ownership = Ownership({n: self._params[n] for n in self.backbone.prunable_names()})
        self._encode_fn = self.backbone

    # ---- evaluation --------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate_with(self, task: TaskData, split: str, info: TaskInfo, weights: dict | None,
                      batch_size: int = 1024) -> dict[str, float]:
        """Metrics of ``info``'s task on one split under the given forward ``weights`` (None: plain)."""
        head = self.heads[info.name]
        rows = task.rows(split)
        acc = MetricAccumulator()
        if info.kind == "sequence":
            # Next items of held-out users, each given everything before it (see ModelConfig.t1_targets).
            seqs = task.sequences[rows]
            for start in range(0, seqs.shape[0], batch_size):
                batch = seqs[start:start + batch_size].to(self.device)
                hidden = self.encode(batch[:, :-1], weights)
                keep = t1_target_mask(batch, self.config.t1_targets)
                scores, y = head.scores(hidden[keep]), batch[:, 1:][keep] - 1
                acc.add_loss(scores, y)
                acc.add_ranks(target_ranks(scores, y))
        else:
            uniq, inverse = self._users(task)
            users, row_user = torch.unique(inverse[rows], return_inverse=True)
            vectors = torch.cat([self.user_vectors(uniq[users[s:s + batch_size]].to(self.device), weights)
                                 for s in range(0, users.numel(), batch_size)]) if users.numel() else None
            labels = task.labels[rows]
            for start in range(0, rows.numel(), batch_size):
                g = vectors[row_user[start:start + batch_size].to(self.device)]
                y = labels[start:start + batch_size].to(self.device)
                scores = head.scores(g)
                acc.add_loss(scores, y)
                if info.kind == "item":
                    acc.add_ranks(target_ranks(scores, y))
                else:
                    acc.add_classes(scores.argmax(dim=1), y)
        return acc.means()

    def evaluate(self, task: TaskData, split: str = "test", batch_size: int = 1024) -> dict[str, float]:
        """Metrics of a learned task on one split with its effective weights (MRR/HR/NDCG@5 or accuracy)."""
        info = self.info(task.name)
        return self.evaluate_with(task, split, info, self._weights_for(info), batch_size)

    @torch.no_grad()
    def predict(self, task_name: str, sequences: torch.Tensor, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k label positions (indices into the task's vocab) and scores for T1 sequences [B, L].

        T1: the next item after each sequence (index i = token i + 1); item tasks: item scores;
        class tasks: softmax probabilities. Returns CPU tensors [B, k].
        """
        info = self.info(task_name)
        weights = self._weights_for(info)
        seqs = sequences.to(self.device, dtype=torch.long)
        if seqs.dim() == 1:
            seqs = seqs.unsqueeze(0)
        if info.kind == "sequence":
            h = self.encode(seqs, weights)[:, -1]
        else:
            h = self.user_vectors(seqs, weights)
        scores = self.heads[task_name].scores(h)
        if info.kind == "class":
            scores = torch.softmax(scores, dim=1)
        top = torch.topk(scores, min(k, scores.shape[1]), dim=1)
        return top.indices.cpu(), top.values.cpu()

    # ---- stages ------------------------------------------------------------------------------
    def check_new_task(self, task: TaskData) -> None:
        """Raise LineageError / CapacityError unless ``task`` may be learned next (hook)."""
        if task.name in self.tasks:
            raise LineageError(f"task {task.name!r} is already learned by this lineage; give the new data another name.")
        if task.num_items != self.num_items:
            raise LineageError(
                f"task {task.name!r} was prepared against a T1 vocabulary of {task.num_items} items but this lineage "
                f"has {self.num_items}; prepare it against this lineage's T1 task.")
        first = not self.infos
        if first and task.kind != "sequence":
            raise LineageError(f"the first task must be the T1 sequence task, not {task.kind!r} task {task.name!r}.")
        if not first and task.kind == "sequence":
            raise LineageError(f"task {task.name!r} is a sequence task; only T1 may be one. Use kind 'item' or 'class'.")
        if len(self.infos) >= MAX_TASKS:
            raise CapacityError(f"a lineage holds at most {MAX_TASKS} tasks (one-byte owner maps).")
        if self.infos and not self.infos[-1].pruned:
            last = self.infos[-1].name
            raise LineageError(
                f"task {last!r} is still unpruned (Conure-); call prune({last!r}, ratio) and retrain its data "
                f"before learning {task.name!r}, or its weights would be overwritten.")

    def trainable_groups(self, info: TaskInfo, stage: str, cfg: TrainConfig) -> list[dict]:
        """Optimiser parameter groups of a stage; everything else gets requires_grad=False (hook)."""
        first_stage_of_t1 = info.index == 1 and stage == "train"
        backbone = [p for n, p in self._params.items() if n in self.ownership.maps or first_stage_of_t1]
        for p in self._params.values():
            p.requires_grad_(False)
        for p in backbone:
            p.requires_grad_(True)
        groups = [{"params": backbone, "weight_decay": 0.0, "lr": cfg.lr * cfg.backbone_lr_scale}]
        for name, head in self.heads.items():
            # T1's head trains in T1's first stage only (SPEC section 3); later heads in both stages.
            train_head = name == info.name and (info.index > 1 or stage == "train")
            for p in head.parameters():
                p.requires_grad_(train_head)
            if train_head:
                decay = cfg.head_l2 if info.kind != "sequence" else 0.0
                groups.append({"params": list(head.parameters()), "weight_decay": decay})
        return groups

    @contextlib.contextmanager
    def stage_scope(self, info: TaskInfo, stage: str):
        """Context around a whole training stage of ``info`` (hook; PeterRec switches in its patches)."""
        yield

    def task_step(self, task: TaskData, info: TaskInfo, cfg: TrainConfig, generator: torch.Generator,
                  weights: Callable[[], dict | None] | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
        """The per-batch loss ``step(train_row_positions) -> loss`` a stage of ``task`` minimises.

        T1: next-item loss; class tasks: class loss; item tasks: ``cfg.item_loss`` (softmax | bpr |
        bpr_logq). ``weights``: called per batch for the forward's weights (None: plain parameters).
        """
        head = self.heads[info.name]
        train_rows = task.rows("train")

        def current() -> dict | None:
            return weights() if weights is not None else None

        if info.kind == "sequence":
            train_seqs = task.sequences[train_rows]

            def step(idx: torch.Tensor) -> torch.Tensor:
                seqs = train_seqs[idx].to(self.device)
                hidden = self.encode(seqs[:, :-1], current())
                return next_item_loss(hidden, seqs[:, 1:], head, cfg.sampled_fraction, generator)
            return step
        uniq, inverse = self._users(task)
        row_users = inverse[train_rows]
        labels = task.labels[train_rows]
        sampler = PopularitySampler(labels, info.num_labels) if info.kind == "item" else None
        log_q = sampler.probs.log().float().to(self.device) if sampler and cfg.item_loss == "bpr_logq" else None

        def step(idx: torch.Tensor) -> torch.Tensor:
            users, row_user = torch.unique(row_users[idx], return_inverse=True)
            g = self.user_vectors(uniq[users].to(self.device), current())[row_user.to(self.device)]
            y = labels[idx].to(self.device)
            if sampler is None:
                return class_loss(g, head, y, cfg.label_smoothing, cfg.user_dropout, generator)
            if cfg.item_loss == "softmax":
                return class_loss(g, head, y)
            negatives = sampler.sample(idx.numel(), generator).to(self.device)
            return bpr_loss(g, head, y, negatives, log_q)
        return step

    def _batch_order(self, task: TaskData, info: TaskInfo, cfg: TrainConfig):
        """Row order of an epoch: grouped by user for item tasks with ``group_by_user``, else None (shuffle)."""
        if info.kind != "item" or not cfg.group_by_user:
            return None
        row_users = self._users(task)[1][task.rows("train")]

        def order(gen: torch.Generator) -> torch.Tensor:
            return grouped_order(row_users, gen)
        return order

    def _run(self, task: TaskData, info: TaskInfo, stage: str, cfg: TrainConfig,
             progress: Progress | None) -> StageResult:
        with self.stage_scope(info, stage):
            return self._run_stage(task, info, stage, cfg, progress)

    def _run_stage(self, task: TaskData, info: TaskInfo, stage: str, cfg: TrainConfig,
                   progress: Progress | None) -> StageResult:
        k = info.index
        generator = stage_generator(self.config.seed, k, stage)
        groups = self.trainable_groups(info, stage, cfg)
        self.ownership.begin_stage(self._params, stage, k)
        emb = self._params["embedding.weight"]
        sep = self.num_items + 1

        def weights() -> dict | None:
            return self.ownership.masked(self._params, k) if stage == "retrain" else None

        def gate() -> None:
            self.ownership.gate_grads(self._params)
            if emb.grad is not None:
                emb.grad[sep].zero_()  # the separator's embedding never trains

        train_rows = task.rows("train")
        step = self.task_step(task, info, cfg, generator, weights)
        order = self._batch_order(task, info, cfg)

        def validate() -> tuple[float, float]:
            with torch.no_grad():
                w = self.ownership.masked(self._params, k) if stage == "retrain" else None
                m = self.evaluate_with(task, "valid", info, w, cfg.eval_batch_size)
                return m.get(info.metric, float("nan")), m.get("loss", float("nan"))

        try:
            result = run_stage(task=info.name, stage=stage, param_groups=groups, num_rows=train_rows.numel(),
                               batch_size=cfg.batch_size, epochs=cfg.stage_epochs[stage], patience=cfg.patience,
                               lr=cfg.lr, generator=generator, step=step, validate=validate, metric=info.metric,
                               gate=gate, progress=progress, keep_best=cfg.keep_best, order=order,
                               select=cfg.select)
        finally:
            self.ownership.end_stage()
            for p in [*self._params.values(), *(q for h in self.heads.values() for q in h.parameters())]:
                p.requires_grad_(False)
        return result

    def train(self, task: TaskData, cfg: TrainConfig, progress: Progress | None = None) -> StageResult:
        """Stage 1 of a new task: all weights forward, gradients to free weights and the new head."""
        self.check_new_task(task)
        k = len(self.infos) + 1
        if k > 1:
            self.ownership.check_capacity(task.name, self.config.min_free)
        prior = label_counts(task, "train") if cfg.prior_bias else None
        head = build_head(task.kind, self.config.width, task.num_labels,
                          stage_generator(self.config.seed, k, "head"), prior, cfg.head_init,
                          self.config.head_norm).to(self.device)
        info = TaskInfo(task.name, task.kind, k, task.num_labels, METRIC_OF_KIND[task.kind], list(task.vocab))
        self.heads[task.name] = head
        self.infos.append(info)
        if k == 1 and not self.item_vocab:
            self.item_vocab = list(task.vocab)
        return self._run(task, info, "train", cfg, progress)

    def _last(self, task_name: str) -> TaskInfo:
        if not self.infos or self.infos[-1].name != task_name:
            raise LineageError(f"only the last learned task can be pruned or retrained; asked for {task_name!r}, "
                               f"last is {self.tasks[-1] if self.infos else None!r}.")
        return self.infos[-1]

    def prune(self, task_name: str, ratio: float, progress: Progress | None = None) -> dict[str, int]:
        """Stage 2: the task keeps the largest ``1 - ratio`` share of its free weights, per tensor."""
        info = self._last(task_name)
        if info.pruned:
            raise LineageError(f"task {task_name!r} is already pruned; retrain it or learn the next task.")
        kept = self.ownership.prune(self._params, info.index, ratio, zero_freed=self.config.freed_weights == "zero")
        info.pruned, info.prune_ratio = True, float(ratio)
        if progress:
            progress({"event": "prune", "task": task_name, "ratio": ratio, "kept": sum(kept.values()),
                      "free": self.free_capacity()["total"]})
        return kept

    def retrain(self, task: TaskData, cfg: TrainConfig, progress: Progress | None = None) -> StageResult:
        """Stage 3: forward with owner in 1..k, gradients to the task's own weights (and head, after T1)."""
        info = self._last(task.name)
        if not info.pruned:
            raise LineageError(f"task {task.name!r} must be pruned before it is retrained.")
        result = self._run(task, info, "retrain", cfg, progress)
        info.retrained = True
        return result

    def learn(self, task: TaskData, cfg: TrainConfig, ratio: float | None = None, prune: bool = True,
              progress: Progress | None = None) -> list[StageResult]:
        """train -> prune -> retrain (or train only, leaving the task as Conure-, when ``prune`` is False)."""
        results = [self.train(task, cfg, progress)]
        if prune:
            self.prune(task.name, cfg.prune_ratio if ratio is None else ratio, progress)
            results.append(self.retrain(task, cfg, progress))
        return results

    # ---- sizes -------------------------------------------------------------------------------
    def storage_bytes(self) -> int:
        """Bytes of all tensors a saved state holds: backbone, owner maps, heads."""
        total = sum(p.numel() * p.element_size() for p in self._params.values())
        total += sum(m.numel() for m in self.ownership.maps.values())
        total += sum(p.numel() * p.element_size() for h in self.heads.values() for p in h.parameters())
        return total
