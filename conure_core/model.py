"""The task model: one backbone, one head per task, and what a task asks of them.

``encode`` -> hidden states; ``user_vectors`` -> the user representation g of tasks after T1;
``loss`` -> the batch loss a stage minimises; ``evaluate`` / ``predict`` -> full-ranking metrics and
top-k answers. Every method takes the forward's ``weights`` (a dict by ``named_parameters()`` name,
or None for the plain parameters): which weights a task reads is the parameter policy's business
(``conure_core.policies``, ``conure_core.ownership``), not the model's.
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field

import torch
from torch.func import functional_call

from conure_core.backbones import build_backbone
from conure_core.config import ModelConfig, TrainConfig
from conure_core.data.types import TaskData
from conure_core.errors import ConureError
from conure_core.heads import NextItemHead, build_head
from conure_core.losses import bpr_loss, class_loss, next_item_loss
from conure_core.metrics import (FULL_SCORES, METRIC_OF_KIND, MetricAccumulator, streamed_ranking, streamed_topk,
                                 t1_target_mask, target_ranks)
from conure_core.naive import label_counts
from conure_core.samplers import PopularitySampler
from conure_core.seeding import stage_generator, stage_seed
from conure_core.wide import SCALE, bag_slots, fit_transitions

Weights = dict[str, torch.Tensor] | None


class LineageError(ConureError, RuntimeError):
    """A model or lineage was asked for something its state does not allow; the message says what to do."""


@dataclass
class TaskInfo:
    """What a model remembers about a learned task (JSON-safe; saved in every state)."""

    name: str
    kind: str
    index: int  # 1-based learning position = owner value
    num_labels: int
    metric: str
    vocab: list[str] = field(default_factory=list)
    pruned: bool = False
    retrained: bool = False
    prune_ratio: float | None = None
    # T1 with a table: its fit (shrink, decay, the table's own valid MRR@5) and, after each T1 stage, the
    # fusion scale kept with the fused and the TCN-alone validation metric (TaskModel.fit_wide_scale).
    wide: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def head_shape(config: ModelConfig, kind: str, num_items: int) -> dict[str, int]:
    """The size arguments of a task's head beyond its width and labels (``build_head``'s bag / wide_items)."""
    if kind == "sequence":
        return {"bag": 0, "wide_items": num_items if config.t1_table(num_items) else 0}
    return {"bag": num_items if config.repr_of(kind, num_items) == "mean_bag" else 0, "wide_items": 0}


def tensor_bytes(tensors) -> int:
    """Bytes of an iterable of tensors."""
    return sum(t.numel() * t.element_size() for t in tensors)


class TaskModel:
    """A backbone over T1 token sequences plus one head per learned task.

    ``backbone``: any module with ``forward(tokens [B, L]) -> [B, L, C]`` (causal) and
    ``prunable_names()``; by default the one ``config`` names, seeded from ``config.seed``.
    """

    def __init__(self, config: ModelConfig, num_items: int, item_vocab: list[str] | None = None,
                 device: str | torch.device | None = None, backbone: torch.nn.Module | None = None) -> None:
        self.config = config
        self.num_items = int(num_items)
        self.item_vocab = list(item_vocab or [])
        self.device = resolve_device(str(device) if device is not None else config.device)
        if self.device.type == "cpu":
            # Adam states filling with denormals doubled CPU epoch time (DESIGN.md, measured facts).
            torch.set_flush_denormal(True)
        if backbone is None:
            backbone = build_backbone(config, self.num_items, stage_generator(config.seed, 0, "backbone"))
        # eval mode except while T1's stages take their steps (``dropout_mode``): dropout, when the
        # config has it, never reaches inference, validation or a later task.
        self.backbone = backbone.to(self.device).eval()
        self.params: dict[str, torch.nn.Parameter] = dict(self.backbone.named_parameters())
        self.heads: dict[str, NextItemHead] = {}
        self.infos: list[TaskInfo] = []
        self._forward = torch.compile(self._functional) if config.compile else self._functional
        self._user_cache: dict[int, tuple[TaskData, torch.Tensor, torch.Tensor]] = {}

    # ---- tasks ---------------------------------------------------------------------------------
    @property
    def tasks(self) -> list[str]:
        """Learned task names, in learning order."""
        return [i.name for i in self.infos]

    def info(self, task_name: str) -> TaskInfo:
        for info in self.infos:
            if info.name == task_name:
                return info
        raise LineageError(f"task {task_name!r} is not in this model; learned tasks: {self.tasks}.")

    def check_task(self, task: TaskData, first_kind: str | None = "sequence") -> None:
        """Raise LineageError unless ``task`` may be added next (``first_kind``: what the first task must be)."""
        if task.name in self.tasks:
            raise LineageError(f"task {task.name!r} is already learned by this model; give the new data another name.")
        if task.num_items != self.num_items:
            raise LineageError(
                f"task {task.name!r} was prepared against a T1 vocabulary of {task.num_items} items but this model "
                f"has {self.num_items}; prepare it against this model's T1 task.")
        if not self.infos and first_kind and task.kind != first_kind:
            raise LineageError(f"the first task must be the T1 sequence task, not {task.kind!r} task {task.name!r}.")

    def add_task(self, task: TaskData, cfg: TrainConfig) -> TaskInfo:
        """Register ``task`` with a fresh head (seeded by its position); no training."""
        k = len(self.infos) + 1
        prior = label_counts(task, "train") if cfg.prior_bias else None
        shape = head_shape(self.config, task.kind, self.num_items)
        head = build_head(task.kind, self.config.width, task.num_labels, stage_generator(self.config.seed, k, "head"),
                          prior, cfg.head_init, self.config.head_norm, **shape).to(self.device)
        info = TaskInfo(task.name, task.kind, k, task.num_labels, METRIC_OF_KIND[task.kind], list(task.vocab))
        if head.wide:
            info.wide = self._fit_wide(head, task)
        self.heads[task.name] = head
        self.infos.append(info)
        if k == 1 and not self.item_vocab:
            self.item_vocab = list(task.vocab)
        return info

    def _fit_wide(self, head: NextItemHead, task: TaskData) -> dict:
        """Fill T1's transition table from its train split (shrink, decay and k chosen on validation)."""
        fit = fit_transitions(task.sequences[task.rows("train")], task.sequences[task.rows("valid")],
                              self.num_items, self.config.t1_targets, self.config.t1_topk)
        head.wide_table.fill(fit["table"].index, fit["table"].value)
        head.wide_decay.fill_(fit["decay"])
        return {k: v for k, v in fit.items() if k != "table"}

    @contextlib.contextmanager
    def deep_only(self, info: TaskInfo):
        """While a stage of ``info``'s task runs: its head scores with the TCN alone (no wide part)."""
        head = self.heads[info.name]
        head.deep_only = True
        try:
            yield
        finally:
            head.deep_only = False

    @torch.no_grad()
    def fit_wide_scale(self, task: TaskData, info: TaskInfo, weights: Weights, batch_size: int = 1024) -> dict | None:
        """T1 with a table: the fusion scale of best validation metric (ties: lower loss, then smaller scale)."""
        head = self.heads[info.name]
        if not head.wide:
            return None
        found = {}
        for scale in SCALE:
            head.wide_scale.fill_(scale)
            m = self.evaluate(task, "valid", info, weights, batch_size)
            found[scale] = (m[info.metric], -m["loss"])
        best = max(SCALE, key=lambda s: (*found[s], -s))
        head.wide_scale.fill_(best)
        info.wide = {**(info.wide or {}), "scale": best, "valid_fused": found[best][0], "valid_deep": found[0.0][0]}
        return dict(info.wide)

    def head_groups(self, info: TaskInfo, stage: str, cfg: TrainConfig) -> list[dict]:
        """The optimiser group of the heads a stage trains: T1's in its first stage only, a later task's in both."""
        groups = []
        for name, head in self.heads.items():
            trains = name == info.name and (info.index > 1 or stage == "train")
            for p in head.parameters():
                p.requires_grad_(trains)
            if trains:
                groups.append({"params": list(head.parameters()),
                               "weight_decay": cfg.head_l2 if info.kind != "sequence" else cfg.weight_decay})
        return groups

    # ---- forward -------------------------------------------------------------------------------
    def _functional(self, tokens: torch.Tensor, weights: Weights) -> torch.Tensor:
        if not weights:
            return self.backbone(tokens)
        if not weights.keys() <= self.params.keys():
            # functional_call ignores unknown names: a misspelt one would silently mean unmasked weights.
            unknown = sorted(set(weights) - set(self.params))
            raise KeyError(f"replacement weights {unknown} name no parameter of the backbone; "
                           f"use names from named_parameters(), e.g. {next(iter(self.params))!r}.")
        return functional_call(self.backbone, weights, (tokens,))

    def _autocast(self):
        if self.config.bf16 and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def encode(self, tokens: torch.Tensor, weights: Weights = None) -> torch.Tensor:
        """Hidden states [B, L, C] (float32) of tokens [B, L] under ``weights``."""
        with self._autocast():
            return self._forward(tokens, weights).float()

    def user_vectors(self, sequences: torch.Tensor, weights: Weights = None, kind: str = "item") -> torch.Tensor:
        """g for tasks of ``kind`` after T1 (``config.repr_of``): the hidden state at an appended
        separator, at the last item, or ("mean") the mean hidden state over every real position and the
        separator; "mean_bag" appends the sequence's bag of items to that mean as slots ([B, C + L + 1],
        ``wide.bag_slots``: its distinct item tokens, read by the head's sparse ``ItemBag``)."""
        how = self.config.repr_of(kind, self.num_items)
        if how != "last":
            sep = torch.full((sequences.shape[0], 1), self.num_items + 1, dtype=sequences.dtype, device=sequences.device)
            sequences = torch.cat([sequences, sep], dim=1)
        hidden = self.encode(sequences, weights)
        if how in ("mean", "mean_bag"):
            # A causal TCN's last state sees only its receptive field; the mean sees the whole sequence.
            keep = (sequences != 0).unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * keep).sum(dim=1) / keep.sum(dim=1)
            if how == "mean_bag":
                return torch.cat([pooled, bag_slots(sequences, self.num_items)], dim=1)
            return pooled
        return hidden[:, -1]

    def zero_reserved_grads(self) -> None:
        """The separator's embedding never trains (SPEC section 2): clear its gradient row."""
        grad = self.params["embedding.weight"].grad
        if grad is not None:
            grad[self.num_items + 1].zero_()

    def users(self, task: TaskData) -> tuple[torch.Tensor, torch.Tensor]:
        """(unique sequences [U, L], row -> unique index [N]); rows of one user share one forward."""
        hit = self._user_cache.get(id(task))
        if hit is not None and hit[0] is task:
            return hit[1], hit[2]
        uniq, inverse = torch.unique(task.sequences, dim=0, return_inverse=True)
        if len(self._user_cache) >= 16:
            self._user_cache.clear()
        self._user_cache[id(task)] = (task, uniq, inverse)
        return uniq, inverse

    def drop_cache(self) -> None:
        """Forget cached per-task tensors (e.g. before a deepcopy)."""
        self._user_cache = {}

    # ---- training ------------------------------------------------------------------------------
    def seed_dropout(self, info: TaskInfo, stage: str) -> None:
        """Seed the dropout masks of a T1 stage (torch's global stream), so the stage replays bit-identically."""
        if info.index == 1 and float(getattr(self.config, "dropout", 0.0)) > 0.0:
            torch.manual_seed(stage_seed(self.config.seed, info.index, f"{stage}:dropout"))

    @contextlib.contextmanager
    def dropout_mode(self, info: TaskInfo):
        """While a stage of ``info``'s task takes its steps: the backbone in train mode for T1 (its dropout
        on), eval mode for any later task; eval again afterwards (validation, inference)."""
        self.backbone.train(info.index == 1)
        try:
            yield
        finally:
            self.backbone.eval()

    def loss(self, task: TaskData, info: TaskInfo, cfg: TrainConfig, generator: torch.Generator) -> "TaskLoss":
        """The batch loss of ``task``'s stages (see ``TaskLoss``)."""
        return TaskLoss(self, task, info, cfg, generator)

    # ---- evaluation ----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, task: TaskData, split: str, info: TaskInfo, weights: Weights,
                 batch_size: int = 1024) -> dict[str, float]:
        """Metrics of ``info``'s task on one split under ``weights``: MRR/HR/NDCG@5 or accuracy, plus loss."""
        head = self.heads[info.name]
        rows = task.rows(split)
        acc = MetricAccumulator()
        if info.kind == "sequence":
            # Next items of held-out users, each given everything before it (see ModelConfig.t1_targets).
            seqs = task.sequences[rows]
            if head.wide:  # the wide scores are [rows, L, V]: bound them as one full score matrix
                batch_size = max(1, min(batch_size, FULL_SCORES // (seqs.shape[1] * self.num_items * 4)))
            for start in range(0, seqs.shape[0], batch_size):
                batch = seqs[start:start + batch_size].to(self.device).long()
                hidden = self.encode(batch[:, :-1], weights)
                keep = t1_target_mask(batch, self.config.t1_targets)
                offset = head.wide_scores(batch[:, :-1])
                rank_into(acc, head, hidden[keep], batch[:, 1:][keep] - 1, None if offset is None else offset[keep])
            return acc.means()
        uniq, inverse = self.users(task)
        users, row_user = torch.unique(inverse[rows], return_inverse=True)
        vectors = torch.cat([self.user_vectors(uniq[users[s:s + batch_size]].to(self.device).long(), weights, info.kind)
                             for s in range(0, users.numel(), batch_size)]) if users.numel() else None
        labels = task.labels[rows]
        for start in range(0, rows.numel(), batch_size):
            g = vectors[row_user[start:start + batch_size].to(self.device)]
            y = labels[start:start + batch_size].to(self.device)
            if info.kind == "item":
                rank_into(acc, head, g, y)
                continue
            scores = head.scores(g)
            acc.add_loss(scores, y)
            acc.add_classes(scores.argmax(dim=1), y)
        return acc.means()

    @torch.no_grad()
    def predict(self, info: TaskInfo, sequences: torch.Tensor, weights: Weights, k: int = 10
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k label positions (into the task's vocab) and scores for T1 sequences [B, L] (CPU tensors).

        T1: the next item after each sequence (index i = token i + 1); item tasks: item scores;
        class tasks: softmax probabilities.
        """
        seqs = sequences.to(self.device, dtype=torch.long)
        if seqs.dim() == 1:
            seqs = seqs.unsqueeze(0)
        h = self.encode(seqs, weights)[:, -1] if info.kind == "sequence" else self.user_vectors(seqs, weights, info.kind)
        head = self.heads[info.name]
        offset = head.wide_scores(seqs, last=True) if info.kind == "sequence" else None
        if info.kind != "class" and offset is None and head.bag is None and h.shape[0] * head.weight.shape[0] > FULL_SCORES:
            idx, val = streamed_topk(head._prep(h), head.weight, head.bias, k)
            return idx.cpu(), val.cpu()
        scores = head.scores(h, offset)
        if info.kind == "class":
            scores = torch.softmax(scores, dim=1)
        top = torch.topk(scores, min(k, scores.shape[1]), dim=1)
        return top.indices.cpu(), top.values.cpu()

    # ---- sizes ---------------------------------------------------------------------------------
    def backbone_bytes(self) -> int:
        return tensor_bytes(self.params.values())

    def head_bytes(self, names: list[str] | None = None) -> int:
        heads = self.heads if names is None else {n: self.heads[n] for n in names}
        return tensor_bytes(t for h in heads.values() for t in [*h.parameters(), *h.buffers()])


def rank_into(acc: MetricAccumulator, head: NextItemHead, h: torch.Tensor, y: torch.Tensor,
              offset: torch.Tensor | None = None) -> None:
    """Add the cross-entropy and full-ranking ranks of targets ``y`` under ``head`` to ``acc``.

    Up to ``FULL_SCORES`` scores the whole [rows x items] matrix is made at once (as always); past
    it the ranking streams over blocks (``metrics.streamed_ranking``): equal ranks, bounded memory.
    ``offset`` (T1's wide scores, already [rows x items]) is added to the logits.
    """
    if offset is not None or head.bag is not None or h.shape[0] * head.weight.shape[0] <= FULL_SCORES:
        scores = head.scores(h, offset)
        acc.add_loss(scores, y)
        acc.add_ranks(target_ranks(scores, y))
        return
    ranks, loss = streamed_ranking(head._prep(h).float(), head.weight.float(), head.bias.float(), y)
    acc.sums["loss"] = acc.sums.get("loss", 0.0) + loss
    acc.add_ranks(ranks)


def grouped_order(row_users: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A permutation of rows that keeps each user's rows together (users and rows within a user shuffled).

    Every row is still seen once per epoch and batches keep their row count, but a batch of 512
    rows then holds ~15 users instead of ~400, so the backbone encodes ~25x fewer sequences per epoch.
    """
    num_users = int(row_users.max()) + 1 if row_users.numel() else 0
    user_pos = torch.randperm(num_users, generator=generator).double()
    within = torch.rand(row_users.numel(), generator=generator, dtype=torch.float64)
    return torch.argsort(user_pos[row_users] + 0.5 * within, stable=True)


def bucketed_order(lengths: torch.Tensor, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """A permutation of rows in batches of similar length (ties shuffled), the batches in shuffled order."""
    key = lengths.double() + torch.rand(lengths.numel(), generator=generator, dtype=torch.float64)
    batches = torch.argsort(key).split(batch_size)
    return torch.cat([batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()])


def trim_padding(sequences: torch.Tensor) -> torch.Tensor:
    """Left-padded rows [B, L] without their leading all-padding columns (at least two columns kept).

    The same function for the Transformer (it never reads a padding key, up to float rounding); for
    the TCN an approximation: padding positions carry LayerNorm biases through its blocks, which a
    trimmed row replaces by the convs' zero padding (holding padding at zero instead cost the bundled
    floor 1.5-2 SE on clicks and loved, docs/accuracy.md).
    """
    real = (sequences != 0).any(dim=0)
    first = int(real.int().argmax()) if bool(real.any()) else sequences.shape[1]
    return sequences[:, min(first, sequences.shape[1] - 2):]


class TaskLoss:
    """``loss(rows, weights)``: the mean loss of a batch of train rows of one task; ``order(g)``: an epoch's rows.

    T1: next-item loss over every non-padding position; class tasks: class cross-entropy (label
    smoothing, user dropout); item tasks: ``cfg.item_loss`` (softmax | bpr | bpr_logq). Every random
    draw (negatives, dropout masks, shuffles) comes from the stage's ``generator``.
    """

    def __init__(self, model: TaskModel, task: TaskData, info: TaskInfo, cfg: TrainConfig,
                 generator: torch.Generator) -> None:
        self.model, self.info, self.cfg, self.generator = model, info, cfg, generator
        self.head = model.heads[info.name]
        train_rows = task.rows("train")
        self.num_rows = int(train_rows.numel())
        if info.kind == "sequence":
            self.sequences = task.sequences[train_rows]
            self.row_users = None
            return
        self.uniq, inverse = model.users(task)
        self.row_users = inverse[train_rows]
        self.labels = task.labels[train_rows]
        self.sampler = PopularitySampler(self.labels, info.num_labels) if info.kind == "item" else None
        use_logq = self.sampler is not None and cfg.item_loss == "bpr_logq"
        self.log_q = self.sampler.probs.log().float().to(model.device) if use_logq else None

    def order(self, generator: torch.Generator) -> torch.Tensor:
        """Row order of one epoch: whole users together for item tasks with ``group_by_user``, T1 rows in
        batches of similar length with ``length_buckets``, else shuffled."""
        if self.info.kind == "item" and self.cfg.group_by_user:
            return grouped_order(self.row_users, generator)
        if self.info.kind == "sequence" and self.cfg.length_buckets:
            return bucketed_order((self.sequences > 0).sum(1), self.cfg.batch_size, generator)
        return torch.randperm(self.num_rows, generator=generator)

    def count(self, idx: torch.Tensor) -> int:
        """How many terms the mean of ``self(idx)`` is over (T1: non-padding targets; else rows).

        Data-parallel stages weight each rank's gradient by it, so the average is the global batch's mean.
        """
        if self.info.kind == "sequence":
            return int((self.sequences[idx][:, 1:] > 0).sum())
        return int(idx.numel())

    def __call__(self, idx: torch.Tensor, weights: Weights = None) -> torch.Tensor:
        model, cfg, device = self.model, self.cfg, self.model.device
        if self.info.kind == "sequence":
            seqs = self.sequences[idx]
            seqs = (trim_padding(seqs) if cfg.length_buckets else seqs).to(device).long()
            hidden = model.encode(seqs[:, :-1], weights)
            fraction = cfg.sampled_fraction if self.model.num_items > cfg.sampled_above else 1.0
            return next_item_loss(hidden, seqs[:, 1:], self.head, fraction, self.generator)
        users, row_user = torch.unique(self.row_users[idx], return_inverse=True)
        g = model.user_vectors(self.uniq[users].to(device).long(), weights, self.info.kind)[row_user.to(device)]
        y = self.labels[idx].to(device)
        if self.sampler is None:
            return class_loss(g, self.head, y, cfg.label_smoothing, cfg.user_dropout, self.generator)
        if cfg.item_loss == "softmax":
            return class_loss(g, self.head, y)
        negatives = self.sampler.sample(idx.numel(), self.generator).to(device)
        return bpr_loss(g, self.head, y, negatives, self.log_q)
