"""The pipeline's own cost: `conure run` wall time vs the learner's compute inside it, and a re-run.

    python -m benchmarks.pipeline_overhead [--preset quick] [--keep DIR]

Runs `conure run --json` twice in a fresh CONURE_HOME (subprocesses, as a user would):
- overhead_frac = first wall / learner compute - 1, where learner compute is the sum of the seconds
  spent inside the learner's calls (train / prune / retrain / evaluate) of every step that ran;
  the rest is process start, imports, Prefect's temporary server, ingestion + validation, state
  saving and MLflow tracking (target <= 0.25);
- rerun_frac = second wall / first wall, every step a cache hit (target <= 0.10).
Readable lines first; the last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def conure_run(home: Path, preset: str) -> tuple[float, dict, dict]:
    """(wall seconds, report, last_run.json) of one `conure run` in ``home``."""
    env = dict(os.environ, CONURE_HOME=str(home), MLFLOW_TRACKING_URI=f"sqlite:///{home / 'mlflow.db'}",
               PREFECT_HOME=str(home / "prefect"))
    env.pop("PREFECT_API_URL", None)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "conure_cli.main", "run", "--preset", preset, "--json"],
                          cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"pipeline_overhead: `conure run` failed: {proc.stderr.strip().splitlines()[-1:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    last = json.loads((home / "lineages" / "default" / "last_run.json").read_text())
    return wall, report, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--keep", type=Path, default=None, help="use (and keep) this CONURE_HOME")
    args = parser.parse_args()
    home = args.keep or Path(tempfile.mkdtemp(prefix="conure-overhead-"))
    if args.keep and home.exists():
        shutil.rmtree(home)
    try:
        wall1, report, first = conure_run(home, args.preset)
        wall2, report2, second = conure_run(home, args.preset)
    finally:
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    compute = first["compute_s"]
    figures = {
        "first_wall_s": round(wall1, 2),
        "learner_compute_s": round(compute, 2),
        "first_flow_wall_s": first["wall_s"],
        "startup_s": round(wall1 - first["wall_s"], 2),
        "overhead_frac": round(wall1 / compute - 1, 4) if compute else None,
        "rerun_wall_s": round(wall2, 2),
        "rerun_flow_wall_s": second["wall_s"],
        "rerun_frac": round(wall2 / wall1, 4),
        "rerun_cached_steps": second["states"].get("Cached", 0),
        "rerun_computed_steps": sum(v for k, v in second["states"].items() if k != "Cached"),
        "tasks": len(report["tasks"]),
    }
    same = report2["state_digest"] == report["state_digest"]
    print(f"first `conure run` ({args.preset}): {wall1:.1f} s wall, learner compute {compute:.1f} s "
          f"-> pipeline overhead {figures['overhead_frac']:.1%} of the compute "
          f"(process start + Prefect server {figures['startup_s']:.1f} s, in-flow {first['wall_s']:.1f} s)")
    print(f"second run: {wall2:.1f} s wall = {figures['rerun_frac']:.1%} of the first; steps: {second['states']}; "
          f"same final state: {same}")
    print(json.dumps({"benchmark": "pipeline_overhead", "figures": figures,
                      "targets": {"overhead_frac": "<= 0.25", "rerun_frac": "<= 0.10"}}))


if __name__ == "__main__":
    main()
