"""Simple baselines over the bag of a user's T1 items, fitted on a task's train split.

- class tasks: the majority class, and an L2 logistic regression on the 0/1 bag of the user's T1
  items (L2 chosen on the validation split);
- item tasks: most-popular, and item co-occurrence (item-kNN): a label item's score is the sum over
  the user's T1 items of how often train users holding that item had that label, shrunk by
  ``shrink`` (chosen on validation);
- T1: most-popular, and the same co-occurrence over ordered pairs (an item's score given a prefix
  sums how often train users had it after each prefix item, older prefix items discounted by
  ``decay``; chosen on validation).

Each ``fit_*`` returns ``{"name", "params", "valid", "test"}`` (test metric of the chosen setting).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from conure_core.data.types import TaskData
from conure_core.metrics import METRIC_OF_KIND, MetricAccumulator, target_ranks
from conure_core.naive import naive_baseline
from conure_core.wide import bag_of_items, fit_transitions, table_mrr

INVERSE_L2 = (0.01, 0.03, 0.1, 0.3, 1.0)  # as scikit-learn's C: loss sum + ||W||^2 / (2 C)
SHRINK = (1.0, 10.0, 100.0)
POP_POWER = (0.0, 0.5)  # label-side normalisation of the co-occurrence (0: none; 0.5: cosine-like)


def fit_logistic(x: torch.Tensor, y: torch.Tensor, classes: int, inverse_l2: float):
    """Multinomial logistic regression with intercept (L-BFGS, from zeros: deterministic); (W, b)."""
    w = torch.zeros(x.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y, reduction="sum") + (w * w).sum() / (2 * inverse_l2)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def fit_predict(x_train, y_train, x_test, classes: int, inverse_l2: float) -> torch.Tensor:
    """Predicted classes of ``x_test`` by a logistic regression fitted on (x_train, y_train)."""
    w, b = fit_logistic(x_train, y_train, classes, inverse_l2)
    return (x_test @ w + b).argmax(1)


def _class_metrics(logits: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    acc = MetricAccumulator()
    acc.add_loss(logits, y)
    acc.add_classes(logits.argmax(1), y)
    return acc.means()


def logistic_baseline(task: TaskData, grid=INVERSE_L2, features: torch.Tensor | None = None) -> dict:
    """L2 logistic regression on the bag of T1 items (or ``features`` [N, D] per row); C chosen by
    validation accuracy (ties: lower validation loss)."""
    x = bag_of_items(task.sequences, task.num_items) if features is None else features
    y = task.labels
    tr, va, te = (task.rows(s) for s in ("train", "valid", "test"))
    best = None
    for c in grid:
        w, b = fit_logistic(x[tr], y[tr], task.num_labels, c)
        m = _class_metrics(x[va] @ w + b, y[va])
        key = (m["accuracy"], -m["loss"])
        if best is None or key > best[0]:
            best = (key, c, m, (w, b))
    _, c, valid, (w, b) = best
    test = _class_metrics(x[te] @ w + b, y[te])
    return {"name": "logreg", "params": {"C": c}, "valid": valid["accuracy"], "test": test["accuracy"],
            "valid_loss": valid["loss"], "test_loss": test["loss"]}


def _rank_metrics(scores: torch.Tensor, targets: torch.Tensor) -> float:
    acc = MetricAccumulator()
    acc.add_ranks(target_ranks(scores, targets))
    return acc.means()["mrr@5"]


def item_cooccurrence(task: TaskData, shrinks=SHRINK, powers=POP_POWER) -> dict:
    """Item-kNN for an item task: score(j | user) = sum_i bag_i * C[i, j] / ((n_i + shrink) * m_j^power)."""
    uniq, inverse = torch.unique(task.sequences, dim=0, return_inverse=True)
    bag = bag_of_items(uniq, task.num_items)
    tr = task.rows("train")
    per_user = torch.zeros(uniq.shape[0], task.num_labels)
    per_user.index_put_((inverse[tr], task.labels[tr]), torch.ones(tr.numel()), accumulate=True)
    train_users = torch.unique(inverse[tr])
    counts = bag[train_users].t() @ per_user[train_users]  # [V, K]
    holders = bag[train_users].sum(0)  # n_i
    label_freq = per_user.sum(0).clamp(min=1.0)  # m_j
    best = None
    for shrink in shrinks:
        for power in powers:
            sim = counts / (holders.unsqueeze(1) + shrink) / label_freq.pow(power)
            valid = _rows_mrr(task, "valid", bag @ sim, inverse)
            if best is None or valid > best[0]:
                best = (valid, {"shrink": shrink, "pop_power": power}, sim)
    valid, params, sim = best
    return {"name": "cooccur", "params": params, "valid": valid, "test": _rows_mrr(task, "test", bag @ sim, inverse)}


def _rows_mrr(task: TaskData, split: str, user_scores: torch.Tensor, inverse: torch.Tensor) -> float:
    rows = task.rows(split)
    acc = MetricAccumulator()
    for start in range(0, rows.numel(), 4096):
        r = rows[start:start + 4096]
        acc.add_ranks(target_ranks(user_scores[inverse[r]], task.labels[r]))
    return acc.means()["mrr@5"]


def sequence_cooccurrence(task: TaskData, t1_targets: str = "all") -> dict:
    """Item-kNN for T1: C[i, j] = train users with i before j; a prefix scores sum_t decay^(age) C[x_t] / (n_i + shrink).

    The same table (and choice of shrink, decay and k on validation) as T1's wide part
    (``conure_core.wide``, ``ModelConfig.t1_wide="cooccur"``), scored alone.
    """
    fit = fit_transitions(task.sequences[task.rows("train")], task.sequences[task.rows("valid")], task.num_items,
                          t1_targets)
    test = table_mrr(fit["table"], task.sequences[task.rows("test")], fit["decay"], t1_targets)
    params = {k: v for k, v in fit.items() if k not in ("table", "valid")}  # k, shrink, decay, valid_k<k> per k
    return {"name": "cooccur", "params": params, "valid": fit["valid"], "test": test}


def naive(task: TaskData, t1_targets: str = "all") -> dict:
    """Most-popular (T1, item tasks) or majority class, on valid and test (train counts only)."""
    metric = METRIC_OF_KIND[task.kind]
    name, test = naive_baseline(task, "test", t1_targets)
    _, valid = naive_baseline(task, "valid", t1_targets)
    return {"name": name, "params": {}, "valid": valid[metric], "test": test[metric]}


def bag_baseline(task: TaskData, t1_targets: str = "all") -> dict:
    """The task's bag-of-T1-items baseline: logistic regression (class) or co-occurrence (item, T1)."""
    if task.kind == "class":
        return logistic_baseline(task)
    if task.kind == "item":
        return item_cooccurrence(task)
    return sequence_cooccurrence(task, t1_targets)
