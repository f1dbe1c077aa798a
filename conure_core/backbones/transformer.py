"""Transformer backbone (SASRec-style, paper section 5.6, SPEC section 2).

Causal self-attention with one head, two pre-LN residual blocks, learned positions. The prunable set is
the Q/K/V/output projections and the two feed-forward layers of every block (``prunable_names``);
embeddings, positions, LayerNorms and biases train in T1's first stage only, as with the TCN.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LN_EPS = 1e-8


class Projection(nn.Module):
    """One linear map with a replaceable weight: ``forward(x, weight=None)``.

    A module (not a bare parameter) so strategies can hook its output (PeterRec's patches); masked
    weights replace ``weight`` through ``torch.func.functional_call``, as with the TCN's ``CausalConv``.
    """

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d_out, d_in))
        self.bias = nn.Parameter(torch.zeros(d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class TransformerBlock(nn.Module):
    """``x = x + drop(O(attn(Q, K, V of LN1(x))))``; ``x = x + drop(FF2(drop(ReLU(FF1(LN2(x))))))`` (pre-LN;
    ``drop``: dropout while the module trains, also on the attention weights, as SASRec)."""

    def __init__(self, width: int, ff_width: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = dropout
        self.ln1 = nn.LayerNorm(width, eps=LN_EPS)
        self.q, self.k, self.v, self.o = (Projection(width, width) for _ in range(4))
        self.ln2 = nn.LayerNorm(width, eps=LN_EPS)
        self.ff1 = Projection(width, ff_width)
        self.ff2 = Projection(ff_width, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        # One head: [B, 1, L, C]; the math backend is deterministic on CPU and CUDA alike.
        p = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(self.q(h).unsqueeze(1), self.k(h).unsqueeze(1), self.v(h).unsqueeze(1),
                                           attn_mask=mask, dropout_p=p)
        x = x + F.dropout(self.o(a.squeeze(1)), p)
        return x + F.dropout(self.ff2(F.dropout(F.relu(self.ff1(self.ln2(x))), p)), p)


class Transformer(nn.Module):
    """SASRec-style encoder over T1 tokens (0 = pad, 1..V items, V+1 = separator).

    Positions are counted from the right end (sequences are left-padded, so the most recent item, or
    the separator, always gets position 0 whatever the row length, up to ``max_len``). A query attends
    to itself and to earlier non-padding keys, so padding never reaches a real position and a padded
    query (attending to itself only) never produces NaN.
    """

    PRUNABLE = ("q", "k", "v", "o", "ff1", "ff2")

    def __init__(self, num_items: int, width: int = 64, num_blocks: int = 2, max_len: int = 256,
                 ff_width: int | None = None, generator: torch.Generator | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        if width <= 0 or num_blocks <= 0 or max_len <= 0:
            raise ValueError("Transformer width, num_blocks and max_len must be positive.")
        self.width, self.num_items, self.max_len, self.dropout = width, num_items, max_len, dropout
        self.embedding = nn.Embedding(num_items + 2, width, padding_idx=0)
        self.positions = nn.Embedding(max_len, width)
        self.blocks = nn.ModuleList(TransformerBlock(width, ff_width or width, dropout) for _ in range(num_blocks))
        self.final_ln = nn.LayerNorm(width, eps=LN_EPS)
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Seeded init: embeddings N(0, 1/sqrt(C)), projections N(0, 1/sqrt(fan_in)), biases 0, LN identity."""
        for emb in (self.embedding.weight, self.positions.weight):
            emb.copy_(torch.randn(emb.shape, generator=generator) / math.sqrt(self.width))
        self.embedding.weight[0].zero_()
        for module in self.modules():
            if isinstance(module, Projection):
                w = module.weight
                w.copy_(torch.randn(w.shape, generator=generator) / math.sqrt(w.shape[1]))
                module.bias.zero_()
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()

    def prunable_names(self) -> list[str]:
        return [f"blocks.{i}.{p}.weight" for i in range(len(self.blocks)) for p in self.PRUNABLE]

    def attention_mask(self, tokens: torch.Tensor) -> torch.Tensor:
        """Bool [B, 1, L, L]: True where query t may read key s (s <= t and key not padding, or s == t)."""
        length = tokens.shape[1]
        idx = torch.arange(length, device=tokens.device)
        causal = idx.view(-1, 1) >= idx.view(1, -1)
        keys = (tokens != 0).unsqueeze(1)  # [B, 1, L]
        allowed = (causal.unsqueeze(0) & keys) | torch.eye(length, dtype=torch.bool, device=tokens.device)
        return allowed.unsqueeze(1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, L, C]; position t sees tokens <= t only."""
        length = tokens.shape[1]
        if length > self.max_len:
            raise ValueError(f"sequence length {length} exceeds the Transformer's max_len {self.max_len}; "
                             "build the backbone with a larger max_len or keep fewer recent items.")
        pos = torch.arange(length - 1, -1, -1, device=tokens.device)
        x = F.dropout(self.embedding(tokens) + self.positions(pos).unsqueeze(0), self.dropout, self.training)
        mask = self.attention_mask(tokens)
        for block in self.blocks:
            x = block(x, mask)
        return self.final_ln(x)
