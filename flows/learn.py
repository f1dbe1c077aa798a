"""Flows that learn task folders onto a lineage: one task, or an ordered list (the default run).

Flow-run names say what a run does (``<lineage> <- liked``), so the Prefect UI lists readable runs."""
from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows import chain
from flows.chain import FlowRun, open_head, t1_of
from tasks import adapters
from tasks.errors import PipelineError
from tasks.reporting import report_of
from tasks.settings import Layout


def _kind_of(task_dir: Path) -> str:
    return adapters.task_kind(Path(task_dir))


def _run_name() -> str:
    """``<lineage> <- <task folder names>`` from the flow run's parameters."""
    from prefect.runtime import flow_run

    p = flow_run.parameters
    dirs = p.get("task_dirs") or ([p["task_dir"]] if p.get("task_dir") else [])
    what = ", ".join(Path(d).name for d in dirs) if dirs else f"bundled tasks ({p.get('preset') or 'quick'})"
    return f"{p.get('lineage', 'default')} <- {what}"


def learn_ref(fr: FlowRun, head, ref: dict):
    """One prepared task onto HEAD: train -> prune -> retrain -> evaluate -> register (a replay of a task
    HEAD already holds is all cache hits); returns the new HEAD."""
    slot = chain.place(head, ref)  # its position and the state it starts from
    chain.warn_capacity(head, slot)  # a new task expected to leave less than min_free: say so first
    trained = chain.stage(fr, head, slot, "train", slot.parent)  # all weights forward, free ones learn
    pruned = chain.stage(fr, head, slot, "prune", trained["state"])  # it keeps its largest free weights
    settled = chain.stage(fr, head, slot, "retrain", pruned["state"])  # its own weights, freed ones masked
    scores = chain.evaluate(fr, head, slot, settled["state"])  # every task so far, on its test split
    row = chain.register(fr, head, slot, settled["state"], scores)  # MLflow record + model version
    stages = {"train": trained, "prune": pruned, "retrain": settled}
    return chain.commit(fr, head, slot, stages, scores, row)


def learn_dirs(lineage: str, task_dirs: list[str], preset: str | None = None, floor: float = 0.5,
               lock_timeout: float | None = None, flow_name: str = "learn") -> dict:
    """Body of the learn flows: ingest each folder (T1 first) and learn it; returns the report."""
    params = {"lineage": lineage, "task_dirs": [str(d) for d in task_dirs], "preset": preset or "", "floor": floor}
    with FlowRun(lineage, flow_name, params, lock_timeout) as fr:
        head = open_head(fr.store, lineage, preset)
        fr.log_params({"strategy": head.strategy, "config": head.config})
        t1 = t1_of(head)
        for task_dir in task_dirs:
            is_t1 = adapters.kind_of(_kind_of(Path(task_dir))).t1
            if t1 is None and not is_t1:
                raise PipelineError(f"lineage '{lineage}' has no T1 yet, and {task_dir} is not a sequence task; "
                                    f"learn the lineage's sequence task first (conure learn T1_DIR --lineage {lineage}).")
            ref = chain.ingest(fr, Path(task_dir), None if is_t1 else t1, floor)  # validate (GX) + prepare
            if is_t1 and t1 is None:
                t1 = ref
            head = learn_ref(fr, head, ref)
        out = report_of(head)
        fr.publish(out)
        out["run"] = fr.stats.to_dict()
    return out


@flow(name="learn-task", flow_run_name=_run_name, log_prints=False)
def learn_task(task_dir: str, lineage: str = "default", preset: str | None = None, floor: float = 0.5,
               lock_timeout: float | None = None) -> dict:
    """Learn one task folder onto a lineage (a T1 sequence task first, then item/class tasks).

    task_dir: folder with task.yaml + data table; lineage: name (created when new); preset: quick |
    paper (only when creating); floor: least share of the task's users known to T1.
    """
    return learn_dirs(lineage, [task_dir], preset, floor, lock_timeout, "learn-task")


@flow(name="learn-tasks", flow_run_name=_run_name, log_prints=False)
def learn_tasks(task_dirs: list[str], lineage: str = "default", preset: str | None = None, floor: float = 0.5,
                lock_timeout: float | None = None) -> dict:
    """Learn an ordered list of task folders onto a lineage (re-running it is all cache hits)."""
    return learn_dirs(lineage, task_dirs, preset, floor, lock_timeout, "learn-tasks")


def bundled_task_dirs(suite: str = "default") -> list[str]:
    """A bundled MovieLens-100K suite's task folders under CONURE_HOME/bundled (written once):
    ``default`` (the six paper-style tasks) there, ``signal`` under ``bundled/signal``."""
    return [str(d) for d in adapters.bundled_task_dirs(Layout().bundled, suite)]


@flow(name="run-default", flow_run_name=_run_name, log_prints=False)
def run_default(lineage: str = "default", preset: str | None = "quick", lock_timeout: float | None = None,
                suite: str = "default") -> dict:
    """A whole bundled lineage, in order: suite ``default`` (six MovieLens-100K tasks) or ``signal``."""
    return learn_dirs(lineage, bundled_task_dirs(suite), preset, 0.5, lock_timeout, "run-default")
