"""``python -m benchmarks.floor [--suite default|signal] [--preset P] [--seeds 3]``: Conure against simple baselines.

For every task of a bundled lineage, on the same splits: most-popular (T1, item tasks), the
majority class or the train mean (regression); a bag-of-T1-items baseline with its setting chosen on
validation (L2 logistic regression for classes, ridge regression for numbers, item co-occurrence for
items and T1; ``benchmarks.baselines``); the
project's DNN strategy (a fresh two-layer MLP over the bag, per task); and Conure's test metric after
the whole lineage. Seeded parts (Conure, DNN) run once per seed: mean +/- std (sample std) over
seeds; the fitted baselines are deterministic (std 0). ``margin_se`` = (Conure - best baseline) /
sqrt(std_c^2/n + std_b^2/n), sign-flipped for a lower-is-better metric (RMSE) so > 0 always means
Conure is better; with a zero standard error it is 0 for equal means and +/-99 otherwise.
``--set model.width=64`` etc. edit the preset (``benchmarks.overrides``); ``--tasks`` keeps a prefix
subset (T1 always). Readable lines, then the JSON line with ``min_margin_se`` and ``tasks_below``.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import emit

MAX_MARGIN = 99.0


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.floor", description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="default", help="bundled suite: default | signal")
    p.add_argument("--preset", default="quick", help="quick | paper | a preset JSON file")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 for Conure and DNN")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="preset edit (repeatable)")
    p.add_argument("--tasks", default=None, help="comma list of task names to keep (T1 is always kept)")
    p.add_argument("--no-dnn", action="store_true", help="skip the DNN strategy")
    p.add_argument("--workdir", default=None, help="task folders and prepared data (default: a temp dir)")
    p.add_argument("--out", default=None, help="also write every figure and per-seed value to this JSON file")
    p.add_argument("--quiet", action="store_true", help="no per-stage lines")
    return p.parse_args(argv)


def margin_se(conure: list[float], base: list[float]) -> float:
    """(mean Conure - mean baseline) in standard errors of that difference over seeds."""
    diff = float(np.mean(conure) - np.mean(base))
    se = math.sqrt(sum(np.var(v, ddof=1) / len(v) if len(v) > 1 else 0.0 for v in (conure, base)))
    if se == 0.0:
        return 0.0 if abs(diff) < 1e-12 else math.copysign(MAX_MARGIN, diff)
    return max(-MAX_MARGIN, min(MAX_MARGIN, diff / se))


def select_tasks(tasks, overrides, names: str | None):
    if not names:
        return tasks, overrides
    wanted = {n.strip() for n in names.split(",") if n.strip()}
    unknown = wanted - {t.name for t in tasks}
    if unknown:
        raise ValueError(f"--tasks {sorted(unknown)} not in this suite; its tasks: {[t.name for t in tasks]}.")
    kept = [t for i, t in enumerate(tasks) if i == 0 or t.name in wanted]
    return kept, {k: v for k, v in overrides.items() if k in {t.name for t in kept}}


def run_seed(tasks, overrides, preset, with_dnn: bool, log) -> dict:
    """Conure (and DNN) test / valid metric of every task after the whole lineage, for one seed."""
    from conure_core.continual import run_lineage
    from conure_core.kinds import metric_of
    from conure_core.strategies import build_strategy

    out: dict = {}
    started = time.perf_counter()
    lineage, report = run_lineage(tasks, preset, overrides, progress=log)
    out["conure"] = {t.name: {"test": report.matrix[-1][j], "valid": lineage.evaluate(t, "valid")[metric_of(t.kind)]}
                     for j, t in enumerate(tasks)}
    out["conure_seconds"] = time.perf_counter() - started
    out["conure_best_epochs"] = {f"{s['task']}/{s['stage']}": s["best_epoch"] for s in report.stages}
    if with_dnn:
        started = time.perf_counter()
        # The project's DNN as it is: its user vector stays the bag MLP's output and its T1 has no
        # wide part (user_repr / class_repr / t1_wide on the preset are Conure's, not the baseline's).
        plain = copy.deepcopy(preset)
        plain.model.user_repr, plain.model.class_repr, plain.model.t1_wide = "separator", None, "none"
        dnn = build_strategy("dnn", plain, tasks[0].num_items, overrides=overrides, item_vocab=list(tasks[0].vocab))
        for t in tasks:
            dnn.learn(t)
        out["dnn"] = {t.name: {s: dnn.evaluate(t, s)[metric_of(t.kind)] for s in ("test", "valid")} for t in tasks}
        out["dnn_seconds"] = time.perf_counter() - started
    return out


def summarise(tasks, fitted: dict, seeds: list[dict]) -> tuple[list[dict], dict]:
    """One row per task (values per system, best baseline, margin) and the headline figures."""
    from conure_core.kinds import kind_of

    rows = []
    for t in tasks:
        sign = 1.0 if kind_of(t.kind).higher_is_better else -1.0
        systems = {b["name"]: {"test": [b["test"]], "valid": [b["valid"]], "params": b["params"]} for b in fitted[t.name]}
        if "dnn" in seeds[0]:
            systems["dnn"] = {"test": [s["dnn"][t.name]["test"] for s in seeds],
                              "valid": [s["dnn"][t.name]["valid"] for s in seeds], "params": {}}
        conure = {"test": [s["conure"][t.name]["test"] for s in seeds],
                  "valid": [s["conure"][t.name]["valid"] for s in seeds]}
        best = max(systems, key=lambda n: sign * np.mean(systems[n]["test"]))
        c, b = (float(np.mean(v)) for v in (conure["test"], systems[best]["test"]))
        rows.append({"task": t.name, "kind": t.kind, "metric": kind_of(t.kind).metric, "conure": conure,
                     "baselines": systems, "best": best,
                     "margin_se": sign * margin_se(conure["test"], systems[best]["test"]),
                     "gap": sign * (c - b), "rel_gap": sign * (c - b) / max(abs(b), 1e-12)})
    margins = [r["margin_se"] for r in rows]
    head = {"min_margin_se": min(margins), "tasks_below": sum(m < -1.0 for m in margins),
            "mean_rel_gap": float(np.mean([r["rel_gap"] for r in rows]))}
    return rows, head


def _ms(values: list[float]) -> str:
    return f"{np.mean(values):.4f}" + (f"+-{np.std(values, ddof=1):.4f}" if len(values) > 1 else "")


def render(rows: list[dict]) -> str:
    lines = [f"{'task':<11}{'metric':>9}  {'conure test':>16} {'(valid)':>8}  baselines test (valid)  -> best, margin"]
    for r in rows:
        c = r["conure"]
        bases = "  ".join(f"{n} {_ms(v['test'])} ({np.mean(v['valid']):.4f})" for n, v in r["baselines"].items())
        lines.append(f"{r['task']:<11}{r['metric']:>9}  {_ms(c['test']):>16} ({np.mean(c['valid']):.4f})  {bases}  "
                     f"-> {r['best']}, {r['margin_se']:+.2f} SE ({r['rel_gap']:+.1%})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    from benchmarks.baselines import bag_baseline, naive
    from benchmarks.overrides import load_preset
    from conure_core.config import ConfigError
    from conure_core.data.errors import DataError
    from conure_core.run import bundled_tasks

    try:
        presets = [load_preset(args.preset, args.set, seed) for seed in range(args.seeds)]
        with tempfile.TemporaryDirectory(prefix="conure-floor-") as tmp:
            tasks, overrides = bundled_tasks(Path(args.workdir) if args.workdir else Path(tmp), args.suite)
        tasks, overrides = select_tasks(tasks, overrides, args.tasks)
    except (ConfigError, DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.seeds < 1:
        print("error: --seeds must be at least 1.", file=sys.stderr)
        return 2
    presets[0].apply_threads()
    started = time.perf_counter()
    t1_targets = presets[0].model.t1_targets

    def log(event: dict) -> None:
        if not args.quiet and event.get("event") == "stage_end":
            print(f"    {event['task']:<11} {event['stage']:<8} best {event['best_epoch']}/{event['epochs_run']} "
                  f"valid {event['valid']:.4f} ({event['seconds']:.1f}s)", flush=True)

    print(f"floor: suite {args.suite}, preset {args.preset} {' '.join(args.set)}, {args.seeds} seed(s), tasks "
          + ", ".join(f"{t.name}({t.kind})" for t in tasks), flush=True)
    fitted = {t.name: [naive(t, t1_targets), bag_baseline(t, t1_targets)] for t in tasks}
    seeds = []
    for seed, preset in enumerate(presets):
        print(f"seed {seed}", flush=True)
        seeds.append(run_seed(tasks, overrides, preset, not args.no_dnn, log))
        print(f"seed {seed}: conure {seeds[-1]['conure_seconds']:.0f}s"
              + (f", dnn {seeds[-1]['dnn_seconds']:.0f}s" if "dnn_seconds" in seeds[-1] else ""), flush=True)
    rows, head = summarise(tasks, fitted, seeds)
    print(render(rows))
    print(f"min margin {head['min_margin_se']:+.2f} SE, tasks below their best baseline by > 1 SE: "
          f"{head['tasks_below']}, mean relative gap {head['mean_rel_gap']:+.1%}")
    figures: dict = {"seeds": args.seeds, **head, "wall_s": time.perf_counter() - started}
    for r in rows:
        figures[f"{r['task']}_conure"] = float(np.mean(r["conure"]["test"]))
        figures[f"{r['task']}_conure_valid"] = float(np.mean(r["conure"]["valid"]))
        for name, v in r["baselines"].items():
            figures[f"{r['task']}_{name}"] = float(np.mean(v["test"]))
        figures[f"{r['task']}_margin_se"] = r["margin_se"]
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "preset": presets[0].to_dict(), "rows": rows,
                                              "seeds": seeds, "figures": figures}, indent=1))
    emit("floor", figures, {"min_margin_se": ">= -1", "tasks_below": "<= 0", "mean_rel_gap": ">= 0"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
