"""benchmarks.peer_protocol's split: RecBole's leave-one-out rows, built from the bundled data."""
from __future__ import annotations

import pytest
import torch

from benchmarks.baselines import naive
from benchmarks.peer_protocol import recbole_split
from conure_core.data.types import TEST, TRAIN, VALID


def test_split_matches_recbole_counts_and_leave_one_out():
    task = recbole_split()
    users = len(task.split) // 3
    assert (users, task.num_items) == (907, 1432)  # RecBole 1.2.1's filtered dataset
    assert task.split[:3].tolist() == [TRAIN, VALID, TEST]
    train, valid, test = task.sequences[0::3], task.sequences[1::3], task.sequences[2::3]
    # The valid row is the test row without its last item, the train row without its last two.
    assert torch.equal(valid[:, :], torch.cat([torch.zeros(users, 1, dtype=torch.long), test[:, :-1]], 1))
    assert torch.equal(train, torch.cat([torch.zeros(users, 2, dtype=torch.long), test[:, :-2]], 1))
    lengths = (test > 0).sum(1)
    assert lengths.min() == 5 and lengths.max() == 30


def test_most_popular_reproduces_recbole():
    # RecBole's most-popular on the same split: test MRR@5 0.0120.
    pop = naive(recbole_split(), "last")
    assert pop["test"] == pytest.approx(0.0120, abs=5e-5)
