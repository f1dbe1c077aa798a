"""``conure_core.distributed.launch``: a torchrun job whose rank dies fails with one clear sentence."""
from __future__ import annotations

import pytest

from pathlib import Path

from conure_core.distributed import DistributedError, launch

REPO = Path(__file__).resolve().parents[2]

RANK_DIES = '''
import os, sys
os.write(1, f"rank {os.environ['RANK']} of {os.environ['WORLD_SIZE']}\\n".encode())  # one write: ranks share the pipe
if os.environ["RANK"] == "1":
    raise SystemExit("rank 1 ran out of memory")
'''


def test_a_dead_rank_fails_the_job_clearly(tmp_path):
    (tmp_path / "dies_on_rank1.py").write_text(RANK_DIES)
    seen: list[str] = []
    with pytest.raises(DistributedError) as info:
        launch("dies_on_rank1", [], 2, on_line=seen.append, env={"PYTHONPATH": str(tmp_path)})
    message = str(info.value)
    assert "2-rank torchrun job `dies_on_rank1` exited with code 1" in message and "nothing was saved" in message
    assert "\n" not in message
    assert "rank 0 of 2" in seen  # stdout lines reach the caller as they come


def test_all_ranks_succeeding_returns(tmp_path):
    # one os.write per line: two ranks share the pipe, and a line written in one call stays whole
    (tmp_path / "fine.py").write_text("import os\nos.write(1, f\"ok {os.environ['RANK']}\\n\".encode())\n")
    seen: list[str] = []
    launch("fine", [], 2, on_line=seen.append, env={"PYTHONPATH": str(tmp_path)})
    assert sorted(seen) == ["ok 0", "ok 1"]


RANK_RAISES = '''
import os
from conure_core.distributed import rank_main

def body():
    if os.environ["RANK"] == "1":
        raise RuntimeError("self.dim() cannot be 0 to view Float as Byte")

raise SystemExit(rank_main(body))
'''


def test_the_failing_ranks_exception_is_named(tmp_path):
    (tmp_path / "raises_on_rank1.py").write_text(RANK_RAISES)
    with pytest.raises(DistributedError) as info:
        launch("raises_on_rank1", [], 2, env={"PYTHONPATH": f"{tmp_path}:{REPO}"})
    assert ("(rank 1: RuntimeError: self.dim() cannot be 0 to view Float as Byte); nothing was saved"
            in str(info.value)), str(info.value)


def test_a_plain_traceback_names_its_exception_not_torchruns(tmp_path):
    (tmp_path / "plain.py").write_text("import os\nif os.environ['RANK'] == '0':\n    raise ValueError('bad shard')\n")
    with pytest.raises(DistributedError) as info:
        launch("plain", [], 2, env={"PYTHONPATH": str(tmp_path)})
    assert "(ValueError: bad shard)" in str(info.value) and "ChildFailedError" not in str(info.value)
