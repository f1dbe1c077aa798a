"""Serving speed of a registered lineage: pyfunc single-row latency and batch throughput, in process and
through `mlflow models serve`, beside a bare forward pass of the same model in the same process.

    python -m benchmarks.serving [--lineage default] [--threads 1] [--requests 300] [--batch 1000] [--no-rest]

Uses the lineage's registered ``head`` version in ``$CONURE_HOME`` (default ./.conure); first runs
`conure run` (a subprocess; every step a cache hit when the lineage is already learned) so the default
lineage exists and is registered by this code. Figures:
- ``pyfunc_single_p50_ms`` / ``_p99_ms``: ``model.predict`` of a one-row DataFrame (``user``, ``task``),
  requests cycling over users and every learned task; ``pyfunc_items_p50_ms``: the same rows as
  histories (``items``: the user's stored history);
- ``pyfunc_batch_rows_per_s``: one DataFrame of ``--batch`` rows spread over every task (median of 5);
- ``python_model_single_p50_ms``: the same rows through our ``ConureModel.predict`` called directly (the
  pyfunc model without MLflow's input validation around it);
- ``bare_single_p50_ms`` / ``bare_batch_rows_per_s``: the model's own top-k forward
  (``Lineage.predict``: backbone under the task's weights + head + top-k) on the same rows, no serving
  code; ``overhead_single`` / ``overhead_batch``: pyfunc time / bare time (1.0 = no overhead);
- ``rest_single_p50_ms`` / ``_p99_ms`` / ``rest_batch_rows_per_s``: the same requests as JSON over HTTP to
  `mlflow models serve` (one worker, one kept-alive connection).
``matmul_gflops``: fp32 1024 x 1024 matmul speed in this process, the same-run reference of how much of
the CPU the measurement got. Torch runs ``--threads`` intra-op threads here and in the scoring server (``OMP_NUM_THREADS``): on a
small shared CPU a second spinning thread slows these small matmuls down. Readable lines first; the
last line is one JSON object.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import emit, matmul_flops, timed_interleaved

REPO = Path(__file__).resolve().parent.parent
TARGETS = {"pyfunc_single_p50_ms": "<= 10", "pyfunc_batch_rows_per_s": ">= 10000"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def ensure_lineage(lineage: str, env: dict) -> None:
    """`conure run` for the default lineage (cache hits when learned); other lineages must exist."""
    if lineage != "default":
        return
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "conure_cli.main", "run", "--json"], cwd=REPO, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"serving: `conure run` failed: {proc.stderr.strip().splitlines()[-1:]}")
    print(f"conure run (default lineage, registered): {time.perf_counter() - started:.1f} s")


def latencies(fn, rows: list, repeats: int = 1) -> list[float]:
    """Seconds of ``fn(row)`` for each row (after one warm-up pass over the first rows)."""
    for row in rows[:10]:
        fn(row)
    out = []
    for _ in range(repeats):
        for row in rows:
            start = time.perf_counter()
            fn(row)
            out.append(time.perf_counter() - start)
    return out


def interleaved_latencies(fns: dict, rows: list) -> dict[str, list[float]]:
    """Per-row seconds of several callables on the same rows, round-robin (load changes hit all alike)."""
    for fn in fns.values():
        for row in rows[:10]:
            fn(row)
    out: dict[str, list[float]] = {k: [] for k in fns}
    for row in rows:
        for name, fn in fns.items():
            start = time.perf_counter()
            fn(row)
            out[name].append(time.perf_counter() - start)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rest(model_uri: str, env: dict, single: list[dict], batch: list[dict]) -> dict[str, float]:
    """Single-row latencies and batch throughput of `mlflow models serve` (one worker)."""
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="conure-serve-", suffix=".log")[1])
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager",
                             "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 180
        conn = None
        while conn is None:
            if proc.poll() is not None or time.time() > deadline:
                sys.exit(f"serving: `mlflow models serve` did not start: {log.read_text()[-1500:]}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                c.request("GET", "/ping")
                if c.getresponse().read() is not None:
                    conn = c
            except OSError:
                time.sleep(0.5)

        def post(records: list[dict]) -> list:
            body = json.dumps({"dataframe_records": records, "params": {"k": 10}})
            conn.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
            reply = json.loads(conn.getresponse().read())
            if "predictions" not in reply:
                sys.exit(f"serving: the scoring server answered {str(reply)[:300]}")
            return reply["predictions"]

        assert all("error" not in a for a in post(single[:5])), post(single[:5])
        one = latencies(lambda r: post([r]), single)
        many = timed_interleaved({"rest": lambda: post(batch)}, repeats=5, warmup=1)["rest"]
        return {"rest_single_p50_ms": 1e3 * percentile(one, 0.5), "rest_single_p99_ms": 1e3 * percentile(one, 0.99),
                "rest_batch_rows_per_s": len(batch) / many}
    finally:
        from conure_cli.main import stop_group

        stop_group(proc)  # the server's process group: SIGTERM, then SIGKILL after a grace period
        log.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lineage", default="default")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--requests", type=int, default=300, help="single-row requests per measurement")
    parser.add_argument("--batch", type=int, default=1000, help="rows of the batch")
    parser.add_argument("--no-rest", action="store_true", help="skip `mlflow models serve`")
    args = parser.parse_args()

    home = Path(os.environ.get("CONURE_HOME", REPO / ".conure")).resolve()
    env = dict(os.environ, CONURE_HOME=str(home), MLFLOW_TRACKING_URI=f"sqlite:///{home / 'mlflow.db'}",
               PREFECT_HOME=str(home / "prefect"), OMP_NUM_THREADS=str(args.threads),
               # the scoring server starts `uvicorn` from PATH, as in an activated virtualenv
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("PREFECT_API_URL", None)
    ensure_lineage(args.lineage, env)
    os.environ["MLFLOW_TRACKING_URI"] = env["MLFLOW_TRACKING_URI"]

    import mlflow
    import pandas as pd
    import torch

    torch.set_num_threads(args.threads)
    uri = f"models:/conure-{args.lineage}@head"
    started = time.perf_counter()
    model = mlflow.pyfunc.load_model(uri)
    print(f"loaded {uri} in {time.perf_counter() - started:.1f} s; torch threads {torch.get_num_threads()}")
    predictor = model.unwrap_python_model().predictor
    tasks, users = predictor.tasks, list(predictor.rows)
    single = [{"user": users[(7 * i) % len(users)], "task": tasks[i % len(tasks)]} for i in range(args.requests)]
    batch = [{"user": users[i % len(users)], "task": tasks[i % len(tasks)]} for i in range(args.batch)]
    k = {"k": 10}

    def bare(rows: list[dict]) -> None:  # the model's own forward + top-k, grouped by task as serving does
        by_task: dict[str, list[int]] = {}
        for r in rows:
            by_task.setdefault(r["task"], []).append(predictor.rows[r["user"]])
        for task, idx in by_task.items():
            predictor.model.predict(task, predictor.sequences[idx], 10)

    frames = [pd.DataFrame([r]) for r in single]
    histories = [pd.DataFrame([{"items": predictor.history_of(r["user"]), "task": r["task"]}]) for r in single]
    python_model = model.unwrap_python_model()  # our ConureModel without MLflow's input checks around it
    times = interleaved_latencies({"pyfunc": lambda i: model.predict(frames[i], params=k),
                                   "items": lambda i: model.predict(histories[i], params=k),
                                   "python_model": lambda i: python_model.predict(None, frames[i], k),
                                   "bare": lambda i: bare([single[i]])}, list(range(len(single))))
    batch_frame = pd.DataFrame(batch)
    batch_s = timed_interleaved({"pyfunc": lambda: model.predict(batch_frame, params=k),
                                 "bare": lambda: bare(batch)}, repeats=5, warmup=1)
    figures = {
        "pyfunc_single_p50_ms": 1e3 * percentile(times["pyfunc"], 0.5),
        "pyfunc_single_p99_ms": 1e3 * percentile(times["pyfunc"], 0.99),
        "pyfunc_items_p50_ms": 1e3 * percentile(times["items"], 0.5),
        "python_model_single_p50_ms": 1e3 * percentile(times["python_model"], 0.5),
        "bare_single_p50_ms": 1e3 * percentile(times["bare"], 0.5),
        "pyfunc_batch_rows_per_s": len(batch) / batch_s["pyfunc"],
        "bare_batch_rows_per_s": len(batch) / batch_s["bare"],
    }
    # the same-run reference: how much of this CPU the process got (DESIGN.md: ~325 GFLOP/s on 2 quiet cores)
    figures["matmul_gflops"] = matmul_flops(1024) / 1e9
    figures["overhead_single"] = figures["pyfunc_single_p50_ms"] / figures["bare_single_p50_ms"]
    figures["overhead_batch"] = figures["bare_batch_rows_per_s"] / figures["pyfunc_batch_rows_per_s"]
    if not args.no_rest:
        figures.update(rest(uri, env, single, batch))
    print(f"lineage '{args.lineage}' ({len(tasks)} tasks: {', '.join(tasks)}), {len(users)} stored users, "
          f"{args.requests} single-row requests, batch of {args.batch} rows over every task")
    for name, value in figures.items():
        print(f"  {name:<26} {value:12.3f}")
    emit("serving", figures, TARGETS)


if __name__ == "__main__":
    main()
