"""The steps the flows are made of, each a call of a cached Prefect task, and their per-flow-run context.

``FlowRun`` holds the lineage lock and the MLflow parent run of one flow run; ``ingest``, ``place``,
``stage``, ``evaluate``, ``register`` and ``commit`` are the nodes of a task's DAG, which the flows
(``flows/learn.py``'s ``learn_ref``) spell out in order.
"""
from __future__ import annotations

import contextlib
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tasks import adapters, artifacts, caching, progress, steps
from tasks.errors import PipelineError
from tasks.store import Head, LearnedTask, LineageStore, write_json


def run_logger():
    """Prefect's run logger inside a flow or task run (shown in the UI), else a plain logger."""
    import logging

    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("conure")


def warn(message: str) -> None:
    """A warning for the person at the terminal (stderr) and for the Prefect UI (run logger)."""
    print(message, file=sys.stderr, flush=True)
    run_logger().warning(message)


@dataclass
class Stats:
    """What a flow run did: Prefect states by name, learner compute seconds, wall seconds."""

    states: dict[str, int] = field(default_factory=dict)
    compute_s: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def call(self, task_fn, **kwargs):
        """Run a Prefect task, count its final state (Completed / Cached), return its result."""
        state = caching.for_home(task_fn)(return_state=True, **kwargs)
        self.states[state.name] = self.states.get(state.name, 0) + 1
        what = (kwargs.get("ref") or (kwargs.get("refs") or [{}])[-1]).get("name") or Path(kwargs.get("task_dir", "")).name
        progress.emit({"event": "step", "name": f"{task_fn.name} {what}".strip(), "state": state.name})
        result = state.result()  # re-raises the task's own exception on failure
        if state.name != "Cached":
            self.compute_s += float(result.get("compute_s", 0.0)) if isinstance(result, dict) else 0.0
        return result

    def to_dict(self) -> dict:
        return {"states": dict(self.states), "compute_s": round(self.compute_s, 3),
                "wall_s": round(time.perf_counter() - self.started, 3),
                "all_cached": set(self.states) <= {"Cached"}}


class FlowRun:
    """One flow run on one lineage: its lock, its MLflow parent run, its stats.

    experiment: the MLflow experiment to log into (a backfill: its source lineage's); tags: added
    to every MLflow run of this flow run (a backfill: its order and strategy).

    The MLflow parent run starts on first use (``parent_run``: the first step that computes, or a
    failure): a re-run whose steps are all cache hits learned nothing, leaves no MLflow run and
    imports no MLflow; the Prefect flow run still records it, with every step Cached."""

    def __init__(self, lineage: str, flow: str, params: dict, lock_timeout: float | None = None,
                 experiment: str | None = None, tags: dict[str, str] | None = None):
        self.lineage, self.flow, self.params = lineage, flow, dict(params)
        self.lock_timeout = lock_timeout
        self.experiment, self.tags = experiment, dict(tags or {})
        self.store = LineageStore()
        self.stats = Stats()
        self.tracker = None
        self.run_id = ""
        self.registered: tuple[str, str | None] = ("", None)  # (task, MLflow run URL) of the last register step
        self._token = f"flow-run-{id(self)}"
        self._open = self.store.layout.lineage_dir(lineage) / "mlflow_run.open"  # a parent run not ended yet
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> "FlowRun":
        artifacts.tag_flow_run(self.lineage)  # the Prefect flow run tagged lineage:<name>
        self._stack.enter_context(self.store.lock(self.lineage, self.lock_timeout, notify=warn))
        try:
            if self._open.exists():  # a run killed before it ended its MLflow run: close that now
                self.parent_run()
            steps.open_flow_run(self._token, self.parent_run)
            self._stack.callback(steps.close_flow_run, self._token)
        except BaseException:
            self._stack.close()
            raise
        return self

    def log_params(self, params: dict) -> None:
        """Parameters of the MLflow parent run (logged when it starts, or now if it has)."""
        self.params.update(params)
        if self.run_id:
            self.tracker.log_params(self.run_id, params)

    def parent_run(self) -> str:
        """The MLflow parent run of this flow run, started on the first call."""
        if self.run_id:
            return self.run_id
        from tasks.tracking import source_tags

        self.tracker = steps.tracker_for(self.lineage, self.experiment)
        self.tracker.close_stale_runs()  # we hold the lock: any RUNNING run of this lineage was killed
        self.run_id = self.tracker.start_run(f"{self.flow}:{_flow_run_name()}",
                                             tags={**source_tags(self.flow), **self.tags, "conure.flow": self.flow,
                                                   "prefect.flow_run": _flow_run_id()},
                                             params=self.params)
        self._open.parent.mkdir(parents=True, exist_ok=True)
        self._open.write_text(self.run_id)
        run_logger().info(f"lineage '{self.lineage}': MLflow run {self.tracker.run_url(self.run_id)}")
        return self.run_id

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            summary = self.stats.to_dict()
            # a failure is recorded even before any step computed; an interrupt (Ctrl-C) only ends a started run
            if self.run_id or isinstance(exc, Exception):
                self.parent_run()
                if exc is not None and type(exc).__name__ == "ContractError":  # a failed validation, with its run
                    self._log_failed_validation(exc)
                self.tracker.set_tags(self.run_id, {"conure.states": summary["states"],
                                                    "conure.all_cached": summary["all_cached"]})
                self.tracker.log_metrics(self.run_id, {"wall_seconds": summary["wall_s"],
                                                       "compute_seconds": summary["compute_s"]})
                self.tracker.end_run(self.run_id, "FINISHED" if exc is None else "FAILED")
                self._open.unlink(missing_ok=True)
            if exc is None:
                write_json(self.store.layout.lineage_dir(self.lineage) / "last_run.json",
                           {"flow": self.flow, "lineage": self.lineage, **summary})
        finally:
            self._stack.close()

    def _log_failed_validation(self, exc: BaseException) -> None:
        import json

        report = getattr(exc, "report_dir", None)
        summary = {"ok": False, "error": " ".join(str(exc).split()), "file": getattr(exc, "file", None),
                   "report": str(report or "")}
        with contextlib.suppress(Exception):
            self.tracker.log_bytes(self.run_id, json.dumps(summary, indent=1).encode(), "validation/summary.json")
            if report and Path(report).is_dir():
                self.tracker.log_dir(self.run_id, Path(report), "gx_report")
        artifacts.prefect_artifact("markdown", key=artifacts.artifact_key(self.lineage, "validation-failed"),
                                   markdown=artifacts.validation_markdown(summary), description="failed validation")
        run_logger().error(f"validation failed: {summary['error']}")

    def publish(self, report: dict) -> None:
        """Prefect artifacts of this flow run: the accuracy matrix table and the link to its MLflow run
        (a run of cache hits has none: then to the run that registered its last task)."""
        artifacts.prefect_artifact("table", key=artifacts.artifact_key(self.lineage, "accuracy-matrix"),
                                   table=artifacts.matrix_rows(report),
                                   description=f"lineage '{self.lineage}' ({report['strategy']}): test metric of "
                                               "each task (column) after learning each task (row)")
        task, url = self.registered
        if self.run_id:
            artifacts.prefect_artifact("link", key=artifacts.artifact_key(self.lineage, "mlflow"),
                                       link=self.tracker.run_url(self.run_id),
                                       link_text=f"MLflow run of this flow run (lineage '{self.lineage}')")
        elif url:
            artifacts.prefect_artifact("link", key=artifacts.artifact_key(self.lineage, "mlflow"), link=url,
                                       link_text=f"MLflow run that registered '{task}' (lineage '{self.lineage}'; "
                                                 "this flow run's steps were all cache hits)")

    def track(self, step: int, strategy: str = "conure") -> dict:
        """What a step needs to track itself: ``steps.parent_run(track)`` is this flow run's MLflow run."""
        return {"flow_run": self._token, "step": step, "strategy": strategy, "experiment": self.experiment,
                "tags": self.tags}


def _flow_run_name() -> str:
    from prefect.runtime import flow_run

    return str(flow_run.name or "local")


def _flow_run_id() -> str:
    from prefect.runtime import flow_run

    return str(flow_run.id or "")


def load_preset(name: str | None) -> dict:
    """A preset by name (quick, paper) or from a JSON file holding ``Preset.to_dict()``."""
    return adapters.load_preset(name)


def new_head(lineage: str, preset_name: str | None, preset: dict | None = None) -> Head:
    cfg = preset or load_preset(preset_name)
    return Head(lineage=lineage, preset=preset_name or cfg["name"], config=cfg)


def open_head(store: LineageStore, lineage: str, preset_name: str | None) -> Head:
    """The lineage's HEAD, or a new one with ``preset_name`` (default quick); a preset clash is an error."""
    head = store.read_head(lineage)
    if head is None:
        return new_head(lineage, preset_name)
    if preset_name and preset_name != head.preset:
        raise PipelineError(f"lineage '{lineage}' was created with preset '{head.preset}', not '{preset_name}'; "
                            f"drop --preset or learn into a new --lineage.")
    return head


def ingest(fr: FlowRun, task_dir: Path, t1: dict | None, floor: float) -> dict:
    """Validate + prepare one task folder (cached on the folder's digest and T1's)."""
    task_dir = Path(task_dir).resolve()
    if not task_dir.is_dir():
        raise PipelineError(f"task folder {task_dir} does not exist; pass a folder holding task.yaml and a table.")
    digest = adapters.folder_digest(task_dir)
    kwargs = {"task_dir": str(task_dir), "folder_digest": digest, "t1": t1, "floor": floor, "lineage": fr.lineage}
    ref = fr.stats.call(steps.ingest, **kwargs)
    ref["folder_digest"] = digest
    if ref.get("max_len_note"):  # never drop interactions without a word
        warn(ref["max_len_note"])
    return ref


@dataclass
class Slot:
    """Where a prepared task goes in a lineage: its position, the state it starts from, the tasks before it."""

    pos: int
    ref: dict
    parent: str | None
    prior: list[LearnedTask]

    def refs(self) -> list[dict]:
        """Every task the state after this one answers, in order (the evaluate and register steps' input)."""
        return [ref_of(t) for t in self.prior] + [self.ref]


def place(head: Head, ref: dict) -> Slot:
    """The slot of ``ref`` in ``head``: its place when HEAD already learned it from the same data (a replay,
    every step a cache hit), else the next one; refused when HEAD learned that name from other data, or
    when a lineage's first task is not its T1."""
    names = [t.name for t in head.tasks]
    if ref["name"] in names:
        pos = names.index(ref["name"])
        known = head.tasks[pos]
        # same input folder = same data, even if the data layer's code now prepares it differently
        same = (known.folder_digest == ref.get("folder_digest")) if known.folder_digest and ref.get("folder_digest") \
            else known.prepared_digest == ref["digest"]
        if not same:
            raise PipelineError(
                f"lineage '{head.lineage}' already learned '{ref['name']}' from other data "
                f"(digest {known.prepared_digest[:12]} vs {ref['digest'][:12]}); rename the new task in its task.yaml.")
    else:
        pos = len(head.tasks)
    if pos == 0 and not adapters.kind_of(ref["kind"]).t1:
        raise PipelineError(f"the first task of lineage '{head.lineage}' must be the sequence task (T1), "
                            f"not {ref['kind']} task '{ref['name']}'; learn T1 first.")
    return Slot(pos, ref, head.tasks[pos - 1].state_digest if pos else None, head.tasks[:pos])


def stage(fr: FlowRun, head: Head, slot: Slot, name: str, parent: str | None) -> dict:
    """One learning stage (train | prune | retrain) of the slot's task from state ``parent``; its new state."""
    return fr.stats.call(steps.STAGE_TASKS[name], lineage=head.lineage, index=slot.pos, ref=slot.ref, parent=parent,
                         preset=head.config, track=fr.track(slot.pos + 1, head.strategy))


def evaluate(fr: FlowRun, head: Head, slot: Slot, state: str) -> dict:
    """Every task up to the slot's, tested with ``state``: metrics, each task's headline metric, free capacity."""
    return fr.stats.call(steps.evaluate, lineage=head.lineage, state=state, refs=slot.refs(),
                         track=fr.track(slot.pos + 1, head.strategy), preset=head.config)


def register(fr: FlowRun, head: Head, slot: Slot, state: str, scores: dict) -> list[float]:
    """The MLflow record and model version of ``state``; returns the slot's row of the accuracy matrix."""
    refs = slot.refs()
    metrics = [scores["main"][r["name"]] for r in refs]  # from the (cached) result: no torch import on re-runs
    row = [scores["metrics"][r["name"]][m] for r, m in zip(refs, metrics)]
    matrix = [list(r) for r in head.matrix[:slot.pos]] + [row]
    capacity = adapters.capacity_forecast([r["name"] for r in refs], [t.free_capacity for t in slot.prior] +
                                          [scores["free_capacity"]], min_free_of(head))
    out = fr.stats.call(steps.register, lineage=head.lineage, state=state, refs=refs, metrics=metrics,
                        matrix=matrix, free_capacity=scores["free_capacity"],
                        track=fr.track(slot.pos + 1, head.strategy), capacity=capacity, histories=head.histories)
    fr.registered = (refs[-1]["name"], out.get("run_url"))  # a cached result names the run that registered it
    return row


def commit(fr: FlowRun, head: Head, slot: Slot, stages: dict[str, dict], scores: dict, row: list[float]) -> Head:
    """Write the learned task into HEAD (atomic: a crash after this replays only cache hits).

    A replay that ends in the state HEAD already holds changes nothing; one that ends in another state
    (code or config changed) rewrites HEAD from there and keeps the old one as ``HEAD.<time>.json``.
    """
    ref, state = slot.ref, stages["retrain"]["state"]
    task = LearnedTask(name=ref["name"], kind=ref["kind"], metric=scores["main"][ref["name"]],
                       prepared_digest=ref["digest"], prepared_path=ref["path"], source=ref.get("source", ""),
                       prune_ratio=stages["prune"]["result"]["ratio"],  # as set, or chosen on validation (auto)
                       stages={name: out["state"] for name, out in stages.items()}, state_digest=state,
                       free_capacity=scores["free_capacity"] or stages["retrain"]["free_capacity"],
                       rows=ref.get("rows", 0), folder_digest=ref.get("folder_digest", ""),
                       catalogue=scores.get("catalogue"), manifest=ref.get("manifest") or {})
    if slot.pos < len(head.tasks):
        if head.tasks[slot.pos].state_digest == state:
            return head
        backup = fr.store.head_path(head.lineage).with_name(f"HEAD.{int(time.time())}.json")
        shutil.copyfile(fr.store.head_path(head.lineage), backup)
        warn(f"lineage '{head.lineage}': state after '{ref['name']}' changed (code or config changed); "
             f"HEAD rewritten from there, previous HEAD kept at {backup}")
        head.tasks, head.matrix = head.tasks[:slot.pos], head.matrix[:slot.pos]
    head.tasks.append(task)
    head.matrix.append(row)
    fr.store.write_head(head)
    return head


def min_free_of(head: Head) -> float:
    return float((head.config.get("model") or {}).get("min_free") or 0.0)


def warn_capacity(head: Head, slot: Slot) -> None:
    """Before a new task after T1: warn when it is expected to leave less than ``min_free`` free, saying what to do."""
    if not slot.pos or slot.pos < len(head.tasks) or not head.tasks[-1].free_capacity:
        return
    cfg = adapters.train_config(head.config, slot.pos, slot.ref)
    total = adapters.capacity_forecast([t.name for t in head.tasks], [t.free_capacity for t in head.tasks],
                                       min_free_of(head))["layers"].get("total")
    if total is None:
        return
    message = adapters.capacity_warning(slot.ref["name"], total["free"], None if cfg.prune_auto else cfg.prune_ratio,
                                        total["average"], min_free_of(head))
    if message:
        warn(f"lineage '{head.lineage}': {message}")


def ref_of(t: LearnedTask) -> dict:
    """The prepared-data reference of a learned task, as the Prefect tasks take it."""
    return {"name": t.name, "kind": t.kind, "digest": t.prepared_digest, "path": t.prepared_path,
            "manifest": t.manifest, "rows": t.rows, "source": t.source, "folder_digest": t.folder_digest}


def t1_of(head: Head) -> dict | None:
    """T1's reference (later tasks join it by user id), or None for a new lineage."""
    return ref_of(head.tasks[0]) if head.tasks else None
