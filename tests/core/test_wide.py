"""The per-item parts: T1's transition table (t1_wide="cooccur") and the bag in later heads (mean_bag)."""
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from conure_core.checkpoint import CheckpointError, load_state, save_state
from conure_core.config import ModelConfig
from conure_core.errors import ConureError
from conure_core.heads import build_head
from conure_core.kinds import kind_of
from conure_core.lineage import Lineage
from conure_core.metrics import t1_target_mask, target_ranks
from conure_core.model import TaskModel
from conure_core.wide import (K_EPSILON, SCALE, SHRINK, TOPK, bag_of_items, bag_slots, decayed_at, decayed_last, decayed_scores,
                              table_ranks, topk_transitions, transition_table)
from tests.core.conftest import MODEL, cfg_for, learn_all, outputs

WIDE = {**MODEL, "t1_wide": "cooccur", "user_repr": "mean_bag"}


def test_topk_table_and_decayed_scores_by_hand():
    # two left-padded rows: items 1, 2, 3 and items 2, 1, 3
    rows = torch.tensor([[0, 1, 2, 3], [0, 2, 1, 3]])
    # ordered pairs: row 1: (1,2) (1,3) (2,3); row 2: (2,1) (2,3) (1,3); each item held by 2 rows
    index, counts, holders = topk_transitions(rows, 3, k=2)
    assert holders.tolist() == [2.0, 2.0, 2.0] and index.shape == (5, 2)
    # token 1: item 3 (2 pairs), then item 2 (1); token 2: item 3 (2), then item 1 (1); token 3: none
    assert index[1].tolist() == [2, 1] and counts[1].tolist() == [2.0, 1.0]
    assert index[2].tolist() == [2, 0] and counts[2].tolist() == [2.0, 1.0]
    assert counts[0].sum() == 0 and counts[3].sum() == 0 and counts[4].sum() == 0  # pad, no successor, separator
    table = transition_table(index, counts, holders, shrink=2.0)  # / (n_i + 2) = / 4
    assert table.rows(torch.tensor([1])).tolist() == [[0.0, 0.25, 0.5]]  # token 1 -> items 1, 2, 3
    scores = decayed_scores(table, torch.tensor([[1, 2]]), decay=0.5)
    assert scores[0, 0].tolist() == [0.0, 0.25, 0.5]
    # 0.5 * table[1] + table[2], table[2] = [1, 0, 2] / 4
    assert scores[0, 1].tolist() == [0.25, 0.125, 0.75]
    # the last position alone (predict), padding included: [0, 1, 2] -> 0.5 * table[1] + table[2]
    assert decayed_last(table, torch.tensor([[0, 1, 2]]), 0.5).tolist() == [[0.25, 0.125, 0.75]]
    # k = 1 keeps each item's largest successor only
    top1 = transition_table(index, counts, holders, shrink=2.0, k=1)
    assert decayed_last(top1, torch.tensor([[1, 2]]), 1.0).tolist() == [[0.0, 0.0, 1.0]]


def test_topk_table_counted_in_blocks_equals_the_dense_count():
    torch.manual_seed(0)
    rows = torch.randint(0, 31, (40, 9))  # 30 items, zeros as padding anywhere
    dense = torch.zeros(32, 32)
    for r in rows.tolist():
        for a in range(9):
            for b in range(a + 1, 9):
                if r[a] and r[b]:
                    dense[r[a], r[b]] += 1
    index, counts, holders = topk_transitions(rows, 30, k=30)
    blocked = topk_transitions(rows, 30, k=30, budget=7)  # many source blocks
    assert all(torch.equal(a, b) for a, b in zip((index, counts, holders), blocked))
    table = transition_table(index, counts, holders, shrink=10.0)
    expected = torch.zeros(32, 30)
    expected[1:31] = dense[1:31, 1:31] / (holders.unsqueeze(1) + 10.0)
    assert torch.equal(table.rows(torch.arange(32)), expected)
    assert torch.allclose(decayed_scores(table, rows, 0.8)[:, -1], decayed_last(table, rows, 0.8), atol=1e-6)
    keep = t1_target_mask(rows)
    for decay in (1.0, 0.5):  # the sparse ranks (no [targets, V]) are the dense scores' ranks
        dense = target_ranks(decayed_scores(table, rows[:, :-1], decay)[keep], rows[:, 1:][keep] - 1)
        assert torch.equal(table_ranks(table, rows, keep, decay), dense)
    top5 = transition_table(index, counts, holders, 10.0, k=5)
    dense = target_ranks(decayed_scores(top5, rows[:, :-1], 0.8)[keep], rows[:, 1:][keep] - 1)
    assert torch.equal(table_ranks(top5, rows, keep, 0.8), dense)


def test_bag_of_items_drops_padding_and_separator():
    tokens = torch.tensor([[0, 2, 2, 4], [1, 3, 5, 0]])  # 5 = separator of a 4-item vocabulary
    assert bag_of_items(tokens, 4).tolist() == [[0, 1, 0, 1], [1, 0, 1, 0]]
    # the sparse form: each row's distinct items (sorted; a repeat and the separator become 0)
    assert bag_slots(tokens, 4).tolist() == [[0, 2, 0, 4], [0, 1, 3, 0]]


def test_sparse_bag_head_scores_as_the_dense_bag(tasks):
    model = TaskModel(ModelConfig(**WIDE), tasks[0].num_items)
    seqs = tasks[0].sequences[:3]
    g = model.user_vectors(seqs)
    assert g.shape == (3, 16 + seqs.shape[1] + 1)  # pooled state + one slot per token and the separator
    slots = torch.zeros(3, tasks[0].num_items + 1).scatter_(1, g[:, 16:].long(), 1.0)[:, 1:]
    assert torch.equal(slots, bag_of_items(seqs, tasks[0].num_items))  # the slots hold the bag, separator dropped
    head = build_head("class", 16, 2, torch.Generator().manual_seed(0), normalize=True, bag=tasks[0].num_items)
    assert head.weight.shape == (2, 16) and head.bag.weight.shape == (tasks[0].num_items + 1, 2)
    assert torch.all(head.bag.weight == 0)
    with torch.no_grad():
        head.bag.weight[1:] = torch.randn(tasks[0].num_items, 2, generator=torch.Generator().manual_seed(1))
    dense = bag_of_items(seqs, tasks[0].num_items)  # today's input: [LN(pooled), 0/1 bag] @ [W, W_bag]
    expected = F.layer_norm(g[:, :16], (16,), eps=1e-5) @ head.weight.t() + dense @ head.bag.weight[1:] + head.bias
    assert torch.allclose(head.scores(g), expected, atol=1e-5)
    ids = torch.tensor([[1], [0], [1]])
    assert torch.allclose(head.pair_scores(g, ids), expected.gather(1, ids), atol=1e-5)


@pytest.fixture(scope="module")
def wide_learned(tasks):
    return learn_all(ModelConfig(**WIDE), tasks)


def test_t1_trains_its_tcn_exactly_as_without_the_wide_part(tasks, wide_learned):
    lineage, _ = wide_learned
    plain = Lineage.new(ModelConfig(**{**MODEL, "user_repr": "mean_bag"}), tasks[0].num_items)
    plain.learn(tasks[0], cfg_for(0))
    info = lineage.info("clicks")
    with lineage.model.deep_only(info):
        deep = lineage.evaluate(tasks[0], "valid")
    assert deep == plain.evaluate(tasks[0], "valid")  # the table never touches the TCN's training
    assert info.wide["scale"] in SCALE and info.wide["valid_deep"] == deep["mrr@5"]
    # the kept scale is the best on validation, so fusing never loses to the TCN alone there
    assert info.wide["valid_fused"] == lineage.evaluate(tasks[0], "valid")["mrr@5"] >= deep["mrr@5"]


def test_one_pass_over_the_scales_equals_evaluating_each_scale(tasks, wide_learned):
    lineage, _ = wide_learned
    info, model = lineage.info("clicks"), lineage.model
    head, kept = model.heads["clicks"], float(lineage.model.heads["clicks"].wide_scale)
    scales = (0.0, 2.0, kept, 1e4)
    with lineage.policy.reading(info):
        weights = lineage.task_weights(info)
        one_pass = kind_of("sequence").evaluate_scales(model, tasks[0], "valid", info, weights, 64, scales)
        try:
            for s in scales:
                head.wide_scale.fill_(s)
                assert one_pass[s] == model.evaluate(tasks[0], "valid", info, weights, 64), s
        finally:
            head.wide_scale.fill_(kept)
    assert one_pass[0.0]["mrr@5"] != one_pass[1e4]["mrr@5"]  # the scales do differ


def test_retention_and_state_round_trip_with_both_wide_parts(tasks, wide_learned, tmp_path):
    lineage, after = wide_learned
    for task in tasks:
        idx, scores, metrics = outputs(lineage, task)
        assert torch.equal(idx, after[task.name][0]) and torch.equal(scores, after[task.name][1]), task.name
        assert metrics == after[task.name][2], task.name
    loaded = load_state(save_state(lineage, tmp_path / "state.safetensors"), device="cpu")
    assert loaded.info("clicks").wide == lineage.info("clicks").wide
    for task in tasks:
        idx, scores, metrics = outputs(loaded, task)
        assert torch.equal(idx, after[task.name][0]) and torch.equal(scores, after[task.name][1]), task.name
        assert metrics == after[task.name][2], task.name


def test_a_state_with_a_dense_bag_is_refused_in_one_sentence(wide_learned, tmp_path):
    path = save_state(wide_learned[0], tmp_path / "state.safetensors")
    data = path.read_bytes()
    tensors = st_load(data)
    head = next(name[:-len(".bag.weight")] for name in tensors if name.endswith(".bag.weight"))
    dense = torch.cat([tensors[f"{head}.weight"], tensors.pop(f"{head}.bag.weight")[1:].t()], dim=1)
    tensors[f"{head}.weight"] = dense.contiguous()  # the layout before issue 16: [K, C + V]
    path.write_bytes(st_save(tensors, metadata=safe_open(path, "pt").metadata()))
    with pytest.raises(CheckpointError, match=rf"tensor {head}.weight has shape \[\d+, 56\] where this code's "
                                              r"model has \[\d+, 16\]; .* learn the lineage again\."):
        load_state(path)


def test_class_repr_gives_class_tasks_their_own_user_vector(tasks):
    cfg = ModelConfig(**{**MODEL, "class_repr": "mean_bag"})
    model = TaskModel(cfg, tasks[0].num_items)
    for task in tasks:
        model.add_task(task, cfg_for(1))
    assert model.heads["liked"].bag is None and model.heads["gender"].bag.weight.shape == (41, 2)
    seqs = tasks[0].sequences[:2]
    assert model.user_vectors(seqs, kind="item").shape == (2, 16)
    assert model.user_vectors(seqs, kind="class").shape == (2, 16 + seqs.shape[1] + 1)
    with pytest.raises(ConureError, match=r"class_repr='bag'; use one of \['separator', 'last', 'mean', 'mean_bag'\]"):
        ModelConfig(class_repr="bag")


def test_auto_keeps_the_per_item_parts_on_at_any_size(tasks):
    cfg = ModelConfig(**{**MODEL, "t1_wide": "auto", "class_repr": "auto"})
    assert cfg.t1_table(10 ** 6) and cfg.repr_of("class", 10 ** 6) == "mean_bag"
    assert cfg.repr_of("item", 10) == "separator" and not ModelConfig(**MODEL).t1_table(10)
    small = TaskModel(cfg, tasks[0].num_items)
    info = small.add_task(tasks[0], cfg_for(0))
    table = small.heads["clicks"].wide_table
    assert info.wide["shrink"] in SHRINK and info.wide["k"] == table.k <= max(TOPK)
    curve = {int(key[7:]): v for key, v in info.wide.items() if key.startswith("valid_k")}
    assert info.wide["valid"] == curve[table.k] >= (1 - K_EPSILON) * max(curve.values())
    assert all(v < (1 - K_EPSILON) * max(curve.values()) for c, v in curve.items() if c < table.k)
    fixed = TaskModel(ModelConfig(**{**MODEL, "t1_wide": "cooccur", "t1_topk": 3}), tasks[0].num_items)
    info = fixed.add_task(tasks[0], cfg_for(0))  # an explicit k is kept (shrink and decay still chosen)
    assert info.wide["k"] == fixed.heads["clicks"].wide_table.k == 3 and "valid_k3" in info.wide
    with pytest.raises(ConureError, match=r"t1_topk=0; use a positive whole number or null"):
        ModelConfig(t1_topk=0)


def test_decayed_scores_at_the_kept_positions_from_sparse_entries():
    gen = torch.Generator().manual_seed(5)
    rows = torch.randint(1, 30, (6, 9), generator=gen)
    rows[:3, :4] = 0  # left padding
    index, counts, holders = topk_transitions(rows, 30, k=5)
    table = transition_table(index, counts, holders, shrink=1.0)
    tokens = rows[:, :-1]
    keep = t1_target_mask(rows, "all")
    for decay in (1.0, 0.8, 0.5):
        dense = decayed_scores(table, tokens, decay)[keep]
        assert torch.allclose(decayed_at(table, tokens, keep, decay), dense, rtol=1e-6, atol=1e-7), decay
    last = torch.zeros_like(keep)
    last[:, -1] = True
    assert torch.allclose(decayed_at(table, tokens, last, 0.5), decayed_last(table, tokens, 0.5))
