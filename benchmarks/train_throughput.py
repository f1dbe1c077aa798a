"""Training throughput of the paper-config TCN on T1 (MovieLens-100K clicks).

Figures: predicted targets per second of a full training step (forward, full softmax over the T1
vocabulary, backward, ownership gating, Adam), and the model FLOP rate as a fraction of the fp32
matmul rate measured in the same process. Target: fraction >= 0.5 at the paper batch size.

    python -m benchmarks.train_throughput [--batch 32 128] [--steps 20] [--compile] [--threads N]
"""
from __future__ import annotations

import argparse

import torch

from benchmarks.common import bundled_t1, emit, matmul_flops, timed
from conure_core.config import get_preset
from conure_core.heads import build_head
from conure_core.lineage import Lineage
from conure_core.losses import next_item_loss


def step_flops(batch: int, length: int, width: int, kernel: int, convs: int, targets: int, vocab: int) -> float:
    """Matmul FLOPs of one training step: conv and head forward, x3 for forward + backward."""
    conv = convs * 2.0 * batch * length * kernel * width * width
    head = 2.0 * targets * width * vocab
    return 3.0 * (conv + head)


def measure(lineage: Lineage, head, seqs: torch.Tensor, batch: int, steps: int) -> tuple[float, int]:
    """(median seconds per step, predicted targets per step) for one batch size."""
    params = [p for p in lineage.params.values()] + list(head.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=1e-3)
    lineage.ownership.begin_stage(lineage.params, "train", 1)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, seqs.shape[0], (batch,), generator=g)
    data = seqs[idx].to(lineage.device)
    targets = int((data[:, 1:] > 0).sum())

    def step():
        opt.zero_grad(set_to_none=True)
        hidden = lineage.encode(data[:, :-1], None)
        loss = next_item_loss(hidden, data[:, 1:], head)
        loss.backward()
        lineage.ownership.gate_grads(lineage.params)
        opt.step()
        if lineage.device.type == "cuda":
            torch.cuda.synchronize()

    return timed(step, steps, warmup=3), targets


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--compile", action="store_true", help="torch.compile the backbone")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = get_preset("paper")
    model = preset.model
    model.compile, model.device = args.compile, args.device
    t1 = bundled_t1()
    lineage = Lineage.new(model, t1.num_items)
    head = build_head("sequence", model.width, t1.num_items, torch.Generator().manual_seed(1)).to(lineage.device)
    seqs = t1.sequences[t1.rows("train")]
    device = lineage.device.type
    peak = matmul_flops(device=device)
    print(f"device {device}, threads {torch.get_num_threads()}, compile {args.compile}; "
          f"fp32 matmul 2048^3: {peak / 1e9:.1f} GFLOP/s")
    print(f"paper config: width {model.width}, dilations {model.dilations} ({2 * len(model.dilations)} convs), "
          f"length {seqs.shape[1] - 1}, vocabulary {t1.num_items}")
    figures: dict[str, float] = {"matmul_gflops": peak / 1e9}
    for batch in args.batch:
        seconds, targets = measure(lineage, head, seqs, batch, args.steps)
        flops = step_flops(batch, seqs.shape[1] - 1, model.width, model.kernel, 2 * len(model.dilations),
                           targets, t1.num_items)
        fraction = flops / seconds / peak
        print(f"batch {batch:4d}: {seconds * 1e3:7.1f} ms/step, {targets / seconds:9.0f} targets/s, "
              f"{flops / seconds / 1e9:6.1f} GFLOP/s = {fraction:.2f} of matmul")
        figures[f"targets_per_s_b{batch}"] = targets / seconds
        figures[f"fraction_of_matmul_b{batch}"] = fraction
    first = args.batch[0]
    figures["fraction_of_matmul"] = figures[f"fraction_of_matmul_b{first}"]
    emit("train_throughput", figures, {"fraction_of_matmul": ">= 0.5"})


if __name__ == "__main__":
    main()
