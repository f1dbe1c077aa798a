"""Strategies that keep ONE backbone for all tasks: SinMoAll (fine-tunes it, forgets) and FineSmax
(freezes it after T1, trains heads only)."""
from __future__ import annotations

from conure_core.policies import FrozenPolicy, OpenPolicy
from conure_core.strategies.common import OneBackbone


class SinMoAll(OneBackbone):
    """One backbone fine-tuned task after task (all its parameters, embedding included); nothing is
    protected, so earlier tasks are served by weights later tasks have moved (catastrophic forgetting).
    Earlier heads are kept and frozen."""

    name = "sinmoall"

    def make_policy(self, model):
        return OpenPolicy()


class FineSmax(OneBackbone):
    """T1's backbone frozen after T1; each later task trains only its own head (softmax layer)."""

    name = "finesmax"

    def make_policy(self, model):
        return FrozenPolicy()
