"""Kill -9 at every point of a first `conure run`, re-run, and check that nothing was lost or left half-made.

    python -m benchmarks.crash_points [--points N] [--jobs J] [--keep DIR]

For each point: `conure run --json` on a fresh CONURE_HOME (its own session), killed with SIGKILL on
its whole process group at a point taken from the run's own progress: either by the run itself
(``CONURE_CRASH_AT``, see ``tasks/crash.py``) or from outside when a file appears under the home or
an ``EVENT`` line (``CONURE_EVENTS=1``) shows up. Then `conure run` again to the end, and
`conure report --lineage default --json`. Invariants, against one uninterrupted reference run:
same final ``state_digest`` and accuracy matrix; no temporary left (``.tmp-*``, ``*.tmp*``);
every state HEAD names is complete (its file's sha256 is its digest); no MLflow run RUNNING; one
registered version per task (no duplicate), aliases ``tasks-<n>`` on the version after n tasks.
Readable lines first; the last line is one JSON object.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUN_TIMEOUT_S = 1800


@dataclass
class Point:
    """Where to kill: ``crash_at`` (the run kills itself) or ``when(home, events)`` seen from outside."""

    name: str
    what: str
    crash_at: str = ""
    when: object = None  # callable(home: Path, events: list[dict]) -> bool
    delay_s: float = 0.0


def _exists(pattern: str):
    return lambda home, events: any(home.glob(pattern))


def _event(kind: str, n: int, **match):
    def seen(_home, events):
        hits = [e for e in events if e.get("event") == kind and all(e.get(k) == v for k, v in match.items())]
        return len(hits) >= n
    return seen


# ordered by what the issue asks for first; --points N takes the first N
POINTS = [
    Point("startup", "Prefect's server migrating its new database", when=_exists("prefect/prefect.db")),
    Point("store-migrate", "MLflow store mid-migration (400th SQL statement)", crash_at="mlflow-migrate:400"),
    Point("store-complete", "MLflow store migrated, not yet renamed into place", crash_at="mlflow-created"),
    Point("bundled-write", "bundled task folders written, not yet renamed", crash_at="bundled-write"),
    Point("ingest-write", "ingestion of clicks writing its prepared folder",
          crash_at="open.*/prepared/clicks/.tmp-*/meta.json"),
    Point("stage-start", "start of liked's train stage", crash_at="event.stage_start:4"),
    Point("mid-epoch", "0.3 s into liked/train's second epoch", when=_event("epoch", 1, task="liked", stage="train"),
          delay_s=0.3),
    Point("state-write", "liked/prune's state complete, folder not renamed", crash_at="state-write:5"),
    Point("state-before-head", "liked's last state written; evaluate, register, HEAD pending",
          crash_at="state-written:6"),
    Point("mlflow-logging", "an uncommitted MLflow metrics write (the 25th)", crash_at="sql.metrics:25"),
    Point("model-registration", "liked's model version committed; aliases and HEAD pending",
          crash_at="sqlc.model_versions:2"),
    Point("head-write", "loved's HEAD in its temp file, not renamed", crash_at="head-write:3"),
    Point("ingest-publish", "gender's prepared folder complete, not renamed", crash_at="rename.*/prepared/gender/.tmp-*"),
    Point("evaluated", "gender evaluated, not registered", crash_at="event.evaluated:4"),
    Point("last-head", "the final HEAD in its temp file", crash_at="head-write:6"),
]


def env_for(home: Path, crash_at: str = "") -> dict:
    env = dict(os.environ, CONURE_HOME=str(home), MLFLOW_TRACKING_URI=f"sqlite:///{home / 'mlflow.db'}",
               PREFECT_HOME=str(home / "prefect"), PREFECT_LOCAL_STORAGE_PATH=str(home / "prefect" / "results"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", GX_ANALYTICS_ENABLED="false", PYTHONUNBUFFERED="1")
    for key in ("PREFECT_API_URL", "CONURE_CRASH_AT", "CONURE_EVENTS"):
        env.pop(key, None)
    if crash_at:
        env["CONURE_CRASH_AT"] = crash_at
    return env


def conure(home: Path, *args: str, crash_at: str = "", timeout: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "conure_cli.main", *args], cwd=REPO, env=env_for(home, crash_at),
                          capture_output=True, text=True, timeout=timeout, start_new_session=True)


def killed_run(home: Path, point: Point) -> dict:
    """`conure run` until the point kills it; {"killed": bool, "seconds": float, "tail": str}."""
    env = env_for(home, point.crash_at)
    env["CONURE_EVENTS"] = "1"
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "conure_cli.main", "run", "--json"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    events: list[dict] = []
    tail: list[str] = []

    def read() -> None:
        for line in proc.stderr:
            if line.startswith("EVENT "):
                events.append(json.loads(line[6:]))
            else:
                tail[:] = (tail + [line.rstrip()])[-5:]

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        while proc.poll() is None and time.perf_counter() - started < RUN_TIMEOUT_S:
            if point.when is not None and point.when(home, list(events)):
                time.sleep(point.delay_s)
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        _reap(proc.pid)
    reader.join(10)
    return {"killed": proc.returncode == -signal.SIGKILL, "seconds": time.perf_counter() - started,
            "tail": " | ".join(tail)}


def _reap(pgid: int) -> None:
    """Whatever of the killed group is left (nothing should be) dies too."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def finish(home: Path) -> dict:
    """Run to completion, then read the report (as a user would after a crash)."""
    started = time.perf_counter()
    done = conure(home, "run", "--json")
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        return {"error": f"re-run failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}",
                "seconds": seconds}
    report = conure(home, "report", "--lineage", "default", "--json", timeout=300)
    if report.returncode != 0:
        return {"error": f"report failed: {report.stderr.strip().splitlines()[-1:]}", "seconds": seconds}
    return {"report": json.loads(report.stdout.strip().splitlines()[-1]), "seconds": seconds}


def temporaries(home: Path) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*")
                  if p.name.startswith(".tmp-") or ".tmp" in p.name)


def head_problems(home: Path) -> list[str]:
    """States named by HEAD that are missing or whose bytes do not hash to their digest."""
    head = json.loads((home / "lineages" / "default" / "HEAD.json").read_text())
    bad = []
    for task in head["tasks"]:
        for digest in {task["state_digest"], *task["stages"].values()}:
            path = home / "states" / digest / "state.safetensors"
            if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                bad.append(f"{task['name']}:{digest[:12]}")
    return bad


def mlflow_problems(home: Path, tasks: list[str]) -> tuple[list[str], dict]:
    """RUNNING runs, duplicated / missing registered versions, aliases not on the right version."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exps, max_results=5000)
    statuses: dict[str, int] = {}
    for r in runs:
        statuses[r.info.status] = statuses.get(r.info.status, 0) + 1
    bad = [f"{statuses['RUNNING']} run(s) RUNNING"] if statuses.get("RUNNING") else []
    versions = client.search_model_versions("name='conure-default'")
    digests = [v.tags.get("state_digest") for v in versions]
    if len(versions) != len(tasks) or len(set(digests)) != len(digests):
        bad.append(f"{len(versions)} registered versions for {len(tasks)} tasks ({len(set(digests))} distinct states)")
    for n in range(1, len(tasks) + 1):
        try:
            v = client.get_model_version_by_alias("conure-default", f"tasks-{n}")
            if v.tags.get("num_tasks") != str(n):
                bad.append(f"alias tasks-{n} on a version of {v.tags.get('num_tasks')} tasks")
        except Exception as exc:  # noqa: BLE001 - a missing alias is a finding, not a crash
            bad.append(f"alias tasks-{n}: {str(exc)[:80]}")
    return bad, statuses


def check(point: Point, reference: dict, keep: Path | None) -> dict:
    home = Path(tempfile.mkdtemp(prefix=f"conure-crash-{point.name}-", dir=keep))
    try:
        kill = killed_run(home, point)
        out = {"point": point.name, "killed_after_s": round(kill["seconds"], 1)}
        problems = [] if kill["killed"] else [f"not killed (the run ended first: {kill['tail'][-200:]})"]
        done = finish(home)
        out["rerun_s"] = round(done["seconds"], 1)
        if "error" in done:
            problems.append(done["error"])
        else:
            rep = done["report"]
            if rep["state_digest"] != reference["state_digest"]:
                problems.append(f"state digest {rep['state_digest'][:12]} != reference {reference['state_digest'][:12]}")
            if rep["matrix"] != reference["matrix"]:
                problems.append("accuracy matrix differs from the reference")
            left = temporaries(home)
            if left:
                problems.append(f"temporaries left: {left[:5]}")
            bad_states = head_problems(home)
            if bad_states:
                problems.append(f"HEAD names incomplete states: {bad_states}")
            bad_mlflow, statuses = mlflow_problems(home, rep["tasks"])
            problems += bad_mlflow
            out["run_statuses"] = statuses
        out["problems"] = problems
        return out
    finally:
        if keep is None:
            shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=len(POINTS), help=f"how many points (1-{len(POINTS)})")
    parser.add_argument("--jobs", type=int, default=1, help="points checked at once (each in its own home)")
    parser.add_argument("--keep", type=Path, default=None, help="keep every home under this folder")
    args = parser.parse_args()
    points = POINTS[:max(1, min(args.points, len(POINTS)))]
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    ref_home = Path(tempfile.mkdtemp(prefix="conure-crash-reference-", dir=args.keep))
    ref = finish(ref_home)
    if "error" in ref:
        sys.exit(f"crash_points: the reference run failed: {ref['error']}")
    reference = ref["report"]
    if args.keep is None:
        shutil.rmtree(ref_home, ignore_errors=True)
    print(f"reference run: {ref['seconds']:.1f} s, state {reference['state_digest'][:12]}, tasks {reference['tasks']}",
          flush=True)
    ok = 0
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [(p, pool.submit(check, p, reference, args.keep)) for p in points]
        for i, (p, fut) in enumerate(futures, 1):
            res = fut.result()
            how = f"CONURE_CRASH_AT={p.crash_at}" if p.crash_at else "killed from outside"
            verdict = "ok" if not res["problems"] else "FAILED: " + "; ".join(res["problems"])
            ok += not res["problems"]
            print(f"point {i:2d}/{len(points)} {p.name:<19} {p.what} ({how}): killed after {res['killed_after_s']} s, "
                  f"re-run {res['rerun_s']} s, runs {res.get('run_statuses', {})} -> {verdict}", flush=True)
    figures = {"points": len(points), "points_ok": ok, "reference_run_s": round(ref["seconds"], 1),
               "total_s": round(time.perf_counter() - started, 1)}
    print(json.dumps({"benchmark": "crash_points", "figures": figures, "targets": {"points_ok": f">= {len(points)}"}}))


if __name__ == "__main__":
    main()
