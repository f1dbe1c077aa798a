"""The pipeline's own cost: `conure run` wall time vs the learner's compute inside it, and a re-run.

    python -m benchmarks.pipeline_overhead [--preset quick] [--keep DIR] [--cold] [--server-up]

Runs `conure run --json` twice in a fresh CONURE_HOME (subprocesses, as a user would):
- overhead_frac = first wall / learner compute - 1, where learner compute is the sum of the seconds
  spent inside the learner's calls (train / prune / retrain / evaluate) of every step that ran;
  the rest is process start, imports, Prefect's temporary server, ingestion + validation, state
  saving and MLflow tracking (target <= 0.25);
- rerun_frac = second wall / first wall, every step a cache hit (target <= 0.10).
A new home's Prefect database starts as a copy of a migrated one kept per Prefect version in the
user's cache (tasks/prefect_db.py): ``prefect_db_template`` says whether the first run found it
(``reused``) or migrated a new database and kept it (``built``, as on a machine's first run; force
it with ``--cold``, which points XDG_CACHE_HOME at an empty folder). ``--server-up`` starts the new
home's Prefect server first (`conure server start`, not timed), as every command after a home's
first one finds it: the first run then pays imports and the flow, not the server's start.
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

from tasks import prefect_db

REPO = Path(__file__).resolve().parent.parent


def home_env(home: Path, **extra: str) -> dict:
    """The environment of a `conure` command in ``home`` (its own MLflow store and Prefect server)."""
    env = dict(os.environ, CONURE_HOME=str(home), MLFLOW_TRACKING_URI=f"sqlite:///{home / 'mlflow.db'}",
               PREFECT_HOME=str(home / "prefect"), **extra)
    env.pop("PREFECT_API_URL", None)
    return env


def conure_run(home: Path, preset: str, **extra: str) -> tuple[float, dict, dict]:
    """(wall seconds, report, last_run.json) of one `conure run` in ``home``."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "conure_cli.main", "run", "--preset", preset, "--json"],
                          cwd=REPO, env=home_env(home, **extra), capture_output=True, text=True)
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
    parser.add_argument("--cold", action="store_true", help="no Prefect database template (an empty user cache)")
    parser.add_argument("--server-up", action="store_true",
                        help="start the home's Prefect server before the first run (not timed)")
    args = parser.parse_args()
    home = args.keep or Path(tempfile.mkdtemp(prefix="conure-overhead-"))
    if args.keep and home.exists():
        shutil.rmtree(home)
    cache = Path(tempfile.mkdtemp(prefix="conure-overhead-cache-")) if args.cold else None
    extra = {"XDG_CACHE_HOME": str(cache)} if cache else {}
    template = "reused" if prefect_db.template({**os.environ, **extra}).is_file() else "built"
    try:
        if args.server_up:
            subprocess.run([sys.executable, "-m", "conure_cli.main", "server", "start"], cwd=REPO,
                           env=home_env(home, **extra), capture_output=True, check=True)
        wall1, report, first = conure_run(home, args.preset, **extra)
        wall2, report2, second = conure_run(home, args.preset, **extra)
    finally:
        if not args.keep:  # the home's server would otherwise idle on for CONURE_SERVER_IDLE seconds
            subprocess.run([sys.executable, "-m", "conure_cli.main", "server", "stop"], cwd=REPO,
                           env=home_env(home, **extra), capture_output=True)
            shutil.rmtree(home, ignore_errors=True)
        if cache:
            shutil.rmtree(cache, ignore_errors=True)
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
        "prefect_db_template": template,
        "server_up_before": args.server_up,
    }
    same = report2["state_digest"] == report["state_digest"]
    print(f"first `conure run` ({args.preset}): {wall1:.1f} s wall, learner compute {compute:.1f} s "
          f"-> pipeline overhead {figures['overhead_frac']:.1%} of the compute "
          f"(process start + Prefect server {figures['startup_s']:.1f} s, in-flow {first['wall_s']:.1f} s; "
          f"Prefect database template {template}{'; server started before it' if args.server_up else ''})")
    print(f"second run: {wall2:.1f} s wall = {figures['rerun_frac']:.1%} of the first; steps: {second['states']}; "
          f"same final state: {same}")
    print(json.dumps({"benchmark": "pipeline_overhead", "figures": figures,
                      "targets": {"overhead_frac": "<= 0.25", "rerun_frac": "<= 0.10"}}))


if __name__ == "__main__":
    main()
