"""``regression``: a number per user (spend, watch time, a mean rating); RMSE and MAE, lower is better."""
from __future__ import annotations

import math

from conure_core.deferred import Deferred
from conure_core.kinds.base import UserKind, UserLoss

# torch and the modules that compute load on first use: a kind's facts need neither (conure_core/deferred.py)
torch = Deferred("torch")
heads = Deferred("conure_core.heads")
losses = Deferred("conure_core.losses")
metric_ops = Deferred("conure_core.metrics")

class RegressionKind(UserKind):
    name = "regression"
    display = "regression (a number)"
    metric = "rmse"
    metrics = ("rmse", "mae")
    higher_is_better = False
    labels = "numbers"
    one_row_per_user = True
    per_user = True
    columns = "user_id, label (label = a number)"

    def representation(self, config, num_items):
        return config.repr_of("class", num_items)  # a per-user task, as a class: the class tasks' choice

    def prior(self, task):
        """The train split's mean, where the head's one output starts."""
        return task.labels[task.rows("train")].double().mean().reshape(1)

    def build_head(self, width, num_labels, generator=None, prior=None, init_scale=1.0, normalize=False,
                   bag=0, wide_items=0):
        return heads.LinearHead(width, num_labels, generator, None if prior is None else prior.float(), init_scale,
                          normalize, bag)

    def loss(self, model, task, info, cfg, generator):
        return NumberLoss(model, task, info, cfg, generator)

    def evaluate(self, model, task, split, info, weights, batch_size):
        acc = metric_ops.MetricAccumulator()
        head = model.heads[info.name]
        for g, y in self.user_rows(model, task, split, weights, batch_size):
            acc.add_errors(head.scores(g)[:, 0], y)
        return errors(acc)

    def predict(self, model, info, sequences, weights, k):
        """One number per user (position 0 of a one-label vocabulary)."""
        value = model.heads[info.name].scores(model.user_vectors(sequences, weights, self.name))
        return torch.zeros_like(value, dtype=torch.long), value

    def answer_width(self, k, vocab):
        return 1

    def answers(self, positions, scores, vocab):
        return [{"value": round(float(vals[0]), 6)} for vals in scores]

    def floor(self, task, split="test", t1_targets="all"):
        """The train mean for every user."""
        y = task.labels[task.rows(split)]
        acc = metric_ops.MetricAccumulator()
        acc.add_errors(self.prior(task).expand(y.numel()), y)
        return "mean", errors(acc)

    def check_task(self, task):
        labels = task.labels
        if labels is None or not labels.is_floating_point() or labels.numel() != task.sequences.shape[0]:
            raise ValueError(f"task {task.name!r} is a regression task: it needs one number (a float label) per row.")
        if not bool(torch.isfinite(labels).all()):
            raise ValueError(f"task {task.name!r} has labels that are not finite numbers; fix or drop those rows.")


class NumberLoss(UserLoss):
    """``cfg.number_loss`` (MSE or Huber) of the head's output, dropout on the user vector (``cfg.user_dropout``)."""

    def objective(self, g, y, idx):
        return losses.number_loss(g, self.head, y, self.cfg.number_loss, self.cfg.huber_delta, self.cfg.user_dropout,
                           self.generator)


def errors(acc: metric_ops.MetricAccumulator) -> dict[str, float]:
    """rmse, mae, count, and loss (the mean squared error, what ``select="loss"`` keeps the lowest of)."""
    means = acc.means()
    if not acc.count:
        return {"rmse": float("nan"), "mae": float("nan"), "loss": float("nan")}
    return {"rmse": math.sqrt(means["mse"]), "mae": means["mae"], "loss": means["mse"], "count": means["count"]}
