"""``python -m benchmarks.compare --preset quick --seeds 3``: the paper's studies on bundled MovieLens-100K.

Runs Table 2 (every strategy, six tasks), Table 3 (T3 with/without T2, also 20/80), Table 4 (three task
orders), Figures 4 and 6 (pruning sweep), Table 5 (embedding pruning) and Table 6 (Transformer) over
the seeds, then writes docs/results.md and docs/figures/*.png. ``--only table2,table6`` picks studies;
``--render-only`` re-renders from docs/figures/compare_results.json. Readable lines, then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

STUDIES = ["table2", "table3", "table4", "sweep", "table5", "table6"]
ROOT = Path(__file__).resolve().parents[1]


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="quick", help="smoke | quick | quick-tcn | paper (see benchmarks/studies/settings.py)")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    p.add_argument("--only", default=",".join(STUDIES), help=f"comma list of studies: {','.join(STUDIES)}")
    p.add_argument("--strategies", default=None, help="Table 2 strategies (default: all)")
    p.add_argument("--docs", default=str(ROOT / "docs"), help="where results.md and figures/ go")
    p.add_argument("--workdir", default=None, help="task folders and prepared data (default: a temp dir)")
    p.add_argument("--render-only", action="store_true", help="re-render docs from the saved results JSON")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in STUDIES]
    if bad:
        print(f"error: unknown study {bad}; choose from {STUDIES}.", file=sys.stderr)
        return 2
    from benchmarks.studies import experiments as ex
    from benchmarks.studies.render import render
    from benchmarks.studies.settings import get_study

    docs = Path(args.docs)
    store = docs / "figures" / "compare_results.json"
    started = time.perf_counter()
    if args.render_only:
        results = json.loads(store.read_text())
    else:
        try:
            study0 = get_study(args.preset)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

        def log(event: dict) -> None:
            if args.quiet:
                return
            kind = event.get("event")
            if kind == "stage_end":
                print(f"    {event['task']:<11} {event['stage']:<8} best {event['best_epoch']}/{event['epochs_run']} "
                      f"valid {event['valid']:.4f} ({event['seconds']:.1f}s)", flush=True)
            elif kind == "strategy_done":
                print(f"  {event['strategy']} done in {event['seconds']:.0f}s", flush=True)

        from conure_core.run import bundled_tasks
        import torch

        with tempfile.TemporaryDirectory(prefix="conure-compare-") as tmp:
            tasks, _ = bundled_tasks(Path(args.workdir) if args.workdir else Path(tmp))
        by_name = {t.name: t for t in tasks}
        strategies = args.strategies.split(",") if args.strategies else None
        seeds: dict[str, dict] = {str(seed): {} for seed in range(args.seeds)}
        studies = {seed: get_study(args.preset, int(seed)) for seed in seeds}
        caches = {seed: ex.T1Cache(studies[seed], tasks[0], log) for seed in seeds}
        done: list[str] = []

        def save() -> dict:
            """Write what is complete for every seed, so an interrupted run still renders its finished studies."""
            results = {"meta": {"command": "python -m benchmarks.compare " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)),
                                "preset": args.preset, "note": study0.note, "preset_values": study0.preset.to_dict(), "seeds": args.seeds, "studies": list(done),
                                "device": "cpu" if not torch.cuda.is_available() else torch.cuda.get_device_name(),
                                "wall_s": time.perf_counter() - started},
                       "seeds": {k: {n: v[n] for n in done if n in v} | {"t1_seconds": caches[k].seconds}
                                 for k, v in seeds.items()}}
            store.parent.mkdir(parents=True, exist_ok=True)
            store.write_text(json.dumps(results, indent=1))
            return results

        # Study-major: every seed of one study before the next, so a cut-off run has whole studies.
        for name in only:
            for seed in seeds:
                t0 = time.perf_counter()
                print(f"seed {seed}: {name}", flush=True)
                if name == "table2":
                    seeds[seed][name] = ex.table2(tasks, studies[seed], caches[seed], log, strategies)
                else:
                    fn = getattr(ex, {"sweep": "pruning_sweep"}.get(name, name))
                    seeds[seed][name] = fn(by_name, studies[seed], caches[seed], log)
                print(f"seed {seed}: {name} done in {time.perf_counter() - t0:.0f}s", flush=True)
            done.append(name)
            results = save()
    text, headline = render(results, docs)
    print(text)
    figures = {"wall_s": results["meta"]["wall_s"], **{k: v for k, v in headline.items() if v == v}}
    targets = {}
    if args.preset == "quick" and set(only) == set(STUDIES) and args.seeds == 3:
        targets["wall_s"] = "<= 1800"
    if "conure_max_earlier_task_change" in figures:
        targets["conure_max_earlier_task_change"] = "<= 0"
    if "sinmoall_t1_drop_fraction" in figures:
        targets["sinmoall_t1_drop_fraction"] = ">= 0.5"
    print(json.dumps({"benchmark": "compare", "figures": figures, "targets": targets}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
