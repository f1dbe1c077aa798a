"""User encoders over T1 token sequences."""
from __future__ import annotations

import torch

from conure_core.backbones.base import Backbone
from conure_core.backbones.tcn import TCN
from conure_core.backbones.transformer import Transformer


def build_backbone(config, num_items: int, generator: torch.Generator | None = None) -> TCN | Transformer:
    """The backbone named by ``config.backbone`` (a ModelConfig), seeded by ``generator``."""
    if config.backbone == "tcn":
        return TCN(num_items, config.width, config.kernel, config.dilations, generator=generator,
                   dropout=getattr(config, "dropout", 0.0))
    if config.backbone == "transformer":
        # SASRec-style, paper section 5.6: one head, two blocks (config fields used when present).
        return Transformer(num_items, config.width, num_blocks=getattr(config, "blocks", 2),
                           max_len=getattr(config, "max_len", 256), generator=generator,
                           dropout=getattr(config, "dropout", 0.0))
    raise ValueError(f"backbone {config.backbone!r} is not available; use 'tcn' or 'transformer'.")


__all__ = ["Backbone", "TCN", "Transformer", "build_backbone"]
