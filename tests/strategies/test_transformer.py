import torch
from torch.func import functional_call

from conure_core.backbones import build_backbone
from conure_core.backbones.transformer import Transformer
from conure_core.lineage import Lineage
from tests.strategies.helpers import tiny_preset


def test_causal_no_nan_and_prunable_set():
    g = torch.Generator().manual_seed(0)
    model = Transformer(50, width=16, generator=g)
    tokens = torch.randint(1, 51, (4, 10), generator=g)
    tokens[0, :6] = 0  # left padding
    out = model(tokens)
    assert out.shape == (4, 10, 16) and not out.isnan().any()
    changed = tokens.clone()
    changed[:, 7] = 3
    assert torch.equal(model(changed)[:, :7], out[:, :7])  # position t sees tokens <= t only
    assert not torch.equal(model(changed)[:, 7:], out[:, 7:])
    names = model.prunable_names()
    assert names == [f"blocks.{i}.{p}.weight" for i in range(2) for p in ("q", "k", "v", "o", "ff1", "ff2")]
    params = dict(model.named_parameters())
    assert sum(params[n].numel() for n in names) == 2 * 6 * 16 * 16


def test_padding_never_reaches_real_positions():
    model = Transformer(50, width=8, generator=torch.Generator().manual_seed(1))
    short = torch.tensor([[0, 0, 5, 6]])
    longer = torch.tensor([[0, 0, 0, 0, 5, 6]])
    # Positions count from the right, padding is masked: same real items -> same last state.
    assert torch.allclose(model(short)[:, -1], model(longer)[:, -1], atol=1e-6)


def test_replacement_weights_by_name():
    model = Transformer(20, width=8, generator=torch.Generator().manual_seed(2))
    tokens = torch.tensor([[1, 2, 3]])
    zero = {n: torch.zeros_like(p) for n, p in model.named_parameters() if n in model.prunable_names()}
    # With every projection zeroed, the blocks add only their biases (zero): output = LN(embeddings).
    x = model.embedding(tokens) + model.positions(torch.tensor([2, 1, 0]))
    assert torch.allclose(functional_call(model, zero, (tokens,)), model.final_ln(x), atol=1e-6)


def test_build_backbone_transformer():
    preset = tiny_preset("transformer")
    model = build_backbone(preset.model, 30, torch.Generator().manual_seed(0))
    assert isinstance(model, Transformer) and len(model.blocks) == 2 and model.width == 16


def test_transformer_retention_bit_exact_under_conure(tiny):
    """Same check as the TCN's: every earlier task's outputs are torch.equal after later tasks."""
    preset = tiny_preset("transformer")
    lineage = Lineage.new(preset.model, tiny[0].num_items)
    after = {}
    for i, task in enumerate(tiny):
        lineage.learn(task, preset.train_config(i))
        seqs = task.sequences[task.rows("test")]
        after[task.name] = (lineage.predict(task.name, seqs, k=5), lineage.evaluate(task))
    assert 0.0 < lineage.free_capacity()["total"] < 1.0
    owned = {int(v) for m in lineage.owner_maps().values() for v in torch.unique(m)}
    assert owned == {0, 1, 2, 3}  # every task owns some projection weights
    for task in tiny:
        (idx, scores), metrics = after[task.name]
        idx2, scores2 = lineage.predict(task.name, task.sequences[task.rows("test")], k=5)
        assert torch.equal(idx, idx2) and torch.equal(scores, scores2), task.name
        assert lineage.evaluate(task) == metrics, task.name
