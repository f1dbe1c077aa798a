"""Model and training configuration, JSON-safe, plus the named presets (`quick`, `paper`)."""
from __future__ import annotations

from conure_core.errors import ConureError

import dataclasses
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ConureError, ValueError):
    """A configuration value is invalid; the message names the field and what to do."""


def _from_dict(cls, data: dict[str, Any]):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{cls.__name__} has no field(s) {unknown}; valid fields are {sorted(names)}.")
    return cls(**data)


AUTO = "auto"  # chosen from the data: a prune ratio on validation; the per-item parts on (sparse at any size)
USER_REPRS = ("separator", "last", "mean", "mean_bag")


@dataclass
class ModelConfig:
    """The shape of one lineage's model; fixed for the lineage's life."""

    backbone: str = "tcn"  # "tcn" (NextItNet) | "transformer" (SASRec-style, paper 5.6)
    blocks: int = 2  # transformer only: number of blocks
    max_len: int = 256  # transformer only: longest sequence (learned positions)
    width: int = 64
    # Dropout on the embeddings and in every residual block, while T1's stages train (off at inference
    # and in later tasks' stages, so it never touches retention; docs/accuracy.md).
    dropout: float = 0.0
    kernel: int = 3
    # One entry per residual block: the block's first conv uses d, its second 2d (SPEC section 2).
    dilations: list[int] = field(default_factory=lambda: [1, 4, 1, 4])
    # The user vector g of tasks after T1: "separator" | "last" | "mean" (pooled over the sequence +
    # separator) | "mean_bag" (that mean followed by the 0/1 bag of the user's T1 items: each later
    # head holds a weight per item). ``class_repr``: class tasks' own choice (None: user_repr);
    # "auto" = "mean_bag" (the bag is sparse: its cost grows with the user's items, not the vocabulary).
    user_repr: str = "separator"
    class_repr: str | None = None
    # T1's item-to-item part (conure_core.wide): "none" | "cooccur" (a transition table fitted on T1's
    # train split, its scaled scores added to the TCN's logits) | "auto" (= cooccur: the table is sparse,
    # top-k successors per item, so it is on at every vocabulary size).
    t1_wide: str = "none"
    # Successors the T1 table keeps per item: None = chosen on T1's validation split (conure_core.wide.TOPK).
    t1_topk: int | None = None
    prune_embedding: bool = False
    freed_weights: str = "keep"  # "keep" (Conure) | "zero" (PackNet)
    min_free: float = 0.0  # refuse a new task when the free fraction is <= this floor
    seed: int = 0
    device: str = "auto"  # "auto" -> CUDA when present, else CPU
    bf16: bool = False  # autocast on CUDA only
    compile: bool = False  # torch.compile the backbone (off in tests)
    # T1 evaluation targets of held-out users: "all" = every next item that has at least one item of
    # context (~29 targets per user, so ~140 test users give a usable estimate); "last" = the last item only.
    t1_targets: str = "all"
    head_norm: bool = True  # item / class heads LayerNorm the user vector (no parameters)

    def __post_init__(self) -> None:
        if self.backbone not in ("tcn", "transformer"):
            raise ConfigError(f"ModelConfig.backbone={self.backbone!r} is not available; use 'tcn' or 'transformer'.")
        for name in ("user_repr", "class_repr"):
            value = getattr(self, name)
            if value not in USER_REPRS and not (name == "class_repr" and value in (None, AUTO)):
                extra = " (class_repr also None or 'auto')" if name == "class_repr" else ""
                raise ConfigError(f"ModelConfig.{name}={value!r}; use one of {list(USER_REPRS)}{extra}.")
        if self.t1_wide not in ("none", "cooccur", AUTO):
            raise ConfigError(f"ModelConfig.t1_wide={self.t1_wide!r}; use 'none', 'cooccur' or 'auto'.")
        if self.t1_topk is not None and (isinstance(self.t1_topk, bool) or not isinstance(self.t1_topk, int)
                                         or self.t1_topk < 1):
            raise ConfigError(f"ModelConfig.t1_topk={self.t1_topk!r}; use a positive whole number or null (chosen on validation).")
        if self.t1_targets not in ("all", "last"):
            raise ConfigError(f"ModelConfig.t1_targets={self.t1_targets!r}; use 'all' or 'last'.")
        if self.freed_weights not in ("keep", "zero"):
            raise ConfigError(f"ModelConfig.freed_weights={self.freed_weights!r}; use 'keep' or 'zero'.")
        if self.width <= 0 or self.kernel <= 0 or not self.dilations or min(self.dilations) <= 0:
            raise ConfigError("ModelConfig width, kernel and every dilation must be positive.")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"ModelConfig.dropout={self.dropout} must be in [0, 1).")
        if not 0.0 <= self.min_free < 1.0:
            raise ConfigError(f"ModelConfig.min_free={self.min_free} must be in [0, 1).")
        self.dilations = [int(d) for d in self.dilations]

    def repr_of(self, kind: str, num_items: int) -> str:
        """The user representation tasks of ``kind`` ("item" | "class") read over a T1 of ``num_items``."""
        if kind == "class" and self.class_repr == AUTO:
            return "mean_bag"
        return self.class_repr if kind == "class" and self.class_repr else self.user_repr

    def t1_table(self, num_items: int) -> bool:
        """Whether T1's head holds the co-occurrence table (``t1_wide``) over a T1 of ``num_items``."""
        return self.t1_wide in ("cooccur", AUTO)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        return _from_dict(cls, data)


@dataclass
class TrainConfig:
    """How one task's stages train; per-task overrides come from the task manifest."""

    lr: float = 1e-3
    batch_size: int = 32
    epochs: int = 10  # train stage
    retrain_epochs: int | None = None  # None -> same as epochs
    patience: int = 3  # epochs without validation gain before stopping
    head_l2: float = 0.02  # L2 on the task's head (item / class tasks)
    # T1's first stage: Adam's L2 on the backbone and T1's head (only there: every weight is still free).
    weight_decay: float = 0.0
    lr_schedule: str = "constant"  # "constant" | "cosine" (to 0 over the stage's epochs, conure_core.training.Schedule)
    sampled_fraction: float = 1.0  # T1 softmax: 1.0 = full, else share of the vocabulary as negatives
    # ...applied only past this many T1 items (0: always); up to it T1 trains on the full softmax.
    sampled_above: int = 0
    eval_batch_size: int = 1024
    prune_ratio: float = 0.7  # share of the task's free weights released for later tasks
    # prune_auto: choose the ratio on validation instead: the largest of ``prune_grid`` whose
    # retrained validation metric stays within ``prune_epsilon`` (relative) of the unpruned
    # (Conure-) task's; ``prune_ratio`` is then only the fallback when none does.
    prune_auto: bool = False
    prune_grid: list[float] = field(default_factory=lambda: [0.5, 0.7, 0.8, 0.9])
    prune_epsilon: float = 0.02
    keep_best: bool = True  # restore the best validation epoch's weights at the end of a stage
    # Item tasks: batches of whole users' rows (each row once per epoch, same batch size) so the
    # backbone encodes each user about once per epoch instead of once per row.
    group_by_user: bool = True
    # T1: batches of rows of similar length (batch order shuffled), each trimmed to its longest row;
    # on short-tailed data (Games: 9 items a user, rows of 51) most of a row is padding otherwise
    # (exact for the Transformer, an approximation for the TCN: ``model.trim_padding``).
    length_buckets: bool = False
    # Item-task loss: "bpr" (SPEC), "bpr_logq" (BPR on s - log q of the popularity sampler),
    # "softmax" (full softmax over the task's items).
    item_loss: str = "bpr"
    # Head init: bias = log(train label count + 1) when prior_bias; weights N(0, (head_init / sqrt(C))^2).
    prior_bias: bool = True
    head_init: float = 1.0
    backbone_lr_scale: float = 1.0  # the backbone's learning rate = lr * this (heads use lr)
    # Which epoch a stage keeps: "metric" (best validation metric, ties -> lower loss) or "loss"
    # (lowest validation cross-entropy; steadier than accuracy on ~50 validation users).
    select: str = "metric"
    label_smoothing: float = 0.0  # class tasks' cross-entropy
    user_dropout: float = 0.0  # class and regression tasks: dropout on the user vector during training
    number_loss: str = "mse"  # regression tasks: "mse" | "huber" (quadratic within huber_delta)
    huber_delta: float = 1.0

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.batch_size <= 0 or self.epochs < 0:
            raise ConfigError("TrainConfig lr and batch_size must be positive and epochs >= 0.")
        if not 0.0 < self.sampled_fraction <= 1.0:
            raise ConfigError(f"TrainConfig.sampled_fraction={self.sampled_fraction} must be in (0, 1].")
        if self.sampled_above < 0:
            raise ConfigError(f"TrainConfig.sampled_above={self.sampled_above} must be >= 0.")
        if self.item_loss not in ("bpr", "bpr_logq", "softmax"):
            raise ConfigError(f"TrainConfig.item_loss={self.item_loss!r}; use 'bpr', 'bpr_logq' or 'softmax'.")
        if not 0.0 <= self.prune_ratio < 1.0:
            raise ConfigError(f"TrainConfig.prune_ratio={self.prune_ratio} must be in [0, 1).")
        if not self.prune_grid or any(not 0.0 <= r < 1.0 for r in self.prune_grid) or not 0.0 <= self.prune_epsilon < 1.0:
            raise ConfigError("TrainConfig.prune_grid needs ratios in [0, 1) and prune_epsilon must be in [0, 1).")
        self.prune_grid = sorted(float(r) for r in self.prune_grid)
        if self.lr_schedule not in ("constant", "cosine"):
            raise ConfigError(f"TrainConfig.lr_schedule={self.lr_schedule!r}; use 'constant' or 'cosine'.")
        if self.select not in ("metric", "loss"):
            raise ConfigError(f"TrainConfig.select={self.select!r}; use 'metric' or 'loss'.")
        if self.number_loss not in ("mse", "huber") or self.huber_delta <= 0:
            raise ConfigError(f"TrainConfig.number_loss={self.number_loss!r}, huber_delta={self.huber_delta}; "
                              "use 'mse' or 'huber' and a positive delta.")
        if not 0.0 <= self.label_smoothing < 1.0 or not 0.0 <= self.user_dropout < 1.0:
            raise ConfigError("TrainConfig label_smoothing and user_dropout must be in [0, 1).")
        if self.backbone_lr_scale < 0 or self.head_init < 0 or self.head_l2 < 0 or self.weight_decay < 0:
            raise ConfigError("TrainConfig backbone_lr_scale, head_init, head_l2 and weight_decay must be >= 0.")

    @property
    def stage_epochs(self) -> dict[str, int]:
        re = self.epochs if self.retrain_epochs is None else self.retrain_epochs
        return {"train": self.epochs, "retrain": re}

    def with_overrides(self, overrides: dict[str, Any] | None) -> "TrainConfig":
        """A copy with manifest overrides applied (keys: any field, e.g. prune_ratio, epochs, lr)."""
        if not overrides:
            return dataclasses.replace(self)
        data = self.to_dict()
        for key, value in overrides.items():
            if value is None:
                continue
            if key not in data:
                raise ConfigError(f"task override {key!r} is not a TrainConfig field; valid: {sorted(data)}.")
            data[key] = value
        return TrainConfig.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        return _from_dict(cls, data)



# A task manifest's training keys (task.yaml) -> the TrainConfig field each one sets.
MANIFEST_FIELDS = {"epochs": "epochs", "lr": "lr", "batch_size": "batch_size", "l2": "head_l2",
                   "prune_ratio": "prune_ratio"}


def manifest_overrides(manifest: dict[str, Any]) -> dict[str, Any]:
    """TrainConfig overrides from a task manifest's keys (only those it sets); the one mapping of them.

    ``prune_ratio: auto`` turns on the validation-chosen ratio (``TrainConfig.prune_auto``).
    """
    out = {field: manifest[key] for key, field in MANIFEST_FIELDS.items() if manifest.get(key) is not None}
    if out.get("prune_ratio") == AUTO:
        del out["prune_ratio"]
        out["prune_auto"] = True
    return out


@dataclass
class Preset:
    """A model config plus the training config of T1 and of every later task."""

    name: str
    model: ModelConfig
    first: TrainConfig
    later: TrainConfig
    # Prune ratio per task position (T1, T2, ...); the last value repeats; "auto" = chosen on
    # validation (TrainConfig.prune_auto, falling back to the ``later`` config's prune_ratio).
    prune_ratios: list[float | str] = field(default_factory=lambda: [0.7])
    # Per-user tasks' config (a kind's ``per_user``: class, regression) when it differs from ``later``
    # (e.g. ~700 users need small batches).
    classes: TrainConfig | None = None
    # torch intra-op threads while this preset trains (None: torch's default). Results are bit-exact
    # for a given device and thread count, so a preset that fixes it also fixes its digests.
    threads: int | None = None
    # Past ``large_above`` T1 items the lineage takes ``large``'s edits ({"model": {...}, "first": {...}}):
    # a T1 recipe chosen on a real catalogue's validation split (docs/accuracy.md "T1 at real scale")
    # where the preset's own T1, tuned on ~1.7K items, would train for hours. None: one recipe at every size.
    large_above: int | None = None
    large: dict[str, dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        for section, edits in (self.large or {}).items():
            if section not in ("model", "first"):
                raise ConfigError(f"Preset.large edits {section!r}; it may edit 'model' and 'first' (T1) only.")
            base = getattr(self, section)
            type(base).from_dict({**base.to_dict(), **edits})  # names the field when one is unknown or invalid

    def for_items(self, num_items: int) -> "Preset":
        """The preset a lineage whose T1 has ``num_items`` items learns with (``large`` past ``large_above``)."""
        if not self.large or self.large_above is None or num_items <= self.large_above:
            return self
        data = self.to_dict()
        for section, edits in self.large.items():
            data[section] = {**data[section], **edits}
        return Preset.from_dict(data)

    def apply_threads(self) -> None:
        """Set torch's intra-op thread count to the preset's, when it names one."""
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)

    def train_config(self, index: int, overrides: dict[str, Any] | None = None, kind: str | None = None) -> TrainConfig:
        """The TrainConfig of the task at 0-based position ``index`` (of ``kind``), with manifest overrides."""
        from conure_core.kinds import kind_of  # the kinds read this module's configs: resolved at call time

        per_user = kind is not None and kind_of(kind).per_user
        base = self.first if index == 0 else (self.classes if per_user and self.classes else self.later)
        ratio = self.prune_ratios[min(index, len(self.prune_ratios) - 1)]
        chosen = dataclasses.replace(base, prune_auto=True) if ratio == AUTO else \
            dataclasses.replace(base, prune_ratio=float(ratio))
        return chosen.with_overrides(overrides)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model.to_dict(), "first": self.first.to_dict(),
                "later": self.later.to_dict(), "prune_ratios": list(self.prune_ratios),
                "classes": self.classes.to_dict() if self.classes else None, "threads": self.threads,
                "large_above": self.large_above, "large": self.large}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Preset":
        classes = data.get("classes")
        return cls(name=data["name"], model=ModelConfig.from_dict(data["model"]),
                   first=TrainConfig.from_dict(data["first"]), later=TrainConfig.from_dict(data["later"]),
                   prune_ratios=list(data["prune_ratios"]),
                   classes=TrainConfig.from_dict(classes) if classes else None,
                   threads=data.get("threads"), large_above=data.get("large_above"), large=data.get("large"))


def _quick() -> Preset:
    # Sized for the six bundled MovieLens-100K tasks in <= 2 minutes on 2 CPU cores. Tuned on the
    # validation splits (docs/performance.md): width 32 overfits T1's ~740 users less than 64; the
    # item tasks use the full softmax (1.5K items: affordable, and it optimises the full-ranking
    # metric; BPR with the popularity sampler stayed at the popularity baseline); the class tasks
    # (~740 users) take batches of 128 and a stronger head L2, keep the epoch of lowest validation
    # cross-entropy (accuracy on ~45 validation users is too coarse to select on) and train with
    # dropout 0.3 on the user vector and label smoothing 0.1 (lowest mean validation loss of 5
    # configs x 3 seeds; all within noise of the class prior, docs/performance.md).
    # The per-item parts (conure_core.wide, docs/accuracy.md) won on validation: T1 adds its
    # co-occurrence table to the TCN's logits; class tasks read the pooled state plus the bag of T1
    # items, with head L2 0.02 (0.1 had been tuned on the no-signal profile tasks).
    # T1 (issue 16, docs/accuracy.md "T1 at real scale"): model.dropout 0.2 with first.length_buckets
    # raised the TCN's own validation MRR@5 on RecBole's protocol (0.0111 -> 0.0225, seed 0) but
    # lowered the fused T1's validation on both bundled suites and era's by 2.4 SE on the signal
    # suite's test (3 seeds), so the preset keeps T1 as it was; the knobs stay for large catalogues.
    return Preset(
        name="quick",
        model=ModelConfig(width=32, dilations=[1, 4, 1, 4], t1_wide=AUTO, class_repr=AUTO),
        first=TrainConfig(lr=3e-3, batch_size=32, epochs=15, retrain_epochs=5, patience=5),
        later=TrainConfig(lr=1e-3, batch_size=512, epochs=8, retrain_epochs=3, patience=3,
                          item_loss="softmax", head_init=0.1),
        classes=TrainConfig(lr=3e-3, batch_size=128, epochs=30, retrain_epochs=5, patience=8,
                            head_l2=0.02, head_init=0.1, select="loss", user_dropout=0.3,
                            label_smoothing=0.1),
        prune_ratios=[0.7, 0.8, 0.9, 0.8, 0.9],
        # Past 16,384 T1 items (Amazon Games: 23,715) the full softmax over batches of 32 takes minutes an
        # epoch and overfits by epoch 4 (issue 16): T1 there trains wider, with dropout, weight decay,
        # a 5 % sampled softmax over length-bucketed batches of 256, and the Transformer backbone (SASRec
        # style, paper 5.6): ahead of the TCN on Games' validation NDCG@10 by 0.011 (2 of 3 seeds), and its
        # `conure learn` of Games fits the budget, 10:35 / 2.5 GiB (docs/accuracy.md, "T1 at real scale").
        large_above=16_384,
        large={"model": {"width": 64, "dropout": 0.2, "backbone": "transformer"},
               "first": {"epochs": 40, "patience": 3, "batch_size": 256, "lr": 3e-3, "sampled_fraction": 0.05,
                         "length_buckets": True, "head_init": 0.1, "weight_decay": 1e-5}},
        # The quick model's matmuls are tiny: a second OpenMP thread buys little, and on a loaded
        # 2-core machine its spin-waiting made the lineage 6x slower (167 s vs 27 s).
        threads=1,
    )


def _paper() -> Preset:
    # SPEC section 4 and the paper's six-task TTL run (prune 70, 80, 90, 80, 90 %), plus the per-item
    # parts of ``quick`` (``--set model.t1_wide=none --set model.class_repr=null``: the paper's model alone).
    return Preset(
        name="paper",
        model=ModelConfig(width=256, dilations=[1, 4] * 4, t1_wide=AUTO, class_repr=AUTO),
        first=TrainConfig(lr=1e-3, batch_size=32, epochs=30, patience=5),
        later=TrainConfig(lr=1e-4, batch_size=512, epochs=30, patience=5),
        prune_ratios=[0.7, 0.8, 0.9, 0.8, 0.9],
    )


PRESETS: dict[str, Preset] = {"quick": _quick(), "paper": _paper()}


def get_preset(name: str) -> Preset:
    """A fresh copy of a named preset."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
    return Preset.from_dict(PRESETS[name].to_dict())
