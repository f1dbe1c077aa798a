"""The kill -9 harness on a few points (slow: a reference run plus a killed run and a re-run per point)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_crash_points_harness_few_points():
    done = subprocess.run([sys.executable, "-m", "benchmarks.crash_points", "--points", "3", "--jobs", "3"],
                          cwd=REPO, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["benchmark"] == "crash_points"
    assert result["figures"]["points"] == 3 and result["figures"]["points_ok"] == 3, "\n".join(lines)
    assert sum(" -> ok" in line for line in lines) == 3
