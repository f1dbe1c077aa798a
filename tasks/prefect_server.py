"""One local Prefect server per CONURE_HOME, started on demand and shared by every `conure` command.

The first command that runs a flow starts it (``attach``), in parallel with the CLI's imports;
later and concurrent commands find it through ``server.json`` in PREFECT_HOME (its URL and pid,
written under a file lock) and reuse it, so only the first command pays its start-up. The server
is a detached process in its own session: Ctrl-C in a terminal reaches the command, never the
server, which stays up to mark the interrupted flow and task runs Crashed. Each command registers
itself as a client (``server.clients/<pid>``); the server stops itself once it has had no live
client for ``CONURE_SERVER_IDLE`` seconds (default 600), or on ``conure server stop``.

A new home's database starts as a migrated copy kept per Prefect version (``tasks.prefect_db``).
Start-up has no fixed timeout: a command waits while the server process is alive and its CPU time
keeps growing, and says what it waits for. Nothing here runs when ``PREFECT_API_URL`` is set.
"""
from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from tasks import prefect_db
from tasks.settings import child_env, home

IDLE_S = 600.0  # default of CONURE_SERVER_IDLE
STALL_S = 120.0  # a server that answers nothing and uses no CPU for this long is stuck
MODULE = "tasks.prefect_server"
# Variables a server must not inherit from the command that happened to start it.
_NOT_INHERITED = ("PREFECT_API_URL", "CONURE_CRASH_AT", "CONURE_EVENTS", "CONURE_NPROC")

_attached: dict = {}


def die_with_parent() -> None:
    """Linux: a child gets SIGTERM when `conure` dies, even by ``kill -9`` (for per-command children)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - elsewhere atexit still stops it on a normal exit
        pass


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


# ---- where the server's files live ---------------------------------------------------------------
class Paths:
    """The shared server's files under PREFECT_HOME."""

    def __init__(self, prefect_home: Path | None = None):
        self.home = Path(prefect_home or os.environ.get("PREFECT_HOME", ".")).resolve()
        self.state = self.home / "server.json"
        self.lock = self.home / "server.lock"
        self.clients = self.home / "server.clients"
        self.log = self.home / "local-server.log"


@contextlib.contextmanager
def _locked(paths: Paths):
    paths.home.mkdir(parents=True, exist_ok=True)
    with open(paths.lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        with contextlib.suppress(OSError):
            os.kill(pid, 0)
            return True
        return False
    return state not in ("Z", "X")


def _cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` (0 where /proc is not there)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def _is_ours(state: dict) -> bool:
    """The recorded pid is alive and still our server (not a recycled pid)."""
    pid = int(state.get("pid", 0))
    if pid <= 0 or not _alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True
    return MODULE.encode() in cmdline and str(state.get("port")).encode() in cmdline


def _answers(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def read_state(paths: Paths | None = None) -> dict | None:
    """The running server's record (url, pid, port, started), or None when none runs."""
    paths = paths or Paths()
    try:
        state = json.loads(paths.state.read_text())
    except (OSError, ValueError):
        return None
    return state if _is_ours(state) else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(paths: Paths) -> dict:
    port = _free_port()
    env = {k: v for k, v in child_env().items() if k not in _NOT_INHERITED}
    # the shape of Prefect's own temporary server: no UI, no background services
    env.update(PREFECT_UI_ENABLED="0", PREFECT__SERVER_EPHEMERAL="1", PREFECT__SERVER_FINAL="1",
               PREFECT_HOME=str(paths.home))
    env.setdefault("CONURE_HOME", str(home()))  # the server imports `tasks`: same home, whatever its cwd
    root = Path(__file__).resolve().parent.parent
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    idle = os.environ.get("CONURE_SERVER_IDLE", str(IDLE_S))
    prefect_db.seed(paths.home)  # a new home: its database starts migrated (tasks/prefect_db.py)
    with open(paths.log, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", MODULE, "--port", str(port), "--idle", idle,
                                 "--home", str(paths.home)],
                                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=str(paths.home))
    state = {"pid": proc.pid, "port": port, "url": f"http://127.0.0.1:{port}/api", "started": time.time()}
    tmp = paths.state.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, paths.state)
    return state


def _register(paths: Paths) -> None:
    paths.clients.mkdir(parents=True, exist_ok=True)
    mine = paths.clients / str(os.getpid())
    mine.touch()
    atexit.register(lambda: mine.unlink(missing_ok=True))


# ---- what a command calls ------------------------------------------------------------------------
def attach() -> str | None:
    """Find or start this home's server, register as its client and point ``PREFECT_API_URL`` at it.

    Returns its API URL (None when ``PREFECT_API_URL`` was already set, or Prefect was imported
    before: then Prefect has read its settings and starts its own temporary server)."""
    if _attached.get("url"):
        return _attached["url"]
    if os.environ.get("PREFECT_API_URL"):
        return None
    if "prefect" in sys.modules:
        return None
    paths = Paths()
    with _locked(paths):
        _register(paths)  # before the lookup: a server found idle now stays up for us
        state = read_state(paths) or _spawn(paths)
    _attached.update(state, paths=paths, ready=False)
    os.environ["PREFECT_API_URL"] = state["url"]
    return state["url"]


def answering() -> bool:
    """Whether the attached server answers now (then ``wait_ready`` returns at once)."""
    if _attached.get("url") and not _attached.get("ready"):
        _attached["ready"] = _answers(_attached["url"])
    return bool(_attached.get("ready"))


def wait_ready(say=None) -> None:
    """Block until the attached server answers; no fixed timeout (see the module docstring).

    ``say(text)`` is told once what is waited for when it takes more than a few seconds."""
    if not _attached.get("url") or _attached.get("ready"):
        return
    pid, url, log = _attached["pid"], _attached["url"], _attached["paths"].log
    started, said = time.monotonic(), False
    last_ticks, last_progress = _cpu_ticks(pid), time.monotonic()
    while not _answers(url):
        if not _alive(pid):
            raise _error(f"Prefect's local server (pid {pid}) exited before it answered; see {log} "
                         "(or set PREFECT_API_URL to a running Prefect server).")
        ticks, now = _cpu_ticks(pid), time.monotonic()
        if ticks != last_ticks:
            last_ticks, last_progress = ticks, now
        elif now - last_progress > STALL_S:
            raise _error(f"Prefect's local server (pid {pid}) neither answered on {url} nor used any CPU for "
                         f"{STALL_S:.0f} s; see {log}, stop it with `conure server stop` and re-run.")
        if not said and now - started > 5 and say:
            say(f"waiting for Prefect's local server (pid {pid}) to answer on {url}; it is starting "
                f"(log: {log})")
            said = True
        time.sleep(0.2)
    _attached["ready"] = True


def _error(message: str) -> Exception:
    from tasks.errors import PipelineError

    return PipelineError(message)


def stop(paths: Paths | None = None, grace: float = 15.0) -> dict | None:
    """Stop this home's server (SIGTERM, then SIGKILL after ``grace`` s); returns what was stopped."""
    paths = paths or Paths()
    with _locked(paths):
        state = read_state(paths)
        paths.state.unlink(missing_ok=True)
    if state is None:
        return None
    pid = int(state["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return state


def status(paths: Paths | None = None) -> dict:
    """{'running', 'url', 'pid', 'clients', 'log', ...} of this home's server."""
    paths = paths or Paths()
    state = read_state(paths)
    clients = _live_clients(paths)
    out = {"running": state is not None, "home": str(paths.home), "log": str(paths.log), "clients": clients}
    if state:
        out.update(url=state["url"], pid=state["pid"], answers=_answers(state["url"]),
                   up_s=round(time.time() - state["started"], 1))
    return out


def _live_clients(paths: Paths) -> list[int]:
    """Pids of the commands using the server; stale entries (dead pids) are removed."""
    live = []
    for entry in paths.clients.glob("*") if paths.clients.is_dir() else []:
        if entry.name.isdigit() and _alive(int(entry.name)):
            live.append(int(entry.name))
        else:
            entry.unlink(missing_ok=True)
    return sorted(live)


# ---- the server process --------------------------------------------------------------------------
def _watch_idle(paths: Paths, idle: float) -> None:
    """Stop this server once no client lived for ``idle`` seconds, or once its record names another."""
    idle_since, recorded = time.monotonic(), False
    while True:
        time.sleep(min(2.0, max(idle / 4, 0.2)))
        try:
            owner = json.loads(paths.state.read_text()).get("pid")
        except (OSError, ValueError):
            owner = None
        # the command that spawned us writes the record just after; on a loaded machine that can come
        # after our first look, so a record not written yet is no reason to leave (the idle rule still is)
        if owner is None and not recorded:
            pass
        elif owner != os.getpid():  # stopped (`conure server stop`) or replaced: leave quietly
            break
        else:
            recorded = True
        if _live_clients(paths):
            idle_since = time.monotonic()
            continue
        if time.monotonic() - idle_since >= idle:
            with _locked(paths):  # a command attaching now waits, then starts a fresh server
                if _live_clients(paths):
                    continue
                paths.state.unlink(missing_ok=True)
            break
    os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful shutdown


def serve(port: int, idle: float, home: Path) -> None:
    import uvicorn

    threading.Thread(target=_watch_idle, args=(Paths(home), idle), name="idle-watch", daemon=True).start()
    prefect_db.migrate_keeping_template(home)  # the first new home: migrate it, keep a copy for the next ones
    uvicorn.run("prefect.server.api.server:create_app", factory=True, host="127.0.0.1", port=port,
                log_level="error", lifespan="on")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Conure's shared local Prefect server (started by `conure`).")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--idle", type=float, default=IDLE_S)
    parser.add_argument("--home", type=Path, required=True)
    a = parser.parse_args()
    serve(a.port, a.idle, a.home)
