"""A growing catalogue: an item task's labels unknown to T1 get new embedding rows owned by it, and every
earlier task's answers for histories of earlier items stay bit-identical (as in test_retention)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from conure_core.checkpoint import load_state, save_state
from conure_core.config import ModelConfig
from conure_core.lineage import Lineage
from tests.core.conftest import MODEL, assert_retained, cfg_for, outputs

T1_LABELS = ["i1", "i11", "i21", "i31"]  # liked's first four labels are T1 items, the other eight are new


@pytest.fixture(scope="module")
def grown(tasks):
    t1, liked, gender = tasks
    vocab = T1_LABELS + [f"n{i}" for i in range(4, len(liked.vocab))]
    liked = dataclasses.replace(liked, name="liked-new", vocab=vocab)
    # a fourth task grows the catalogue again: four of liked-new's new items and eight more
    more = dataclasses.replace(liked, name="liked-more", vocab=vocab[4:8] + [f"m{i}" for i in range(8)])
    lineage = Lineage.new(ModelConfig(**MODEL), t1.num_items, list(t1.vocab))
    after = {}
    for i, task in enumerate((t1, liked, gender, more)):
        lineage.learn(task, cfg_for(i))
        after[task.name] = outputs(lineage, task)
    return lineage, after, (t1, liked, gender, more)


def test_new_items_get_rows_owned_by_the_task_that_introduced_them(grown):
    lineage, _, _ = grown
    assert lineage.info("liked-new").new_items == [f"n{i}" for i in range(4, 12)]
    assert lineage.info("liked-more").new_items == [f"m{i}" for i in range(8)]
    assert [lineage.model.catalogue_size(j) for j in (1, 2, 3, 4)] == [40, 48, 48, 56]
    assert lineage.params["embedding.weight"].shape[0] == 40 + 2 + 16
    assert lineage.model.catalogue_ids()[40:43] == [None, "n4", "n5"] and lineage.model.catalogue_ids()[-1] == "m7"


def test_a_new_row_is_the_mean_history_of_the_users_labelled_with_it(grown):
    lineage, _, (_, liked, _, _) = grown
    table = lineage.params["embedding.weight"].double()
    train = liked.rows("train")
    users = [liked.sequences[r] for r in train.tolist() if int(liked.labels[r]) == 4]
    means = [table[s[s > 0]].mean(0) for s in users]  # tokens are T1 items here
    expected = torch.stack(means).mean(0).float()
    assert torch.allclose(lineage.params["embedding.weight"][42], expected, atol=1e-6)


def test_every_earlier_task_is_bit_identical_after_new_items(grown):
    lineage, after, tasks = grown
    assert_retained(lineage, after, tasks)


def test_later_tasks_read_histories_with_new_items_and_a_saved_state_keeps_them(grown, tmp_path):
    lineage, _, (t1, _, _, _) = grown
    seq = t1.sequences[t1.rows("test")][:4].clone()
    with_new = seq.clone()
    with_new[:, -1] = 42  # the first new item's token
    for task in ("liked-new", "gender"):
        assert not torch.equal(lineage.predict(task, seq, 5)[1], lineage.predict(task, with_new, 5)[1]), task
    save_state(lineage, tmp_path / "state.safetensors")
    loaded = load_state(tmp_path / "state.safetensors")
    assert loaded.model.catalogue_ids() == lineage.model.catalogue_ids()
    for task in ("clicks", "liked-new", "gender", "liked-more"):
        probe = seq if task == "clicks" else with_new
        assert all(torch.equal(a, b) for a, b in zip(loaded.predict(task, probe, 5), lineage.predict(task, probe, 5)))
