"""Every MLflow call of the pipeline (MLflow 3): runs, params, metrics, artifacts, datasets, models.

One experiment per lineage (a backfill logs into its source lineage's experiment, tagged with its
order and strategy, so one runs table compares them), tagged for MLflow's model-training view; a
parent run per flow run; a nested run per task stage; context tags (source, git commit, code and
torch versions, device) on every run. The model registry holds ``conure-<lineage>`` with one
version per learned task, each an MLflow pyfunc model (``tasks/pyfunc_model.py``), and the aliases
``head`` (the newest; MLflow reserves the name "latest") and ``tasks-<n>`` (the version after n tasks).
Uses ``MlflowClient`` with explicit run ids (the one fluent call, ``log_model``, keeps its active run
per thread), so Prefect's threads are safe.
"""
from __future__ import annotations

import functools
import io
import json
import os
import re
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from tasks.settings import REPO, Layout, code_version, quiet_libraries
from tasks.stores import ensure_tracking_store

quiet_libraries()

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402

quiet_libraries()  # mlflow resets its logger level on import

HEAD_ALIAS = "head"
PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")  # the registered model's code (models-from-code)
# MLflow 3 opens an experiment on its GenAI overview unless this tag says it is model training
# (values from the UI's bundle: genai_development | custom_model_development), and keeps the last
# workspace a browser used unless the URL names one: every link carries ``?workflowType=...``.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
WORKFLOW = "workflowType=machine_learning"
# Creating a SQLite store runs MLflow's migrations (seconds); two threads doing it at once collide.
_INIT_LOCK = threading.Lock()
_MODEL_LOCK = threading.Lock()


def warm_store(layout: Layout | None = None) -> None:
    """Create / open the tracking store now (the CLI does it in a thread while Prefect's server boots)."""
    uri = (layout or Layout()).tracking_uri()
    with _INIT_LOCK:
        ensure_tracking_store(uri)  # created beside its path and renamed whole: a kill cannot brick it
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)


def metric_key(*parts: str) -> str:
    """MLflow metric keys allow [A-Za-z0-9_-. /]: 'mrr@5' becomes 'mrr_at_5'."""
    return "/".join(re.sub(r"[^A-Za-z0-9_\-. /]", "_", p.replace("@", "_at_")) for p in parts)


def model_name(lineage: str) -> str:
    return f"conure-{lineage}"


def logged_model_name(lineage: str, task: str) -> str:
    """The logged model of a lineage after ``task``: ``<lineage>-<task>`` ('.' is not allowed there)."""
    return f"{lineage}-{task}".replace(".", "_")


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The checkout's commit, or "" outside a git checkout (e.g. an installed image)."""
    import subprocess

    if not (REPO / ".git").exists():
        return ""
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def dist_version(name: str) -> str:
    """An installed distribution's version without importing it ("" when it is not installed)."""
    import importlib.metadata as md

    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return ""


@functools.lru_cache(maxsize=1)
def context_tags() -> dict[str, str]:
    """MLflow's context tags (MlflowClient.create_run sets none) plus the versions a result depends on."""
    import getpass

    tags = {"mlflow.user": getpass.getuser(), "conure.code_version": code_version(),
            "conure.torch_version": dist_version("torch"), "conure.package_version": dist_version("conure")}
    if commit := git_commit():
        tags["mlflow.source.git.commit"] = commit
    return tags


def source_tags(flow: str) -> dict[str, str]:
    """Where a flow run came from: a deployment run by a worker (JOB) or a local call (LOCAL)."""
    from prefect.runtime import deployment, flow_run

    if deployment.id:
        return {"mlflow.source.type": "JOB", "mlflow.source.name": f"prefect deployment {flow}/{deployment.name}",
                "prefect.deployment": str(deployment.name)}
    return {"mlflow.source.type": "LOCAL",
            "mlflow.source.name": f"prefect flow {flow_run.flow_name or flow} ({Path(sys.argv[0]).name})"}


UI_DEFAULT = "http://127.0.0.1:5000"


def ui_base() -> str:
    """The MLflow UI that shows this store, for links in Prefect artifacts and logs: the tracking
    server, else ``$CONURE_MLFLOW_UI`` (where you run `conure ui`, which serves on its port)."""
    uri = Layout().tracking_uri()
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/")
    return os.environ.get("CONURE_MLFLOW_UI", UI_DEFAULT).rstrip("/")


def flatten(prefix: str, obj: Any) -> dict[str, str]:
    """Nested config -> flat MLflow params ('model.width': '64')."""
    if isinstance(obj, dict):
        out: dict[str, str] = {}
        for k, v in obj.items():
            out.update(flatten(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: json.dumps(obj) if isinstance(obj, (list, tuple)) else str(obj)}


class Tracker:
    """The MLflow side of one lineage."""

    def __init__(self, lineage: str, layout: Layout | None = None, experiment: str | None = None):
        self.layout = layout or Layout()
        self.lineage = lineage
        self.experiment_name = experiment or lineage  # a backfill: its source lineage
        self.uri = self.layout.tracking_uri()
        mlflow.set_tracking_uri(self.uri)
        with _INIT_LOCK:
            ensure_tracking_store(self.uri)
            self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
            self.experiment_id = self._experiment()

    def _experiment(self) -> str:
        name = self.experiment_name
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if exp.tags.get("mlflow.experimentKind") != EXPERIMENT_KIND["mlflow.experimentKind"]:
                for key, value in EXPERIMENT_KIND.items():  # experiments made before the tag existed
                    self.client.set_experiment_tag(exp.experiment_id, key, value)
            return exp.experiment_id
        location = None
        if self.uri.startswith("sqlite:"):  # embedded store: artifacts next to it, not in ./mlruns
            location = (self.layout.artifacts / name).as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=location,
                                                 tags={"conure.lineage": name, **EXPERIMENT_KIND})
        except mlflow.exceptions.MlflowException:  # created meanwhile by another process
            return self.client.get_experiment_by_name(name).experiment_id

    def runs_url(self, base: str = "") -> str:
        """Where the lineage's runs live in the UI, in the model-training view (MLflow 3.17 otherwise
        opens a GenAI overview)."""
        return f"{base or ui_base()}/#/experiments/{self.experiment_id}/runs?{WORKFLOW}"

    def run_url(self, run_id: str) -> str:
        return f"{ui_base()}/#/experiments/{self.experiment_id}/runs/{run_id}?{WORKFLOW}"

    def version_url(self, version: str) -> str:
        return f"{ui_base()}/#/models/{model_name(self.lineage)}/versions/{version}?{WORKFLOW}"

    # --- runs --------------------------------------------------------------------------------
    def start_run(self, name: str, parent: str | None = None, tags: dict[str, str] | None = None,
                  params: dict[str, Any] | None = None) -> str:
        all_tags = {**context_tags(), "conure.lineage": self.lineage, **(tags or {})}
        if parent:
            all_tags["mlflow.parentRunId"] = parent
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        if params:
            self.log_params(run.info.run_id, params)
        return run.info.run_id

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def close_stale_runs(self) -> int:
        """This lineage's runs left RUNNING by a killed process (the caller holds its lock) become KILLED.

        Only this lineage's: backfills share their source's experiment and run at the same time."""
        query = f"attributes.status = 'RUNNING' and tags.`conure.lineage` = '{self.lineage}'"
        stale = self.client.search_runs([self.experiment_id], query, max_results=500)
        for run in stale:
            self.client.set_terminated(run.info.run_id, status="KILLED")
        return len(stale)

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        self.log_batch(run_id, params=params)

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        self.log_batch(run_id, tags=tags)

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        self.log_batch(run_id, [(step, metrics)])

    def log_batch(self, run_id: str, steps: list[tuple[int, dict[str, float | None]]] = (),
                  tags: dict[str, Any] | None = None, params: dict[str, Any] | None = None,
                  metrics: list[Metric] = ()) -> None:
        """Metrics (``(step, {key: value})`` pairs, None values left out, and ready ``Metric`` entities),
        tags and params of a run in as few store calls as MLflow allows (each is a SQLite commit)."""
        now = int(time.time() * 1000)
        ms = list(metrics) + [Metric(metric_key(k), float(v), now, step)
                              for step, values in steps for k, v in values.items() if v is not None]
        ps = [Param(k[:250], v[:6000]) for k, v in flatten("", params or {}).items()]
        ts = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        while ms or ps or ts:  # MLflow's limits per call: 1000 entities, 100 params, 100 tags
            self.client.log_batch(run_id, metrics=ms[:800], params=ps[:100], tags=ts[:100], synchronous=True)
            ms, ps, ts = ms[800:], ps[100:], ts[100:]

    def buffer(self, run_id: str, every_s: float = 5.0) -> "MetricBuffer":
        """Metrics collected in memory and written in one batch every ``every_s`` seconds / on flush."""
        return MetricBuffer(self, run_id, every_s)

    # --- artifacts ---------------------------------------------------------------------------
    def log_bytes(self, run_id: str, data: bytes, path: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / Path(path).name
            target.write_bytes(data)
            parent = str(Path(path).parent)
            self.client.log_artifact(run_id, str(target), None if parent == "." else parent)

    def log_dir(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(run_id, str(path), artifact_path)

    def log_owner_maps(self, run_id: str, owner_maps: dict[str, Any], tasks: list[str]) -> dict:
        """Owner maps as one compressed npz plus a JSON summary (weights owned per task, by task name,
        per tensor; in the npz, owner k is the k-th task learned, 0 free)."""
        import numpy as np

        num_tasks = len(tasks)
        arrays = {k: v.detach().cpu().numpy().astype(np.uint8) for k, v in owner_maps.items()}
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        self.log_bytes(run_id, buf.getvalue(), "masks/owner_maps.npz")
        summary = {}
        for name, arr in arrays.items():
            counts = np.bincount(arr.ravel(), minlength=num_tasks + 1)
            summary[name] = {"size": int(arr.size), "free": int(counts[0]),
                             "owned": {tasks[t - 1] if t <= num_tasks else str(t): int(c)
                                       for t, c in enumerate(counts) if t and c}}
        self.log_bytes(run_id, json.dumps(summary, indent=1).encode(), "masks/mask_summary.json")
        return summary

    def log_matrix(self, run_id: str, tasks: list[str], metrics: list[str],
                   matrix: list[list[float | None]]) -> None:
        """The accuracy matrix as CSV + JSON, a heatmap PNG (row i: after task i; column j: task j,
        each column coloured on its own metric's range) and one chart of every task's test metric
        against tasks learned."""
        lines = ["after," + ",".join(tasks)]
        for name, row in zip(tasks, matrix):
            lines.append(name + "," + ",".join("" if v is None else f"{v:.6f}" for v in row))
        self.log_bytes(run_id, ("\n".join(lines) + "\n").encode(), "matrix/accuracy_matrix.csv")
        self.log_bytes(run_id, json.dumps({"tasks": tasks, "metric": metrics, "matrix": matrix}).encode(),
                       "matrix/accuracy_matrix.json")
        self.log_bytes(run_id, heatmap_png(tasks, metrics, matrix), "matrix/accuracy_matrix.png")
        self.log_bytes(run_id, metric_by_step_png(tasks, metrics, matrix), "matrix/test_metric_by_tasks_learned.png")

    def log_dataset(self, run_id: str, name: str, digest: str, source: str, context: str,
                    profile: dict | None = None) -> None:
        """One task's prepared table as a run input, identified by its content digest."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        entity = Dataset(name=name, digest=digest[:36], source_type="local", source=json.dumps({"uri": source}),
                         profile=json.dumps(profile) if profile else None, schema=table_schema(Path(source)))
        self.client.log_inputs(run_id, datasets=[DatasetInput(entity, [InputTag("mlflow.data.context", context)])])

    # --- model registry ----------------------------------------------------------------------
    def log_model(self, run_id: str, state_dir: Path, t1_dir: Path, tasks: list[str]):
        """The state as an MLflow pyfunc model (models-from-code: ``tasks/pyfunc_model.py``) of ``run_id``."""
        from mlflow.models import ModelSignature
        from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
        from mlflow.types.schema import Array

        # a row names a stored `user` or carries a history `items` (item ids, oldest first)
        signature = ModelSignature(inputs=Schema([ColSpec("string", "user", required=False), ColSpec("string", "task"),
                                                  ColSpec(Array("string"), "items", required=False)]),
                                   params=ParamSchema([ParamSpec("k", "long", 10),
                                                       ParamSpec("exclude_seen", "boolean", True)]))
        # explicit requirements: MLflow would otherwise load the model in a subprocess to infer them
        requirements = [f"{p}=={dist_version(p)}" if dist_version(p) else p for p in ("conure", "mlflow", "torch")]
        with _MODEL_LOCK, warnings.catch_warnings():  # a fluent call: mlflow's process-wide tracking URI
            # no input example (MLflow would load and run the model to check it) nor type hints (a signature is given)
            warnings.filterwarnings("ignore", message=".*(input example|Add type hints).*")
            mlflow.set_tracking_uri(self.uri)
            with mlflow.start_run(run_id=run_id):
                return mlflow.pyfunc.log_model(
                    name=logged_model_name(self.lineage, tasks[-1]), python_model=str(PYFUNC_FILE), signature=signature,
                    artifacts={"state": str(state_dir), "t1": str(t1_dir)}, pip_requirements=requirements,
                    model_config={"lineage": self.lineage, "tasks": tasks}, tags={"conure.lineage": self.lineage})

    def register(self, run_id: str, state_dir: Path, t1_dir: Path, tasks: list[str], state_digest: str,
                 evaluation: list[tuple[str, float, str]] = (), histories_digest: str = "",
                 model_format: str = "") -> str:
        """Version of ``conure-<lineage>`` for this state and stored histories + aliases.

        ``t1_dir``: T1's table, or a `conure refresh` of it with ``histories_digest``; a version is re-used
        when one is registered with the same state, histories and ``model_format`` (the pyfunc interface).
        The version is registered from the run's logged model (an MLflow 3 LoggedModel named
        ``<lineage>-<task>``), so the experiment's Models page and the registry show the same model;
        ``evaluation``: (metric key, value, dataset digest) of each task's test metric, logged to
        ``run_id`` linked to the logged model and to the dataset it was measured on.
        """
        name = model_name(self.lineage)
        existing = []
        try:
            existing = [v for v in self.client.search_model_versions(f"name='{name}'")
                        if v.tags.get("state_digest") == state_digest
                        and v.tags.get("histories_digest", "") == histories_digest
                        and v.tags.get("model_format", "") == model_format]
        except mlflow.exceptions.MlflowException:
            pass  # no registered model yet
        model_id = existing[0].model_id if existing else self.log_model(run_id, state_dir, t1_dir, tasks).model_id
        now = int(time.time() * 1000)
        linked = [Metric(metric_key(key), float(value), now, len(tasks), model_id=model_id,
                         dataset_name=key.split("/")[1], dataset_digest=digest[:36])
                  for key, value, digest in evaluation]
        if linked:
            self.client.log_batch(run_id, metrics=linked, synchronous=True)
        if existing:
            version = existing[0].version
        else:
            from mlflow.utils.logging_utils import disable_logging, enable_logging

            tags = {"state_digest": state_digest, "tasks": ",".join(tasks), "num_tasks": str(len(tasks)),
                    **({"histories_digest": histories_digest} if histories_digest else {}),
                    **({"model_format": model_format} if model_format else {})}
            with _MODEL_LOCK:  # fluent: the process-wide registry URI; quiet its "Created version" lines
                mlflow.set_tracking_uri(self.uri)
                disable_logging()
                try:
                    mv = mlflow.register_model(f"models:/{model_id}", name, tags=tags)
                finally:
                    enable_logging()
            self.client.update_model_version(
                name, mv.version, description=f"Conure lineage '{self.lineage}' after {len(tasks)} task(s): "
                                              f"{', '.join(tasks)}. Input rows: task and user (strings) or items "
                                              "(a list of item ids, oldest first); params: k, exclude_seen.")
            for key, value in (("conure.lineage", self.lineage), ("conure.experiment", self.experiment_name)):
                self.client.set_registered_model_tag(name, key, value)
            version = mv.version
        self.client.set_registered_model_alias(name, HEAD_ALIAS, version)
        self.client.set_registered_model_alias(name, f"tasks-{len(tasks)}", version)
        return str(version)

    def roll_back_registry(self, state_digest: str, to: int, before: int) -> str | None:
        """Alias ``head`` -> the version of ``state_digest`` (the state after ``to`` tasks); the aliases
        ``tasks-k`` of the dropped tasks (k > to) are removed, their versions stay. None: no such version."""
        name = model_name(self.lineage)
        try:
            versions = [v for v in self.client.search_model_versions(f"name='{name}'")
                        if v.tags.get("state_digest") == state_digest]
        except mlflow.exceptions.MlflowException:
            return None
        if not versions:
            return None
        version = str(versions[0].version)
        self.client.set_registered_model_alias(name, HEAD_ALIAS, version)
        self.client.set_registered_model_alias(name, f"tasks-{to}", version)
        for k in range(to + 1, before + 1):
            try:
                self.client.delete_registered_model_alias(name, f"tasks-{k}")
            except mlflow.exceptions.MlflowException:
                pass  # never set (e.g. a lineage learned before aliases existed)
        return version


def table_schema(prepared_dir: Path) -> str | None:
    """The prepared table's columns as an MLflow schema (JSON, as MLflow's own datasets write it),
    read from the Parquet footer; None when there is no table."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from mlflow.types import ColSpec, DataType, Schema

    path = Path(prepared_dir) / "data.parquet"
    if not path.is_file():
        return None

    def kind(t) -> DataType:
        if pa.types.is_integer(t):
            return DataType.long
        if pa.types.is_floating(t):
            return DataType.double
        if pa.types.is_boolean(t):
            return DataType.boolean
        return DataType.string

    cols = []
    for f in pq.read_schema(path):
        if pa.types.is_list(f.type) or pa.types.is_large_list(f.type):
            from mlflow.types.schema import Array

            cols.append(ColSpec(Array(kind(f.type.value_type)), f.name))
        else:
            cols.append(ColSpec(kind(f.type), f.name))
    return json.dumps({"mlflow_colspec": Schema(cols).to_dict()})


def _figure(width: float, height: float):
    """A matplotlib Figure drawn off-screen (no pyplot, no backend or display in the caller's process)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    # `tight_layout` leaves a placeholder layout engine, for which savefig draws the figure once more
    # to lay it out again (nothing to do): the same bytes without that draw
    fig.set_layout_engine(None)
    fig.savefig(buf, format="png")
    return buf.getvalue()


def scaled_by_metric(metrics: list[str], matrix: list[list[float | None]]):
    """(values, colours) of the matrix as n x n arrays (NaN where empty): each column on its own
    metric's scale, 0 to the highest value of that metric in the matrix, so MRR near 0.03 and
    accuracy near 0.75 side by side both read."""
    import numpy as np

    n = len(metrics)
    grid = np.full((max(n, 1), max(n, 1)), np.nan)
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            if v is not None:
                grid[i, j] = v
    top = {m: np.nanmax(grid[:, [j for j in range(n) if metrics[j] == m]], initial=0.0) for m in set(metrics)}
    scale = np.array([top[m] if top[m] > 0 else 1.0 for m in metrics] or [1.0])
    return grid, grid / scale


def heatmap_png(tasks: list[str], metrics: list[str], matrix: list[list[float | None]]) -> bytes:
    """Accuracy matrix heatmap, coloured by ``scaled_by_metric``; cells above the diagonal (tasks
    not yet learned) stay blank."""
    import numpy as np

    n = len(tasks)
    grid, scaled = scaled_by_metric(metrics, matrix)
    fig = _figure(1.2 * n + 2.5, 1.0 * n + 1.8)
    ax = fig.add_subplot()
    im = ax.imshow(scaled, cmap="viridis", vmin=0, vmax=1)
    labels = [f"{t}\n({m})" for t, m in zip(tasks, metrics)]
    ax.set_xticks(range(n), labels, fontsize=8)
    ax.set_yticks(range(n), [f"after {t}" for t in tasks], fontsize=8)
    ax.set_xlabel("task evaluated (test split)")
    for i in range(n):
        for j in range(n):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.3f}", ha="center", va="center", fontsize=7,
                        color="k" if scaled[i, j] > 0.6 else "w")
    fig.colorbar(im, ax=ax, fraction=0.046, label="value / highest value of the same metric")
    ax.set_title("Conure accuracy matrix (colour per metric)")
    fig.tight_layout()
    return _png(fig)


def metric_by_step_png(tasks: list[str], metrics: list[str], matrix: list[list[float | None]]) -> bytes:
    """One panel per task: its test metric (own scale) against the number of tasks learned."""
    n = len(tasks)
    cols = min(n, 3) or 1
    rows = -(-n // cols) or 1
    fig = _figure(3.2 * cols, 2.4 * rows)
    for j, (task, metric) in enumerate(zip(tasks, metrics)):
        ax = fig.add_subplot(rows, cols, j + 1)
        points = [(i + 1, row[j]) for i, row in enumerate(matrix) if j < len(row) and row[j] is not None]
        if points:
            ax.plot([x for x, _ in points], [y for _, y in points], marker="o")
        ax.set_title(f"{task} ({metric})", fontsize=9)
        ax.set_xticks(range(1, n + 1))
        ax.set_xlim(0.5, n + 0.5)
        ax.set_xlabel("tasks learned", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle("Test metric of every task as tasks are learned (flat = nothing forgotten)", fontsize=10)
    fig.tight_layout()
    return _png(fig)


class MetricBuffer:
    """Per-epoch metrics of one run: a SQLite write per epoch costs more than a small epoch."""

    def __init__(self, tracker: Tracker, run_id: str, every_s: float):
        self.tracker, self.run_id, self.every_s = tracker, run_id, every_s
        self.items: list[Metric] = []
        self.last = time.perf_counter()

    def add(self, metrics: dict[str, float | None], step: int) -> None:
        now = int(time.time() * 1000)
        self.items += [Metric(metric_key(k), float(v), now, step) for k, v in metrics.items() if v is not None]
        if time.perf_counter() - self.last >= self.every_s:
            self.flush()

    def flush(self, steps: list[tuple[int, dict[str, float | None]]] = (), tags: dict[str, Any] | None = None) -> None:
        """Write the buffered metrics, with ``steps`` and ``tags`` of the same run, in one store call."""
        self.tracker.log_batch(self.run_id, steps, tags=tags, metrics=self.items)
        self.items, self.last = [], time.perf_counter()
