"""The shared local Prefect server: one per home, reused by concurrent commands, stopped when idle
or by `conure server stop`; Ctrl-C stops a learning command with one line, exit 130, runs Crashed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .test_cli import REPO


def _env(home: Path, **extra: str) -> dict:
    env = dict(os.environ, CONURE_HOME=str(home), PREFECT_HOME=str(home / "prefect"),
               MLFLOW_TRACKING_URI=f"sqlite:///{home / 'mlflow.db'}", **extra)
    env.pop("PREFECT_API_URL", None)
    return env


def _conure(env: dict, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "conure_cli.main", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _status(env: dict) -> dict:
    p = _conure(env, "server", "status", "--json")
    out, _ = p.communicate(timeout=120)
    return json.loads(out)


def test_concurrent_commands_share_one_server_which_stops_when_idle(tmp_path):
    env = _env(tmp_path / "home", CONURE_SERVER_IDLE="3")
    first, second = _conure(env, "server", "start"), _conure(env, "server", "start")
    outs = [p.communicate(timeout=300) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    urls = {o.strip().splitlines()[-1] for o, _ in outs}
    state = json.loads((tmp_path / "home" / "prefect" / "server.json").read_text())
    assert urls == {f"Prefect server: {state['url']}"}, outs  # both found the same server
    deadline = time.time() + 60
    while _alive(state["pid"]):  # nobody uses it: it stops itself after ~3 s idle
        assert time.time() < deadline, "the idle server did not stop"
        time.sleep(0.5)
    assert _status(env)["running"] is False


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_server_stop(tmp_path):
    env = _env(tmp_path / "home")
    start = _conure(env, "server", "start")
    assert start.wait(300) == 0
    pid = _status(env)["pid"]
    stop = _conure(env, "server", "stop")
    out, _ = stop.communicate(timeout=120)
    assert stop.returncode == 0 and out.startswith("stopped the Prefect server at http://127.0.0.1:")
    assert f"(pid {pid})" in out and not _status(env)["running"]
    out, _ = _conure(env, "server", "stop").communicate(timeout=120)
    assert out.strip() == "no Prefect server was running"


def test_ctrl_c_message_and_exit_code(monkeypatch):
    """A KeyboardInterrupt inside a command: one line, exit 130 (typer alone exits 130 silently)."""
    from typer.testing import CliRunner

    import conure_cli.main as cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_flows", interrupted)
    before = signal.getsignal(signal.SIGINT)
    try:
        result = CliRunner().invoke(cli.app, ["run"])
    finally:
        signal.signal(signal.SIGINT, before)
    assert result.exit_code == 130
    assert result.stderr.splitlines()[-1] == "conure: interrupted; re-run to resume."


@pytest.mark.slow
def test_ctrl_c_in_a_terminal_stops_learn(tmp_path, task_dirs, preset_file):
    """SIGINT to the whole process group (what Ctrl-C does) mid-training: exit 130 within 10 s with one
    line; the server, outside the group, marks the interrupted runs Crashed; a re-run completes."""
    env = _env(tmp_path / "home", CONURE_EVENTS="1")
    args = ("learn", str(task_dirs[0]), "--lineage", "ctrlc", "--preset", preset_file)
    proc = _conure(env, *args, start_new_session=True)
    for line in proc.stderr:  # CONURE_EVENTS=1: progress events on stderr
        if line.startswith("EVENT ") and json.loads(line[6:]).get("event") == "epoch":
            break
    else:
        pytest.fail(f"learn ended ({proc.wait()}) before its first epoch")
    sent = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(30) == 130 and time.monotonic() - sent < 10
    assert rest.strip().splitlines()[-1] == "conure: interrupted; re-run to resume."
    url = _status(env)["url"]
    probe = ("import asyncio, json\nfrom prefect.client.orchestration import get_client\n"
             "async def main():\n    async with get_client() as c:\n"
             "        runs = [*(await c.read_flow_runs()), *(await c.read_task_runs())]\n"
             "        print(json.dumps(sorted({r.state.type.value for r in runs})))\nasyncio.run(main())\n")
    states = subprocess.run([sys.executable, "-c", probe], env={**env, "PREFECT_API_URL": url},
                            capture_output=True, text=True, timeout=120)
    assert "RUNNING" not in states.stdout and "CRASHED" in states.stdout, states.stdout + states.stderr
    again = _conure(env, *args)
    again.communicate(timeout=600)
    assert again.returncode == 0
    _conure(env, "server", "stop").wait(120)
