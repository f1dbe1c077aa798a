"""``python -m benchmarks.class_grid --suite signal --grid SECTION.FIELD=V1|V2 ...``: class-task recipes on validation.

An experiment tool for docs/accuracy.md: per seed, T1 is learned once per T1-shaping model config
(train, prune at the preset's T1 ratio, retrain); every class task of the suite is then learned right
after it (position 2) under each grid point, and scored on VALIDATION (accuracy and cross-entropy)
as Conure- (after train) and Conure (after prune + retrain at each ``--ratios`` value, default the
preset's). Test accuracy is printed too, marked, for the record only: choose on validation.
The grid is the product of the ``--grid`` axes (values split by '|'), on top of ``--set`` edits.
The logistic-regression probe's validation accuracy is printed beside, as the target.
"""
from __future__ import annotations

import argparse
import copy
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import emit

# Model fields that change T1 itself (a new T1 per value); the others only shape later tasks' user vector.
LATER_ONLY_MODEL = ("user_repr", "class_repr", "head_norm")


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.class_grid", description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="signal")
    p.add_argument("--preset", default="quick")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    p.add_argument("--grid", action="append", default=[], metavar="SECTION.FIELD=V1|V2")
    p.add_argument("--tasks", default=None, help="comma list of class tasks (default: all of the suite's)")
    p.add_argument("--ratios", default=None, help="comma list of prune ratios for the class task (default: the preset's)")
    p.add_argument("--out", default=None, help="write all values to this JSON file")
    return p.parse_args(argv)


def grid_points(axes: list[str]) -> list[list[str]]:
    """Every combination of the axes as a list of ``--set`` strings."""
    parsed = []
    for axis in axes:
        key, _, values = axis.partition("=")
        parsed.append([f"{key}={v}" for v in values.split("|")])
    return [list(p) for p in itertools.product(*parsed)] if parsed else [[]]


def t1_key(preset) -> str:
    model = {k: v for k, v in preset.model.to_dict().items() if k not in LATER_ONLY_MODEL}
    return json.dumps([model, preset.first.to_dict(), preset.prune_ratios[0]], sort_keys=True)


def learn_t1(t1, preset):
    from conure_core.lineage import Lineage

    lineage = Lineage.new(preset.model, t1.num_items, list(t1.vocab))
    lineage.learn(t1, preset.train_config(0))
    lineage.drop_cache()
    return lineage


def class_run(start, task, preset, overrides, ratios) -> dict:
    """Valid/test accuracy and valid loss of ``task`` learned after T1: Conure- and per prune ratio."""
    from conure_core.kinds import metric_of

    lineage = copy.deepcopy(start)
    for name in LATER_ONLY_MODEL:
        setattr(lineage.config, name, getattr(preset.model, name))
    cfg = preset.train_config(1, overrides.get(task.name), task.kind)
    lineage.learn(task, cfg, prune=False)
    metric = metric_of(task.kind)

    def scores(lin) -> dict:
        v, t = lin.evaluate(task, "valid"), lin.evaluate(task, "test")
        return {"valid": v[metric], "valid_loss": v["loss"], "test": t[metric]}

    out = {"minus": scores(lineage), "ratios": {}}
    lineage.drop_cache()
    for ratio in ratios if ratios is not None else [cfg.prune_ratio]:
        twin = copy.deepcopy(lineage)
        twin.prune(task.name, ratio)
        twin.retrain(task, cfg)
        out["ratios"][str(ratio)] = scores(twin)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    from benchmarks.baselines import logistic_baseline
    from benchmarks.overrides import load_preset
    from conure_core.run import bundled_tasks

    with tempfile.TemporaryDirectory(prefix="conure-grid-") as tmp:
        tasks, overrides = bundled_tasks(Path(tmp), args.suite)
    t1 = tasks[0]
    wanted = set(args.tasks.split(",")) if args.tasks else None
    classes = [t for t in tasks if t.kind == "class" and (wanted is None or t.name in wanted)]
    ratios = [float(r) for r in args.ratios.split(",")] if args.ratios else None
    probe = {t.name: logistic_baseline(t) for t in classes}
    print("logistic regression (valid / test accuracy): "
          + ", ".join(f"{n} {p['valid']:.3f} / {p['test']:.3f}" for n, p in probe.items()), flush=True)
    points = grid_points(args.grid)
    started = time.perf_counter()
    results = []
    cache: dict = {}
    for point in points:
        per_seed = []
        for seed in range(args.seeds):
            preset = load_preset(args.preset, args.set + point, seed)
            preset.apply_threads()
            key = (seed, t1_key(preset))
            if key not in cache:
                cache[key] = learn_t1(t1, preset)
            per_seed.append({t.name: class_run(cache[key], t, preset, overrides, ratios) for t in classes})
        results.append({"point": point, "seeds": per_seed})
        print(render_point(point, per_seed, classes), flush=True)
    figures = {"points": len(points), "wall_s": time.perf_counter() - started}
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "probe": probe, "results": results}, indent=1))
    emit("class_grid", figures)
    return 0


def render_point(point: list[str], per_seed: list[dict], classes) -> str:
    """One block per grid point: mean over seeds of valid acc / loss (test in brackets), per stage."""
    lines = [f"[{' '.join(point) or 'preset as is'}]"]
    stages = ["minus"] + [f"r{r}" for r in per_seed[0][classes[0].name]["ratios"]]
    for stage in stages:
        cells, accs, losses = [], [], []
        for t in classes:
            vals = [s[t.name]["minus"] if stage == "minus" else s[t.name]["ratios"][stage[1:]] for s in per_seed]
            va, vl, te = (float(np.mean([v[k] for v in vals])) for k in ("valid", "valid_loss", "test"))
            accs.append(va)
            losses.append(vl)
            cells.append(f"{t.name} {va:.3f}/{vl:.3f} [test {te:.3f}]")
        label = "conure-" if stage == "minus" else f"prune {stage[1:]}"
        lines.append(f"  {label:<10} valid acc/loss: " + "  ".join(cells)
                     + f"  | mean {np.mean(accs):.3f}/{np.mean(losses):.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
