"""``conure_core.distributed.launch``: a torchrun job whose rank dies fails with one clear sentence."""
from __future__ import annotations

import pytest

from conure_core.distributed import DistributedError, launch

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
