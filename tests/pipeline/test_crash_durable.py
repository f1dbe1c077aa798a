"""Files created once and trusted: HEAD and bundled folders publish whole; a killed run's temporaries are swept."""
from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

WRITE_HEAD = """
import sys
from tasks.settings import Layout, configure_process
from tasks.store import Head, LineageStore
configure_process()  # as `conure` does: the crash harness (CONURE_CRASH_AT)
store = LineageStore(Layout())
with store.lock("lin"):
    store.write_head(Head(lineage="lin", preset=sys.argv[1]))
"""


def _stale(home: Path) -> list[Path]:
    paths = [home / "states" / ".tmp-0123", home / "prepared" / "clicks" / ".tmp-ab12",
             home / "prepared" / "clicks" / "reports" / ".tmp-cd34", home / "bundled.tmp-77"]
    for p in paths:
        p.mkdir(parents=True)
        (p / "half.bin").write_bytes(b"half")
    tmp_file = home / "lineages" / "lin" / ".HEAD.json.x1y2.tmp"
    tmp_file.parent.mkdir(parents=True)
    tmp_file.write_text("{")
    return paths + [tmp_file]


def test_first_lone_writer_sweeps_a_killed_runs_temporaries(tmp_path):
    from tasks.durable import hold_home

    stale = _stale(tmp_path)
    (tmp_path / "states" / "d1").mkdir()
    hold_home(tmp_path)
    assert [p for p in stale if p.exists()] == []
    assert (tmp_path / "states" / "d1").is_dir()  # finished states are never touched


def test_temporaries_are_kept_while_another_writer_lives(tmp_path):
    from tasks.durable import hold_home

    stale = _stale(tmp_path)
    other = os.open(tmp_path / ".writers", os.O_RDWR | os.O_CREAT)
    fcntl.flock(other, fcntl.LOCK_SH)  # a second open file: flock treats it as another process
    try:
        hold_home(tmp_path)
        assert all(p.exists() for p in stale)
    finally:
        os.close(other)


def test_bundled_folders_publish_whole(tmp_path):
    from tasks.durable import bundled_dirs

    dest = tmp_path / "bundled"
    calls = []

    def write(folder: Path):
        calls.append(folder)
        for n in ("a", "b"):
            (folder / n).mkdir(parents=True)
            (folder / n / "task.yaml").write_text("name: x\n")
            if len(calls) == 1 and n == "b":
                raise OSError("killed mid-write")
            (folder / n / "data.parquet").write_bytes(b"PAR1")

    with pytest.raises(OSError):
        bundled_dirs(dest, ["a", "b"], write)
    assert not dest.exists()  # half a bundle never sits at its final path
    assert bundled_dirs(dest, ["a", "b"], write) == [dest / "a", dest / "b"]
    assert (dest / "b" / "data.parquet").read_bytes() == b"PAR1"
    assert bundled_dirs(dest, ["a", "b"], write) and len(calls) == 2  # complete: not written again


def test_kill_between_head_temp_file_and_rename_keeps_the_old_head(tmp_path):
    env = dict(os.environ, CONURE_HOME=str(tmp_path), MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = lambda preset, **extra: subprocess.run([sys.executable, "-c", WRITE_HEAD, preset], cwd=REPO,  # noqa: E731
                                                 env={**env, **extra}, capture_output=True, text=True,
                                                 timeout=300, start_new_session=True)
    assert run("first").returncode == 0
    head = tmp_path / "lineages" / "lin" / "HEAD.json"
    killed = run("second", CONURE_CRASH_AT="head-write")
    assert killed.returncode == -signal.SIGKILL
    assert '"preset": "first"' in head.read_text()  # the old HEAD, whole
    assert len(list(head.parent.glob(".HEAD.json.*.tmp"))) == 1
    again = run("third")
    assert again.returncode == 0, again.stderr[-2000:]
    assert '"preset": "third"' in head.read_text() and not list(head.parent.glob("*.tmp"))
