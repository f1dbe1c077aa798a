"""One short script for a machine with CUDA: retention, throughput against bf16 matmul, 2-rank DDP.

1. retention in fp32 and bf16 autocast: a lineage of three small synthetic tasks on CUDA; every
   earlier task's top-5 answers, scores and test metrics must be bit-identical after later tasks;
2. training throughput at the paper config (width 256, 16 convs, bundled T1, full softmax, batch 32
   and 128, bf16 autocast) as a fraction of a bf16 8192^3 matmul measured in this process;
3. when two or more CUDA devices exist: the same three-task lineage data-parallel on 2 ranks (NCCL),
   whose ranks must end with identical weights, heads and owner maps, with exact retention;
4. ``benchmarks.train_scale`` at 646K items (``--scale-users`` T1 users, 20K evaluated users).

    python -m benchmarks.gpu_check [--skip-scale] [--scale-users 200000]

Without a CUDA device it says so and exits 0 (nothing to check). Exit code 1 when a check fails.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common import bundled_t1, emit

MODEL = dict(width=16, dilations=[1, 2], seed=3)


def _cfgs():
    from conure_core.config import TrainConfig

    first = TrainConfig(lr=5e-3, batch_size=16, epochs=4, retrain_epochs=2, prune_ratio=0.5)
    later = TrainConfig(lr=2e-2, batch_size=64, epochs=4, retrain_epochs=2, prune_ratio=0.5)
    return [first, later, later]


def _answers(lineage, task):
    seqs = task.sequences[task.rows("test")]
    idx, scores = lineage.predict(task.name, seqs, k=5)
    return idx, scores, lineage.evaluate(task)


def retention(device: str, bf16: bool) -> bool:
    """Learn three synthetic tasks; True when every earlier task answers bit-identically at the end."""
    from conure_core.config import ModelConfig
    from conure_core.lineage import Lineage
    from tests.core.synthetic import make_tasks

    tasks = make_tasks()
    lineage = Lineage.new(ModelConfig(**MODEL, device=device, bf16=bf16), tasks[0].num_items)
    after = {}
    for task, cfg in zip(tasks, _cfgs()):
        lineage.learn(task, cfg)
        after[task.name] = _answers(lineage, task)
    same = True
    for task in tasks:
        idx, scores, metrics = _answers(lineage, task)
        i0, s0, m0 = after[task.name]
        same &= bool(torch.equal(idx, i0) and torch.equal(scores, s0) and metrics == m0)
    return same


def throughput(batches: list[int]) -> dict[str, float]:
    """Paper-config T1 training step on CUDA (bf16 autocast) vs a bf16 matmul in this process."""
    from benchmarks.train_scale import bf16_matmul_flops
    from benchmarks.train_throughput import measure, step_flops
    from conure_core.config import get_preset
    from conure_core.heads import build_head
    from conure_core.lineage import Lineage

    model = get_preset("paper").model
    model.device, model.bf16 = "cuda", True
    t1 = bundled_t1()
    lineage = Lineage.new(model, t1.num_items)
    head = build_head("sequence", model.width, t1.num_items, torch.Generator().manual_seed(1)).to(lineage.device)
    seqs = t1.sequences[t1.rows("train")]
    peak = bf16_matmul_flops(lineage.device)
    out = {"bf16_matmul_tflops": peak / 1e12}
    for batch in batches:
        seconds, targets = measure(lineage, head, seqs, batch, 30)
        flops = step_flops(batch, seqs.shape[1] - 1, model.width, model.kernel, 2 * len(model.dilations), targets,
                           t1.num_items)
        out[f"targets_per_s_b{batch}"] = targets / seconds
        out[f"fraction_of_bf16_matmul_b{batch}"] = flops / seconds / peak
        print(f"  batch {batch}: {seconds * 1e3:.2f} ms/step, {targets / seconds:,.0f} targets/s, "
              f"{flops / seconds / 1e12:.2f} TFLOP/s = {flops / seconds / peak:.3f} of bf16 matmul")
    return out


def _ddp_rank(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    from conure_core.config import ModelConfig
    from conure_core.lineage import Lineage
    from tests.core.ddp_ranks import lineage_digests
    from tests.core.synthetic import make_tasks

    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        tasks = make_tasks()
        lineage = Lineage.new(ModelConfig(**MODEL, device=f"cuda:{rank}"), tasks[0].num_items)
        after = {}
        for task, cfg in zip(tasks, _cfgs()):
            lineage.learn(task, cfg)
            after[task.name] = lineage.evaluate(task)
        final = {t.name: lineage.evaluate(t) for t in tasks}
        record = {"digests": lineage_digests(lineage), "retained": all(final[n] == m for n, m in after.items()),
                  "final": final}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(record))
    finally:
        dist.destroy_process_group()


def ddp_two_ranks() -> dict:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_ddp_rank, args=(2, str(Path(tmp) / "init"), tmp), nprocs=2, join=True)
        ranks = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(2)]
    return {"identical": ranks[0]["digests"] == ranks[1]["digests"], "retained": ranks[0]["retained"],
            "final": ranks[0]["final"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-scale", action="store_true", help="leave out benchmarks.train_scale")
    parser.add_argument("--scale-users", type=int, default=200_000)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device on this machine (torch.cuda.is_available() is False); nothing to check. "
              "Run it on a GPU worker.")
        emit("gpu_check", {"cuda_devices": 0})
        return 0
    torch.backends.cudnn.benchmark = False
    figures: dict[str, float] = {"cuda_devices": torch.cuda.device_count()}
    print(f"gpu_check on {torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}, torch {torch.__version__}")
    ok = True
    for bf16 in (False, True):
        kept = retention("cuda", bf16)
        figures[f"retention_exact_{'bf16' if bf16 else 'fp32'}"] = float(kept)
        ok &= kept
        print(f"retention, {'bf16 autocast' if bf16 else 'fp32'}: {'bit-exact' if kept else 'NOT EXACT'}")
    print("paper-config T1 training step (bf16 autocast):")
    figures.update(throughput([32, 128]))
    if torch.cuda.device_count() >= 2:
        ddp = ddp_two_ranks()
        figures["ddp_ranks_identical"] = float(ddp["identical"])
        figures["ddp_retention_exact"] = float(ddp["retained"])
        ok &= ddp["identical"] and ddp["retained"]
        print(f"2-rank NCCL lineage: ranks identical {ddp['identical']}, retention exact {ddp['retained']}; "
              f"final {json.dumps({k: round(v.get('mrr@5', v.get('accuracy', 0.0)), 4) for k, v in ddp['final'].items()})}")
    else:
        print("2-rank DDP: skipped (one CUDA device)")
    if not args.skip_scale:
        cmd = [sys.executable, "-m", "benchmarks.train_scale", "--device", "cuda", "--bf16",
               "--users", str(args.scale_users)]
        print("train_scale:", " ".join(cmd[1:]), flush=True)
        done = subprocess.run(cmd, capture_output=True, text=True)
        print(done.stdout.strip() or done.stderr.strip()[-2000:])
        if done.returncode == 0:
            last = json.loads(done.stdout.strip().splitlines()[-1])["figures"]
            figures.update({f"scale_{k}": v for k, v in last.items()})
        else:
            ok = False
    emit("gpu_check", figures, {"retention_exact_fp32": ">= 1", "retention_exact_bf16": ">= 1"})
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
