"""Lineage store: content-addressed states, a HEAD pointer per lineage, a lock per lineage.

Layout (under ``CONURE_HOME``): ``states/<digest>/`` one saved lineage state each (written to a temp
folder and renamed, so a crash never leaves half a state); ``lineages/<name>/HEAD.json`` the learned
tasks in order with the state digest after each prefix (temp file + rename: old or new, never half);
``lineages/<name>/.lock`` the writer lock (an OS lock: its content is never read, a killed holder
releases it). Temporaries a killed run left are removed by the next writer (``tasks.durable``).
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from pydantic import BaseModel, Field

from conure_core.atomic import publish_dir, staged_dir
from tasks import crash, durable
from tasks.errors import PipelineError
from tasks.settings import Layout

LOCK_TIMEOUT_S = float(os.environ.get("CONURE_LOCK_TIMEOUT", "600"))


class LearnedTask(BaseModel):
    """One task of a lineage, as HEAD remembers it."""

    name: str
    kind: str
    metric: str = ""
    prepared_digest: str
    prepared_path: str  # relative to the home, so a moved home keeps working
    source: str = ""  # the task folder it came from
    prune_ratio: float | None = None
    stages: dict[str, str] = Field(default_factory=dict)  # stage -> state digest after it
    state_digest: str = ""  # state after this task (its last stage)
    free_capacity: dict[str, float] = Field(default_factory=dict)
    rows: int = 0
    folder_digest: str = ""  # digest of the task folder it was ingested from
    catalogue: int | None = None  # items the task reads: T1's plus those tasks up to it introduced
    manifest: dict[str, Any] = Field(default_factory=dict)


class Head(BaseModel):
    """The pointer of one lineage: what it learned, in order, and its states per prefix."""

    lineage: str
    strategy: str = "conure"
    preset: str = "quick"
    config: dict[str, Any] = Field(default_factory=dict)  # Preset.to_dict()
    tasks: list[LearnedTask] = Field(default_factory=list)
    matrix: list[list[float | None]] = Field(default_factory=list)  # matrix[i][j]: task j after task i
    parent: dict[str, Any] | None = None  # backfills: {"lineage": ..., "prefix": K}
    # `conure refresh`: the users' current histories (a prepared T1 table: path relative to the home,
    # digest, counts); None = T1's own table
    histories: dict[str, Any] | None = None
    updated: float = 0.0

    @property
    def state_digest(self) -> str:
        return self.tasks[-1].state_digest if self.tasks else ""

    def task(self, name: str) -> LearnedTask:
        for t in self.tasks:
            if t.name == name:
                return t
        raise PipelineError(f"lineage '{self.lineage}' has no task '{name}'; it learned "
                            f"{[t.name for t in self.tasks]} (see `conure report --lineage {self.lineage}`).")


def atomic_write_text(path: Path, text: str, point: str = "") -> None:
    """Write a text file so readers see the old or the new content, never half of it."""
    durable.atomic_write_bytes(path, text.encode(), point)


def check_name(name: str) -> str:
    """A lineage name is a folder and an MLflow experiment name: letters, digits, '-', '_', '.'."""
    ok = name and all(c.isalnum() or c in "-_." for c in name) and not name.startswith(".")
    if not ok:
        raise PipelineError(f"lineage name {name!r} is not allowed; use letters, digits, '-', '_' or '.'.")
    return name


class LineageStore:
    """Reads and writes heads and states under one home."""

    def __init__(self, layout: Layout | None = None):
        self.layout = layout or Layout()

    # --- heads -------------------------------------------------------------------------------
    def head_path(self, lineage: str) -> Path:
        return self.layout.lineage_dir(check_name(lineage)) / "HEAD.json"

    def read_head(self, lineage: str) -> Head | None:
        path = self.head_path(lineage)
        if not path.exists():
            return None
        try:
            return Head.model_validate_json(path.read_text())
        except ValueError as exc:
            raise PipelineError(f"{path} is not a valid lineage pointer ({str(exc).splitlines()[0]}); "
                                "restore it or remove the lineage folder.") from None

    def require_head(self, lineage: str) -> Head:
        head = self.read_head(lineage)
        if head is None:
            known = ", ".join(self.lineages()) or "none yet"
            raise PipelineError(f"lineage '{lineage}' does not exist under {self.layout.root} "
                                f"(known: {known}); create it with `conure run` or `conure learn`.")
        return head

    def write_head(self, head: Head) -> None:
        head.updated = time.time()
        atomic_write_text(self.head_path(head.lineage), head.model_dump_json(indent=1), point="head-write")

    def lineages(self) -> list[str]:
        root = self.layout.lineages
        return sorted(p.parent.name for p in root.glob("*/HEAD.json")) if root.exists() else []

    # --- lock --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, lineage: str, timeout: float | None = None,
             notify: Callable[[str], None] | None = None) -> Iterator[None]:
        """Hold the lineage's writer lock; wait (saying so) up to ``timeout`` s, then fail clearly.

        An OS file lock: a killed holder (even ``kill -9``) releases it with its process.
        """
        from filelock import FileLock, Timeout

        timeout = LOCK_TIMEOUT_S if timeout is None else timeout
        path = self.layout.lineage_dir(check_name(lineage)) / ".lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        durable.hold_home(self.layout.root)  # a writer from now on; sweeps a killed run's temporaries
        lock = FileLock(str(path))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            (notify or print)(f"lineage '{lineage}' is in use by another run; waiting up to {timeout:.0f} s "
                              f"for its lock ({path})")
            try:
                lock.acquire(timeout=timeout)
            except Timeout:
                raise PipelineError(f"lineage '{lineage}' is still in use by another run after {timeout:.0f} s; "
                                    f"wait for it to finish (lock file: {path}).") from None
        try:
            yield
        finally:
            lock.release()

    # --- states ------------------------------------------------------------------------------
    def has_state(self, digest: str) -> bool:
        # states only ever appear by renaming a finished temp folder, so existing means complete
        return bool(digest) and self.layout.state_dir(digest).is_dir()

    def put_state(self, save: Callable[[Path], str]) -> str:
        """Save a state through ``save(tmp_dir) -> digest`` and move it to ``states/<digest>``.

        Content addressing makes this idempotent: a state already stored is kept, the copy dropped.
        """
        durable.hold_home(self.layout.root)
        with staged_dir(self.layout.states) as tmp:
            digest = save(tmp)
            crash.point("state-write")
            publish_dir(tmp, self.layout.state_dir(digest))
            crash.point("state-written")
            return digest

    def state_path(self, digest: str) -> Path:
        if not self.has_state(digest):
            raise PipelineError(f"lineage state {digest} is missing from {self.layout.states}; "
                                "re-run the flow to rebuild it.")
        return self.layout.state_dir(digest)

    def prepared_abs(self, task: LearnedTask) -> Path:
        """The absolute folder of a learned task's prepared table (paths in HEAD are relative to the home)."""
        return self.layout.root / task.prepared_path

    def histories_abs(self, head: Head) -> Path:
        """The folder of the users' stored histories that `user` answers read: the latest refresh, else T1's table."""
        return self.layout.root / head.histories["path"] if head.histories else self.prepared_abs(head.tasks[0])


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=str))
