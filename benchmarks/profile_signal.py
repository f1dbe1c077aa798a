"""How much profile signal (gender, age, occupation) a user's items carry, by input view.

Cross-validated L2 logistic regression on the bag of a user's items, over the train + valid users of
each bundled class task (test users untouched), reported as accuracy minus the majority class. It
backs the class-task finding in docs/performance.md (`## quick_lineage`):

    python -m benchmarks.profile_signal [--folds 5] [--repeats 2]
"""
from __future__ import annotations

import argparse
import tempfile

import numpy as np
import pandas as pd
import torch

from benchmarks.common import emit
from conure_core.data.movielens import bundled_tables
from conure_core.run import bundled_tasks

INVERSE_L2 = (0.03, 0.1)  # as scikit-learn's C: objective = sum of losses + ||W||^2 / (2 C)


def bag_from_tokens(sequences: torch.Tensor, width: int) -> torch.Tensor:
    """0/1 bag [N, width] of the (non-padding) tokens of each row."""
    bag = torch.zeros(sequences.shape[0], width)
    bag.scatter_(1, sequences, 1.0)
    bag[:, 0] = 0.0
    return bag


def bag_from_ratings(ratings: pd.DataFrame, users: list[str]) -> torch.Tensor:
    """0/1 bag of the items each user rated in ``ratings`` (users in the given order)."""
    items = {item: i for i, item in enumerate(sorted(ratings.item_id.unique()))}
    row = {u: i for i, u in enumerate(users)}
    known = ratings[ratings.user_id.isin(row)]
    bag = torch.zeros(len(users), len(items))
    rows = torch.tensor(known.user_id.map(row).to_numpy(dtype=np.int64))
    cols = torch.tensor(known.item_id.map(items).to_numpy(dtype=np.int64))
    bag[rows, cols] = 1.0
    return bag


def fit_predict(x_train, y_train, x_test, classes: int, inverse_l2: float) -> torch.Tensor:
    """Multinomial logistic regression (with intercept) fitted by L-BFGS; predicted classes of x_test."""
    w = torch.zeros(x_train.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x_train @ w + b, y_train, reduction="sum")
        loss = loss + (w * w).sum() / (2 * inverse_l2)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return (x_test @ w + b).argmax(1)


def cv_gain(x: torch.Tensor, y: torch.Tensor, inverse_l2: float, folds: int, repeats: int) -> float:
    """Mean cross-validated accuracy minus the majority-class accuracy."""
    classes = int(y.max()) + 1
    majority = float((y == torch.bincount(y).argmax()).float().mean())
    accs = []
    for seed in range(repeats):
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
        pred = torch.empty_like(y)
        for fold in order.chunk(folds):
            train = torch.ones(len(y), dtype=torch.bool)
            train[fold] = False
            pred[fold] = fit_predict(x[train], y[train], x[fold], classes, inverse_l2)
        accs.append(float((pred == y).float().mean()))
    return float(np.mean(accs)) - majority


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="conure-signal-") as tmp:
        tasks, _ = bundled_tasks(tmp)
    ratings = bundled_tables()[0].to_pandas()
    ratings["user_id"] = ratings.user_id.astype(str)
    by_time = ratings.sort_values("timestamp", kind="stable")
    views = {"t1_bundled": None, "all_le3": ratings[ratings.rating <= 3],
             "last30_any": by_time.groupby("user_id").tail(30), "all_any": ratings}
    figures = {}
    print(f"{args.folds}-fold CV x {args.repeats}, logistic regression (C in {INVERSE_L2}) on the bag of a "
          "user's items; accuracy minus the majority class, train + valid users only")
    for task in (t for t in tasks if t.kind == "class"):
        rows = torch.nonzero(task.split < 2).flatten()
        y = task.labels[rows]
        users = [task.user_ids[i] for i in rows.tolist()]
        line = []
        for view, table in views.items():
            x = (bag_from_tokens(task.sequences[rows], task.num_items + 2) if table is None
                 else bag_from_ratings(table, users))
            for c in INVERSE_L2:
                gain = cv_gain(x, y, c, args.folds, args.repeats)
                figures[f"{task.name}_{view}_C{c}"] = round(gain, 4)
                line.append(f"{view} C={c}: {gain:+.3f}")
        print(f"{task.name:<11} n={len(y)}  " + "  ".join(line), flush=True)
    emit("profile_signal", figures)


if __name__ == "__main__":
    main()
