"""The large-vocabulary paths: streamed ranking / top-k and the chunked sampled softmax equal the plain ones."""
from __future__ import annotations

import pytest
import torch

import conure_core.losses as losses
import conure_core.metrics as metrics
from conure_core.heads import build_head
from conure_core.metrics import streamed_ranking, streamed_topk, target_ranks


def _scores_case(rows=300, items=2500, width=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(rows, width, generator=g)
    w = torch.randn(items, width, generator=g)
    b = torch.randn(items, generator=g)
    w[7] = w[3]  # exact ties: equal scores must rank the lower index first on both paths
    b[7] = b[3]
    y = torch.randint(0, items, (rows,), generator=g)
    y[:5] = 7
    return h, w, b, y


def test_streamed_ranking_equals_full_matrix_ranks():
    h, w, b, y = _scores_case()
    full = h @ w.t() + b
    ranks, loss = streamed_ranking(h, w, b, y, budget=300 * 97)  # odd blocks: rows and items both split
    assert torch.equal(ranks, target_ranks(full, y))
    expected = float(torch.nn.functional.cross_entropy(full, y, reduction="sum"))
    assert loss == pytest.approx(expected, rel=1e-5)


def test_streamed_topk_equals_topk():
    h, w, b, _ = _scores_case(seed=1)
    idx, val = streamed_topk(h, w, b, 10, budget=1500)
    full = h @ w.t() + b
    ref = torch.topk(full, 10, dim=1)
    # equal scores (items 3 and 7 tie) may come in either order, on either path; a block's matmul may
    # round differently from the whole matrix's (seen on an AVX2 EPYC), so values agree to float precision
    assert torch.allclose(val, ref.values, rtol=1e-6, atol=1e-5)
    assert torch.allclose(full.gather(1, idx), val, rtol=1e-6, atol=1e-5)
    assert (idx == ref.indices).float().mean() > 0.99


def test_evaluate_and_predict_agree_on_both_paths(learned, tasks, monkeypatch):
    lineage, _ = learned
    before = {t.name: lineage.evaluate(t) for t in tasks[:2]}
    seqs = tasks[0].sequences[tasks[0].rows("test")]
    top_before = lineage.predict(tasks[0].name, seqs, k=5)
    monkeypatch.setattr(metrics, "FULL_SCORES", 0)  # every ranking streams (the kinds read it at call time)
    monkeypatch.setattr(metrics, "CHUNK_SCORES", 64 * 200)
    for t in tasks[:2]:
        after = lineage.evaluate(t)
        for key in ("mrr@5", "hr@5", "ndcg@5", "count"):
            assert after[key] == before[t.name][key], (t.name, key)
        assert after["loss"] == pytest.approx(before[t.name]["loss"], rel=1e-5)
    top_after = lineage.predict(tasks[0].name, seqs, k=5)
    assert torch.equal(top_after[0], top_before[0]) and torch.allclose(top_after[1], top_before[1])


def test_chunked_sampled_softmax_matches_plain(monkeypatch):
    head = build_head("sequence", 16, 500, torch.Generator().manual_seed(1))
    hidden = torch.randn(4, 30, 16, generator=torch.Generator().manual_seed(2), requires_grad=True)
    targets = torch.randint(0, 501, (4, 30), generator=torch.Generator().manual_seed(3))  # 0 = padding
    out = []
    for threshold in (1 << 40, 0):
        monkeypatch.setattr(losses, "CHUNKED_LOGITS", threshold)
        monkeypatch.setattr(losses, "ROW_CHUNK_LOGITS", 1000)
        for p in (hidden, *head.parameters()):
            p.grad = None
        loss = losses.next_item_loss(hidden, targets, head, 0.2, torch.Generator().manual_seed(5))
        loss.backward()
        out.append((loss.detach(), hidden.grad.clone(), head.weight.grad.clone(), head.bias.grad.clone()))
    for plain, chunked in zip(*out):
        assert torch.allclose(plain, chunked, rtol=1e-5, atol=1e-7)
    assert float(out[0][0]) > 0
