"""``python -m conure_core.run --preset quick [--suite signal]``: a Conure lineage on bundled MovieLens-100K.

Builds the bundled task folders (suite ``default``: the six paper-style tasks; ``signal``: T1 plus
class tasks that carry signal, ``conure_core.data.signal_suite``), prepares them (no validation library: the pipeline's ``conure run``
adds the GX checks), learns them in order and prints the accuracy matrix next to the
popularity / majority-class baselines.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml

from conure_core.config import ConfigError, get_preset, manifest_overrides
from conure_core.continual import ContinualReport, run_lineage
from conure_core.kinds import kind_of
from conure_core.data.types import TaskData



def bundled_tasks(root: Path, suite: str = "default") -> tuple[list[TaskData], dict[str, dict]]:
    """A bundled suite's tasks as TaskData (in learning order) and their manifest overrides."""
    from conure_core.data.prepare import prepare_task_dir
    from conure_core.data.prepared import load_task
    from conure_core.data.suites import write_suite

    folders = write_suite(suite, Path(root) / "tasks")
    prepared_root = Path(root) / "prepared"
    t1_dir = prepare_task_dir(folders[0], prepared_root)
    prepared = [t1_dir] + [prepare_task_dir(f, prepared_root, t1_dir) for f in folders[1:]]
    tasks = [load_task(p) for p in prepared]
    overrides = {}
    for folder in folders:
        manifest = yaml.safe_load((folder / "task.yaml").read_text())
        found = manifest_overrides(manifest)
        if found:
            overrides[manifest["name"]] = found
    return tasks, overrides


def format_report(report: ContinualReport) -> str:
    """The accuracy matrix as a plain-text table, baselines in the last row."""
    names = report.tasks
    width = max(10, *(len(n) + 2 for n in names))
    head = "after".ljust(12) + "".join(n.rjust(width) for n in names) + "free".rjust(8)
    lines = ["metric: " + ", ".join(f"{n}={m}" for n, m in zip(names, report.metrics)), head]
    for i, row in enumerate(report.matrix):
        cells = "".join(("" if v is None else f"{v:.4f}").rjust(width) for v in row)
        lines.append(names[i].ljust(12) + cells + f"{report.free_capacity[i]:8.3f}")
    base = "".join(f"{report.baselines[n]['value']:.4f}".rjust(width) for n in names)
    lines.append("baseline".ljust(12) + base)
    lines.append("kind".ljust(12) + "".join(report.baselines[n]["name"].rjust(width) for n in names))
    beats = [kind_of(k).better(report.matrix[-1][j], report.baselines[n]["value"])
             for j, (n, k) in enumerate(zip(names, report.kinds))]
    lines.append("beats".ljust(12) + "".join(("yes" if b else "NO").rjust(width) for b in beats))
    kept = all(report.matrix[-1][j] == report.matrix[j][j] for j in range(len(names) - 1))
    lines.append(f"retention exact: {'yes' if kept else 'NO'}   backward transfer: {report.backward_transfer():+.6f}"
                 f"   seconds: {report.seconds:.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conure_core.run", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick", help="quick | paper")
    parser.add_argument("--suite", default="default", help="bundled suite: default | signal")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: the preset's, auto)")
    parser.add_argument("--workdir", default=None, help="where task folders and prepared data go (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="also print the report as one JSON line")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: the preset's; quick uses 1)")
    args = parser.parse_args(argv)
    try:
        preset = get_preset(args.preset)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.threads:
        preset = dataclasses.replace(preset, threads=args.threads)
    preset.apply_threads()

    def progress(event: dict) -> None:
        if args.quiet:
            return
        if event["event"] == "stage_end":
            print(f"  {event['task']:<11} {event['stage']:<8} best epoch {event['best_epoch']:>2}/{event['epochs_run']:<2} "
                  f"valid {event['metric']} {event['valid']:.4f} loss {event.get('valid_loss', float('nan')):.4f}"
                  f"{' (kept by loss)' if event.get('select') == 'loss' else ''}  ({event['seconds']:.1f}s)", flush=True)
        elif event["event"] == "prune_choice":
            curve = ", ".join(f"{c['ratio']:.2f}:{c['valid']:.4f}" for c in event["curve"])
            print(f"  {event['task']:<11} auto     ratio {event['ratio']:.2f} (Conure- valid {event['reference']:.4f}, "
                  f"epsilon {event['epsilon']:.0%}; ratio:valid {curve})", flush=True)
        elif event["event"] == "prune":
            print(f"  {event['task']:<11} prune    ratio {event['ratio']:.2f} -> free {event['free']:.3f}", flush=True)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="conure-run-") as tmp:
        root = Path(args.workdir) if args.workdir else Path(tmp)
        try:
            tasks, overrides = bundled_tasks(root, args.suite)
        except Exception as exc:  # the data layer's errors are one clear sentence already
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"preset {preset.name}: {len(tasks)} tasks " + ", ".join(f"{t.name}({t.kind}, {len(t.split)} rows)" for t in tasks))
        _, report = run_lineage(tasks, preset, overrides, progress=progress, device=args.device)
    print(format_report(report))
    print(f"total seconds (data + training): {time.perf_counter() - started:.1f}")
    if args.json:
        print(json.dumps(report.to_dict()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
