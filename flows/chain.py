"""Learning prepared tasks onto a lineage, step by step, through the cached Prefect tasks.

Shared by every flow: ``FlowRun`` holds the lineage lock and the MLflow parent run of one flow
run; ``learn_refs`` appends (or replays, all cache hits) tasks onto a lineage's HEAD.
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
    to every MLflow run of this flow run (a backfill: its order and strategy)."""

    def __init__(self, lineage: str, flow: str, params: dict, lock_timeout: float | None = None,
                 experiment: str | None = None, tags: dict[str, str] | None = None):
        self.lineage, self.flow, self.params = lineage, flow, params
        self.lock_timeout = lock_timeout
        self.experiment, self.tags = experiment, dict(tags or {})
        self.store = LineageStore()
        self.stats = Stats()
        self.tracker = None
        self.run_id = ""
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> "FlowRun":
        self._stack.enter_context(artifacts.tag_flow_run(self.lineage))  # Prefect runs tagged lineage:<name>
        self._stack.enter_context(self.store.lock(self.lineage, self.lock_timeout, notify=warn))
        try:
            from tasks.tracking import source_tags

            self.tracker = steps.tracker_for(self.lineage, self.experiment)
            self.tracker.close_stale_runs()  # we hold the lock: any RUNNING run of this lineage was killed
            self.run_id = self.tracker.start_run(f"{self.flow}:{_flow_run_name()}",
                                                 tags={**source_tags(self.flow), **self.tags, "conure.flow": self.flow,
                                                       "prefect.flow_run": _flow_run_id()},
                                                 params=self.params)
            run_logger().info(f"lineage '{self.lineage}': MLflow run {self.tracker.run_url(self.run_id)}")
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            summary = self.stats.to_dict()
            if self.tracker and self.run_id:
                if exc is not None and type(exc).__name__ == "ContractError":  # a failed validation, with its run
                    self._log_failed_validation(exc)
                self.tracker.set_tags(self.run_id, {"conure.states": summary["states"],
                                                    "conure.all_cached": summary["all_cached"]})
                self.tracker.log_metrics(self.run_id, {"wall_seconds": summary["wall_s"],
                                                       "compute_seconds": summary["compute_s"]})
                self.tracker.end_run(self.run_id, "FINISHED" if exc is None else "FAILED")
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
        """Prefect artifacts of this flow run: the accuracy matrix table and the link to its MLflow run."""
        artifacts.prefect_artifact("table", key=artifacts.artifact_key(self.lineage, "accuracy-matrix"),
                                   table=artifacts.matrix_rows(report),
                                   description=f"lineage '{self.lineage}' ({report['strategy']}): test metric of "
                                               "each task (column) after learning each task (row)")
        artifacts.prefect_artifact("link", key=artifacts.artifact_key(self.lineage, "mlflow"),
                                   link=self.tracker.run_url(self.run_id),
                                   link_text=f"MLflow run of this flow run (lineage '{self.lineage}')")

    def track(self, step: int, strategy: str = "conure") -> dict:
        return {"flow_run": self.run_id, "step": step, "strategy": strategy, "experiment": self.experiment,
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


def learn_refs(fr: FlowRun, head: Head, refs: list[dict]) -> Head:
    """Learn prepared tasks in order onto ``head`` (train -> prune -> retrain -> evaluate -> register).

    A task already in HEAD at the same position with the same data is replayed through the cache
    (every step a cache hit); if the replay ends in another state (code or config changed), HEAD is
    rewritten from there and the old one kept as ``HEAD.<time>.json``.
    """
    store = fr.store
    for ref in refs:
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
        if pos == 0 and ref["kind"] != "sequence":
            raise PipelineError(f"the first task of lineage '{head.lineage}' must be the sequence task (T1), "
                                f"not {ref['kind']} task '{ref['name']}'; learn T1 first.")
        parent = head.tasks[pos - 1].state_digest if pos else None
        learned = learn_one(fr, head, pos, ref, parent, head.tasks[:pos])
        if pos < len(head.tasks):
            if head.tasks[pos].state_digest == learned["task"].state_digest:
                continue
            backup = store.head_path(head.lineage).with_name(f"HEAD.{int(time.time())}.json")
            shutil.copyfile(store.head_path(head.lineage), backup)
            warn(f"lineage '{head.lineage}': state after '{ref['name']}' changed (code or config changed); "
                 f"HEAD rewritten from there, previous HEAD kept at {backup}")
            head.tasks, head.matrix = head.tasks[:pos], head.matrix[:pos]
        head.tasks.append(learned["task"])
        head.matrix.append(learned["row"])
        store.write_head(head)  # atomic: a crash after this point replays only cache hits
    return head


def learn_one(fr: FlowRun, head: Head, pos: int, ref: dict, parent: str | None, prior: list[LearnedTask]) -> dict:
    """The stages of one task at position ``pos`` on top of state ``parent``."""
    track = fr.track(pos + 1, head.strategy)
    stage_digests = {}
    ratio = adapters.train_config(head.config, pos, ref).prune_ratio
    for stage in steps.STAGES:
        out = fr.stats.call(steps.STAGE_TASKS[stage], lineage=head.lineage, index=pos, ref=ref, parent=parent,
                            preset=head.config, track=track)
        parent = stage_digests[stage] = out["state"]
        free = out["free_capacity"]
        if stage == "prune":
            ratio = out["result"].get("ratio", ratio)  # the ratio chosen on validation under prune_ratio: auto
    refs = [ref_of(t) for t in prior] + [ref]
    ev = fr.stats.call(steps.evaluate, lineage=head.lineage, state=parent, refs=refs, track=track)
    metrics = [ev["main"][r["name"]] for r in refs]  # from the (cached) result: no torch import on re-runs
    row = [ev["metrics"][r["name"]][m] for r, m in zip(refs, metrics)]
    matrix = [list(r) for r in head.matrix[:pos]] + [row]
    fr.stats.call(steps.register, lineage=head.lineage, state=parent, refs=refs, metrics=metrics, matrix=matrix,
                  free_capacity=ev["free_capacity"], track=track)
    manifest = ref.get("manifest") or {}
    task = LearnedTask(name=ref["name"], kind=ref["kind"], metric=metrics[-1], prepared_digest=ref["digest"],
                       prepared_path=ref["path"], source=ref.get("source", ""),
                       prune_ratio=ratio,
                       stages=stage_digests, state_digest=parent, free_capacity=ev["free_capacity"] or free,
                       rows=ref.get("rows", 0), folder_digest=ref.get("folder_digest", ""),
                       manifest=manifest)
    return {"task": task, "row": row}


def ref_of(t: LearnedTask) -> dict:
    """The prepared-data reference of a learned task, as the Prefect tasks take it."""
    return {"name": t.name, "kind": t.kind, "digest": t.prepared_digest, "path": t.prepared_path,
            "manifest": t.manifest, "rows": t.rows, "source": t.source, "folder_digest": t.folder_digest}


def t1_of(head: Head) -> dict | None:
    """T1's reference (later tasks join it by user id), or None for a new lineage."""
    return ref_of(head.tasks[0]) if head.tasks else None
