"""benchmarks.floor and its baselines: hand-checkable values on tiny tasks, then one real short run."""
from __future__ import annotations

import json
import math

import pytest
import torch

from benchmarks import floor
from benchmarks.baselines import (item_cooccurrence, logistic_baseline, naive, ridge_baseline,
                                  sequence_cooccurrence)
from conure_core.data.types import TEST, TRAIN, VALID, TaskData
from conure_core.wide import bag_of_items


def _task(kind, seqs, labels, split, num_items, num_labels=None):
    vocab = [str(i) for i in range(num_labels if num_labels else num_items)]
    return TaskData(name=kind, kind=kind, sequences=torch.tensor(seqs), labels=None if labels is None else torch.tensor(labels),
                    split=torch.tensor(split, dtype=torch.int8), user_ids=[str(i) for i in range(len(seqs))],
                    vocab=vocab, num_items=num_items)


def test_bag_drops_padding_and_separator():
    bag = bag_of_items(torch.tensor([[0, 2, 2, 4], [1, 3, 4, 0]]), 3)  # V = 3: 0 pads, 4 is the separator
    assert bag.tolist() == [[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]


def test_margin_in_standard_errors():
    # diff 0.1, se = sqrt(0.1^2/3 + 0) -> 0.1 / 0.0577 = 1.732
    assert floor.margin_se([0.6, 0.7, 0.8], [0.6, 0.6, 0.6]) == pytest.approx(math.sqrt(3))
    assert floor.margin_se([0.5, 0.5], [0.5]) == 0.0
    assert floor.margin_se([0.4], [0.5]) == -floor.MAX_MARGIN


def test_majority_and_logistic_regression_on_a_separable_task():
    # Item 1 -> class 0, item 2 -> class 1; train has three class-1 users, so the majority is class 1.
    seqs = [[0, 1], [0, 2], [0, 2], [0, 2], [0, 1], [0, 2], [0, 1], [0, 1]]
    labels = [0, 1, 1, 1, 0, 1, 0, 0]
    split = [TRAIN, TRAIN, TRAIN, TRAIN, VALID, VALID, TEST, TEST]
    task = _task("class", seqs, labels, split, num_items=2, num_labels=2)
    maj = naive(task)
    assert (maj["name"], maj["valid"], maj["test"]) == ("majority", 0.5, 0.0)
    lr = logistic_baseline(task)
    assert lr["valid"] == 1.0 and lr["test"] == 1.0 and lr["params"]["C"] == 1.0  # accuracy ties: the lowest valid loss (weakest L2)


def test_item_cooccurrence_ranks_the_items_of_similar_users_first():
    # Users holding item 1 like label 2; users holding item 2 like label 0; label 1 is the most popular.
    seqs = [[1], [1], [2], [2], [3], [3], [3], [1], [2]]
    labels = [2, 2, 0, 0, 1, 1, 1, 2, 0]
    split = [TRAIN] * 7 + [VALID, TEST]
    task = _task("item", seqs, labels, split, num_items=3, num_labels=3)
    pop = naive(task)
    assert pop["valid"] == pytest.approx(1 / 3) and pop["test"] == pytest.approx(1 / 2)  # ranks: 1, then 0, 2 (tie: lower id)
    co = item_cooccurrence(task)
    assert co["valid"] == 1.0 and co["test"] == 1.0


def test_sequence_cooccurrence_follows_what_train_users_clicked_next():
    # Train users click 1 -> 2 or 3 -> 4; every item is equally popular, so popularity ranks by id.
    seqs = [[1, 2]] * 3 + [[3, 4]] * 3 + [[3, 4], [1, 2]]
    split = [TRAIN] * 6 + [VALID, TEST]
    task = _task("sequence", seqs, None, split, num_items=4)
    co = sequence_cooccurrence(task)
    assert co["valid"] == 1.0 and co["test"] == 1.0
    pop = naive(task)  # targets: valid 4 (rank 3), test 2 (rank 1)
    assert pop["valid"] == pytest.approx(1 / 4) and pop["test"] == pytest.approx(1 / 2)


def test_train_mean_and_ridge_on_a_number_carried_by_one_item():
    # 200 train users: item 1 -> 3.0, item 2 -> 1.0 (mean 2.0, RMSE of the mean 1.0); test: one of each.
    seqs = [[0, 1], [0, 2]] * 100 + [[0, 1], [0, 2], [0, 1], [0, 2]]
    labels = [3.0, 1.0] * 100 + [3.0, 1.0, 3.0, 1.0]
    split = [TRAIN] * 200 + [VALID, VALID, TEST, TEST]
    task = _task("regression", seqs, labels, split, num_items=2, num_labels=1)
    mean = naive(task)
    assert (mean["name"], mean["valid"], mean["test"]) == ("mean", 1.0, 1.0)
    ridge = ridge_baseline(task)
    # centred bag columns are +-0.5, so the slope shrinks by 100 / (100 + l2) with l2 = 1 (the grid's weakest):
    # predictions 2 +- 100/101, errors 1/101
    assert ridge["params"] == {"l2": 1.0} and ridge["test"] == pytest.approx(1 / 101) and ridge["test_mae"] == pytest.approx(1 / 101)


def test_floor_runs_on_a_signal_slice(capsys):
    args = ["--suite", "signal", "--tasks", "era,rating", "--seeds", "1", "--quiet", "--no-dnn",
            "--set", "first.epochs=1", "--set", "first.retrain_epochs=1",
            "--set", "classes.epochs=1", "--set", "classes.retrain_epochs=1"]
    assert floor.main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    f = out["figures"]
    assert out["benchmark"] == "floor" and {"min_margin_se", "tasks_below", "mean_rel_gap"} <= set(f)
    assert set(out["targets"]) == {"min_margin_se", "tasks_below", "mean_rel_gap"}
    # Train-split majority of era, scored on its test users (fixed by the data and the split hash).
    assert f["era_majority"] == pytest.approx(45 / 110)
    assert f["era_logreg"] > f["era_majority"] + 0.2  # the suite's class tasks carry signal
    assert f["rating_ridge"] < 0.9 * f["rating_mean"]  # the number carries signal: ridge beats the train mean
    assert f["rating_conure"] < f["rating_mean"]  # RMSE: lower is better, so below the floor is above it
    assert 0 <= f["tasks_below"] <= 3
