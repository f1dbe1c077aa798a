"""Pipeline tests run against a private CONURE_HOME, set before Prefect or MLflow is imported.

Data: a real subset of the bundled MovieLens-100K tasks (clicks, liked, gender; users <= 300) and a
tiny preset, so a three-task lineage trains in seconds.
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

HOME = Path(tempfile.mkdtemp(prefix="conure-test-home-"))
atexit.register(shutil.rmtree, HOME, True)
os.environ["CONURE_HOME"] = str(HOME)
os.environ["PREFECT_HOME"] = str(HOME / "prefect")
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{HOME / 'mlflow.db'}"
os.environ.pop("PREFECT_API_URL", None)  # the embedded temporary server, never a real one
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["CONURE_SERVER_IDLE"] = "20"  # the shared server of `conure` subprocesses outlives no test session
from tasks.settings import configure_process  # noqa: E402

configure_process()  # what `conure` does when a command starts (importing `tasks` does nothing)

TASKS = ("clicks", "liked", "gender")
MAX_USER = 300


def write_subset(dest: Path) -> list[Path]:
    """The three subset task folders (deterministic bytes: same digests in every test)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from conure_core.data.movielens import write_bundled_tasks

    full = dest / "full"
    dirs = {p.name: p for p in write_bundled_tasks(full)}
    out = []
    for name in TASKS:
        target = dest / name
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(dirs[name] / "task.yaml", target / "task.yaml")
        table = pq.read_table(dirs[name] / "data.parquet")
        pq.write_table(table.filter(pc.less_equal(table["user_id"], MAX_USER)), target / "data.parquet")
        out.append(target)
    shutil.rmtree(full)
    return out


def tiny_preset() -> dict:
    from conure_core.config import get_preset

    p = get_preset("quick").to_dict()
    p["name"] = "tiny"
    p["model"].update(width=16, dilations=[1, 2])
    p["first"].update(epochs=2, retrain_epochs=1, patience=2)
    p["later"].update(epochs=2, retrain_epochs=1, patience=2)
    return p


@pytest.fixture(scope="session")
def task_dirs() -> list[Path]:
    return write_subset(HOME.parent / f"{HOME.name}-tasks")


@pytest.fixture(scope="session")
def preset_file() -> str:
    path = HOME.parent / f"{HOME.name}-tiny.json"
    path.write_text(json.dumps(tiny_preset()))
    return str(path)


THREADS = 1  # the kill test's child uses the same count: float sums (so state digests) depend on it


@pytest.fixture(scope="session", autouse=True)
def _threads():
    """One intra-op thread here and in child processes, whatever other test folders set before."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def learned(task_dirs, preset_file) -> dict:
    """One real flow run on the embedded Prefect server learning the three tasks (lineage 'e2e')."""
    from flows.learn import learn_tasks

    return learn_tasks([str(d) for d in task_dirs], lineage="e2e", preset=preset_file)


@pytest.fixture(scope="session", autouse=True)
def _cleanup_task_dirs():
    yield
    from tasks.prefect_server import Paths, stop

    stop(Paths(HOME / "prefect"))
    shutil.rmtree(HOME.parent / f"{HOME.name}-tasks", ignore_errors=True)
    (HOME.parent / f"{HOME.name}-tiny.json").unlink(missing_ok=True)
