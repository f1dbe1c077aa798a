"""Study presets: the learner's model/training presets plus what the comparison study overrides.

Every strategy of one study shares one of these, so the comparison stays like-for-like. The study
presets differ from the learner's presets only where 2 CPU cores force it (stated in docs/results.md):
- ``quick``: the learner's ``quick`` model and T1 config (without early stopping: T1's validation
  split is 42 users, whose MRR@5 often stays 0 and would keep the untrained epoch 0); later tasks use batch 2048 (4x fewer
  backbone passes per epoch than 512, the main cost on CPU), 4 epochs, 2 retrain epochs.
- ``smoke``: a width-32, two-block TCN, few epochs: minutes, for checking that everything runs.
- ``paper``: the learner's ``paper`` preset unchanged (a GPU job).
"""
from __future__ import annotations

import dataclasses

from conure_core.config import Preset, get_preset

SWEEP_RATIOS = [0.3, 0.5, 0.7, 0.8, 0.9, 0.95]


@dataclasses.dataclass
class Study:
    """One study preset: the Preset every strategy shares plus the sweep's retraining epochs."""

    name: str
    preset: Preset
    sweep_epochs: int
    note: str


def _replace(cfg, **changes):
    return dataclasses.replace(cfg, **changes)


def get_study(name: str, seed: int = 0) -> Study:
    """The study preset ``name`` with the model seeded by ``seed``."""
    if name == "paper":
        preset = get_preset("paper")
        study = Study("paper", preset, sweep_epochs=10, note="the learner's paper preset, unchanged")
    elif name == "quick":
        preset = get_preset("quick")
        preset.first = _replace(preset.first, patience=preset.first.epochs)
        preset.later = _replace(preset.later, batch_size=2048, epochs=4, retrain_epochs=2, patience=2)
        study = Study("quick", preset, sweep_epochs=4,
                      note="learner's quick preset (width 64, dilations [1,4,1,4]); T1 without early stopping "
                           "(its 42 validation users rarely show progress); later tasks: batch 2048, 4 epochs, "
                           "2 retrain epochs, patience 2")
    elif name == "smoke":
        preset = get_preset("quick")
        preset.model.width, preset.model.dilations = 32, [1, 4]
        preset.first = _replace(preset.first, epochs=4, retrain_epochs=1, patience=4)
        preset.later = _replace(preset.later, batch_size=4096, lr=3e-3, epochs=2, retrain_epochs=1, patience=1)
        study = Study("smoke", preset, sweep_epochs=2,
                      note="width 32, dilations [1,4]; T1 4 epochs (lr 2e-3, batch 64); later tasks batch 4096, "
                           "lr 3e-3, 2 epochs, 1 retrain epoch")
    else:
        raise ValueError(f"unknown study preset {name!r}; choose smoke, quick or paper.")
    study.preset.model.seed = int(seed)
    return study
