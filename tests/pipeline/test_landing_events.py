"""Event-driven landing: the watcher emits `conure.landing.ready` once per complete folder, and the
landing-watch deployment declares the trigger (and concurrency limit) that turns it into a sweep."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
from data_contracts.landing import seal


def _landing_entry() -> dict:
    spec = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    return next(d for d in spec["deployments"] if d["name"] == "landing-watch-process")


def _folder(landing: Path, name: str, marker: bool) -> Path:
    d = landing / name
    d.mkdir(parents=True)
    (d / "task.yaml").write_text(f"name: {name}\nkind: class\n")
    (d / "data.csv").write_text("user_id,label\n1,a\n2,b\n")
    if marker:
        seal(d)
    return d


@pytest.fixture
def captured_events():
    """Prefect's own in-memory events client behind the real emit_event / EventsWorker path."""
    from prefect.events.clients import AssertingEventsClient
    from prefect.events.worker import EventsWorker

    EventsWorker.set_client_override(AssertingEventsClient)
    AssertingEventsClient.reset()
    try:
        yield lambda: (EventsWorker.drain_all(), AssertingEventsClient.last.pop_events()
                       if AssertingEventsClient.last else [])[1]
    finally:
        EventsWorker.drain_all()
        EventsWorker.set_client_override(None)
        AssertingEventsClient.reset()


def test_watcher_emits_once_per_complete_folder(tmp_path, captured_events):
    from flows.landing_events import EVENT, emit_ready

    landing = tmp_path / "landing"
    ready = _folder(landing, "ready", marker=True)
    arriving = _folder(landing, "arriving", marker=False)
    seen: dict = {}
    emit_ready(landing, seen)
    [event] = captured_events()
    assert event.event == EVENT
    assert event.resource.id == f"conure.landing.{ready.resolve()}"
    assert event.resource["conure.folder"] == str(ready.resolve()) and event.resource.name == "ready"
    assert event.payload["landing"] == str(landing.resolve())
    assert event.payload["files"] == ["_SUCCESS", "data.csv", "task.yaml"]

    emit_ready(landing, seen)
    assert captured_events() == []  # nothing new: nothing sent
    seal(arriving)
    emit_ready(landing, seen)
    assert [e.resource["conure.folder"] for e in captured_events()] == [str(arriving.resolve())]
    (ready / "data.csv").write_text("user_id,label\n1,a\n2,b\n3,c\n")  # re-copied: waits for a new seal
    emit_ready(landing, seen)
    assert captured_events() == []
    seal(ready)
    emit_ready(landing, seen)
    assert [e.resource["conure.folder"] for e in captured_events()] == [str(ready.resolve())]


def test_watcher_needs_a_server(tmp_path, monkeypatch):
    from flows.landing_events import main

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert main(["--landing", str(tmp_path), "--rounds", "1"]) == 4


def test_landing_deployment_declares_trigger_and_concurrency(tmp_path):
    """prefect.yaml's trigger, validated by Prefect itself, matches the watcher's events and renders
    the event's landing folder into the sweep's parameters."""
    from prefect.cli.deploy._triggers import _initialize_deployment_triggers
    from prefect.client.schemas.objects import ConcurrencyLimitConfig
    from prefect.events.schemas.events import Event
    from prefect.server.events.actions import RunDeployment
    from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate

    from flows.landing_events import EVENT, resource_of

    entry = _landing_entry()
    limit = ConcurrencyLimitConfig.model_validate(entry["concurrency_limit"])
    assert (limit.limit, limit.collision_strategy.value) == (1, "ENQUEUE")
    assert entry["schedules"] == [{"interval": 300}]  # the interval sweep stays beside the trigger
    [trigger] = _initialize_deployment_triggers("landing-watch", entry["triggers"])
    assert trigger.expect == {EVENT} and trigger.enabled
    folder = tmp_path / "landing" / "liked"
    event = Event(event=EVENT, resource=resource_of(folder), payload={"landing": str(folder.parent)})
    assert trigger.match.matches(event.resource)
    assert not trigger.match.matches(Event(event=EVENT, resource={"prefect.resource.id": "other.x"}).resource)
    deployment_id = uuid.uuid4()
    trigger.set_deployment_id(deployment_id)
    [action] = trigger.as_automation().actions
    assert action.type == "run-deployment" and action.deployment_id == deployment_id
    params = dict(action.parameters)
    RunDeployment._upgrade_v1_templates(params)
    rendered = hydrate(params, HydrationContext(render_jinja=True, jinja_context={"event": event}))
    assert rendered == {"landing": str(folder.parent)}


def _api(url: str, path: str, body: dict | None = None):
    import httpx

    r = httpx.post(f"{url}{path}", json=body or {}, timeout=30) if body is not None else httpx.get(f"{url}{path}")
    r.raise_for_status()
    return r.json()


@pytest.mark.slow
def test_event_starts_a_sweep_on_a_real_server(tmp_path):
    """A real `prefect server start`, the deployment from prefect.yaml, the watcher as its own
    process: the folder's marker lands, the automation creates a landing-watch flow run for that
    landing folder (no worker needed to see it scheduled)."""
    from deployments.serve import local_server

    home = tmp_path / "home"
    (home / "prefect").mkdir(parents=True)
    landing = tmp_path / "landing"
    _folder(landing, "liked", marker=True)
    env = dict(os.environ, CONURE_HOME=str(home), CONURE_REPO=str(REPO), PREFECT_HOME=str(home / "prefect"))
    old = {k: os.environ.get(k) for k in ("PREFECT_HOME",)}
    os.environ["PREFECT_HOME"] = str(home / "prefect")
    try:
        with local_server() as url:
            env["PREFECT_API_URL"] = url
            prefect = [sys.executable, "-m", "prefect"]
            run = lambda *a: subprocess.run(prefect + list(a), cwd=REPO, env=env, capture_output=True,  # noqa: E731
                                            text=True, timeout=300)
            res = run("work-pool", "create", "conure-process", "--type", "process")
            assert res.returncode == 0, res.stdout + res.stderr
            res = run("--no-prompt", "deploy", "--prefect-file", "deployments/prefect.yaml", "--name", "landing-watch-process")
            assert res.returncode == 0, res.stdout + res.stderr
            [dep] = _api(url, "/deployments/filter", {"deployments": {"name": {"any_": ["landing-watch-process"]}}})
            assert dep.get("global_concurrency_limit", {}).get("limit") == 1 or dep["concurrency_limit"] == 1, {k: v for k, v in dep.items() if "concurr" in k}
            autos = _api(url, "/automations/filter", {})
            assert any(a["trigger"].get("expect") == ["conure.landing.ready"] for a in autos), autos
            watcher = subprocess.run([sys.executable, "-m", "flows.landing_events", "--landing", str(landing),
                                      "--rounds", "1"], cwd=REPO, env=env, capture_output=True, text=True,
                                     timeout=300)
            assert watcher.returncode == 0 and "conure.landing.ready" in watcher.stdout, watcher.stderr
            deadline, runs = time.time() + 240, []
            while time.time() < deadline and not runs:  # the triggers service acts within seconds
                every = _api(url, "/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [dep["id"]]}}})
                # the interval schedule also creates (future) runs, with the default parameters
                runs = [r for r in every if r["parameters"].get("landing") is not None]
                time.sleep(2)
            assert len(runs) == 1, "no flow run was created by the trigger"
            assert runs[0]["parameters"] == {"landing": str(landing.resolve()), "lineage": "default",
                                             "preset": None, "floor": 0.5}
            assert (runs[0].get("created_by") or {}).get("type") == "AUTOMATION", runs[0].get("created_by")
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    shutil.rmtree(home, ignore_errors=True)
