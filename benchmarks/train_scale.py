"""Training and evaluation at TTL's shape: 1.47M users x 100 interactions over 646K items (synthetic).

Phases, in this order so each peak is its own:
1. evaluation: ``--eval-users`` held-out T1 users, each ranked by FULL ranking over all ``--items``
   items (their last item as the target, ``t1_targets="last"``) through ``TaskModel.evaluate``'s
   streamed path; figures ``eval_users_per_s`` and ``eval_peak_gib`` (process peak RSS after it, or
   CUDA peak allocated);
2. T1 stage: the stage runner's step (``TaskLoss`` forward, sampled softmax with ``--sampled`` of the
   vocabulary as negatives, backward, ownership gate, Adam) on ``--steps`` batches of 32 users:
   ``t1_targets_per_s`` and ``t1_epoch_s`` = steps per epoch x the median step (measured on that
   fraction of an epoch, not a whole epoch);
3. an item task (``--item-labels`` labels, batch 512, BPR): ``item_rows_per_s``, ``item_epoch_s`` likewise.
On CUDA the model FLOP/s of the T1 step is also given as a fraction of a bf16 matmul measured in
this process (``fraction_of_bf16_matmul``); on CPU as a fraction of the fp32 matmul.

    python -m benchmarks.train_scale [--users N] [--items M] [--device D] [--eval-users 20000] [--steps 5]
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from benchmarks.common import emit, matmul_flops, timed
from conure_core.config import ModelConfig, TrainConfig, get_preset
from conure_core.data.types import TaskData
from conure_core.lineage import Lineage
from conure_core.seeding import stage_generator

GIB = 1 << 30


def peak_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / GIB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def sequences(users: int, items: int, length: int, seed: int) -> torch.Tensor:
    """int32 [users, length] tokens 1..items, power-law popularity, variable length (left-padded)."""
    rng = np.random.default_rng(seed)
    out = np.empty((users, length), dtype=np.int32)
    for a in range(0, users, 1 << 16):  # blocks: no float64 [users, length] temporary
        b = min(a + (1 << 16), users)
        out[a:b] = (rng.random((b - a, length), dtype=np.float32) ** 3 * items).astype(np.int32) + 1
        lengths = rng.integers(length // 2, length + 1, b - a)
        out[a:b][np.arange(length)[None, :] < (length - lengths)[:, None]] = 0
    return torch.from_numpy(out)


def t1_task(users: int, items: int, length: int, split_code: int | None, seed: int) -> TaskData:
    seqs = sequences(users, items, length, seed)
    if split_code is None:
        r = np.random.default_rng(seed + 1).random(users)
        split = torch.from_numpy(np.where(r < 0.8, 0, np.where(r < 0.85, 1, 2)).astype(np.int8))
    else:
        split = torch.full((users,), split_code, dtype=torch.int8)
    return TaskData("T1", "sequence", seqs, None, split, [], [], items)


def item_task(t1: TaskData, labels: int, rows: int, seed: int) -> TaskData:
    rng = np.random.default_rng(seed)
    users = torch.from_numpy(rng.integers(0, t1.sequences.shape[0], rows))
    y = torch.from_numpy((rng.random(rows) ** 2 * labels).astype(np.int64))
    return TaskData("T2", "item", t1.sequences[users], y, torch.zeros(rows, dtype=torch.int8), [],
                    [str(i) for i in range(labels)], t1.num_items)


def evaluate_in_parts(lineage: Lineage, task: TaskData, info, device: torch.device, started: float,
                      part: int = 4096) -> dict[str, float]:
    """``TaskModel.evaluate`` over slices of ``part`` users, printing progress; metrics weighted by count."""
    sums: dict[str, float] = {}
    done = 0
    for a in range(0, task.sequences.shape[0], part):
        piece = TaskData(task.name, task.kind, task.sequences[a:a + part], None, task.split[a:a + part], [], [],
                         task.num_items)
        m = lineage.model.evaluate(piece, "test", info, None, batch_size=1024)
        if device.type == "cuda":
            torch.cuda.synchronize()
        for k, v in m.items():
            if k != "count":
                sums[k] = sums.get(k, 0.0) + v * m["count"]
        done += int(m["count"])
        elapsed = time.perf_counter() - started
        print(f"  evaluated {done:,} users in {elapsed:.1f} s ({done / elapsed:,.1f} users/s), "
              f"peak {peak_gib(device):.2f} GiB", flush=True)
    return {**{k: v / max(done, 1) for k, v in sums.items()}, "count": float(done)}


def stage_step_time(lineage: Lineage, task: TaskData, cfg: TrainConfig, steps: int) -> tuple[float, float]:
    """(median seconds of one stage-runner step, loss terms per step) over ``steps`` batches of ``task``."""
    model, policy = lineage.model, lineage.policy
    info = model.add_task(task, cfg)
    groups = policy.param_groups(model, info, "train", cfg)
    policy.begin_stage(model, info, "train")
    generator = stage_generator(model.config.seed, info.index, "train")
    loss = model.loss(task, info, cfg, generator)
    optimiser = torch.optim.Adam(groups, lr=cfg.lr)
    rows = loss.order(generator)
    state = {"i": 0}
    terms = []

    def step() -> None:
        batch = rows[(state["i"] * cfg.batch_size) % loss.num_rows:][:cfg.batch_size]
        state["i"] += 1
        optimiser.zero_grad(set_to_none=True)
        value = loss(batch, policy.stage_weights(model, info, "train"))
        value.backward()
        policy.gate(model)
        model.zero_reserved_grads()
        optimiser.step()
        terms.append(loss.count(batch))
        if model.device.type == "cuda":
            torch.cuda.synchronize()

    seconds = timed(step, steps, warmup=1)
    policy.end_stage()
    return seconds, float(np.mean(terms))


def t1_step_flops(cfg: ModelConfig, batch: int, length: int, targets: float, negatives: int) -> float:
    """Matmul FLOPs of one T1 step: convs x3 (forward + backward), sampled softmax x4 (+ its recompute)."""
    convs = 2 * len(cfg.dilations) * 2.0 * batch * length * cfg.kernel * cfg.width * cfg.width
    head = 2.0 * targets * (negatives + 1) * cfg.width
    return 3.0 * convs + 4.0 * head


def bf16_matmul_flops(device: torch.device, n: int = 8192, repeats: int = 10) -> float:
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)

    def run():
        a @ b
        torch.cuda.synchronize()

    return 2.0 * n ** 3 / timed(run, repeats)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_470_000, help="T1 training users (TTL: 1.47M)")
    parser.add_argument("--items", type=int, default=646_000, help="T1 item vocabulary (TTL: 646K)")
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--eval-users", type=int, default=20_000)
    parser.add_argument("--item-labels", type=int, default=18_000)
    parser.add_argument("--sampled", type=float, default=0.2, help="share of the vocabulary as T1 negatives")
    parser.add_argument("--steps", type=int, default=5, help="measured steps per training phase")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--bf16", action="store_true", help="autocast the backbone to bf16 (CUDA)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-train", action="store_true", help="evaluation phase only")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = get_preset("paper")
    mcfg = preset.model
    mcfg.device, mcfg.bf16, mcfg.t1_targets = args.device, args.bf16, "last"
    # The TCN alone: this measures the backbone's training and streamed ranking; the per-item parts at
    # scale (a 1M-item table built and scored, the sparse bag) are benchmarks.wide_scale's.
    mcfg.t1_wide, mcfg.class_repr = "none", None
    figures: dict[str, float] = {"users": args.users, "items": args.items, "eval_users": args.eval_users}

    # 1. evaluation: full ranking over every item, streamed
    lineage = Lineage.new(mcfg, args.items)
    device = lineage.device
    print(f"device {device} (threads {torch.get_num_threads()}), paper width {mcfg.width}, "
          f"{2 * len(mcfg.dilations)} convs, {args.items:,} items; start peak {peak_gib(device):.2f} GiB")
    held_out = t1_task(args.eval_users, args.items, args.length, 2, seed=7)
    info = lineage.model.add_task(held_out, preset.first)
    started = time.perf_counter()
    metrics = evaluate_in_parts(lineage, held_out, info, device, started)
    seconds = time.perf_counter() - started
    figures.update(eval_s=seconds, eval_users_per_s=metrics["count"] / seconds, eval_peak_gib=peak_gib(device))
    print(f"evaluation: {int(metrics['count']):,} users x {args.items:,} items by full ranking in {seconds:.1f} s = "
          f"{metrics['count'] / seconds:,.0f} users/s; peak memory so far {figures['eval_peak_gib']:.2f} GiB "
          f"({'CUDA allocated' if device.type == 'cuda' else 'process RSS'}); mrr@5 {metrics['mrr@5']:.5f} (untrained)")
    del lineage, held_out
    if args.skip_train:
        emit("train_scale", figures, {"eval_peak_gib": "<= 4"})
        return

    # 2. the T1 stage's step at TTL shape
    lineage = Lineage.new(mcfg, args.items)
    t1 = t1_task(args.users, args.items, args.length, None, seed=1)
    cfg1 = TrainConfig(**{**preset.first.to_dict(), "sampled_fraction": args.sampled})
    seconds, targets = stage_step_time(lineage, t1, cfg1, args.steps)
    train_users = int((t1.split == 0).sum())
    epoch_steps = -(-train_users // cfg1.batch_size)
    negatives = max(1, int(round(args.sampled * args.items)))
    flops = t1_step_flops(mcfg, cfg1.batch_size, args.length - 1, targets, negatives)
    figures.update(t1_step_s=seconds, t1_targets_per_s=targets / seconds, t1_epoch_s=epoch_steps * seconds,
                   t1_peak_gib=peak_gib(device), t1_model_gflops=flops / seconds / 1e9)
    print(f"T1 step (batch {cfg1.batch_size}, {targets:.0f} targets, {negatives:,} sampled negatives): {seconds:.3f} s "
          f"= {targets / seconds:,.0f} targets/s; epoch of {train_users:,} users = {epoch_steps:,} steps ~ "
          f"{epoch_steps * seconds / 3600:.2f} h (extrapolated from {args.steps} measured steps); "
          f"peak {figures['t1_peak_gib']:.2f} GiB; model {flops / seconds / 1e9:.1f} GFLOP/s")

    # 3. one item task on top
    t2 = item_task(t1, args.item_labels, max(args.users * 2, 1024), seed=2)
    seconds, rows = stage_step_time(lineage, t2, preset.later, args.steps)
    epoch_steps = -(-t2.sequences.shape[0] // preset.later.batch_size)
    figures.update(item_step_s=seconds, item_rows_per_s=rows / seconds, item_epoch_s=epoch_steps * seconds,
                   peak_gib=peak_gib(device))
    print(f"item task step (batch {preset.later.batch_size}, {args.item_labels:,} labels, BPR): {seconds:.3f} s = "
          f"{rows / seconds:,.0f} rows/s; epoch of {t2.sequences.shape[0]:,} rows ~ {epoch_steps * seconds / 60:.1f} min "
          f"(extrapolated from {args.steps} steps); peak {figures['peak_gib']:.2f} GiB")

    if device.type == "cuda":
        peak = bf16_matmul_flops(device)
        figures.update(bf16_matmul_tflops=peak / 1e12, fraction_of_bf16_matmul=figures["t1_model_gflops"] * 1e9 / peak)
        print(f"bf16 matmul 8192^3: {peak / 1e12:.1f} TFLOP/s; T1 step = {figures['fraction_of_bf16_matmul']:.3f} of it")
    else:
        peak = matmul_flops(device="cpu")
        figures.update(fp32_matmul_gflops=peak / 1e9, fraction_of_fp32_matmul=figures["t1_model_gflops"] * 1e9 / peak)
        print(f"fp32 matmul 2048^3: {peak / 1e9:.1f} GFLOP/s; T1 step = {figures['fraction_of_fp32_matmul']:.3f} of it")
    emit("train_scale", figures, {"eval_peak_gib": "<= 4"})


if __name__ == "__main__":
    main()
