"""`conure ui` and `conure serve` stop their child servers when they get SIGTERM or SIGINT."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _start(home: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, CONURE_HOME=str(home), MLFLOW_TRACKING_URI=f"sqlite:///{home / 'mlflow.db'}",
               PREFECT_HOME=str(home / "prefect"), PREFECT_LOCAL_STORAGE_PATH=str(home / "prefect" / "results"))
    env.pop("PREFECT_API_URL", None)
    return subprocess.Popen([sys.executable, "-m", "conure_cli.main", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _stop_and_check(proc: subprocess.Popen, url: str, port: int, sig: int) -> None:
    deadline = time.time() + 300
    while not _answers(url):
        assert proc.poll() is None, f"conure exited ({proc.returncode}) before its server answered"
        assert time.time() < deadline, "the server never answered"
        time.sleep(0.5)
    children = _descendants(proc.pid)
    assert children  # the server runs in child processes
    proc.send_signal(sig)
    try:
        assert proc.wait(60) in (128 + sig, 130)  # serve reports a SIGTERM as an interruption (130)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    gone_by = time.time() + 30
    while any(_alive(p) for p in children) and time.time() < gone_by:
        time.sleep(0.2)
    assert not [p for p in children if _alive(p)], "child server processes outlived conure"
    assert not _answers(url)
    with socket.socket() as s:  # nobody listens on the port any more (TIME_WAIT leftovers allowed)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()


# SIGINT takes the same path as SIGTERM (one handler); it runs with -m slow to keep the default suite short.
@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)])
def test_ui_stops_its_mlflow_server(tmp_path, sig):
    port = _free_port()
    proc = _start(tmp_path / "home", "ui", "--port", str(port))
    _stop_and_check(proc, f"http://127.0.0.1:{port}/health", port, sig)
    assert proc.returncode == 128 + sig


@pytest.mark.slow
def test_serve_stops_its_prefect_server(tmp_path):
    home = tmp_path / "home"
    proc = _start(home, "serve", "--interval", "3600")
    log = home / "prefect" / "server.log"
    deadline = time.time() + 300
    while not (log.exists() and _descendants(proc.pid)):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.5)
    server = next(iter(_descendants(proc.pid)))
    cmdline = Path(f"/proc/{server}/cmdline").read_bytes().split(b"\0")
    port = int(cmdline[cmdline.index(b"--port") + 1])
    _stop_and_check(proc, f"http://127.0.0.1:{port}/api/health", port, signal.SIGTERM)
