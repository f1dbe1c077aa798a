"""The learner's parts: the stage machine's one guard, the weights contract, the policies' groups."""
import pytest
import torch

from conure_core.config import ModelConfig
from conure_core.errors import ConureError
from conure_core.lineage import Lineage, LineageError, Phase
from conure_core.model import TaskModel
from conure_core.policies import FrozenPolicy, OpenPolicy
from tests.core.conftest import MODEL, cfg_for


def test_stage_machine_names_the_allowed_next_step(tasks):
    t1, t2, t3 = tasks
    lineage = Lineage.new(ModelConfig(**MODEL), t1.num_items)
    assert lineage.phase() is None
    with pytest.raises(LineageError, match=r"cannot prune task 'clicks': the next step is train of T1"):
        lineage.prune("clicks", 0.5)
    lineage.train(t1, cfg_for(0))
    assert lineage.phase() is Phase.TRAINED
    with pytest.raises(LineageError, match=r"cannot retrain task 'clicks': the next step is prune\('clicks'\)"):
        lineage.retrain(t1, cfg_for(0))
    with pytest.raises(LineageError, match=r"the next step is prune\('clicks'\): prune and retrain 'clicks' before"):
        lineage.train(t2, cfg_for(1))
    lineage.prune("clicks", 0.5)
    assert lineage.phase() is Phase.PRUNED
    with pytest.raises(LineageError, match=r"cannot prune task 'clicks': the next step is retrain\('clicks'\)"):
        lineage.prune("clicks", 0.5)
    with pytest.raises(LineageError, match=r"cannot train task 'liked': the next step is retrain\('clicks'\)"):
        lineage.train(t2, cfg_for(1))
    lineage.retrain(t1, cfg_for(0))
    assert lineage.phase() is Phase.SETTLED
    with pytest.raises(LineageError, match=r"cannot retrain task 'clicks': the next step is train of a new task"):
        lineage.retrain(t1, cfg_for(0))
    lineage.train(t2, cfg_for(1))
    with pytest.raises(LineageError, match=r"cannot prune task 'clicks': the next step is prune\('liked'\)"):
        lineage.prune("clicks", 0.5)
    assert lineage.tasks == ["clicks", "liked"] and isinstance(LineageError("x"), ConureError)


def test_the_guard_performs_each_transition_and_step_is_the_one_entry(tasks, tmp_path):
    from conure_core.checkpoint import read_owner_maps, save_state

    t1 = tasks[0]
    lineage = Lineage.new(ModelConfig(**MODEL), t1.num_items)
    trained = lineage.step("train", t1, cfg_for(0))
    assert trained["task"] == "clicks" and lineage.phase() is Phase.TRAINED
    with pytest.raises(ValueError, match=r"prune ratio 1\.5 must be in \[0, 1\)"):
        lineage.prune("clicks", 1.5)
    info = lineage.info("clicks")
    assert lineage.phase() is Phase.TRAINED and (info.pruned, info.prune_ratio) == (False, None)  # a failed step moves nothing
    pruned = lineage.step("prune", t1, cfg_for(0))
    kept = sum(int((m == 1).sum()) for m in lineage.owner_maps().values())
    assert pruned["ratio"] == 0.5 and pruned["curve"] == [] and not pruned["auto"] and pruned["kept"] == kept > 0
    assert lineage.phase() is Phase.PRUNED and (info.pruned, info.retrained, info.prune_ratio) == (True, False, 0.5)
    lineage.step("retrain", t1, cfg_for(0))
    assert lineage.phase() is Phase.SETTLED and info.retrained
    with pytest.raises(LineageError, match=r"^stage 'settle' is not a Conure stage; use one of \['train', 'prune', 'retrain'\]\.$"):
        lineage.step("settle", t1, cfg_for(0))
    path = save_state(lineage, tmp_path / "s.safetensors")  # the file's layout is read by checkpoint.py only
    on_disk, live = read_owner_maps(path), lineage.owner_maps()
    assert sorted(on_disk) == sorted(live) and all(torch.equal(on_disk[k], live[k]) for k in live)


def test_a_misspelt_replacement_weight_is_an_error_not_an_unmasked_forward(tasks):
    model = TaskModel(ModelConfig(**MODEL), tasks[0].num_items)
    tokens = tasks[0].sequences[:2]
    good = {"blocks.0.conv1.weight": torch.zeros_like(model.params["blocks.0.conv1.weight"])}
    assert not torch.equal(model.encode(tokens, good), model.encode(tokens))  # the name reaches the conv
    with pytest.raises(KeyError, match=r"\['blocks\.0\.conv1\.wieght'\] name no parameter"):
        model.encode(tokens, {"blocks.0.conv1.wieght": good["blocks.0.conv1.weight"]})


def test_policies_choose_the_trained_parameters(tasks):
    t1, t2, _ = tasks
    lineage = Lineage.new(ModelConfig(**MODEL), t1.num_items)
    lineage.learn(t1, cfg_for(0))
    model = lineage.model
    info1 = model.info("clicks")
    info2 = model.add_task(t2, cfg_for(1))
    every = [id(p) for p in model.params.values()]
    for policy, info, stage, expected in [
        (lineage.policy, info1, "train", every),  # T1's first stage trains everything
        (lineage.policy, info2, "train", [id(model.params[n]) for n in model.params if ".conv" in n]),
        (OpenPolicy(), info2, "train", every),
        (FrozenPolicy(), info2, "train", []),
    ]:
        groups = policy.param_groups(model, info, stage, cfg_for(1))
        backbone = [id(p) for g in groups for p in g["params"] if any(p is q for q in model.params.values())]
        assert backbone == expected, (policy.name, stage)
        heads = [g for g in groups if g["params"][0] is model.heads[info.name].weight]
        assert len(heads) == 1 and heads[0]["weight_decay"] == (0.0 if info.kind == "sequence" else cfg_for(1).head_l2)
        assert {id(p) for p in model.params.values() if p.requires_grad} == set(backbone)
    # T1's head trains in its first stage only (SPEC section 3).
    assert not any(g["params"][0] is model.heads["clicks"].weight
                   for g in lineage.policy.param_groups(model, info1, "retrain", cfg_for(0)))


def test_mean_user_representation_pools_real_positions_and_the_separator(tasks):
    model = TaskModel(ModelConfig(**{**MODEL, "user_repr": "mean"}), tasks[0].num_items)
    seqs = torch.tensor([[0, 0, 3, 5], [1, 2, 3, 4]])
    sep = torch.full((2, 1), tasks[0].num_items + 1)
    hidden = model.encode(torch.cat([seqs, sep], dim=1))
    expected = torch.stack([hidden[0, 2:].mean(0), hidden[1].mean(0)])  # padding left out
    assert torch.allclose(model.user_vectors(seqs), expected, atol=1e-6)


def test_auto_prune_ratio_is_the_largest_that_keeps_validation(tasks):
    import dataclasses

    t1, t2, _ = tasks
    lineage = Lineage.new(ModelConfig(**MODEL), t1.num_items)
    lineage.learn(t1, cfg_for(0))
    cfg = dataclasses.replace(cfg_for(1), prune_auto=True, prune_grid=[0.3, 0.6, 0.9], prune_epsilon=0.05)
    lineage.train(t2, cfg)
    ratio, curve = lineage.choose_prune_ratio(t2, cfg)
    assert [c["ratio"] for c in curve] == [0.3, 0.6, 0.9] and lineage.phase() is Phase.TRAINED  # trials on copies
    floor = curve[0]["reference"] * (1 - cfg.prune_epsilon)
    passing = [c["ratio"] for c in curve if c["valid"] >= floor]
    assert ratio == (max(passing) if passing else cfg.prune_ratio)
    assert curve[0]["free"] < curve[1]["free"] < curve[2]["free"]  # a higher ratio frees more
    settled = lineage.settle(t2, cfg)  # chooses again: the same ratio, and the same retrain as its trial
    assert lineage.info("liked").prune_ratio == ratio
    if ratio in (0.3, 0.6, 0.9):
        assert settled.best_valid == next(c["valid"] for c in curve if c["ratio"] == ratio)
    # Everything within epsilon = 1.0 (any metric >= 0 passes): the largest ratio of the grid.
    loose = dataclasses.replace(cfg, prune_epsilon=0.999)
    other = Lineage.new(ModelConfig(**MODEL), t1.num_items)
    other.learn(t1, cfg_for(0))
    other.train(t2, loose)
    assert other.choose_prune_ratio(t2, loose)[0] == 0.9


def test_manifest_and_preset_auto_prune_ratio():
    from conure_core.config import Preset, get_preset, manifest_overrides

    assert manifest_overrides({"prune_ratio": "auto", "l2": 0.1}) == {"prune_auto": True, "head_l2": 0.1}
    preset = get_preset("quick").to_dict()
    preset["prune_ratios"] = [0.7, "auto"]
    p = Preset.from_dict(preset)
    assert not p.train_config(0).prune_auto and p.train_config(0).prune_ratio == 0.7
    assert p.train_config(3, kind="class").prune_auto
