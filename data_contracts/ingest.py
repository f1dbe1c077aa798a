"""Ingesting a task folder: read -> GX validate -> quarantine unknown users -> prepare -> write."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from conure_core.atomic import publish_dir, sha256_file, staged_dir
from conure_core.data import prepare as prep
from conure_core.data.errors import DataError
from conure_core.data.tables import find_table, read_table
from conure_core.kinds import kind_of

from . import suites
from .errors import ContractError
from .manifest import TaskManifest, load_manifest

REPORTS = "reports"


class PreparedRef(BaseModel):
    """Where a prepared task lives and what it holds (JSON-serialisable, for caching and MLflow)."""

    name: str
    kind: str
    digest: str
    path: Path
    rows: int
    splits: dict[str, int]
    quarantined: int = 0
    duplicates_dropped: int = 0
    interactions: int = 0  # sequence tasks: items of every user, before max_len
    interactions_dropped: int = 0  # ... of those, older than each user's last max_len
    users_cut: int = 0  # users who lost items to max_len
    num_items: int = 0  # T1's item vocabulary (every task of a lineage reads T1's sequences)
    manifest: TaskManifest

    @classmethod
    def from_dir(cls, prepared_dir: Path) -> "PreparedRef":
        """The reference of an already prepared folder (reads its meta.json)."""
        prepared_dir = Path(prepared_dir)
        meta = json.loads((prepared_dir / prep.META).read_text())
        splits = {k: meta["splits"][k] for k in ("train", "valid", "test")}
        return cls(name=meta["name"], kind=meta["kind"], digest=meta["digest"], path=prepared_dir,
                   rows=meta["rows"], splits=splits, quarantined=meta["quarantined"],
                   duplicates_dropped=meta.get("duplicates_dropped", 0), interactions=meta.get("interactions", 0),
                   interactions_dropped=meta.get("interactions_dropped", 0), users_cut=meta.get("users_cut", 0),
                   num_items=meta.get("num_items", 0), manifest=meta["manifest"])

    def cut_note(self) -> str:
        """What max_len dropped, in one sentence ("" when nothing)."""
        return max_len_note(self.interactions_dropped, self.interactions, self.users_cut, self.rows,
                            self.manifest.max_len or prep.DEFAULT_MAX_LEN, self.name)


def max_len_note(dropped: int, interactions: int, users_cut: int, users: int, max_len: int, name: str) -> str:
    """One sentence on the interactions that ``max_len`` leaves out ("" when none)."""
    if not dropped:
        return ""
    return (f"{name}: max_len {max_len} keeps each user's last {max_len} interactions: {dropped:,} of "
            f"{interactions:,} interactions ({users_cut:,} of {users:,} users) are left out; raise max_len in "
            f"task.yaml to keep them.")


class ValidationSummary(BaseModel):
    """Outcome of ``validate_task_dir``: ``ok`` and a short human summary (``str(summary)``)."""

    ok: bool
    task_dir: Path
    name: str | None = None
    kind: str | None = None
    file: str | None = None
    rows: int = 0  # rows of the table as written
    users: int = 0
    interactions: int | None = None  # sequence tasks: items over all users (long format: = rows)
    interactions_dropped: int = 0  # ... older than each user's last max_len (left out when learned)
    users_cut: int = 0
    max_len: int | None = None
    unknown_users: int = 0
    failures: list[str] = []
    unchecked: list[str] = []  # checks that could not run (no T1 given: the join to T1)

    def summary(self) -> str:
        head = f"{self.name or self.task_dir} ({self.kind or '?'}, {self.file or 'no table'}): "
        if self.ok:
            extra = f", {self.unknown_users} users unknown to T1 (would be quarantined)" if self.unknown_users else ""
            skipped = "".join(f"\n  not checked: {u}" for u in self.unchecked)
            if self.interactions is not None:
                rows = f", {self.rows:,} rows" if self.rows != self.interactions else ""
                cut = max_len_note(self.interactions_dropped, self.interactions, self.users_cut, self.users,
                                   self.max_len or 0, self.name or "")
                return head + f"OK, {self.interactions:,} interactions of {self.users:,} users{rows}." + \
                    (f"\n  {cut}" if cut else "") + skipped
            return head + f"OK, {self.rows:,} rows, {self.users:,} users{extra}.{skipped}"
        return head + f"FAILED ({len(self.failures)} problem{'s' * (len(self.failures) != 1)})\n" + \
            "\n".join(f"  - {f}" for f in self.failures)

    __str__ = summary


@dataclass
class _Checked:
    manifest: TaskManifest
    file: Path
    users: pa.Array
    values: pa.Array  # lists (sequence) or labels
    frame: object
    result: object
    failures: list[dict]
    t1_ref: dict | None = None
    rows: np.ndarray | None = None
    timings: dict = field(default_factory=dict)
    t1_users: pa.Array | None = None
    table_rows: int = 0


def _t1_dir(t1) -> Path | None:
    if t1 is None:
        return None
    return Path(t1.path) if isinstance(t1, PreparedRef) else Path(t1)


def _check(task_dir: Path, t1, known_user_floor: float, task_root: Path | None,
           require_t1: bool = True) -> _Checked:
    """Read and validate; ContractError for anything found before GX runs."""
    clock: dict = {"start": time.perf_counter()}
    task_dir = Path(task_dir)
    manifest = load_manifest(task_dir)
    try:
        file = find_table(task_dir)
        table = read_table(file)
        columns = prep.resolve_columns(manifest.columns.model_dump())
        t1_dir = _t1_dir(t1)
        if kind_of(manifest.kind).t1:
            if t1_dir is not None and require_t1:  # (validate_task_dir just ignores a T1 here)
                raise ContractError(f"{task_dir / 'task.yaml'}: kind is sequence (a T1) but a T1 was passed; "
                                    f"learn it as the first task, or fix its kind.", file=str(task_dir))
            users, lists = prep.sequence_source(table, columns, str(file))
            frame = suites.sequence_frame(users, lists)
            suite = suites.suite("sequence", min_seq_len=manifest.min_seq_len,
                                 int_items=pa.types.is_integer(lists.type.value_type),
                                 int_users=pa.types.is_integer(users.type), forms=suites.form_columns(frame))
            result = _timed_validate(frame, suite, clock)
            return _Checked(manifest, file, users, lists, frame, result, suites.failures(result, frame),
                            timings=_lap(clock), table_rows=table.num_rows)
        kind = kind_of(manifest.kind)
        if t1_dir is None and not require_t1:  # `conure validate` of a lone folder: all but the join
            users, labels = prep.label_source(table, columns, str(file), manifest.kind)
            frame = suites.label_frame(users, labels, None, label_ids=manifest.kind == "item")
            suite = suites.suite(manifest.kind, label_bounds=_bounds(manifest), unique_users=kind.one_row_per_user,
                                 forms=suites.form_columns(frame))
            result = _timed_validate(frame, suite, clock)
            return _Checked(manifest, file, users, labels, frame, result, suites.failures(result, frame),
                            timings=_lap(clock), table_rows=table.num_rows)
        if t1_dir is None:
            article = "an" if manifest.kind[0] in "aeiou" else "a"
            raise ContractError(f"{task_dir / 'task.yaml'}: {article} {manifest.kind} task joins to T1 by user id, "
                                f"but no T1 was given; ingest the sequence task first and pass it as t1.",
                                file=str(task_dir))
        users, labels = prep.label_source(table, columns, str(file), manifest.kind)
        t1_ref, t1_users = prep.t1_reference(t1_dir, task_root or Path(t1_dir).parent.parent / manifest.name)
        rows = prep.lookup_users(users, t1_users)
        frame = suites.label_frame(users, labels, rows >= 0, label_ids=manifest.kind == "item")
        suite = suites.suite(manifest.kind, label_bounds=_bounds(manifest), known_floor=known_user_floor,
                             unique_users=kind.one_row_per_user, forms=suites.form_columns(frame))
        result = _timed_validate(frame, suite, clock)
        return _Checked(manifest, file, users, labels, frame, result, suites.failures(result, frame), t1_ref,
                        rows, _lap(clock), t1_users, table.num_rows)
    except DataError as exc:
        raise ContractError.from_data_error(exc) from None


def _bounds(manifest: TaskManifest) -> tuple[int, int] | None:
    """The distinct-label bounds to check: None for labels that are numbers (any count of values)."""
    return None if kind_of(manifest.kind).labels == "numbers" else manifest.label_bounds()


def _lap(clock: dict) -> dict:
    """{'read_validate_s': since start, 'gx_s': inside GX}."""
    return {"read_validate_s": time.perf_counter() - clock["start"], "gx_s": clock.get("gx_s", 0.0)}


def _timed_validate(frame, suite, clock: dict):
    t = time.perf_counter()
    result = suites.validate(frame, suite)
    clock["gx_s"] = time.perf_counter() - t
    return result


def validate_task_dir(task_dir: Path, t1=None, *, known_user_floor: float = 0.5) -> ValidationSummary:
    """Validate a task folder without writing anything; bad input gives ``ok=False`` and messages.

    Without ``t1`` an item/class table is checked on its own, and ``unchecked`` names the join to T1.
    """
    task_dir = Path(task_dir)
    try:
        c = _check(task_dir, t1, known_user_floor, None, require_t1=False)
    except ContractError as exc:
        return ValidationSummary(ok=False, task_dir=task_dir, failures=[str(exc)])
    rel = c.file.name
    unknown = 0
    unchecked = [] if kind_of(c.manifest.kind).t1 or t1 is not None else [
        f"the join to T1 (share of users known to T1 >= {known_user_floor:g}, unknown users to quarantine): "
        f"no T1 was given"]
    if c.rows is not None and (c.rows < 0).any():
        unknown = pc.count_distinct(c.users.filter(pa.array(c.rows < 0))).as_py()
    cut = {}
    if c.manifest.kind == "sequence":
        max_len = c.manifest.max_len or prep.DEFAULT_MAX_LEN
        cut = {**prep.cut_by_max_len(c.values, max_len), "max_len": max_len}
        cut.pop("users")
    return ValidationSummary(ok=not c.failures, task_dir=task_dir, name=c.manifest.name, kind=c.manifest.kind,
                             file=rel, rows=c.table_rows, users=int(c.frame["user_id"].nunique()),
                             unknown_users=unknown, unchecked=unchecked, **cut,
                             failures=[suites.describe(f, str(c.file)) for f in c.failures])


def ingest_task(task_dir: Path, out_root: Path, t1: PreparedRef | Path | None = None, *,
                known_user_floor: float = 0.5, timings: dict | None = None) -> PreparedRef:
    """Validate, quarantine, prepare and write a task folder to ``out_root/<name>/<digest>/``.

    Raises ContractError on bad input; a GX failure writes its result (JSON + Data Docs HTML) to
    ``out_root/<name>/reports/<input digest>/`` and nothing else. ``timings``, if given, receives
    seconds per phase (read_validate_s, gx_s, prepare_s, write_s).
    """
    out_root = Path(out_root)
    task_dir = Path(task_dir)
    manifest = load_manifest(task_dir)
    c = _check(task_dir, t1, known_user_floor, out_root / manifest.name)
    raise_failures(c, out_root / manifest.name / REPORTS)
    m = c.manifest
    extra = {"manifest": m.model_dump(mode="json")}  # not the file name: same rows in CSV or Parquet, same digest
    t = time.perf_counter()
    try:
        if kind_of(m.kind).t1:
            pt = prep.prepare_sequences(c.users, c.values, name=m.name, max_len=m.max_len or prep.DEFAULT_MAX_LEN,
                                        seed=m.split_seed)
        else:
            pt = prep.prepare_labels(c.users, c.values, c.t1_users, name=m.name, kind=m.kind, t1=c.t1_ref,
                                     seed=m.split_seed, rows=c.rows)
        prepare_s = time.perf_counter() - t
        path = prep.write_prepared(pt, out_root, extra_meta=extra)
    except DataError as exc:
        raise ContractError.from_data_error(exc, file=str(c.file)) from None
    if timings is not None:
        timings.update(c.timings, prepare_s=prepare_s, write_s=time.perf_counter() - t - prepare_s)
    return PreparedRef.from_dir(path)


def raise_failures(c: _Checked, reports_root: Path) -> None:
    """A failed validation: write its GX report and raise ContractError naming the first failure."""
    if not c.failures:
        return
    report = write_report(c, reports_root)
    first = suites.describe(c.failures[0], str(c.file)).rstrip(".")
    more = f"; {len(c.failures) - 1} more failed" if len(c.failures) > 1 else ""
    f0 = c.failures[0]
    raise ContractError(f"{first} (GX report: {report}{more}).", file=str(c.file), column=f0["column"],
                        expectation=f0["expectation"], examples=f0["examples"], report_dir=report)


def ingest_update(task_dir: Path, out_root: Path, base_dir: Path) -> tuple[PreparedRef, dict]:
    """Validate a T1 update folder (kind sequence: users' current histories, new or longer rows) and write
    the stored histories of ``base_dir`` (a prepared T1 table, or an earlier refresh of it) refreshed by it,
    in the same item vocabulary, to ``out_root/<T1 name>/<digest>/``. Returns its reference and counts
    (updated, added, unknown_items, skipped_users, users)."""
    from conure_core.data.histories import refresh_table

    task_dir, out_root = Path(task_dir), Path(out_root)
    manifest = load_manifest(task_dir)
    if manifest.kind != "sequence":
        raise ContractError(f"{task_dir / 'task.yaml'}: kind is {manifest.kind}, but a history update is a T1 "
                            f"folder (kind sequence: user_id, item_id, timestamp or user_id, items); fix its kind.",
                            file=str(task_dir))
    c = _check(task_dir, None, 0.0, None)
    raise_failures(c, out_root / manifest.name / REPORTS)
    try:
        pt, counts = refresh_table(base_dir, c.users, c.values)
        path = prep.write_prepared(pt, out_root)
    except DataError as exc:
        raise ContractError.from_data_error(exc, file=str(c.file)) from None
    return PreparedRef.from_dir(path), counts


def write_report(c: _Checked, reports_root: Path) -> Path:
    """GX result as validation.json + Data Docs HTML under reports_root/<input digest>/, atomically."""
    h = sha256_file(c.file)
    h.update(c.manifest.model_dump_json().encode())
    with staged_dir(reports_root) as tmp:
        (tmp / "validation.json").write_text(json.dumps(c.result.to_json_dict(), indent=1, default=str))
        (tmp / "summary.txt").write_text("\n".join(suites.describe(f, str(c.file)) for f in c.failures) + "\n")
        suites.data_docs(c.frame, c.result, tmp / "data_docs")
        final = publish_dir(tmp, reports_root / h.hexdigest()[:16], replace=True)
    return final
