"""Per-stage random streams, so a stage run alone from a saved state replays bit-identically."""
from __future__ import annotations

import hashlib

import torch


def stage_seed(seed: int, task_index: int, stage: str) -> int:
    """A 63-bit seed derived from (config seed, task index, stage name); stable across processes."""
    digest = hashlib.sha256(f"{seed}:{task_index}:{stage}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def stage_generator(seed: int, task_index: int, stage: str) -> torch.Generator:
    """A CPU generator for one stage; every random draw (init, shuffles, negatives) comes from it.

    Draws happen on the CPU and indices move to the device afterwards, so CPU and CUDA runs shuffle alike.
    """
    return torch.Generator().manual_seed(stage_seed(seed, task_index, stage))
