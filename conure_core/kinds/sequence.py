"""``sequence``: T1, the users' interaction sequences; the next item at every position (NextItNet)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from conure_core.deferred import Deferred, no_grad
from conure_core.kinds.base import RanksItems, TaskKind, popularity_floor, rank_into, top_k

# torch and the modules that compute load on first use: a kind's facts need neither (conure_core/deferred.py)
torch = Deferred("torch")
heads = Deferred("conure_core.heads")
losses = Deferred("conure_core.losses")
metric_ops = Deferred("conure_core.metrics")
wide = Deferred("conure_core.wide")

if TYPE_CHECKING:
    from conure_core.data.types import TaskData


class SequenceKind(RanksItems, TaskKind):
    name = "sequence"
    display = "sequence (T1)"
    t1 = True
    labels = "none"
    columns = "user_id, item_id, timestamp (one row per interaction) or user_id, items (a list, oldest first)"

    def representation(self, config, num_items):
        return "last"  # T1 reads the hidden state of every position (the next item of each prefix)

    def head_shape(self, config, num_items):
        return {"bag": 0, "wide_items": num_items if config.t1_table(num_items) else 0}

    def prior(self, task: TaskData) -> torch.Tensor:
        """Train-split counts of every T1 item."""
        tokens = task.sequences[task.rows("train")].flatten()
        return torch.bincount(tokens[tokens > 0] - 1, minlength=task.num_items)[: task.num_items]

    def build_head(self, width, num_labels, generator=None, prior=None, init_scale=1.0, normalize=False,
                   bag=0, wide_items=0):
        bias = None if prior is None else torch.log(prior.double() + 1.0).float()
        # T1's logits read the raw hidden state (no LayerNorm: the backbone's own scale is the one it trains)
        return heads.NextItemHead(width, num_labels, generator, bias, init_scale, False, bag, wide_items)

    def head_l2(self, cfg):
        return cfg.weight_decay  # T1's own recipe (0 in the paper)

    def loss(self, model, task, info, cfg, generator):
        return NextItemLoss(model, task, info, cfg, generator)

    @no_grad
    def evaluate(self, model, task, split, info, weights, batch_size):
        """Next items of held-out users, each given everything before it (see ModelConfig.t1_targets)."""
        head = model.heads[info.name]
        acc = metric_ops.MetricAccumulator()
        for h, y, table in self._targets(model, head, task, split, weights, batch_size, head.fused):
            rank_into(acc, head, h, y, None if table is None else head.wide_scale * table)
        return acc.means()

    @no_grad
    def evaluate_scales(self, model, task, split, info, weights, batch_size, scales):
        """``evaluate``'s metrics for each fusion scale of T1's table, from one pass over the split:
        the TCN's logits and the table's scores are made once per batch, each scale only adds and ranks
        (the same floats as ``evaluate`` with ``wide_scale`` = that scale)."""
        head = model.heads[info.name]
        accs = {s: metric_ops.MetricAccumulator() for s in scales}
        for h, y, table in self._targets(model, head, task, split, weights, batch_size, True):
            logits = head.scores(h)
            for s, acc in accs.items():
                scores = logits if s == 0.0 else logits + torch.tensor(s, dtype=table.dtype) * table
                acc.add_loss(scores, y)
                acc.add_ranks(metric_ops.target_ranks(scores, y))
        return {s: acc.means() for s, acc in accs.items()}

    @staticmethod
    def _targets(model, head, task, split, weights, batch_size, table: bool):
        """(hidden states, target columns, the table's unscaled scores or None) of a split's targets, in batches."""
        seqs = task.sequences[task.rows(split)]
        sparse = False
        sizes = batch_size
        if head.wide:  # the table's scores: [rows, L, V] dense, or [targets, V] from sparse prefix entries
            # one choice per split, so a split is scored with the same floats every time
            sparse = wide.table_path(seqs, head.wide_table, model.config.t1_targets, ranks=False) == "targets"
            chunk = metric_ops.FULL_SCORES // 4
            sizes = wide.target_chunks(seqs, head.wide_table, model.config.t1_targets, chunk) if sparse else \
                max(1, min(batch_size, metric_ops.FULL_SCORES // (seqs.shape[1] * model.num_items * 4)))
        decay = float(head.wide_decay) if head.wide else 1.0
        for rows in seqs.split(sizes):
            batch = rows.to(model.device).long()
            hidden = model.encode(batch[:, :-1], weights)
            keep = metric_ops.t1_target_mask(batch, model.config.t1_targets)
            scores = None
            if table:
                scores = wide.decayed_at(head.wide_table, batch[:, :-1], keep, decay) if sparse else \
                    wide.decayed_scores(head.wide_table, batch[:, :-1], decay)[keep]
            yield hidden[keep], batch[:, 1:][keep] - 1, scores

    def predict(self, model, info, sequences, weights, k):
        """The next item after each sequence (position i = token i + 1)."""
        head = model.heads[info.name]
        return top_k(head, model.encode(sequences, weights)[:, -1], k, head.wide_scores(sequences, last=True))

    def answer_vocab(self, info, item_vocab):
        return item_vocab or info.vocab

    def floor(self, task, split="test", t1_targets="all"):
        seqs = task.sequences[task.rows(split)]
        targets = seqs[:, 1:][metric_ops.t1_target_mask(seqs, t1_targets)] - 1
        return "popularity", popularity_floor(self.prior(task), targets)

    def check_task(self, task):
        if task.labels is not None:
            raise ValueError(f"task {task.name!r} is a sequence task: its targets are its next items, not labels.")


class NextItemLoss:
    """Mean next-item loss of a batch of T1 train users over every non-padding position."""

    def __init__(self, model, task: TaskData, info, cfg, generator: torch.Generator) -> None:
        self.model, self.info, self.cfg, self.generator = model, info, cfg, generator
        self.head = model.heads[info.name]
        train_rows = task.rows("train")
        self.num_rows = int(train_rows.numel())
        self.sequences = task.sequences[train_rows]

    def order(self, generator: torch.Generator) -> torch.Tensor:
        """Row order of one epoch: batches of similar length with ``length_buckets``, else shuffled."""
        if self.cfg.length_buckets:
            return bucketed_order((self.sequences > 0).sum(1), self.cfg.batch_size, generator)
        return torch.randperm(self.num_rows, generator=generator)

    def count(self, idx: torch.Tensor) -> int:
        """Non-padding targets of the batch (the terms its mean is over)."""
        return int((self.sequences[idx][:, 1:] > 0).sum())

    def __call__(self, idx: torch.Tensor, weights=None) -> torch.Tensor:
        seqs = self.sequences[idx]
        seqs = (trim_padding(seqs) if self.cfg.length_buckets else seqs).to(self.model.device).long()
        hidden = self.model.encode(seqs[:, :-1], weights)
        fraction = self.cfg.sampled_fraction if self.model.num_items > self.cfg.sampled_above else 1.0
        return losses.next_item_loss(hidden, seqs[:, 1:], self.head, fraction, self.generator)


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
