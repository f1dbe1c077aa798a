"""T1's recipe knobs (issue 16): dropout while T1 trains only, length buckets, sampled softmax past a size."""
import dataclasses

import pytest
import torch

from benchmarks.overrides import apply_sets
from conure_core.config import ConfigError, ModelConfig, Preset, get_preset
from conure_core.continual import run_lineage
from tasks.adapters import train_config
from conure_core.lineage import Lineage
from conure_core.kinds.sequence import bucketed_order, trim_padding
from tests.core.conftest import FIRST, MODEL, cfg_for, learn_all, outputs


def test_dropout_lineage_retains_exactly_and_replays(tasks):
    # Dropout in T1's stages: every earlier task still answers bit-identically after later tasks,
    # inference is deterministic (eval mode), and a second run replays the same masks.
    config = ModelConfig(**{**MODEL, "dropout": 0.3})
    lineage, after = learn_all(config, tasks)
    assert not lineage.backbone.training
    for task in tasks:
        idx, scores, metrics = outputs(lineage, task)
        assert torch.equal(idx, after[task.name][0]) and torch.equal(scores, after[task.name][1]), task.name
        assert metrics == after[task.name][2], task.name
    again = Lineage.new(config, tasks[0].num_items)
    again.learn(tasks[0], cfg_for(0))
    assert torch.equal(outputs(again, tasks[0])[1], after[tasks[0].name][1])


def test_dropout_changes_t1_training_only(tasks):
    plain = Lineage.new(ModelConfig(**MODEL), tasks[0].num_items)
    dropped = Lineage.new(ModelConfig(**{**MODEL, "dropout": 0.3}), tasks[0].num_items)
    for lineage in (plain, dropped):
        lineage.train(tasks[0], cfg_for(0))
    assert not torch.equal(plain.params["embedding.weight"], dropped.params["embedding.weight"])


def test_length_buckets_and_trimming():
    lengths = torch.tensor([1, 5, 2, 5, 1, 2, 3, 3])
    order = bucketed_order(lengths, 2, torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == list(range(8))
    pairs = lengths[order].view(-1, 2)
    assert bool((pairs[:, 0] == pairs[:, 1]).all())  # each batch of 2 holds one length
    rows = torch.tensor([[0, 0, 0, 4, 5], [0, 0, 3, 2, 1]])
    assert trim_padding(rows).tolist() == [[0, 4, 5], [3, 2, 1]]
    assert trim_padding(torch.tensor([[0, 0, 0, 0, 7]])).tolist() == [[0, 7]]  # two columns kept


def test_buckets_and_sampled_above_train(tasks):
    # length buckets train T1 to a finite loss; sampled_above >= V keeps the full softmax (same as 1.0)
    cfg = dataclasses.replace(FIRST, epochs=1, retrain_epochs=1, length_buckets=True)
    full = Lineage.new(ModelConfig(**MODEL), tasks[0].num_items)
    above = Lineage.new(ModelConfig(**MODEL), tasks[0].num_items)
    full.train(tasks[0], cfg)
    above.train(tasks[0], dataclasses.replace(cfg, sampled_fraction=0.1, sampled_above=tasks[0].num_items))
    assert torch.equal(full.params["embedding.weight"], above.params["embedding.weight"])


def test_quick_takes_its_large_recipe_past_the_threshold_only():
    quick = get_preset("quick")
    assert quick.for_items(quick.large_above) is quick  # at or below it: the preset as tuned on the bundled data
    large = quick.for_items(quick.large_above + 1)
    assert (large.model.width, large.model.dropout, large.model.backbone) == (64, 0.2, "transformer")
    assert (quick.model.width, quick.model.backbone) == (32, "tcn")
    assert (large.first.batch_size, large.first.sampled_fraction, large.first.length_buckets) == (256, 0.05, True)
    assert large.later == quick.later and large.classes == quick.classes  # T1's recipe only
    assert large.for_items(10 ** 6).to_dict() == large.to_dict()  # applying it twice changes nothing
    # a benchmark's explicit edit wins at every size
    edited = apply_sets(quick, ["first.batch_size=64", "model.width=48"]).for_items(10 ** 6)
    assert (edited.first.batch_size, edited.model.width, edited.first.lr) == (64, 48, 3e-3)


def test_a_bad_large_recipe_is_refused_in_one_sentence():
    data = get_preset("quick").to_dict()
    with pytest.raises(ConfigError, match=r"has no field\(s\) \['widht'\]"):
        Preset.from_dict({**data, "large": {"model": {"widht": 64}}})
    with pytest.raises(ConfigError, match="may edit 'model' and 'first' \\(T1\\) only"):
        Preset.from_dict({**data, "large": {"later": {"lr": 1.0}}})


def test_a_lineage_past_the_threshold_learns_with_the_large_recipe(tasks):
    base = Preset(name="t", model=ModelConfig(**MODEL), first=FIRST, later=cfg_for(1),
                  large_above=tasks[0].num_items - 1, large={"model": {"width": 24}, "first": {"epochs": 1}})
    lineage, report = run_lineage(tasks[:1], base)
    assert lineage.model.config.width == 24 and report.stages[0]["epochs_run"] == 1
    # the pipeline resolves it from the prepared task's T1 vocabulary
    assert train_config(base.to_dict(), 0, {"num_items": tasks[0].num_items}).epochs == 1
    assert train_config(base.to_dict(), 0, {"num_items": tasks[0].num_items - 1}).epochs == FIRST.epochs
