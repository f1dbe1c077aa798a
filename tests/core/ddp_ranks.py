"""One rank of the 2-rank gloo lineage test (run by torch.multiprocessing.spawn; results as JSON)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.distributed as dist

from conure_core.config import ModelConfig
from conure_core.distributed import tensors_digest
from conure_core.lineage import Lineage
from tests.core.conftest import MODEL, cfg_for, outputs
from tests.core.synthetic import make_tasks


def lineage_digests(lineage: Lineage) -> dict[str, str]:
    heads = {f"{n}.{k}": v for n, h in lineage.heads.items() for k, v in h.state_dict().items()}
    return {"weights": tensors_digest(dict(lineage.params)), "owners": tensors_digest(lineage.owner_maps()),
            "heads": tensors_digest(heads)}


def run_rank(rank: int, world: int, init_file: str, out_dir: str, model: dict | None = None) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        tasks = make_tasks()
        lineage = Lineage.new(ModelConfig(**(model or MODEL)), tasks[0].num_items)
        record = {"after": {}, "digests": []}
        for i, task in enumerate(tasks):
            lineage.learn(task, cfg_for(i))
            record["after"][task.name] = lineage.evaluate(task)
            record["digests"].append(lineage_digests(lineage))
        record["final"] = {t.name: lineage.evaluate(t) for t in tasks}
        idx, scores, _ = outputs(lineage, tasks[0])
        record["t1_scores"] = tensors_digest({"idx": idx, "scores": scores})
        record["heads"] = {n: sorted(h.state_dict()) for n, h in lineage.heads.items()}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(record))
    finally:
        dist.destroy_process_group()


def average_with_an_empty_shard(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """Rank 0 has 3 rows and a gradient, rank 1 none: both must end with rank 0's gradient."""
    from conure_core.distributed import StageSync

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        p = torch.nn.Parameter(torch.zeros(4))
        q = torch.nn.Parameter(torch.zeros(2))  # no gradient on any rank: must stay None
        if rank == 0:
            p.grad = torch.tensor([1.0, 2.0, 3.0, 4.0])
        total = StageSync().average_grads([p, q], 3 if rank == 0 else 0)
        Path(out_dir, f"grad{rank}.json").write_text(json.dumps({"grad": p.grad.tolist(), "total": total,
                                                                  "q_none": q.grad is None}))
    finally:
        dist.destroy_process_group()
