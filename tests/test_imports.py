"""Importing the project's packages changes nothing in the caller's process (no folder, no variable)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMPORT_ALL = """
import importlib, json, os, pathlib
before, here = dict(os.environ), set(pathlib.Path(".").iterdir())
for name in ("conure_core", "data_contracts", "data_contracts.ingest", "tasks", "tasks.steps", "tasks.tracking",
             "tasks.serving", "flows", "flows.learn", "flows.backfill", "flows.landing", "conure_cli.main"):
    importlib.import_module(name)
print(json.dumps({"changed": sorted(k for k in set(os.environ) | set(before) if os.environ.get(k) != before.get(k)),
                  "made": sorted(p.name for p in set(pathlib.Path(".").iterdir()) - here)}))
"""


def test_importing_the_packages_sets_no_variable_and_makes_no_folder(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONURE_", "PREFECT_", "MLFLOW_", "GX_"))}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, "-c", IMPORT_ALL], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # MLflow's own telemetry session id is MLflow's business (set when mlflow is imported)
    assert [k for k in result["changed"] if not k.startswith("_MLFLOW_")] == []
    assert result["made"] == [] and list(tmp_path.iterdir()) == []


KIND_FACTS = """
import json, sys
import conure_core.kinds as kinds, data_contracts.manifest, tasks.reporting, flows.chain
facts = {n: [k.t1, k.per_user, k.higher_is_better, k.metric, k.labels] for n, k in kinds.KINDS.items()}
from conure_core.config import PRESETS
from tasks.steps import stage_key  # a cached stage's key: the preset's TrainConfig of the task, no torch
stage_key("train", {"preset": PRESETS["quick"].to_dict(), "index": 1, "parent": "p",
                    "ref": {"name": "t", "digest": "d", "kind": "class", "num_items": 10}})
loaded = sorted(m for m in ("torch", "mlflow", "great_expectations") if m in sys.modules)
print(json.dumps({"facts": facts, "loaded": loaded}))
"""


def test_the_kinds_facts_and_a_cached_runs_modules_load_no_torch_mlflow_or_gx():
    """A re-run of cache hits reads task.yaml, the kinds' facts, HEAD and the steps' cache keys: torch
    (~1 s), MLflow and GX load only when a step computes (benchmarks.pipeline_overhead's rerun_frac)."""
    out = subprocess.run([sys.executable, "-c", KIND_FACTS], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    assert result["facts"] == {"sequence": [True, False, True, "mrr@5", "none"],
                               "item": [False, False, True, "mrr@5", "ids"],
                               "class": [False, True, True, "accuracy", "ids"],
                               "regression": [False, True, False, "rmse", "numbers"]}
