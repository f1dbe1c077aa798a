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
        preset.model.width, preset.model.dilations = 32, [1, 4]
        preset.first = _replace(preset.first, epochs=8, retrain_epochs=2, patience=8)
        preset.later = _replace(preset.later, batch_size=4096, lr=3e-3, epochs=3, retrain_epochs=1, patience=2)
        # Class tasks have ~750 training users: one 4096 batch per epoch would hardly train them.
        preset.classes = _replace(preset.later, batch_size=64, lr=1e-3, epochs=6, retrain_epochs=2, patience=3)
        study = Study("quick", preset, sweep_epochs=2,
                      note="width 32, dilations [1,4] (one third of the learner's quick TCN); T1: 8 epochs, lr 2e-3, "
                           "batch 64, no early stopping (its 42 validation users rarely show progress); later tasks: "
                           "batch 4096, lr 3e-3, 3 epochs, 1 retrain epoch, patience 2; class tasks: batch 64, lr 1e-3, "
                           "6 epochs, 2 retrain epochs, patience 3; prune ratios 70/80/90/80/90%; other fields as "
                           "the learner's quick preset")
    elif name == "smoke":
        preset = get_preset("quick")
        preset.model.width, preset.model.dilations = 16, [1, 4]
        preset.first = _replace(preset.first, epochs=2, retrain_epochs=1, patience=2)
        preset.later = _replace(preset.later, batch_size=4096, lr=3e-3, epochs=1, retrain_epochs=1, patience=1)
        preset.classes = _replace(preset.later, batch_size=64, lr=1e-3)
        study = Study("smoke", preset, sweep_epochs=1,
                      note="width 16, dilations [1,4]; T1 2 epochs; later tasks batch 4096, lr 3e-3, 1 epoch, "
                           "1 retrain epoch: checks that everything runs, numbers mean nothing")
    else:
        raise ValueError(f"unknown study preset {name!r}; choose smoke, quick or paper.")
    study.preset.model.seed = int(seed)
    return study
