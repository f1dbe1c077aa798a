"""Study presets: the learner's model/training presets plus what the comparison study overrides.

Every strategy of one study shares one of these, so the comparison stays like-for-like.
- ``quick``: the learner's ``quick`` preset unchanged (six tasks in about 2 minutes per lineage).
- ``quick-tcn``: ``quick`` without its per-item parts (``t1_wide="none"``, no ``class_repr``): the
  paper's model alone, so forgetting, transfer and the pruning sweep measure the backbone and not
  T1's co-occurrence table (which no strategy changes after T1).
- ``smoke``: a reduced quick (two-block width-32 TCN, large batches for item tasks, few epochs): the
  whole study in a few minutes on a quiet machine, to check that everything runs.
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
        study = Study("quick", preset, sweep_epochs=max(2, preset.first.retrain_epochs or 2),
                      note="the learner's quick preset, unchanged (its exact values are listed below)")
    elif name == "quick-tcn":
        preset = get_preset("quick")
        preset.model.t1_wide, preset.model.class_repr = "none", None
        study = Study("quick-tcn", preset, sweep_epochs=max(2, preset.first.retrain_epochs or 2),
                      note="the learner's quick preset without its per-item parts (t1_wide none, class_repr none): "
                           "the paper's model alone")
    elif name == "smoke":
        preset = get_preset("quick")
        preset.model.width, preset.model.dilations = 32, [1, 4]
        preset.first = _replace(preset.first, epochs=8, retrain_epochs=2, patience=8)
        preset.later = _replace(preset.later, batch_size=4096, lr=3e-3, epochs=3, retrain_epochs=1, patience=2)
        # Class tasks have ~750 training users: one 4096 batch per epoch would hardly train them.
        preset.classes = _replace(preset.later, batch_size=64, lr=1e-3, epochs=6, retrain_epochs=2, patience=3)
        study = Study("smoke", preset, sweep_epochs=2,
                      note="a reduced quick preset: width 32, dilations [1,4]; T1 8 epochs without early stopping; "
                           "later item tasks batch 4096, lr 3e-3, 3 epochs, 1 retrain epoch; class tasks batch 64, "
                           "lr 1e-3, 6 epochs, 2 retrain epochs")
    else:
        raise ValueError(f"unknown study preset {name!r}; choose smoke, quick, quick-tcn or paper.")
    study.preset.model.seed = int(seed)
    return study
