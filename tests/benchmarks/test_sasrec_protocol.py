"""benchmarks.sasrec_protocol's split, negatives and metrics, on a tiny file in the Games format."""
from __future__ import annotations

import math

import pytest
import torch

from benchmarks.sasrec_protocol import NEGATIVES, load_protocol, main, popular_row, ranking, transition_matrix
from conure_core.data.types import TEST, TRAIN, VALID

# user 1: 5 items, user 2: 4 items, user 3: 2 items (train only); items 1..12
LINES = ["1 3", "1 5", "1 7", "1 9", "1 11", "2 2", "2 4", "3 6", "2 8", "2 10", "3 12"]


@pytest.fixture()
def tiny(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text("\n".join(LINES) + "\n")
    return path


def test_split_rows_and_negatives(tiny):
    data = load_protocol(tiny, max_len=3)
    task = data.task
    # per user with >= 3 items: train (items up to the third-last), valid, test; user 3: train only
    assert task.split.tolist() == [TRAIN, VALID, TEST, TRAIN, VALID, TEST, TRAIN]
    assert task.sequences.tolist() == [[0, 3, 5, 7], [3, 5, 7, 9], [5, 7, 9, 11],
                                       [0, 0, 2, 4], [0, 2, 4, 8], [2, 4, 8, 10], [0, 0, 6, 12]]
    assert data.rows["test"].tolist() == [[5, 7, 9, 11], [2, 4, 8, 10]]
    for split, targets in (("valid", [9, 8]), ("test", [11, 10])):
        cand = data.candidates[split]
        assert cand.shape == (2, NEGATIVES + 1) and cand[:, -1].tolist() == targets
        # negatives are uniform over items the user has not interacted with in train
        assert not torch.isin(cand[0, :-1], torch.tensor([3, 5, 7])).any()
        assert not torch.isin(cand[1, :-1], torch.tensor([2, 4])).any()
        assert cand[:, :-1].min() >= 1 and cand[:, :-1].max() <= 12
    again = load_protocol(tiny, max_len=3)
    assert torch.equal(again.candidates["test"], data.candidates["test"])  # one fixed seed


def test_ranking_hand_computed():
    # user a: target beats all but 2 negatives -> rank 2: hit, ndcg 1/log2(4) = 0.5
    # user b: a tie with one negative ranks the target after it -> rank 1: ndcg 1/log2(3)
    # user c: 10 negatives above -> rank 10: no hit
    a = torch.tensor([[3.0, 2.75, 1.0] + [0.0] * 97 + [2.5]])
    b = torch.tensor([[1.0] + [0.0] * 99 + [1.0]])
    c = torch.tensor([[5.0] * 10 + [0.0] * 90 + [1.0]])
    m = ranking(torch.cat([a, b, c]))
    assert m["hr@10"] == pytest.approx(2 / 3)
    assert m["ndcg@10"] == pytest.approx((0.5 + 1 / math.log2(3)) / 3)


def test_popularity_and_transitions(tiny):
    data = load_protocol(tiny, max_len=3)
    pop = popular_row(data)
    assert set(pop) == {"valid", "test"}
    table = transition_matrix(data.task.sequences[data.task.rows("train")], 12, shrink=1.0).to_dense()
    # train rows: [3, 5, 7], [2, 4], [6, 12]: j after i over (holders of i + 1); indexed [j, i]
    assert table[7, 3] == pytest.approx(0.5) and table[5, 3] == pytest.approx(0.5)
    assert table[3, 7] == 0.0 and table[4, 2] == pytest.approx(0.5) and table[12, 6] == pytest.approx(0.5)


def test_missing_file_skips(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "absent.txt")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("skipped: no data file at") and '"skipped": 1' in out.splitlines()[-1]


def test_bad_line_is_one_sentence(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2\n1 x\n")
    assert main(["--data", str(bad), "--rows", "popular"]) == 2
    assert "every line must be 'user_id item_id'" in capsys.readouterr().err
