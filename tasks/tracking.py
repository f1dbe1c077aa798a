"""Every MLflow call of the pipeline (MLflow 3): runs, params, metrics, artifacts, datasets, models.

One experiment per lineage; a parent run per flow run; a nested run per task stage. The model
registry holds ``conure-<lineage>`` with one version per learned task and the aliases ``head``
(the newest; MLflow reserves the name "latest") and ``tasks-<n>`` (the version after n tasks).
Uses ``MlflowClient`` with explicit run ids (no fluent active run), so Prefect's threads are safe.
"""
from __future__ import annotations

import io
import json
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tasks.settings import Layout, quiet_libraries
from tasks.stores import ensure_tracking_store

quiet_libraries()

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402

quiet_libraries()  # mlflow resets its logger level on import

HEAD_ALIAS = "head"
# Creating a SQLite store runs MLflow's migrations (seconds); two threads doing it at once collide.
_INIT_LOCK = threading.Lock()


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

    def __init__(self, lineage: str, layout: Layout | None = None):
        self.layout = layout or Layout()
        self.lineage = lineage
        self.uri = self.layout.tracking_uri()
        mlflow.set_tracking_uri(self.uri)
        with _INIT_LOCK:
            ensure_tracking_store(self.uri)
            self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
            self.experiment_id = self._experiment()

    def _experiment(self) -> str:
        exp = self.client.get_experiment_by_name(self.lineage)
        if exp is not None:
            return exp.experiment_id
        location = None
        if self.uri.startswith("sqlite:"):  # embedded store: artifacts next to it, not in ./mlruns
            location = (self.layout.artifacts / self.lineage).as_uri()
        try:
            return self.client.create_experiment(self.lineage, artifact_location=location,
                                                 tags={"conure.lineage": self.lineage})
        except mlflow.exceptions.MlflowException:  # created meanwhile by another process
            return self.client.get_experiment_by_name(self.lineage).experiment_id

    def runs_url(self, base: str = "") -> str:
        """Where the lineage's runs live in the UI (MLflow 3.17 otherwise opens a GenAI overview)."""
        return f"{base}/#/experiments/{self.experiment_id}/runs"

    # --- runs --------------------------------------------------------------------------------
    def start_run(self, name: str, parent: str | None = None, tags: dict[str, str] | None = None,
                  params: dict[str, Any] | None = None) -> str:
        all_tags = {"conure.lineage": self.lineage, **(tags or {})}
        if parent:
            all_tags["mlflow.parentRunId"] = parent
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        if params:
            self.log_params(run.info.run_id, params)
        return run.info.run_id

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def close_stale_runs(self) -> int:
        """Runs left RUNNING by a killed process (the caller holds the lineage lock) become KILLED."""
        stale = self.client.search_runs([self.experiment_id], "attributes.status = 'RUNNING'", max_results=500)
        for run in stale:
            self.client.set_terminated(run.info.run_id, status="KILLED")
        return len(stale)

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        flat = flatten("", params)
        items = [Param(k[:250], v[:6000]) for k, v in flat.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i:i + 100], synchronous=True)

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()], synchronous=True)

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        items = [Metric(metric_key(k), float(v), now, step) for k, v in metrics.items() if v is not None]
        for i in range(0, len(items), 500):
            self.client.log_batch(run_id, metrics=items[i:i + 500], synchronous=True)

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

    def log_file(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def log_dir(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(run_id, str(path), artifact_path)

    def log_owner_maps(self, run_id: str, owner_maps: dict[str, Any], num_tasks: int) -> dict:
        """Owner maps as one compressed npz plus a JSON summary (weights owned per task per tensor)."""
        import numpy as np

        arrays = {k: v.detach().cpu().numpy().astype(np.uint8) for k, v in owner_maps.items()}
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        self.log_bytes(run_id, buf.getvalue(), "masks/owner_maps.npz")
        summary = {}
        for name, arr in arrays.items():
            counts = np.bincount(arr.ravel(), minlength=num_tasks + 1)
            summary[name] = {"size": int(arr.size), "free": int(counts[0]),
                             "owned": {str(t): int(c) for t, c in enumerate(counts) if t and c}}
        self.log_bytes(run_id, json.dumps(summary, indent=1).encode(), "masks/mask_summary.json")
        return summary

    def log_matrix(self, run_id: str, tasks: list[str], metrics: list[str],
                   matrix: list[list[float | None]]) -> None:
        """The accuracy matrix as CSV + JSON and a heatmap PNG (row i: after task i; column j: task j)."""
        lines = ["after," + ",".join(tasks)]
        for name, row in zip(tasks, matrix):
            lines.append(name + "," + ",".join("" if v is None else f"{v:.6f}" for v in row))
        self.log_bytes(run_id, ("\n".join(lines) + "\n").encode(), "matrix/accuracy_matrix.csv")
        self.log_bytes(run_id, json.dumps({"tasks": tasks, "metric": metrics, "matrix": matrix}).encode(),
                       "matrix/accuracy_matrix.json")
        self.log_bytes(run_id, heatmap_png(tasks, metrics, matrix), "matrix/accuracy_matrix.png")

    def log_dataset(self, run_id: str, name: str, digest: str, source: str, context: str,
                    profile: dict | None = None) -> None:
        """One task's prepared table as a run input, identified by its content digest."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        entity = Dataset(name=name, digest=digest[:36], source_type="local", source=json.dumps({"uri": source}),
                         profile=json.dumps(profile) if profile else None)
        self.client.log_inputs(run_id, datasets=[DatasetInput(entity, [InputTag("mlflow.data.context", context)])])

    # --- model registry ----------------------------------------------------------------------
    def register(self, run_id: str, state_dir: Path, tasks: list[str], state_digest: str) -> str:
        """Version of ``conure-<lineage>`` for this state (re-used when already registered) + aliases."""
        name = model_name(self.lineage)
        try:
            self.client.get_registered_model(name)
        except mlflow.exceptions.MlflowException:
            try:
                self.client.create_registered_model(name, tags={"conure.lineage": self.lineage})
            except mlflow.exceptions.MlflowException:
                pass  # created meanwhile
        existing = [v for v in self.client.search_model_versions(f"name='{name}'")
                    if v.tags.get("state_digest") == state_digest]
        if existing:
            version = existing[0].version
        else:
            self.log_dir(run_id, state_dir, "state")
            source = f"{self.client.get_run(run_id).info.artifact_uri}/state"
            mv = self.client.create_model_version(
                name, source=source, run_id=run_id,
                tags={"state_digest": state_digest, "tasks": ",".join(tasks), "num_tasks": str(len(tasks))},
                description=f"Conure lineage '{self.lineage}' after {len(tasks)} task(s): {', '.join(tasks)}")
            version = mv.version
        self.client.set_registered_model_alias(name, HEAD_ALIAS, version)
        self.client.set_registered_model_alias(name, f"tasks-{len(tasks)}", version)
        return str(version)


def heatmap_png(tasks: list[str], metrics: list[str], matrix: list[list[float | None]]) -> bytes:
    """Accuracy matrix heatmap; cells above the diagonal (tasks not yet learned) stay blank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    n = len(tasks)
    grid = np.full((max(n, 1), max(n, 1)), np.nan)
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            if v is not None:
                grid[i, j] = v
    fig, ax = plt.subplots(figsize=(1.2 * n + 2.5, 1.0 * n + 1.8), dpi=100)
    im = ax.imshow(grid, cmap="viridis")
    labels = [f"{t}\n({m})" for t, m in zip(tasks, metrics)]
    ax.set_xticks(range(n), labels, fontsize=8)
    ax.set_yticks(range(n), [f"after {t}" for t in tasks], fontsize=8)
    ax.set_xlabel("task evaluated (test split)")
    for i in range(n):
        for j in range(n):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.3f}", ha="center", va="center", fontsize=7, color="w")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title("Conure accuracy matrix")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


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

    def flush(self) -> None:
        for i in range(0, len(self.items), 500):
            self.tracker.client.log_batch(self.run_id, metrics=self.items[i:i + 500], synchronous=True)
        self.items, self.last = [], time.perf_counter()
