import math

import pytest
import torch

from conure_core.metrics import MetricAccumulator, ranking_sums, target_ranks
from conure_core.samplers import PopularitySampler


def test_popularity_table_is_indexed_by_item_id():
    # item 3 most frequent, then 0, then 4; items 1 and 2 never seen (tie -> lower id first).
    labels = torch.tensor([3, 3, 3, 0, 0, 4])
    s = PopularitySampler(labels, num_labels=5)
    assert s.rank.tolist() == [1, 3, 4, 0, 2]
    w = torch.exp(-(torch.tensor([1, 3, 4, 0, 2], dtype=torch.float64) + 1) / (0.3 * 5))
    assert torch.allclose(s.probs, w / w.sum())
    assert int(s.probs.argmax()) == 3
    draws = s.sample(20000, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=5).double() / 20000
    assert torch.allclose(freq, s.probs, atol=0.01)


def test_popularity_uses_only_given_split_labels():
    s = PopularitySampler(torch.tensor([1, 1, 2]), num_labels=3)
    assert s.rank.tolist() == [2, 0, 1]


def test_ranks_and_metrics_by_hand():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3],   # target 2 -> one ahead -> rank 1
                           [0.2, 0.2, 0.2, 0.2],   # ties: target 3 has 3 lower-index ties -> rank 3
                           [5.0, 1.0, 2.0, 3.0]])  # target 0 -> rank 0
    ranks = target_ranks(scores, torch.tensor([2, 3, 0]))
    assert ranks.tolist() == [1, 3, 0]
    sums = ranking_sums(ranks, k=2)
    assert sums["mrr@2"] == pytest.approx(0.5 + 0 + 1)
    assert sums["hr@2"] == 2
    assert sums["ndcg@2"] == pytest.approx(1 / math.log2(3) + 1)
    acc = MetricAccumulator()
    acc.add_ranks(ranks, k=5)
    m = acc.means()
    assert m["mrr@5"] == pytest.approx((1 / 2 + 1 / 4 + 1) / 3)
    assert m["hr@5"] == 1.0
    assert m["ndcg@5"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5) + 1) / 3)
    assert m["count"] == 3


def test_accuracy():
    acc = MetricAccumulator()
    acc.add_classes(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]))
    assert acc.means()["accuracy"] == 0.75
