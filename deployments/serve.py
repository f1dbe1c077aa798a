"""Serve the pipeline's deployments from this process (``conure serve``): no work pool needed.

The same flows are declared in ``deployments/prefect.yaml`` for work pools (process, Docker,
Kubernetes); see docs/deployments.md.
"""
from __future__ import annotations

import tasks  # noqa: F401  (configures Prefect before it is imported)


def build_deployments(landing: str | None = None, lineage: str = "default", interval: int = 300) -> list:
    """The four deployments: landing watch on a schedule; run-default, learn-task and backfill on demand."""
    from flows.backfill import backfill
    from flows.landing import watch_landing
    from flows.learn import learn_task, run_default

    return [
        watch_landing.to_deployment(name="landing-watch", interval=interval, tags=["conure", "schedule"],
                                    parameters={"landing": landing, "lineage": lineage},
                                    description="Learn each new task folder of the landing folder once."),
        run_default.to_deployment(name="run-default", tags=["conure"], parameters={"lineage": lineage},
                                  description="The six bundled MovieLens-100K tasks (what `conure run` does)."),
        learn_task.to_deployment(name="learn-task", tags=["conure"], parameters={"lineage": lineage},
                                 description="Learn one task folder (parameter task_dir) onto a lineage."),
        backfill.to_deployment(name="backfill", tags=["conure", "backfill"], parameters={"lineage": lineage},
                               description="Learn orderings (parameter orders: ['clicks,loved,liked']) or a "
                                           "baseline strategy from a lineage prefix."),
    ]


def serve_all(landing: str | None = None, lineage: str = "default", interval: int = 300) -> None:
    """Block serving every deployment until interrupted (Ctrl-C)."""
    from prefect import serve

    serve(*build_deployments(landing, lineage, interval), print_starting_message=True)
