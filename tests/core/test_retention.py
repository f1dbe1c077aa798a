import torch

from conure_core.config import ModelConfig
from conure_core.lineage import Lineage
from conure_core.naive import naive_baseline
from tests.core.conftest import MODEL, assert_retained, cfg_for, outputs


def test_every_earlier_task_is_bit_identical_after_later_tasks(learned, tasks):
    lineage, after = learned
    assert_retained(lineage, after, tasks)


def test_tasks_beat_the_naive_baselines(learned, tasks):
    lineage, _ = learned
    # Synthetic structure (4 groups of items) is learnable; popularity / majority cannot use it.
    # Measured: clicks 0.077 vs 0.009, liked 0.51 vs 0.17, gender 0.89 vs 0.28.
    for task, floor in zip(tasks, (3.0, 2.0, 2.0)):
        metric = "accuracy" if task.kind == "class" else "mrr@5"
        _, base = naive_baseline(task)
        assert lineage.evaluate(task)[metric] > floor * base[metric], task.name


def test_zeroing_freed_weights_also_retains(tasks):
    lineage = Lineage.new(ModelConfig(**{**MODEL, "freed_weights": "zero"}), tasks[0].num_items)
    lineage.learn(tasks[0], cfg_for(0))
    before = outputs(lineage, tasks[0])
    freed = [p[m == 0] for p, m in ((lineage.params[n], o) for n, o in lineage.ownership.maps.items())]
    assert all(bool((f == 0).all()) for f in freed)
    lineage.learn(tasks[1], cfg_for(1))
    after = outputs(lineage, tasks[0])
    assert torch.equal(before[1], after[1]) and before[2] == after[2]


def test_unpruned_last_task_then_pruned_when_next_comes(tasks):
    lineage = Lineage.new(ModelConfig(**MODEL), tasks[0].num_items)
    lineage.learn(tasks[0], cfg_for(0))
    lineage.learn(tasks[1], cfg_for(1), prune=False)  # Conure-: reads its free weights too
    assert not lineage.info("liked").pruned
    try:
        lineage.train(tasks[2], cfg_for(2))
        raise AssertionError("training on top of an unpruned task must be refused")
    except Exception as exc:  # LineageError names the task to prune
        assert "liked" in str(exc) and "prune" in str(exc)
    lineage.prune("liked", 0.5)
    lineage.retrain(tasks[1], cfg_for(1))
    kept = outputs(lineage, tasks[1])
    lineage.learn(tasks[2], cfg_for(2))
    assert torch.equal(kept[1], outputs(lineage, tasks[1])[1])
