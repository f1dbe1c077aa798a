"""Every Table 2 strategy trains two real tasks (tiny MovieLens-100K subset) and does what SPEC 6 says."""
import math

import pytest
import torch

from conure_core.heads import build_head
from conure_core.seeding import stage_generator
from conure_core.strategies import (DNN, MTL, STRATEGIES, BagMLP, ConureMinus, ConureStrategy, FineAll, FineSmax,
                                    PeterRec, SinMo, SinMoAll, StrategyError, build_strategy, run_strategy)
from conure_core.lineage import Lineage
from conure_core.model import tensor_bytes
from tests.strategies.helpers import tiny_preset

PRESET = tiny_preset()


def backbone_state(learner):
    return {n: p.detach().clone() for n, p in learner.model.backbone.named_parameters()}


def same(a, b):
    return all(torch.equal(a[n], b[n]) for n in a)


def t1_outputs(model, task):
    return model.predict(task.name, task.sequences[task.rows("test")], k=5)


def stage_log():
    log = []
    return log, lambda e: log.append(e) if e["event"] == "stage_end" else None


def fresh_head(kind, num_labels, index):
    return build_head(kind, PRESET.model.width, num_labels, stage_generator(PRESET.model.seed, index, "head"))


def test_finesmax_keeps_backbone_bit_identical_and_trains_the_head(tiny):
    t1, t2 = tiny[:2]
    log, progress = stage_log()
    s = FineSmax(PRESET, t1.num_items, progress=progress)
    s.learn(t1)
    before, out1 = backbone_state(s.learner), t1_outputs(s.learner, t1)
    s.learn(t2)
    assert same(before, backbone_state(s.learner))
    assert all(torch.equal(a, b) for a, b in zip(out1, t1_outputs(s.learner, t1)))
    assert log[-1]["best_epoch"] == log[-1]["epochs_run"] > 0
    assert not torch.equal(s.learner.model.heads[t2.name].weight, fresh_head("item", t2.num_labels, 2).weight)
    assert s.num_backbones == 1
    assert s.storage_bytes() == tensor_bytes(before.values()) + s.learner.model.head_bytes()


def test_sinmoall_moves_the_shared_backbone(tiny):
    t1, t2 = tiny[:2]
    log, progress = stage_log()
    s = SinMoAll(PRESET, t1.num_items, progress=progress)
    s.learn(t1)
    before, out1 = backbone_state(s.learner), t1_outputs(s.learner, t1)
    s.learn(t2)
    assert log[-1]["best_epoch"] == log[-1]["epochs_run"] > 0
    after = backbone_state(s.learner)
    changed = [n for n in before if not torch.equal(before[n], after[n])]
    assert "embedding.weight" in changed and any(".conv" in n for n in changed)
    assert not torch.equal(out1[1], t1_outputs(s.learner, t1)[1])  # T1 is served by moved weights
    assert s.num_backbones == 1 and math.isfinite(s.evaluate(t1)["mrr@5"])


def test_peterrec_freezes_backbone_and_trains_patches(tiny):
    t1, t2 = tiny[:2]
    s = PeterRec(PRESET, t1.num_items)
    s.learn(t1)
    before, out1 = backbone_state(s.learner), t1_outputs(s.learner, t1)
    s.learn(t2)
    assert same(before, backbone_state(s.learner))
    patches = s.learner.policy.patches[t2.name]
    assert len(patches) == len(PRESET.model.dilations)  # one patch per residual block
    assert all(p.up.abs().sum() > 0 for p in patches)  # Up starts at zero: it moved
    assert all(torch.equal(a, b) for a, b in zip(out1, t1_outputs(s.learner, t1)))
    c = PRESET.model.width
    per_patch = (c // 4) * c * 2 + c // 4 + c
    assert s.patch_bytes() == 4 * per_patch * len(patches)
    assert s.storage_bytes() == tensor_bytes(before.values()) + s.learner.model.head_bytes() + s.patch_bytes()
    # The patch changes task 2's representation only while task 2 is active.
    seqs = t2.sequences[:8]
    with torch.no_grad():
        plain = s.learner.model.user_vectors(seqs, None)
        with s.learner.policy.reading(s.learner.info(t2.name)):
            patched = s.learner.model.user_vectors(seqs, None)
    assert not torch.equal(plain, patched)


def test_fineall_copies_t1_and_fine_tunes_the_copy(tiny):
    t1, t2 = tiny[:2]
    s = FineAll(PRESET, t1.num_items)
    s.learn(t1)
    before = backbone_state(s.t1)
    s.learn(t2)
    assert same(before, backbone_state(s.t1))
    assert not same(before, backbone_state(s.learners[t2.name]))
    assert s.num_backbones == 2
    assert s.storage_bytes() == 2 * tensor_bytes(before.values()) + s.t1.model.head_bytes([t1.name]) \
        + s.learners[t2.name].model.head_bytes([t2.name])


def test_sinmo_trains_a_fresh_model_per_task(tiny):
    t1, t2 = tiny[:2]
    s = SinMo(PRESET, t1.num_items)
    s.learn(t1)
    s.learn(t2)
    assert s.num_backbones == 2 and s.learners[t2.name].tasks == [t2.name]
    assert not same(backbone_state(s.learners[t1.name]), backbone_state(s.learners[t2.name]))
    assert s.storage_bytes() == sum(m.storage_bytes() for m in s.learners.values())


def test_mtl_trains_both_objectives_on_one_backbone(tiny):
    t1, t2 = tiny[:2]
    s = MTL(PRESET, t1.num_items)
    s.learn(t1)
    s.learn(t2)
    pair = s.pairs[t2.name]
    assert pair.tasks == [t1.name, t2.name] and s.num_backbones == 1
    # Both heads moved from their seeded initial values: T1's loss and T2's loss both trained.
    assert not torch.equal(pair.model.heads[t1.name].weight, fresh_head("sequence", t1.num_items, 1).weight)
    assert not torch.equal(pair.model.heads[t2.name].weight, fresh_head("item", t2.num_labels, 2).weight)
    assert s.learner_for(t1) is pair and s.storage_bytes() == pair.storage_bytes()


def test_dnn_is_a_bag_of_items_mlp_per_task(tiny):
    t1, t4 = tiny[0], tiny[2]
    s = DNN(PRESET, t1.num_items)
    s.learn(t1)
    s.learn(t4)
    assert s.num_backbones == 2 and all(isinstance(m.model.backbone, BagMLP) for m in s.learners.values())
    bag = s.learners[t4.name].model.backbone
    a = torch.tensor([[0, 3, 5, 7]])
    b = torch.tensor([[0, 7, 3, 5]])  # same bag, other order
    assert torch.allclose(bag(a)[:, -1], bag(b)[:, -1], atol=1e-6)
    assert 0.0 <= s.evaluate(t4)["accuracy"] <= 1.0


def test_conure_minus_and_conure_from_one_run_match_the_learner(tiny):
    tasks = tiny[:2]
    reports = run_strategy(ConureMinus(PRESET, tasks[0].num_items), tasks)
    plain = ConureStrategy(PRESET, tasks[0].num_items)
    rows = []
    for i, task in enumerate(tasks):
        plain.learn(task)
        rows.append([plain.evaluate(t)[m] for t, m in zip(tasks[: i + 1], ["mrr@5", "mrr@5"])])
    conure = reports["conure"]
    assert conure.final == rows[-1]  # bit-identical to the learner's own Conure run
    assert conure.matrix[1][0] == conure.matrix[0][0]  # Conure's earlier task does not move
    assert conure.storage_bytes == plain.storage_bytes() and conure.backbones == 1
    minus = reports["conure-"]
    assert minus.matrix[1][0] == conure.matrix[0][0]  # after T2's train, T1 is already settled


def test_start_from_shared_t1_equals_training_it(tiny):
    t1, t2 = tiny[:2]
    start = Lineage(PRESET.model, t1.num_items)
    start.train(t1, PRESET.train_config(0))
    a, b = FineAll(PRESET, t1.num_items, start=start), FineAll(PRESET, t1.num_items)
    for s in (a, b):
        s.learn(t1)
        s.learn(t2)
    assert same(backbone_state(a.learners[t2.name]), backbone_state(b.learners[t2.name]))
    assert a.evaluate(t2) == b.evaluate(t2)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_reports_a_full_lower_triangle(tiny, name):
    reports = run_strategy(build_strategy(name, PRESET, tiny[0].num_items), [tiny[0], tiny[2]])
    for rep in reports.values():
        assert rep.matrix[0][1] is None
        assert all(math.isfinite(v) for row in rep.matrix for v in row if v is not None)
        assert rep.storage_bytes > 0 and rep.backbones >= 1


def test_errors_are_clear(tiny):
    with pytest.raises(StrategyError, match="unknown strategy"):
        build_strategy("nope", PRESET, 10)
    s = FineSmax(PRESET, tiny[0].num_items)
    with pytest.raises(StrategyError, match="T1 sequence task first"):
        s.learn(tiny[1])
    s.learn(tiny[0])
    with pytest.raises(StrategyError, match="has not learned"):
        s.evaluate(tiny[1])
