"""Start Prefect's local temporary server early, in parallel with the CLI's imports.

Prefect 3 boots its temporary server (a uvicorn subprocess) only when the first flow starts, after
importing the server's code into the client process too: seconds on the critical path of every
`conure` command. ``start_early`` launches the same subprocess (same command and environment as
Prefect's ``SubprocessASGIServer``) before Prefect is imported and points ``PREFECT_API_URL`` at
it, so the boot overlaps the imports; ``wait_ready`` blocks until it answers. The subprocess is
stopped when the command exits. Nothing happens when ``PREFECT_API_URL`` is already set.
"""
from __future__ import annotations

import atexit
import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tasks.errors import PipelineError
from tasks.settings import child_env

_server: dict = {}


def die_with_parent() -> None:
    """Linux: the server gets SIGTERM when `conure` dies, even by ``kill -9`` (no orphan servers)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - elsewhere atexit still stops it on a normal exit
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_early() -> str | None:
    """Spawn the temporary server now; returns its API URL (None when an API URL is already set)."""
    if os.environ.get("PREFECT_API_URL") or _server:
        return os.environ.get("PREFECT_API_URL")
    if "prefect" in sys.modules:  # too late: Prefect has read its settings; let it start its own
        return None
    site = Path(importlib.util.find_spec("prefect").origin).parent.parent
    port = _free_port()
    home = Path(os.environ.get("PREFECT_HOME", "."))
    home.mkdir(parents=True, exist_ok=True)
    log = open(home / "server.log", "ab")
    env = {**child_env(), "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--app-dir", str(site), "--factory",
                             "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
                             "--log-level", "error", "--lifespan", "on"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            preexec_fn=die_with_parent if sys.platform.startswith("linux") else None)
    url = f"http://127.0.0.1:{port}/api"
    _server.update(proc=proc, url=url, log=home / "server.log", ready=False)
    os.environ["PREFECT_API_URL"] = url
    atexit.register(stop)
    return url


def wait_ready(timeout: float = 120.0) -> None:
    """Block until the early server answers /health (no-op when none was started here)."""
    if not _server or _server["ready"]:
        return
    deadline = time.time() + timeout
    while time.time() < deadline:
        if _server["proc"].poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{_server['url']}/health", timeout=2) as r:
                if r.status == 200:
                    _server["ready"] = True
                    return
        except OSError:
            time.sleep(0.1)
    raise PipelineError(f"Prefect's local server did not start within {timeout:.0f} s; see {_server['log']} "
                        "(or set PREFECT_API_URL to a running Prefect server).")


def stop_process(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM a child server, SIGKILL it if it is still there after ``grace`` seconds, and reap it."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stop() -> None:
    proc = _server.get("proc")
    if proc is not None:
        stop_process(proc)
