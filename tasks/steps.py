"""The Prefect tasks of the pipeline: thin, idempotent wrappers around the learner and data layer.

Each task caches on the digests of its inputs (task folder or parent state, prepared data, config,
code version) and persists its small JSON result under ``CONURE_HOME/prefect/results``, both
declared on the task (``tasks/caching.py``); its real output (a prepared table or a lineage state)
is content-addressed on disk and written atomically. Run names say lineage / task / stage; each
task logs to Prefect's run logger and leaves Prefect artifacts (validation summary, model version).
A re-run therefore re-uses every finished step, and a run killed mid-step (even ``kill -9``)
resumes at that step: the learner seeds each stage from (seed, task index, stage), so the resumed
step ends in the same state digest (on the same device and torch thread count: float sums depend
on both).
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from prefect import get_run_logger, task

from tasks import adapters, progress
from tasks.artifacts import artifact_key, prefect_artifact, run_name, validation_markdown, validation_summary
from tasks.caching import cached
from tasks.errors import PipelineError
from tasks.settings import Layout, child_env, code_version, digest_json, quiet_prefect_logs
from tasks.store import LineageStore

quiet_prefect_logs()

STAGES = ("train", "prune", "retrain")
# The registered pyfunc model's interface (tasks/tracking.py's signature); bumping it makes a re-run
# register a new version of an already registered state. 2: rows carry `user` or `items`, param exclude_seen.
MODEL_FORMAT = "2"


# --- cache keys --------------------------------------------------------------------------------
def _ingest_key(_ctx, p: dict) -> str:
    t1 = p.get("t1") or {}
    return "ingest-" + digest_json([p["folder_digest"], t1.get("digest"), p.get("floor"), code_version()])


def stage_key(stage: str, p: dict) -> str:
    """Cache key of one stage: parent state, data digest, model + train config, position, code."""
    cfg = adapters.train_config(p["preset"], p["index"], p["ref"])
    key = {"parent": p["parent"], "data": p["ref"]["digest"],
           "model": adapters.resolved_preset(p["preset"], p["ref"]).model.to_dict(),
           "train": cfg.to_dict(), "index": p["index"], "code": code_version()}
    if stage_ranks(stage) > 1:  # N ranks sum floats in another order: another state, another key
        key["ranks"] = stage_ranks(stage)
    return f"{stage}-" + digest_json(key)


def _eval_key(_ctx, p: dict) -> str:
    return "evaluate-" + digest_json([p["state"], [r["digest"] for r in p["refs"]], code_version()])


def _register_key(_ctx, p: dict) -> str:
    key = [p["lineage"], p["state"], p["matrix"], Layout().tracking_uri(), MODEL_FORMAT]
    if p.get("histories"):  # refreshed histories: another registered version of the same state
        key.append(p["histories"]["digest"])
    return "register-" + digest_json(key)


# --- tracking helpers --------------------------------------------------------------------------
_task_runs: dict[tuple[str, str], str] = {}


_trackers: dict[tuple[str, str, str], object] = {}
# flow-run token -> a call that starts (once) and returns that flow run's MLflow parent run
_flow_runs: dict[str, Callable[[], str]] = {}


def open_flow_run(token: str, parent_run: Callable[[], str]) -> None:
    """Register a flow run's lazily started MLflow parent run under ``token`` (``FlowRun.track``'s ``flow_run``)."""
    _flow_runs[token] = parent_run


def close_flow_run(token: str) -> None:
    _flow_runs.pop(token, None)
    for key in [k for k in _task_runs if k[0] == token]:
        del _task_runs[key]


def parent_run(track: dict) -> str:
    """The MLflow run of the flow run a step belongs to, started by the first step that needs it
    (cache hits call no step)."""
    return _flow_runs[track["flow_run"]]()


def tracker_for(lineage: str, experiment: str | None = None):
    """One Tracker per lineage, experiment and store per process (creating one costs store round trips)."""
    from tasks.tracking import Tracker

    key = (lineage, experiment or lineage, Layout().tracking_uri())
    if key not in _trackers:
        _trackers[key] = Tracker(lineage, experiment=experiment)
    return _trackers[key]


def _tracker(lineage: str, track: dict):
    return tracker_for(lineage, track.get("experiment"))


def task_run(tracker, track: dict, ref: dict) -> str:
    """The MLflow run of one task inside a flow run, created on first use (cache hits add none)."""
    key = (track["flow_run"], ref["name"])
    if key not in _task_runs:
        run = tracker.start_run(ref["name"], parent=parent_run(track),
                                tags={**track.get("tags", {}), "conure.task": ref["name"], "conure.kind": ref["kind"],
                                      "conure.step": str(track["step"])})
        data = {k: ref[k] for k in ("interactions", "interactions_dropped", "users_cut") if ref.get("interactions")}
        tracker.log_params(run, {"task": ref["name"], "kind": ref["kind"], "strategy": track.get("strategy", "conure"),
                                 "step": track["step"], "data_digest": ref["digest"],
                                 **({"data": data} if data else {})})
        tracker.log_dataset(run, ref["name"], ref["digest"], str(adapters.abs_path(Layout().root, ref["path"])),
                            "train", profile={"rows": ref.get("rows"), "splits": ref.get("splits")})
        _task_runs[key] = run
    return _task_runs[key]


# --- ingestion ---------------------------------------------------------------------------------
def _t1_path(t1: dict | None) -> Path | None:
    return adapters.abs_path(Layout().root, t1["path"]) if t1 else None


@task(name="ingest", task_run_name=run_name("ingest"), **cached(_ingest_key))
def ingest(task_dir: str, folder_digest: str, t1: dict | None = None, floor: float = 0.5, lineage: str = "") -> dict:
    """Validate (Great Expectations), quarantine unknown users, prepare and write the task's table.

    One step because data_contracts.ingest_task does all of it in one pass; a failed check raises
    ContractError (one sentence) and writes the GX report next to where the data would go.
    """
    from data_contracts.ingest import ingest_task

    lay = Layout()
    log = get_run_logger()
    log.info(f"validating {task_dir} (T1: {t1['name'] if t1 else 'none, this is a T1'}, known-user floor {floor})")
    progress.emit({"event": "status", "text": f"validating and preparing {task_dir}"})
    ref = ingest_task(Path(task_dir), lay.prepared, t1=_t1_path(t1), known_user_floor=floor)
    out = adapters.ref_to_dict(ref, lay.root)
    out["source"] = str(Path(task_dir).resolve())
    out["max_len_note"] = ref.cut_note()  # the flow says it at the terminal; MLflow keeps it with the run
    out["validation"] = validation_summary(out, task_dir, floor)
    log.info(f"{out['name']}: validation passed, {out['rows']} rows, {out.get('quarantined', 0)} unknown users "
             f"quarantined, prepared digest {out['digest'][:12]}")
    prefect_artifact("markdown", key=artifact_key(lineage or "conure", out["name"], "validation"),
              markdown=validation_markdown(out["validation"]), description=f"validation of {task_dir}")
    return out


# --- learning stages ---------------------------------------------------------------------------
def _run_stage(stage: str, lineage: str, index: int, ref: dict, parent: str | None, preset: dict,
               track: dict) -> dict:
    store = LineageStore(Layout())
    nproc = stage_ranks(stage)
    if stage == "train":  # what a long start is busy with (prune and retrain follow at once)
        progress.emit({"event": "status", "text": f"loading {ref['name']}: {_size(ref)}"
                                                   f"{', parent state ' + parent[:12] if parent else ', new lineage'}"})
    if nproc == 1:
        model, data, cfg = adapters.stage_inputs(store, stage, index, ref, parent, preset)
    else:  # the ranks load their own
        model, data, cfg = None, None, adapters.train_config(preset, index, ref)
    tracker = _tracker(lineage, track)
    log = get_run_logger()
    device = str(model.device) if model is not None else f"torchrun x{nproc}"
    log.info(f"{stage} '{ref['name']}' (task {index + 1} of lineage '{lineage}') from state "
             f"{(parent or 'new')[:12]}, {cfg.stage_epochs.get(stage, 0)} epoch(s), device {device}")
    model_cfg = adapters.resolved_preset(preset, ref).model.to_dict()  # as this catalogue's size resolves it
    run = tracker.start_run(f"{ref['name']}/{stage}", parent=task_run(tracker, track, ref),
                            tags={**track.get("tags", {}), "conure.task": ref["name"], "conure.stage": stage,
                                  "conure.parent_state": parent or "", "conure.device": device},
                            params={"task": ref["name"], "kind": ref["kind"], "stage": stage,
                                    "strategy": track.get("strategy", "conure"), "prune_ratio": cfg.prune_ratio,
                                    "index": index, "config": {"model": model_cfg, "train": cfg.to_dict()}})
    epochs = cfg.stage_epochs.get(stage, 0)
    progress.emit({"event": "stage_start", "task": ref["name"], "stage": stage, "epochs": epochs})

    epochs_log = tracker.buffer(run)  # epoch metrics, written every few seconds (a write per epoch is slow)

    def on_event(event: dict) -> None:
        progress.emit(event)
        if event.get("event") == "epoch":
            epochs_log.add({"train_loss": event.get("loss"), f"valid/{event.get('metric', 'metric')}": event.get("valid")},
                           step=int(event["epoch"]))

    started = time.perf_counter()
    try:
        if nproc > 1:  # torchrun job: its rank 0 stored the state; MLflow logging stays here
            result, digest, free = run_on_ranks(stage, index, ref, parent, preset, nproc, on_event)
        else:
            result = adapters.run_stage(model, stage, data, cfg, on_event)
        compute = time.perf_counter() - started  # the learner's seconds: saving and tracking below are not
        if nproc == 1:
            digest = store.put_state(lambda tmp: adapters.save_lineage(model, tmp))
            free = model.free_capacity()
        epochs_log.flush(stage_metrics(stage, result, compute, free, track["step"]), tags={"conure.state_digest": digest})
        tracker.end_run(run)
    except BaseException:
        epochs_log.flush()
        tracker.end_run(run, "FAILED")
        raise
    result.pop("history", None)
    log.info(f"{stage} '{ref['name']}' done in {compute:.1f} s: state {digest[:12]}, free capacity {free['total']:.1%}"
             + (f", kept {result['kept']} weights" if stage == "prune" else ""))
    progress.emit({"event": "stage_end", "task": ref["name"], "stage": stage, "seconds": compute})
    return {"stage": stage, "state": digest, "compute_s": compute, "free_capacity": free, "result": result}


def stage_metrics(stage: str, result: dict, compute: float, free: dict, step: int) -> list[tuple[int, dict]]:
    """A finished stage's MLflow metrics as (step, metrics): its compute seconds, free capacity, the
    prune ratio with the validation curve it was chosen on (one step per ratio in %), T1's wide part."""
    out = [(step, {"compute_seconds": compute, "free_capacity/total": free["total"],
                   **{f"free_capacity/{k}": v for k, v in free.items() if k != "total"}})]
    if stage == "prune":
        out.append((step, {"prune_ratio": result["ratio"]}))
        out += [(int(round(p["ratio"] * 100)), {"prune_curve/valid": p["valid"], "prune_curve/free": p["free"]})
                for p in result["curve"]]
    if result.get("wide"):  # the fusion scale chosen on validation, and what it gave
        out.append((step, {f"wide/{k}": float(v) for k, v in result["wide"].items()}))
    return out


def _size(ref: dict) -> str:
    rows = ref.get("rows")
    what = "user sequences" if ref.get("kind") == "sequence" else "rows"
    return f"{rows:,} {what}" if isinstance(rows, int) else "prepared data"


def stage_ranks(stage: str) -> int:
    """Ranks a training stage runs on: ``CONURE_NPROC`` (``conure ... --nproc N``), 1 for prune."""
    import os

    raw = os.environ.get("CONURE_NPROC", "1").strip() or "1"
    if not raw.isdigit() or int(raw) < 1:
        raise PipelineError(f"CONURE_NPROC={raw!r} is not a positive whole number; set it (or --nproc) to 1, 2, ...")
    return 1 if stage == "prune" else int(raw)


def run_on_ranks(stage: str, index: int, ref: dict, parent: str | None, preset: dict, nproc: int,
                 on_event) -> tuple[dict, str, dict]:
    """Run one training stage as a ``torchrun`` job of ``nproc`` ranks (``tasks.stage_worker``) and wait.

    Returns (stage result, state digest rank 0 stored, free capacity); a rank that dies fails the
    step with one sentence (``conure_core.distributed.launch``), and nothing is stored.
    """
    import json
    import tempfile

    from conure_core.distributed import launch
    from tasks.stage_worker import EVENT

    with tempfile.TemporaryDirectory(prefix="conure-ranks-") as tmp:
        spec, out = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec.write_text(json.dumps({"stage": stage, "index": index, "ref": ref, "parent": parent, "preset": preset,
                                    "out": str(out)}))

        def on_line(line: str) -> None:
            if line.startswith(EVENT):
                on_event(json.loads(line[len(EVENT):]))

        launch("tasks.stage_worker", [str(spec)], nproc, on_line, env=child_env())  # the run settings, explicitly
        done = json.loads(out.read_text())
    return done["result"], done["state"], done["free_capacity"]


@task(name="train", task_run_name=run_name("train"), **cached(lambda c, p: stage_key("train", p)))
def train(lineage: str, index: int, ref: dict, parent: str | None, preset: dict, track: dict) -> dict:
    """Stage 1 of a task: all weights forward, gradients to free weights and the new head."""
    return _run_stage("train", lineage, index, ref, parent, preset, track)


@task(name="prune", task_run_name=run_name("prune"), **cached(lambda c, p: stage_key("prune", p)))
def prune(lineage: str, index: int, ref: dict, parent: str | None, preset: dict, track: dict) -> dict:
    """Stage 2: the task keeps its largest free weights; the rest go back to the free pool."""
    return _run_stage("prune", lineage, index, ref, parent, preset, track)


@task(name="retrain", task_run_name=run_name("retrain"), **cached(lambda c, p: stage_key("retrain", p)))
def retrain(lineage: str, index: int, ref: dict, parent: str | None, preset: dict, track: dict) -> dict:
    """Stage 3: the task retrains its own weights with the freed ones masked out."""
    return _run_stage("retrain", lineage, index, ref, parent, preset, track)


STAGE_TASKS = {"train": train, "prune": prune, "retrain": retrain}


@task(name="evaluate", task_run_name=run_name("evaluate"), **cached(_eval_key))
def evaluate(lineage: str, state: str, refs: list[dict], track: dict, preset: dict) -> dict:
    """Every learned task's test metrics with the state after the latest task, plus free capacity
    (with ``preset``'s torch threads)."""
    adapters.use_threads(preset)
    lay = Layout()
    model = adapters.load_lineage(LineageStore(lay).state_path(state))
    tracker = _tracker(lineage, track)
    current = refs[-1]
    run = tracker.start_run(f"{current['name']}/evaluate", parent=task_run(tracker, track, current),
                            tags={**track.get("tags", {}), "conure.task": current["name"], "conure.stage": "evaluate",
                                  "conure.device": str(model.device)})
    try:
        data = {r["name"]: adapters.load_task_data(lay.root, r) for r in refs}
        started = time.perf_counter()  # the learner's seconds: reading the tables is not
        metrics = {name: model.evaluate(task_data, "test") for name, task_data in data.items()}
        compute = time.perf_counter() - started
        free = model.free_capacity()
        catalogue = model.model.catalogue_size()  # items the latest task reads: T1's and those tasks introduced
        flat = {f"test/{t}/{m}": v for t, ms in metrics.items() for m, v in ms.items()}
        tracker.log_metrics(run, {**flat, "free_capacity/total": free["total"], "compute_seconds": compute,
                                  "catalogue/items": catalogue}, step=track["step"])
        tracker.end_run(run)
    except BaseException:
        tracker.end_run(run, "FAILED")
        raise
    progress.emit({"event": "evaluated", "task": current["name"], "metrics": metrics})
    main = {r["name"]: model.info(r["name"]).metric for r in refs}  # each task's headline metric
    get_run_logger().info(f"test after '{current['name']}': " + ", ".join(
        f"{t} {main[t]} {metrics[t][main[t]]:.4f}" for t in metrics) + f"; free capacity {free['total']:.1%}")
    return {"metrics": metrics, "main": main, "free_capacity": free, "catalogue": catalogue, "compute_s": compute}


@task(name="register", task_run_name=run_name("register"), **cached(_register_key))
def register(lineage: str, state: str, refs: list[dict], metrics: list[str], matrix: list[list[float | None]],
             free_capacity: dict[str, float], track: dict, capacity: dict | None = None,
             histories: dict | None = None) -> dict:
    """MLflow record of a learned step (metrics at step n, owner maps, matrix + heatmap, capacity forecast)
    and the model version (answering ``user`` rows from ``histories``, the latest refresh, else T1's table)."""
    lay = Layout()
    state_dir = LineageStore(lay).state_path(state)
    tracker = _tracker(lineage, track)
    current = refs[-1]
    run = task_run(tracker, track, current)
    names = [r["name"] for r in refs]
    n = len(refs)
    row = matrix[n - 1]
    step_metrics = {f"test/{t}/{m}": v for t, m, v in zip(names, metrics, row) if v is not None}
    step_metrics.update({"free_capacity/total": free_capacity["total"],
                         **{f"free_capacity/{k}": v for k, v in free_capacity.items() if k != "total"}})
    if capacity:
        step_metrics.update(capacity_metrics(capacity, current["name"]))
        tracker.log_bytes(run, json.dumps(capacity, indent=1).encode(), "capacity/forecast.json")
    tracker.log_metrics(parent_run(track), step_metrics, step=n)
    # the task run's test metrics are logged by `register`, linked to the logged model and each dataset
    tracker.log_metrics(run, {k: v for k, v in step_metrics.items() if not k.startswith("test/")}, step=n)
    tracker.log_owner_maps(run, adapters.owner_maps(state_dir), names)
    tracker.log_matrix(run, names, metrics, [r[:n] for r in matrix[:n]])
    if current.get("validation"):  # this flow run's own validation (a stale report of a failed try is not ours)
        tracker.log_bytes(run, json.dumps(current["validation"], indent=1).encode(), "validation/summary.json")
    evaluation = [(f"test/{t}/{m}", v, r["digest"]) for t, m, v, r in zip(names, metrics, row, refs) if v is not None]
    t1_dir = adapters.abs_path(lay.root, (histories or refs[0])["path"])
    version = tracker.register(run, state_dir, t1_dir, names, state, evaluation,
                               (histories or {}).get("digest", ""), MODEL_FORMAT)
    tracker.set_tags(run, {"conure.state_digest": state, "conure.model_version": version})
    tracker.end_run(run)
    model = f"conure-{lineage}"
    get_run_logger().info(f"registered {model} version {version} (aliases head, tasks-{n}); "
                          f"MLflow run {tracker.run_url(run)}")
    prefect_artifact("link", key=artifact_key(lineage, current["name"], "mlflow-run"), link=tracker.run_url(run),
              link_text=f"MLflow run of '{current['name']}' in lineage '{lineage}'")
    prefect_artifact("markdown", key=artifact_key(lineage, "model-version"), description=f"{model} after {n} task(s)",
              markdown=f"### [{model} version {version}]({tracker.version_url(version)})\n\n"
                       f"Tasks: {', '.join(names)}. Aliases `head`, `tasks-{n}`. Load it with "
                       f"`mlflow.pyfunc.load_model(\"models:/{model}/{version}\")`, or serve it with "
                       f"`mlflow models serve -m models:/{model}@head --env-manager local`.\n")
    return {"model": model, "version": version, "run_url": tracker.run_url(run)}


def capacity_metrics(capacity: dict, task: str) -> dict[str, float]:
    """MLflow metrics of a capacity forecast: ``capacity/fits`` and, per tensor, free / taken by ``task`` /
    average task / fits."""
    out = {"capacity/fits": capacity["fits"]}
    for name, v in capacity["layers"].items():
        out.update({f"capacity/{name}/free": v["free"], f"capacity/{name}/taken": v["taken"].get(task),
                    f"capacity/{name}/average": v["average"], f"capacity/{name}/fits": v["fits"]})
    return out


def _refresh_key(_ctx, p: dict) -> str:
    return "refresh-" + digest_json([p["lineage"], p["folder_digest"], p["base"]["digest"], p["state"],
                                     Layout().tracking_uri(), code_version()])


@task(name="refresh", task_run_name=run_name("refresh"), **cached(_refresh_key))
def refresh(lineage: str, update_dir: str, folder_digest: str, base: dict, state: str, names: list[str],
            track: dict) -> dict:
    """Users' stored histories refreshed by a T1 update folder (validated, same item vocabulary), and a
    new registered version of the same state answering ``user`` rows from them; an MLflow run records it."""
    lay = Layout()
    base_dir = adapters.abs_path(lay.root, base["path"])
    started = time.perf_counter()
    ref, counts = adapters.refresh_histories(Path(update_dir), lay.prepared, base_dir, lay.root)
    tracker = _tracker(lineage, track)
    run = tracker.start_run(f"refresh:{Path(update_dir).name}", parent=parent_run(track),
                            tags={"conure.stage": "refresh", "conure.state_digest": state},
                            params={"update": update_dir, "update_digest": folder_digest, "base_histories": base["digest"],
                                    "histories": ref["digest"], "state_digest": state})
    try:
        tracker.log_dataset(run, f"{ref['name']}-histories", ref["digest"], str(adapters.abs_path(lay.root, ref["path"])),
                            "refresh", profile=counts)
        tracker.log_metrics(run, {f"refresh/{k}": v for k, v in counts.items()}, step=len(names))
        version = tracker.register(run, LineageStore(lay).state_path(state), adapters.abs_path(lay.root, ref["path"]),
                                   names, state, histories_digest=ref["digest"], model_format=MODEL_FORMAT)
        tracker.set_tags(run, {"conure.model_version": version})
        tracker.end_run(run)
    except BaseException:
        tracker.end_run(run, "FAILED")
        raise
    get_run_logger().info(f"histories refreshed from {update_dir}: {counts}; registered conure-{lineage} "
                          f"version {version} (same state {state[:12]})")
    histories = {"name": ref["name"], "path": ref["path"], "digest": ref["digest"], "source": update_dir,
                 "base": base["digest"], **counts}
    return {"histories": histories, "model": f"conure-{lineage}", "version": version,
            "compute_s": time.perf_counter() - started}


def _baseline_key(_ctx, p: dict) -> str:
    return "baseline-" + digest_json([p["strategy"], [r["digest"] for r in p["refs"]], p["preset"], code_version()])


@task(name="baseline", task_run_name=run_name("baseline"), **cached(_baseline_key))
def baseline(lineage: str, strategy: str, refs: list[dict], preset: dict, track: dict) -> dict:
    """A baseline strategy (SinMo, FineAll, ...) over an ordering, as one step: it keeps no lineage
    states, so its accuracy matrix is its output (logged to MLflow with a heatmap)."""
    adapters.use_threads(preset)
    lay = Layout()
    data = [adapters.load_task_data(lay.root, r) for r in refs]
    overrides = {r["name"]: adapters.train_overrides(r) for r in refs}
    started = time.perf_counter()
    report = adapters.run_baseline(strategy, preset, data, overrides, progress=progress.emit)
    compute = time.perf_counter() - started
    tracker = _tracker(lineage, track)
    names = [r["name"] for r in refs]
    metrics = [adapters.metric_of(r["kind"]) for r in refs]
    get_run_logger().info(f"baseline '{strategy}' over {', '.join(names)}: {compute:.1f} s")
    for i, row in enumerate(report["matrix"]):
        tracker.log_metrics(parent_run(track), {f"test/{t}/{m}": v for t, m, v in zip(names, metrics, row)
                                                if v is not None}, step=i + 1)
    tracker.log_matrix(parent_run(track), names, metrics, report["matrix"])
    return {"report": report, "compute_s": compute}
