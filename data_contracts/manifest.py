"""task.yaml: the pydantic model of a task manifest, and reading it with one-sentence errors."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from conure_core.config import manifest_overrides
from conure_core.data.errors import DataError
from conure_core.data.tables import checked_file
from conure_core.kinds import KINDS, kind_of

from .errors import ContractError

MANIFEST = "task.yaml"


class Columns(BaseModel):
    """Column names in the table when they differ from the defaults."""

    model_config = ConfigDict(extra="forbid")
    user_id: str = "user_id"
    item_id: str = "item_id"
    timestamp: str = "timestamp"
    items: str = "items"
    label: str = "label"


class TaskManifest(BaseModel):
    """One task's manifest. Unknown keys are an error (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    kind: str  # a registered task kind (conure_core.kinds): sequence (T1), item, class, regression, ...
    description: str = ""
    columns: Columns = Field(default_factory=Columns)
    max_len: int | None = Field(default=None, ge=1, le=10_000)  # sequence task; default 100 (paper TTL)
    min_seq_len: int = Field(default=2, ge=1)  # input + target at least
    min_labels: int | None = Field(default=None, ge=1)  # default: the kind's (class 2, item 1)
    max_labels: int | None = Field(default=None, ge=1)  # default: the kind's (class 1,000, item 10,000,000)
    split_seed: int = Field(default=0, ge=0)
    # a share of the free weights to release, or "auto": the largest ratio that keeps validation (TrainConfig.prune_auto)
    prune_ratio: Annotated[float, Field(gt=0, lt=1)] | Literal["auto"] | None = None
    metric: str | None = None
    epochs: int | None = Field(default=None, ge=1)
    lr: float | None = Field(default=None, gt=0)
    batch_size: int | None = Field(default=None, ge=1)
    l2: float | None = Field(default=None, ge=0)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        # The name becomes a folder under out_root: no separators, no '..', no hidden names.
        if "/" in v or "\\" in v or ".." in v or v.startswith(".") or any(ord(c) < 32 for c in v):
            raise ValueError("must not contain path separators, '..' or a leading '.'")
        return v

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        kind_of(v)  # KindError (a ValueError) names the registered kinds
        return v

    def label_bounds(self) -> tuple[int, int]:
        """(min, max) distinct labels allowed for this task kind (its own defaults unless set)."""
        lo, hi = kind_of(self.kind).label_bounds
        return self.min_labels or lo, self.max_labels or hi

    def training_overrides(self) -> dict:
        """The TrainConfig overrides this task sets (only those given), by TrainConfig field name."""
        return manifest_overrides(self.model_dump())


def load_manifest(task_dir: Path) -> TaskManifest:
    """Read and check ``task_dir/task.yaml``; any problem raises ContractError."""
    path = Path(task_dir) / MANIFEST
    try:
        checked_file(task_dir, path)  # a link out of the folder is refused before it is read
    except DataError as exc:
        raise ContractError.from_data_error(exc) from None
    if not path.is_file():
        raise ContractError(f"{path}: no manifest; add a task.yaml with at least 'name' and 'kind'.", file=str(path))
    try:
        raw = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ContractError(f"{path}: not valid UTF-8; save the manifest as UTF-8.", file=str(path)) from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise ContractError(f"{path}: not valid YAML{line}; fix the syntax.", file=str(path)) from None
    if not isinstance(raw, dict):
        raise ContractError(f"{path}: expected a mapping of keys (name, kind, ...), got {type(raw).__name__}; "
                            f"rewrite it as 'key: value' lines.", file=str(path))
    try:
        return TaskManifest.model_validate(raw)
    except ValidationError as exc:
        raise ContractError(_explain(path, exc), file=str(path),
                            column=".".join(str(p) for p in exc.errors()[0]["loc"])) from None


def _explain(path: Path, exc: ValidationError) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        model = Columns if len(err["loc"]) > 1 else TaskManifest
        allowed = ", ".join(model.model_fields)
        return f"{path}: unknown key '{key}'; remove it or use one of: {allowed}."
    if err["type"] == "missing":
        return f"{path}: missing key '{key}'; add it (name and kind are required)."
    if key == "kind":
        return f"{path}: kind is {err.get('input')!r}; use one of {', '.join(KINDS)}."
    if key == "name":
        return f"{path}: name {err.get('input')!r} is not allowed: it {err['msg'].removeprefix('Value error, ')}; " \
               f"use letters, digits, '_', '-' or '.'."
    return f"{path}: '{key}' = {err.get('input')!r} is invalid ({err['msg']}); fix that value."
