import torch

from conure_core.checkpoint import load_state, save_state
from conure_core.config import ModelConfig
from conure_core.lineage import Lineage
from tests.core.conftest import MODEL, cfg_for


def _all_tensors(lineage):
    out = {f"b.{n}": p.detach() for n, p in lineage.params.items()}
    out.update({f"o.{n}": m for n, m in lineage.ownership.maps.items()})
    for name, head in lineage.heads.items():
        out.update({f"h.{name}.{n}": p.detach() for n, p in head.named_parameters()})
    return out


def test_stage_alone_from_saved_state_equals_continuous_run(tasks, tmp_path):
    """The pipeline contract: a stage re-run from a saved state ends in the same bytes."""
    cfg = cfg_for(1)
    continuous = Lineage.new(ModelConfig(**MODEL), tasks[0].num_items)
    continuous.learn(tasks[0], cfg_for(0))
    continuous.train(tasks[1], cfg)
    path = save_state(continuous, tmp_path / "after_train.safetensors")
    continuous.prune("liked", cfg.prune_ratio)
    continuous.retrain(tasks[1], cfg)

    resumed = load_state(path)
    resumed.prune("liked", cfg.prune_ratio)
    resumed.retrain(tasks[1], cfg)
    a, b = _all_tensors(continuous), _all_tensors(resumed)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_same_seed_same_lineage(tasks):
    runs = []
    for _ in range(2):
        lin = Lineage.new(ModelConfig(**MODEL), tasks[0].num_items)
        lin.learn(tasks[0], cfg_for(0))
        runs.append(_all_tensors(lin))
    assert all(torch.equal(runs[0][n], runs[1][n]) for n in runs[0])
