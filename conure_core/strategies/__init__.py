"""The paper's Table 2 systems behind one ``Strategy`` interface (``conure_core.strategies.base``).

``STRATEGIES`` maps a name to its class; every class is built as
``cls(preset, num_items, *, overrides=None, device=None, item_vocab=None, progress=None)``
(the baselines and Conure- also take ``start=``: a Lineage that has trained T1 only).
"""
from __future__ import annotations

from conure_core.strategies.base import Strategy
from conure_core.strategies.common import BaselineStrategy, StrategyError
from conure_core.strategies.conure import ConureStrategy
from conure_core.strategies.conure_minus import ConureMinus
from conure_core.strategies.dnn import DNN, BagMLP
from conure_core.strategies.fineall import FineAll
from conure_core.strategies.mtl import MTL
from conure_core.policies import Patch, PatchPolicy
from conure_core.strategies.peterrec import PeterRec
from conure_core.strategies.runner import run_strategy
from conure_core.strategies.single import FineSmax, SinMoAll
from conure_core.strategies.sinmo import SinMo

STRATEGIES = {
    "dnn": DNN, "sinmo": SinMo, "sinmoall": SinMoAll, "finesmax": FineSmax, "fineall": FineAll,
    "peterrec": PeterRec, "mtl": MTL, "conure-": ConureMinus, "conure": ConureStrategy,
}


def build_strategy(name: str, preset, num_items: int, **kwargs):
    """A strategy by name (see ``STRATEGIES``); unknown names get one clear error."""
    if name not in STRATEGIES:
        raise StrategyError(f"unknown strategy {name!r}; choose one of {sorted(STRATEGIES)}.")
    return STRATEGIES[name](preset, num_items, **kwargs)


__all__ = ["STRATEGIES", "Strategy", "BaselineStrategy", "StrategyError", "ConureStrategy", "ConureMinus", "DNN",
           "BagMLP", "FineAll", "MTL", "Patch", "PatchPolicy", "PeterRec", "FineSmax", "SinMoAll", "SinMo",
           "build_strategy", "run_strategy"]
