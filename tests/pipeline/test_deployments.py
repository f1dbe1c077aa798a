"""deployments/prefect.yaml and `conure serve` declare the same four deployments, and they resolve."""
from __future__ import annotations

import importlib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


FLOWS = ["landing-watch", "run-default", "learn-task", "backfill"]


def test_prefect_yaml_entrypoints_are_flows():
    spec = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    names = [d["name"] for d in spec["deployments"]]
    # one entry per flow and pool: `prefect deploy --pool/--job-variable` are ignored for several deployments
    assert names == [f"{f}-{pool}" for pool in ("process", "docker", "k8s") for f in FLOWS]
    pools = {d["name"]: d["work_pool"] for d in spec["deployments"]}
    assert {pools[f"{f}-{p}"]["name"] for f in FLOWS for p in ("process", "docker", "k8s")} == \
        {"conure-process", "conure-docker", "conure-k8s"}
    assert all(pools[f"{f}-docker"]["job_variables"]["image"] == "{{ $CONURE_IMAGE }}" for f in FLOWS)
    assert all(pools[f"{f}-process"]["job_variables"]["env"]["CONURE_HOME"] == "{{ $CONURE_HOME }}" for f in FLOWS)
    for d in spec["deployments"]:
        path, func = d["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, func)
        params = set(flow.parameters.properties)
        assert set(d.get("parameters", {})) <= params, (d["name"], params)
    watch = spec["deployments"][0]
    assert watch["schedules"] == [{"interval": 300}] and watch["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}


def test_served_deployments_match():
    from deployments.serve import build_deployments

    deps = build_deployments(landing="/tmp/landing", lineage="x", interval=60, preset="quick")
    assert [d.name for d in deps] == FLOWS
    watch = deps[0]
    assert watch.parameters == {"landing": "/tmp/landing", "lineage": "x", "preset": "quick"}
    assert watch.schedules[0].schedule.interval.total_seconds() == 60
    assert all(not d.schedules for d in deps[1:])
