"""``python -m benchmarks.repr_probe --suite signal [--preset quick] [--set ...]``: is the TCN user vector the bottleneck?

Learns T1 as a lineage does (train, prune, retrain), then fits the floor's L2 logistic regression
(C chosen on validation) on frozen, standardised user vectors of every class task, one view at a
time: the separator state (``user_repr="separator"``), the last item's state (``"last"``), the mean
state over the real positions and the separator (``"mean"``), and the mean of the learned item
embeddings (no convolution). Beside them, the same regression on the raw bag of T1 items. A view
that matches the bag means the representation holds the signal and the class recipe loses it; one
that falls short means the representation itself does. Accuracies on validation (test in brackets).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common import emit


def views(lineage, sequences: torch.Tensor) -> dict[str, torch.Tensor]:
    """Frozen user vectors [N, C] of each view, for T1 sequences [N, L]."""
    sep = torch.full((sequences.shape[0], 1), lineage.num_items + 1, dtype=sequences.dtype)
    tokens = torch.cat([sequences, sep], dim=1)
    with torch.no_grad():
        hidden = torch.cat([lineage.encode(tokens[s:s + 512].to(lineage.device)).cpu()
                            for s in range(0, tokens.shape[0], 512)])
        keep = (tokens != 0).unsqueeze(-1).float()
        emb = lineage.params["embedding.weight"].detach().cpu()[sequences]
        real = (sequences != 0).unsqueeze(-1).float()
    return {"separator": hidden[:, -1], "last": hidden[:, -2], "mean": (hidden * keep).sum(1) / keep.sum(1),
            "mean_embedding": (emb * real).sum(1) / real.sum(1).clamp(min=1.0)}


def standardise(x: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    mu, sd = x[train].mean(0), x[train].std(0).clamp(min=1e-6)
    return (x - mu) / sd


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.repr_probe", description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="signal")
    p.add_argument("--preset", default="quick")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    from benchmarks.baselines import logistic_baseline
    from conure_core.wide import bag_of_items
    from benchmarks.class_grid import learn_t1
    from benchmarks.overrides import load_preset
    from conure_core.run import bundled_tasks

    preset = load_preset(args.preset, args.set, args.seed)
    preset.apply_threads()
    with tempfile.TemporaryDirectory(prefix="conure-probe-") as tmp:
        tasks, _ = bundled_tasks(Path(tmp), args.suite)
    lineage = learn_t1(tasks[0], preset)
    t1_test = lineage.evaluate(tasks[0])["mrr@5"]
    print(f"T1 {tasks[0].name}: test mrr@5 {t1_test:.4f} (preset {args.preset} {' '.join(args.set)}, seed {args.seed})")
    grid = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
    figures = {"t1_mrr@5": t1_test}
    for task in (t for t in tasks if t.kind == "class"):
        train = task.rows("train")
        feats = {"bag": bag_of_items(task.sequences, task.num_items)}
        feats.update({k: standardise(v, train) for k, v in views(lineage, task.sequences).items()})
        cells = []
        for name, x in feats.items():
            res = logistic_baseline(task, grid, features=x)
            figures[f"{task.name}_{name}_valid"] = res["valid"]
            figures[f"{task.name}_{name}_test"] = res["test"]
            cells.append(f"{name} {res['valid']:.3f} [{res['test']:.3f}]")
        print(f"{task.name:<11} " + "  ".join(cells), flush=True)
    emit("repr_probe", figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
