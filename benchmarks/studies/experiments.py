"""The paper's studies (Tables 2-6, Figures 4 and 6), one function per study and seed.

Each returns plain JSON-able dicts. T1 is trained once per seed and backbone (``T1Cache``): every
strategy trains T1 identically (same seeds, same stage), and tests/strategies checks that starting
from the shared copy gives bit-identical results to training T1 inside the strategy.
"""
from __future__ import annotations

import copy
import dataclasses
import time

import torch

from benchmarks.studies.settings import SWEEP_RATIOS, Study
from conure_core.cl_report import forward_transfer
from conure_core.config import Preset
from conure_core.data.types import TEST, TRAIN, TaskData
from conure_core.lineage import Lineage
from conure_core.kinds import metric_of
from conure_core.strategies import STRATEGIES, ConureMinus, run_strategy

TABLE2_ORDER = ["dnn", "sinmo", "sinmoall", "finesmax", "fineall", "peterrec", "mtl", "conure-"]


def metric(task: TaskData) -> str:
    return metric_of(task.kind)


def with_backbone(preset: Preset, backbone: str, prune_embedding: bool = False) -> Preset:
    data = preset.to_dict()
    data["model"] = {**data["model"], "backbone": backbone, "prune_embedding": prune_embedding}
    return Preset.from_dict(data)


class T1Cache:
    """The T1-only Lineage of each (backbone) for one seed, trained on first use."""

    def __init__(self, study: Study, t1: TaskData, log) -> None:
        self.study, self.t1, self.log = study, t1, log
        self.models: dict[str, Lineage] = {}
        self.seconds: dict[str, float] = {}

    def get(self, backbone: str = "tcn") -> Lineage:
        if backbone not in self.models:
            preset = with_backbone(self.study.preset, backbone)
            started = time.perf_counter()
            lineage = Lineage.new(preset.model, self.t1.num_items, list(self.t1.vocab))
            lineage.train(self.t1, preset.train_config(0), self.log)
            self.seconds[backbone] = time.perf_counter() - started
            self.models[backbone] = lineage
        return self.models[backbone]


def run(name: str, preset: Preset, tasks: list[TaskData], start: Lineage, log, reference=None) -> dict:
    strategy = STRATEGIES[name](preset, tasks[0].num_items, start=start, progress=log)
    out = {k: v.to_dict() for k, v in run_strategy(strategy, tasks, reference=reference).items()}
    if "conure" in out:
        out["conure"]["extra"]["free_capacity"] = strategy.lineage.free_capacity()["total"]
    return out


def table2(tasks: list[TaskData], study: Study, cache: T1Cache, log, only: list[str] | None = None) -> dict:
    """Every strategy on the six tasks; FWT against SinMo's diagonal (no transfer)."""
    out: dict[str, dict] = {}
    for name in only or TABLE2_ORDER:
        started = time.perf_counter()
        out.update(run(name, study.preset, tasks, cache.get(), log))
        log({"event": "strategy_done", "strategy": name, "seconds": time.perf_counter() - started})
    if "sinmo" in out:
        n = len(tasks)
        reference = [out["sinmo"]["matrix"][j][j] for j in range(n)]
        for rep in out.values():
            rep["fwt"] = forward_transfer(rep["matrix"], reference)
            rep["fwt_relative"] = forward_transfer(rep["matrix"], reference, relative=True)
    return out


def resplit_20_80(task: TaskData) -> TaskData:
    """Train 20% / valid 5% / test 75%: a quarter of the train rows stay train, the rest become test.

    Which train rows stay is a fixed function of the row index (every 4th), so all seeds share it.
    """
    split = task.split.clone()
    train = torch.nonzero(split == TRAIN).flatten()
    moved = train[torch.arange(train.numel()) % 4 != 0]
    split[moved] = TEST
    return dataclasses.replace(task, split=split, meta={**task.meta, "split": "20/5/75"})


def table3(tasks: dict[str, TaskData], study: Study, cache: T1Cache, log) -> dict:
    """T3 (loved) learned after T2 (liked) or directly after T1, with the standard and 20/80 splits."""
    t1, t2, t3 = tasks["clicks"], tasks["liked"], tasks["loved"]
    out = {}
    for label, (a, b) in {"standard": (t2, t3), "20/80": (resplit_20_80(t2), resplit_20_80(t3))}.items():
        with_t2 = run("conure-", study.preset, [t1, a, b], cache.get(), log)
        no_t2 = run("conure-", study.preset, [t1, b], cache.get(), log)
        out[label] = {"with_t2": {"conure-": with_t2["conure-"]["matrix"][2][2], "conure": with_t2["conure"]["final"][2]},
                      "no_t2": {"conure-": no_t2["conure-"]["matrix"][1][1], "conure": no_t2["conure"]["final"][1]}}
    return out


def table4(tasks: dict[str, TaskData], study: Study, cache: T1Cache, log) -> dict:
    """Three orders of T2 (liked), T3 (loved), T6 (occupation) after T1; Conure- and Conure per task."""
    names = {"order1": ["liked", "loved", "occupation"], "order2": ["liked", "occupation", "loved"],
             "order3": ["occupation", "liked", "loved"]}
    out = {}
    for label, order in names.items():
        seq = [tasks["clicks"]] + [tasks[n] for n in order]
        reps = run("conure-", study.preset, seq, cache.get(), log)
        minus = reps["conure-"]["matrix"]
        out[label] = {n: {"conure-": minus[i + 1][i + 1], "conure": reps["conure"]["final"][i + 1]}
                      for i, n in enumerate(order)}
    return out


def _sweep(lineage: Lineage, task: TaskData, cfg, study: Study, log) -> dict:
    """Per ratio: the test metric right after pruning, and retraining's validation metric per epoch."""
    out = {"unpruned": lineage.evaluate(task)[metric(task)], "ratios": {}}
    for ratio in SWEEP_RATIOS:
        twin = copy.deepcopy(lineage)
        twin.prune(task.name, ratio)
        pruned = twin.evaluate(task)[metric(task)]
        rcfg = dataclasses.replace(cfg, retrain_epochs=study.sweep_epochs, patience=study.sweep_epochs + 1)
        result = twin.retrain(task, rcfg, log)
        out["ratios"][str(ratio)] = {"pruned": pruned, "retrained": twin.evaluate(task)[metric(task)],
                                     "valid_per_epoch": [h["valid"] for h in result.history]}
    return out


def pruning_sweep(tasks: dict[str, TaskData], study: Study, cache: T1Cache, log) -> dict:
    """Figure 4 (T1) and Figure 6 (T2): prune 30-95% of the task's weights, with and without retraining."""
    start = cache.get()
    start.drop_cache()
    t1 = copy.deepcopy(start)
    fig4 = _sweep(t1, tasks["clicks"], study.preset.train_config(0), study, log)
    conure = ConureMinus(study.preset, start.num_items, start=start, progress=log)
    conure.learn(tasks["clicks"])
    conure.learn(tasks["liked"])  # T1 settled, T2 trained and left unpruned (Conure-)
    lineage = conure.lineage
    lineage.drop_cache()
    fig6 = _sweep(lineage, tasks["liked"], study.preset.train_config(1), study, log)
    return {"fig4_clicks": fig4, "fig6_liked": fig6}


def table5(tasks: dict[str, TaskData], study: Study, cache: T1Cache, log) -> dict:
    """Conure with the embedding pruned and retrained too (T1-T3), from the same trained T1."""
    preset = with_backbone(study.preset, "tcn", prune_embedding=True)
    base = cache.get()
    lineage = Lineage.new(preset.model, base.num_items, list(base.item_vocab))
    lineage.backbone.load_state_dict(base.backbone.state_dict())
    lineage.heads.update(copy.deepcopy(base.heads))
    lineage.infos.extend(copy.deepcopy(base.infos))
    reps = run("conure-", preset, [tasks["clicks"], tasks["liked"], tasks["loved"]], lineage, log)
    n = 3
    return {"conure-": [reps["conure-"]["matrix"][j][j] for j in range(n)], "conure": reps["conure"]["final"],
            "free_after": reps["conure"]["extra"]["free_capacity"]}


def table6(tasks: dict[str, TaskData], study: Study, cache: T1Cache, log) -> dict:
    """Transformer backbone (SASRec-style): FineAll, Conure-, Conure on T1-T3."""
    preset = with_backbone(study.preset, "transformer")
    seq = [tasks["clicks"], tasks["liked"], tasks["loved"]]
    start = cache.get("transformer")
    fine = run("fineall", preset, seq, start, log)["fineall"]
    reps = run("conure-", preset, seq, start, log)
    return {"fineall": fine["final"], "fineall_backbones": fine["backbones"],
            "conure-": [reps["conure-"]["matrix"][j][j] for j in range(3)], "conure": reps["conure"]["final"],
            "conure_bwt": reps["conure"]["bwt"]}
