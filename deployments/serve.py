"""Serve the pipeline's deployments from this process (``conure serve``): no work pool needed.

Schedules need a Prefect server with its scheduler running (the embedded temporary server runs
none), so unless ``PREFECT_API_URL`` points at one, ``serve_all`` starts ``prefect server start`` on
127.0.0.1 as a child process for as long as it serves, and stops it on exit. The same flows are
declared in ``deployments/prefect.yaml`` for work pools (process, Docker, Kubernetes);
see docs/deployments.md.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tasks.errors import PipelineError
from tasks.prefect_server import stop_process
from tasks.settings import Layout, child_env


def landing_trigger():
    """The event trigger of the landing watch: a sweep of the landing folder whose marker just landed
    (``python -m flows.landing_events`` emits the event; the same trigger as in prefect.yaml)."""
    from prefect.events import DeploymentEventTrigger

    from flows.landing_events import EVENT

    return DeploymentEventTrigger(match={"prefect.resource.id": "conure.landing.*"}, expect={EVENT},
                                  parameters={"landing": "{{ event.payload.landing }}"})


def build_deployments(landing: str | None = None, lineage: str = "default", interval: int = 300,
                      preset: str | None = None) -> list:
    """The four deployments: landing watch on a schedule; run-default, learn-task and backfill on demand."""
    from flows.backfill import backfill
    from flows.landing import watch_landing
    from flows.learn import learn_task, run_default

    return [
        watch_landing.to_deployment(name="landing-watch", interval=interval, tags=["conure", "schedule"],
                                    concurrency_limit=1,  # a slow sweep never overlaps the next one
                                    parameters={"landing": landing, "lineage": lineage, "preset": preset},
                                    triggers=[landing_trigger()],
                                    description="Learn each new task folder of the landing folder once."),
        run_default.to_deployment(name="run-default", tags=["conure"], parameters={"lineage": lineage},
                                  description="The six bundled MovieLens-100K tasks (what `conure run` does)."),
        learn_task.to_deployment(name="learn-task", tags=["conure"], parameters={"lineage": lineage},
                                 description="Learn one task folder (parameter task_dir) onto a lineage."),
        backfill.to_deployment(name="backfill", tags=["conure", "backfill"], parameters={"lineage": lineage},
                               description="Learn orderings (parameter orders: ['clicks,loved,liked']) or a "
                                           "baseline strategy from a lineage prefix."),
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_server(timeout: float = 180.0):
    """A ``prefect server start`` child on 127.0.0.1 (logs in PREFECT_HOME/server.log); yields its API URL."""
    port = _free_port()
    log_path = Path(os.environ.get("PREFECT_HOME", Layout().prefect_home)) / "server.log"
    log = open(log_path, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env=child_env())
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.time() + timeout
        while True:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            if proc.poll() is not None or time.time() > deadline:
                raise PipelineError(f"the local Prefect server did not start within {timeout:.0f} s; "
                                    f"see {log_path}.")
            time.sleep(1)
        yield url
    finally:
        stop_process(proc, grace=20)
        log.close()


def serve_all(landing: str | None = None, lineage: str = "default", interval: int = 300,
              preset: str | None = None) -> None:
    """Block serving every deployment until interrupted (Ctrl-C)."""
    from prefect import serve
    from prefect.settings import PREFECT_API_URL, temporary_settings

    deployments = lambda: build_deployments(landing, lineage, interval, preset)  # noqa: E731
    if os.environ.get("PREFECT_API_URL"):
        serve(*deployments(), print_starting_message=True)
        return
    with local_server() as url:
        print(f"Prefect server: {url.removesuffix('/api')} (UI); to trigger a deployment from another shell: "
              f"PREFECT_API_URL={url} .venv/bin/prefect deployment run backfill/backfill -p ...", flush=True)
        with temporary_settings(updates={PREFECT_API_URL: url}):
            try:
                serve(*deployments(), print_starting_message=True)
            except KeyboardInterrupt:
                pass
