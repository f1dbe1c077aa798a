"""The smallest glue between the pipeline and the learner / data layer (no logic of theirs here).

Everything the Prefect tasks need from ``conure_core`` and ``data_contracts`` goes through these
functions, so a signature change there is fixed in one place.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

from tasks.errors import PipelineError

STATE_FILE = "state.safetensors"


def folder_digest(task_dir: Path) -> str:
    """Digest of a task folder's visible files (names + bytes): the cache key of its ingestion.

    The landing marker is left out (same data, same digest, landed or not); a symbolic link counts
    by its name and target text, never by what it points to, so nothing outside the folder is read
    (the data layer refuses linked tables and manifests with its own message).
    """
    import os
    import stat

    from conure_core.atomic import sha256_file
    from data_contracts.landing import MARKER

    task_dir = Path(task_dir)
    entries = []
    for root, dirs, names in os.walk(task_dir):  # followlinks=False: linked folders are not entered
        rel_root = Path(root).relative_to(task_dir)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names + [d for d in dirs if (Path(root) / d).is_symlink()]:
            rel = rel_root / name
            if name.startswith(".") or rel == Path(MARKER):
                continue
            entries.append(rel)
    h = hashlib.sha256()
    for rel in sorted(entries):
        path = task_dir / rel
        h.update(str(rel).encode() + b"\0")
        if path.is_symlink():
            h.update(b"symlink:" + os.readlink(path).encode())
            continue
        if not stat.S_ISREG(path.lstat().st_mode):  # a FIFO or device: never opened (it could block)
            h.update(b"special")
            continue
        sha256_file(path, into=h)
    return h.hexdigest()[:32]


def ref_to_dict(ref: Any, home: Path) -> dict:
    """A PreparedRef as plain JSON (path relative to the home when inside it)."""
    if hasattr(ref, "model_dump"):
        data = ref.model_dump(mode="json")
    elif dataclasses.is_dataclass(ref):
        data = dataclasses.asdict(ref)
    else:
        data = dict(ref)
    path = Path(data["path"]).resolve()
    data["path"] = str(path.relative_to(home)) if path.is_relative_to(home) else str(path)
    manifest = data.get("manifest") or {}
    if hasattr(manifest, "model_dump"):
        manifest = manifest.model_dump(mode="json")
    data["manifest"] = manifest
    return data


def abs_path(home: Path, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else home / p


def train_overrides(ref: dict) -> dict:
    """TrainConfig overrides from a task's manifest (its names mapped to TrainConfig's)."""
    from conure_core.config import manifest_overrides

    return manifest_overrides(ref.get("manifest") or {})


def load_task_data(home: Path, ref: dict):
    """TaskData of a prepared task."""
    from conure_core.data.prepared import load_task

    return load_task(abs_path(home, ref["path"]))


def new_lineage(model_cfg: dict, task, device=None):
    from conure_core.config import ModelConfig
    from conure_core.lineage import Lineage

    return Lineage.new(ModelConfig.from_dict(model_cfg), task.num_items, list(task.vocab), device=device)


def resolved_preset(preset: dict, ref: dict):
    """The Preset a task of ``ref`` learns with: ``Preset.for_items`` of T1's vocabulary (the ref's)."""
    from conure_core.config import Preset

    return Preset.from_dict(preset).for_items(int(ref.get("num_items") or 0))


def use_threads(preset: dict) -> None:
    """torch's intra-op thread count as the preset sets it: a computing step's first act (float sums,
    so state digests, depend on it); never a side effect of computing a cache key."""
    from conure_core.config import Preset

    Preset.from_dict(preset).apply_threads()


def load_lineage(state_dir: Path, device=None):
    from conure_core.checkpoint import load_state

    return load_state(state_dir / STATE_FILE, device=device)


def stage_inputs(store, stage: str, index: int, ref: dict, parent: str | None, preset: dict, device=None):
    """(lineage, TaskData, TrainConfig) a stage starts from: the parent state, or T1's fresh lineage for
    the first task's train stage; the one place every stage driver (one process, torchrun ranks) reads."""
    use_threads(preset)
    data = load_task_data(store.layout.root, ref)
    cfg = train_config(preset, index, ref)
    if parent:
        return load_lineage(store.state_path(parent), device=device), data, cfg
    if stage == "train" and index == 0:
        return new_lineage(resolved_preset(preset, {"num_items": data.num_items}).model.to_dict(), data,
                           device=device), data, cfg
    raise PipelineError(f"stage {stage} of task '{ref['name']}' has no parent state; re-run the flow.")


def run_stage(lineage, stage: str, data, cfg, progress=None) -> dict:
    """One Conure stage through the learner's single entry point (``Lineage.step``): a JSON-safe result."""
    return lineage.step(stage, data, cfg, progress)


def state_fingerprint(lineage) -> str:
    """Digest of every tensor a state holds (the checkpoint's own layout): ranks compare it."""
    from conure_core.checkpoint import state_tensors
    from conure_core.distributed import tensors_digest

    return tensors_digest(state_tensors(lineage))


def owner_maps(state_dir: Path) -> dict:
    """The owner maps of a stored state, straight from its file (no model build)."""
    from conure_core.checkpoint import read_owner_maps

    return read_owner_maps(state_dir / STATE_FILE)


def save_lineage(lineage, tmp_dir: Path) -> str:
    """Write the state into ``tmp_dir`` and return its digest (sha256 of the safetensors file)."""
    from conure_core.checkpoint import save_state, state_digest

    path = save_state(lineage, tmp_dir / STATE_FILE)
    return state_digest(path)


def train_config(preset: dict, index: int, ref: dict):
    """The TrainConfig of the task at 0-based ``index`` (preset + the manifest's overrides)."""
    return resolved_preset(preset, ref).train_config(index, train_overrides(ref), ref.get("kind"))


def kind_of(name: str):
    """The registered task kind ``name`` (``conure_core.kinds``): metric, display name, answers."""
    from conure_core.kinds import kind_of as registered

    return registered(name)


def metric_of(kind: str) -> str:
    return kind_of(kind).metric


def run_baseline(name: str, preset: dict, data: list, overrides: dict[str, dict], progress=None) -> dict:
    """Run a non-Conure strategy of conure_core.strategies over TaskData in order; its report as a dict."""
    try:
        from conure_core.strategies import STRATEGIES, build_strategy, run_strategy
    except ImportError:
        raise PipelineError(f"strategy '{name}' is not available yet (conure_core.strategies is missing); "
                            "use the default 'conure' strategy.") from None
    if name not in STRATEGIES:
        raise PipelineError(f"strategy '{name}' is not available; choose one of {', '.join(sorted(STRATEGIES))}.")
    from conure_core.config import Preset

    strategy = build_strategy(name, Preset.from_dict(preset), data[0].num_items, overrides=overrides,
                              item_vocab=list(data[0].vocab), progress=progress)
    reports = run_strategy(strategy, data, progress=progress)
    return reports[name].to_dict()


def pad_matrix(rows: list[list[float | None]], n: int) -> list[list[float | None]]:
    """Rows of growing length as an n x n lower-triangular matrix (the learner's one padding)."""
    from conure_core.cl_report import pad

    return pad(rows, n)


def matrix_summary(matrix: list[list[float | None]], metrics: list[str] | None = None) -> dict:
    """``final_average`` and ``backward_transfer`` of an accuracy matrix (the learner's one definition,
    ``metrics`` naming each column's metric for its direction); None for a matrix with a missing or
    non-finite entry (a report still prints)."""
    from conure_core.cl_report import ReportError, backward_transfer, final_average

    try:
        return {"final_average": final_average(matrix), "backward_transfer": backward_transfer(matrix, metrics=metrics)}
    except ReportError:
        return {"final_average": None, "backward_transfer": None}


def load_preset(name: str | None) -> dict:
    """A preset by name (quick, paper) or from a JSON file holding ``Preset.to_dict()``, as a dict."""
    import json

    from conure_core.config import ConfigError, Preset, get_preset

    name = name or "quick"
    if name.endswith(".json"):
        path = Path(name)
        if not path.is_file():
            raise PipelineError(f"preset file {path} does not exist; pass quick, paper or a JSON preset file.")
        try:
            return Preset.from_dict(json.loads(path.read_text())).to_dict()
        except (ValueError, KeyError, TypeError) as exc:
            raise PipelineError(f"preset file {path} is not a valid preset ({exc}); "
                                "write it as conure_core.config.Preset.to_dict() does.") from None
    try:
        return get_preset(name).to_dict()
    except ConfigError as exc:
        raise PipelineError(str(exc)) from None


def task_kind(task_dir: Path) -> str:
    """The kind (sequence | item | class | regression ...) a task folder's manifest declares (ContractError if unreadable)."""
    from data_contracts.manifest import load_manifest

    return load_manifest(Path(task_dir)).kind


def bundled_task_dirs(bundled: Path, suite: str = "default") -> list[Path]:
    """A bundled MovieLens-100K suite's task folders (``default`` in ``bundled``, others in
    ``bundled/<suite>``), written on first use, in learning order."""
    from conure_core.data.suites import suite_task_names, write_suite
    from tasks.durable import bundled_dirs

    dest = bundled if suite == "default" else bundled / suite
    # written whole beside the folder, then renamed: a kill mid-write never leaves a task half-written
    return bundled_dirs(dest, list(suite_task_names(suite)), lambda d: write_suite(suite, d))


def catalogue(model):
    """The item id of every token 1.. of a model (token t = entry t - 1; the separator's entry is null), as
    an Arrow string array: T1's items, then those later tasks introduced (``conure_core.catalogue``)."""
    import pyarrow as pa

    return pa.array([None if v is None else str(v) for v in model.model.catalogue_ids()], pa.string())


def encode_histories(histories: list, catalogue, length: int):
    """Live histories (lists of item ids, oldest first) as T1 tokens (``conure_core.data.histories``)."""
    from conure_core.data.histories import encode_histories as encode

    return encode(histories, catalogue, length)


def label_positions(catalogue, labels: list[str]):
    """T1 token -> position in a task's label vocabulary (-1: none)."""
    from conure_core.data.histories import label_positions as positions

    return positions(catalogue, labels)


def capacity_forecast(tasks: list[str], free_after: list[dict], min_free: float) -> dict:
    """What each task took, what is free, how many more tasks fit (``conure_core.capacity``)."""
    from conure_core.capacity import forecast

    return forecast(tasks, free_after, min_free)


def capacity_warning(task: str, free: float, ratio: float | None, average: float, min_free: float) -> str | None:
    from conure_core.capacity import warning

    return warning(task, free, ratio, average, min_free)


def refresh_histories(update_dir: Path, out_root: Path, base_dir: Path, home: Path) -> tuple[dict, dict]:
    """A T1 update folder validated and merged into the stored histories of ``base_dir``
    (``data_contracts.ingest.ingest_update``): (reference as JSON, counts)."""
    from data_contracts.ingest import ingest_update

    ref, counts = ingest_update(Path(update_dir), Path(out_root), Path(base_dir))
    return ref_to_dict(ref, home), counts
