"""``class``: a user's class (age group, gender, ...); accuracy, softmax cross-entropy."""
from __future__ import annotations

from conure_core.deferred import Deferred
from conure_core.kinds.base import UserKind, UserLoss

# torch and the modules that compute load on first use: a kind's facts need neither (conure_core/deferred.py)
torch = Deferred("torch")
losses = Deferred("conure_core.losses")
metric_ops = Deferred("conure_core.metrics")

class ClassKind(UserKind):
    name = "class"
    display = "class"
    metric = "accuracy"
    metrics = ("accuracy",)
    one_row_per_user = True
    label_bounds = (2, 1_000)
    per_user = True

    def loss(self, model, task, info, cfg, generator):
        return ClassLoss(model, task, info, cfg, generator)

    def score_batch(self, acc, head, g, y):
        scores = head.scores(g)
        acc.add_loss(scores, y)
        acc.add_classes(scores.argmax(dim=1), y)

    def predict(self, model, info, sequences, weights, k):
        """Every class with its softmax probability, most likely first."""
        probs = torch.softmax(model.heads[info.name].scores(model.user_vectors(sequences, weights, self.name)), dim=1)
        top = torch.topk(probs, min(k, probs.shape[1]), dim=1)
        return top.indices, top.values

    def answer_width(self, k, vocab):
        return len(vocab)

    def answers(self, positions, scores, vocab):
        return [{"label": str(vocab[row[0]]),
                 "probabilities": {str(vocab[i]): round(float(s), 6) for i, s in zip(row, vals)}}
                for row, vals in zip(positions, scores)]

    def floor(self, task, split="test", t1_targets="all"):
        targets = task.labels[task.rows(split)]
        acc = metric_ops.MetricAccumulator()
        acc.add_classes(torch.full_like(targets, int(self.prior(task).double().argmax())), targets)
        return "majority", acc.means()


class ClassLoss(UserLoss):
    """Class cross-entropy with label smoothing and dropout on the user vector (``cfg``)."""

    def objective(self, g, y, idx):
        return losses.class_loss(g, self.head, y, self.cfg.label_smoothing, self.cfg.user_dropout, self.generator)
