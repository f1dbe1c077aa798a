"""Cost of parameter ownership at the paper config: gated vs plain training step, effective vs plain inference.

A later task's train step (forward with all weights, gradients masked to the free pool) is timed
with and without the gating; inference with a task's cached effective weights is timed against the
plain weights. Targets: step ratio <= 1.10, inference ratio <= 1.05.

    python -m benchmarks.ownership_overhead [--batch 128] [--repeats 15] [--threads N]
"""
from __future__ import annotations

import argparse

import torch

from benchmarks.common import emit, timed_interleaved
from conure_core.config import get_preset
from conure_core.heads import build_head
from conure_core.lineage import Lineage
from conure_core.losses import class_loss


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--length", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = get_preset("paper").model
    model.device = args.device
    num_items = 1683
    lineage = Lineage.new(model, num_items)
    g = torch.Generator().manual_seed(0)
    # Task 1 owns 30% of every tensor, as after T1 at ratio 0.7.
    lineage.ownership.prune(lineage.params, 1, 0.7)
    head = build_head("class", model.width, 7, g).to(lineage.device)
    seqs = torch.randint(1, num_items + 1, (args.batch, args.length), generator=g).to(lineage.device)
    labels = torch.randint(0, 7, (args.batch,), generator=g).to(lineage.device)
    conv = [lineage.params[n] for n in lineage.ownership.names]
    params = conv + list(head.parameters())
    for p in params:
        p.requires_grad_(True)
    sync = (lambda: torch.cuda.synchronize()) if lineage.device.type == "cuda" else (lambda: None)

    def make_step(gated: bool, stage: str):
        opt = torch.optim.Adam(params, lr=1e-4)
        lineage.ownership.begin_stage(lineage.params, stage, 2 if stage == "retrain" else 1)

        def step():
            opt.zero_grad(set_to_none=True)
            weights = lineage.ownership.masked(lineage.params, 1) if stage == "retrain" else None
            loss = class_loss(lineage.user_vectors(seqs, weights), head, labels)
            loss.backward()
            if gated:
                lineage.ownership.gate_grads(lineage.params)
            opt.step()
            sync()
        return step

    # One optimiser per variant; gating masks are precomputed per stage, so build the retrain gates
    # last and time the train variants against the train-stage gates.
    steps = {"plain": make_step(False, "train"), "gated": make_step(True, "train")}
    train_times = timed_interleaved(steps, args.repeats)
    retrain = timed_interleaved({"retrain": make_step(True, "retrain")}, args.repeats)["retrain"]
    plain, gated = train_times["plain"], train_times["gated"]
    lineage.ownership.end_stage()
    for p in params:
        p.requires_grad_(False)

    def infer(weights):
        def run():
            with torch.no_grad():
                lineage.user_vectors(seqs, weights)
            sync()
        return run

    effective = lineage.ownership.effective(lineage.params, 1)  # fills the per-task cache
    inf = timed_interleaved({"plain": infer(None), "effective": infer(effective)}, args.repeats)
    plain_inf, eff_inf = inf["plain"], inf["effective"]

    print(f"device {lineage.device.type}, threads {torch.get_num_threads()}, batch {args.batch}, length {args.length}, "
          f"width {model.width}, {len(conv)} prunable tensors")
    print(f"train step: plain {plain * 1e3:.1f} ms, gated {gated * 1e3:.1f} ms -> ratio {gated / plain:.3f}")
    print(f"retrain step (masked forward + gating): {retrain * 1e3:.1f} ms -> ratio {retrain / plain:.3f}")
    print(f"inference: plain {plain_inf * 1e3:.1f} ms, effective (cached) {eff_inf * 1e3:.1f} ms -> ratio {eff_inf / plain_inf:.3f}")
    emit("ownership_overhead",
         {"train_step_ratio": gated / plain, "retrain_step_ratio": retrain / plain,
          "inference_ratio": eff_inf / plain_inf, "train_step_ms": plain * 1e3, "inference_ms": plain_inf * 1e3},
         {"train_step_ratio": "<= 1.10", "inference_ratio": "<= 1.05"})


if __name__ == "__main__":
    main()
