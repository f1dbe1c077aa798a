"""Fixtures for the data-layer tests: bundled MovieLens folders, a prepared T1, task-folder writer."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from conure_core.data.movielens import write_bundled_tasks


@pytest.fixture(scope="session")
def bundled(tmp_path_factory) -> list[Path]:
    return write_bundled_tasks(tmp_path_factory.mktemp("bundled"))


@pytest.fixture(scope="session")
def t1_ref(bundled, tmp_path_factory):
    from data_contracts.ingest import ingest_task
    return ingest_task(bundled[0], tmp_path_factory.mktemp("t1out"))


def make_task(root: Path, name: str, kind: str, table: pa.Table | None = None, *, csv: bytes | None = None,
              manifest: dict | None = None, folder: str | None = None) -> Path:
    """Write a task folder: task.yaml + data.parquet (from ``table``) or data.csv (raw bytes)."""
    d = Path(root) / (folder or name.replace("/", "_").replace(".", "_"))
    d.mkdir(parents=True, exist_ok=True)
    (d / "task.yaml").write_text(yaml.safe_dump(manifest if manifest is not None else {"name": name, "kind": kind}))
    if table is not None:
        pq.write_table(table, d / "data.parquet")
    if csv is not None:
        (d / "data.csv").write_bytes(csv)
    return d


def leftovers(out_root: Path) -> list[Path]:
    """Files under out_root that are not GX reports (a failed ingest must leave none)."""
    out_root = Path(out_root)
    if not out_root.exists():
        return []
    return [p for p in out_root.rglob("*") if p.is_file() and "reports" not in p.relative_to(out_root).parts]
