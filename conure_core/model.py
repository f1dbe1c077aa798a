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
from conure_core.heads import LinearHead
from conure_core.kinds import T1_KIND, kind_of
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
    # catalogue items this task introduced (conure_core.catalogue): tokens after T1's and earlier tasks' new ones
    new_items: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def head_shape(config: ModelConfig, kind: str, num_items: int) -> dict[str, int]:
    """The size arguments of a task's head beyond its width and labels (``build_head``'s bag / wide_items)."""
    return kind_of(kind).head_shape(config, num_items)


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
        self.heads: dict[str, LinearHead] = {}
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

    def check_task(self, task: TaskData, first_kind: str | None = T1_KIND) -> None:
        """Raise LineageError unless ``task`` may be added next (``first_kind``: what the first task must be)."""
        if task.name in self.tasks:
            raise LineageError(f"task {task.name!r} is already learned by this model; give the new data another name.")
        if task.num_items != self.num_items:
            raise LineageError(
                f"task {task.name!r} was prepared against a T1 vocabulary of {task.num_items} items but this model "
                f"has {self.num_items}; prepare it against this model's T1 task.")
        if not self.infos and first_kind and task.kind != first_kind:
            raise LineageError(f"the first task must be the T1 sequence task, not {task.kind!r} task {task.name!r}.")
        try:
            kind_of(task.kind).check_task(task)
        except ValueError as exc:
            raise LineageError(str(exc)) from None

    def add_task(self, task: TaskData, cfg: TrainConfig) -> TaskInfo:
        """Register ``task`` with a fresh head (seeded by its position); no training."""
        k = len(self.infos) + 1
        kind = kind_of(task.kind)
        prior = kind.prior(task) if cfg.prior_bias else None
        shape = kind.head_shape(self.config, self.num_items)
        head = kind.build_head(self.config.width, task.num_labels, stage_generator(self.config.seed, k, "head"),
                               prior, cfg.head_init, self.config.head_norm, **shape).to(self.device)
        info = TaskInfo(task.name, task.kind, k, task.num_labels, kind.metric, list(task.vocab))
        if head.wide:
            info.wide = self._fit_wide(head, task)
        self.heads[task.name] = head
        self.infos.append(info)
        if k == 1 and not self.item_vocab:
            self.item_vocab = list(task.vocab)
        return info

    # ---- catalogue (conure_core.catalogue) -------------------------------------------------------
    def catalogue_size(self, index: int | None = None) -> int:
        """Items the task at learning position ``index`` reads (default: every learned task's): T1's plus
        those tasks 1..index introduced."""
        infos = self.infos if index is None else self.infos[:index]
        return self.num_items + sum(len(i.new_items) for i in infos)

    def catalogue_ids(self) -> list[str | None]:
        """Item id of every token 1.. (entry t - 1; None at the separator's place)."""
        return [*self.item_vocab, None, *(v for i in self.infos for v in i.new_items)]

    @torch.no_grad()
    def grow_embedding(self, rows: torch.Tensor) -> None:
        """Append ``rows`` [n, C] to the backbone's item embedding (the next n tokens); earlier rows are unchanged."""
        old = self.backbone.embedding
        grown = torch.nn.Embedding(old.num_embeddings + rows.shape[0], old.embedding_dim, padding_idx=0,
                                   device=old.weight.device, dtype=old.weight.dtype)
        grown.weight.copy_(torch.cat([old.weight, rows.to(old.weight)]))
        grown.weight.requires_grad_(old.weight.requires_grad)
        self.backbone.embedding = grown
        self.params = dict(self.backbone.named_parameters())

    def _fit_wide(self, head: LinearHead, task: TaskData) -> dict:
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
        metrics = kind_of(info.kind).evaluate_scales(self, task, "valid", info, weights, batch_size, SCALE)
        found = {scale: (m[info.metric], -m["loss"]) for scale, m in metrics.items()}
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
                               "weight_decay": kind_of(info.kind).head_l2(cfg)})
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
        """g for tasks of ``kind`` after T1 (the kind's ``representation``): the hidden state at an appended
        separator, at the last item, or ("mean") the mean hidden state over every real position and the
        separator; "mean_bag" appends the sequence's bag of items to that mean as slots ([B, C + L + 1],
        ``wide.bag_slots``: its distinct item tokens, read by the head's sparse ``ItemBag``)."""
        how = kind_of(kind).representation(self.config, self.num_items)
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

    # ---- what a task's kind answers ------------------------------------------------------------
    def loss(self, task: TaskData, info: TaskInfo, cfg: TrainConfig, generator: torch.Generator):
        """The batch loss of ``task``'s stages: ``loss(rows, weights)``, ``order(generator)``, ``count(rows)``."""
        return kind_of(info.kind).loss(self, task, info, cfg, generator)

    @torch.no_grad()
    def evaluate(self, task: TaskData, split: str, info: TaskInfo, weights: Weights,
                 batch_size: int = 1024) -> dict[str, float]:
        """Metrics of ``info``'s task on one split under ``weights`` (its kind's ``metrics``), plus loss."""
        return kind_of(info.kind).evaluate(self, task, split, info, weights, batch_size)

    @torch.no_grad()
    def predict(self, info: TaskInfo, sequences: torch.Tensor, weights: Weights, k: int = 10
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k label positions (into the task's vocab) and scores for T1 sequences [B, L] (CPU tensors).

        T1: the next item after each sequence (index i = token i + 1); item tasks: item scores;
        class tasks: softmax probabilities (each kind's ``predict``).
        """
        seqs = sequences.to(self.device, dtype=torch.long)
        if seqs.dim() == 1:
            seqs = seqs.unsqueeze(0)
        idx, val = kind_of(info.kind).predict(self, info, seqs, weights, k)
        return idx.cpu(), val.cpu()

    # ---- sizes ---------------------------------------------------------------------------------
    def backbone_bytes(self) -> int:
        return tensor_bytes(self.params.values())

    def head_bytes(self, names: list[str] | None = None) -> int:
        heads = self.heads if names is None else {n: self.heads[n] for n in names}
        return tensor_bytes(t for h in heads.values() for t in [*h.parameters(), *h.buffers()])
