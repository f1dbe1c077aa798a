import pytest
import torch

from conure_core.config import ModelConfig, TrainConfig
from conure_core.lineage import Lineage
from conure_core.ownership import CapacityError, Ownership
from tests.core.conftest import MODEL, cfg_for


def test_owner_maps_disjoint_and_match_free_capacity(learned):
    lineage, _ = learned
    maps = lineage.owner_maps()
    total = sum(m.numel() for m in maps.values())
    per_task = [sum(int((m == t).sum()) for m in maps.values()) for t in range(1, 4)]
    free = sum(int((m == 0).sum()) for m in maps.values())
    assert all(m.dtype == torch.uint8 for m in maps.values())
    # One owner per weight: the per-task masks partition the weights together with the free pool.
    masks = [torch.cat([(m == t).flatten() for m in maps.values()]) for t in range(1, 4)]
    assert int(torch.stack(masks).sum(0).max()) == 1
    assert sum(per_task) + free == total
    assert lineage.free_capacity()["total"] == pytest.approx(free / total)
    # ratio 0.5 each time on a fresh pool: 1/2, 1/4, 1/8 of the weights remain free.
    assert free / total == pytest.approx(0.125, abs=1e-3)
    for name, m in maps.items():
        assert lineage.free_capacity()[name] == pytest.approx(float((m == 0).float().mean()))


def test_prune_keeps_exact_count_with_ties():
    w = torch.tensor([[3.0, 1.0, 1.0, 1.0], [1.0, 0.5, -1.0, 2.0]])
    own = Ownership({"w": w})
    own.maps["w"][0, 0] = 1  # already owned by task 1: not a candidate
    kept = own.prune({"w": w}, task=2, ratio=0.5)
    # 7 free weights, release round(3.5) = 4 -> keep 3: 2.0 then the first two of the tied 1.0s.
    assert kept == {"w": 3}
    assert own.maps["w"].tolist() == [[1, 2, 2, 0], [0, 0, 0, 2]]


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.7, 0.9])
def test_prune_count_per_tensor(ratio):
    g = torch.Generator().manual_seed(1)
    params = {"a": torch.randn(37, 5, generator=g), "b": torch.randn(64, generator=g).round()}
    own = Ownership(params)
    kept = own.prune(params, 1, ratio)
    for name, p in params.items():
        n = p.numel()
        assert kept[name] == n - round(ratio * n) == int((own.maps[name] == 1).sum())


def test_one_optimiser_step_moves_no_frozen_weight(tasks):
    lineage = Lineage.new(ModelConfig(**MODEL), tasks[0].num_items)
    lineage.learn(tasks[0], cfg_for(0))
    before = {n: p.detach().clone() for n, p in lineage.params.items()}
    head0 = {n: p.detach().clone() for n, p in lineage.heads["clicks"].named_parameters()}
    owners = lineage.owner_maps()
    one_step = TrainConfig(lr=0.5, batch_size=10_000, epochs=1, patience=5, keep_best=False)  # one big step
    lineage.train(tasks[1], one_step)
    for name, p in lineage.params.items():
        if name in owners:
            frozen = owners[name] != 0
            assert torch.equal(p[frozen], before[name][frozen]), name
            assert not torch.equal(p[~frozen], before[name][~frozen]), f"{name}: free weights should move"
        else:  # embedding, LayerNorms: T1's first stage only (liked's new items add embedding rows after them)
            assert torch.equal(p[:before[name].shape[0]], before[name]), name
    for name, p in lineage.heads["clicks"].named_parameters():
        assert torch.equal(p, head0[name])


def test_retrain_moves_only_the_tasks_own_weights(tasks):
    lineage = Lineage.new(ModelConfig(**MODEL), tasks[0].num_items)
    lineage.learn(tasks[0], cfg_for(0))
    lineage.train(tasks[1], cfg_for(1))
    lineage.prune("liked", 0.5)
    before = {n: p.detach().clone() for n, p in lineage.params.items()}
    lineage.retrain(tasks[1], TrainConfig(lr=0.5, batch_size=10_000, epochs=1, patience=5, keep_best=False))
    for name, owner in lineage.owner_maps().items():
        p = lineage.params[name]
        assert torch.equal(p[owner != 2], before[name][owner != 2]), name


def test_empty_free_pool_raises_clear_error(tasks):
    lineage = Lineage.new(ModelConfig(**{**MODEL, "min_free": 0.3}), tasks[0].num_items)
    lineage.learn(tasks[0], TrainConfig(epochs=1, retrain_epochs=0, batch_size=64), ratio=0.2)
    with pytest.raises(CapacityError, match=r"cannot learn task 'liked'.*only 20\.\d% .*floor 30\.0%"):
        lineage.train(tasks[1], cfg_for(1))
    assert lineage.tasks == ["clicks"]
    own = Ownership({"w": torch.ones(4)})
    own.maps["w"].fill_(1)
    with pytest.raises(CapacityError, match="0.0%"):
        own.check_capacity("x")
