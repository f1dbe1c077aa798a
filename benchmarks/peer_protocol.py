"""``python -m benchmarks.peer_protocol [--preset P] [--seeds 3]``: T1 on RecBole 1.2.1's protocol.

The split is built from the bundled MovieLens-100K exactly as RecBole's run of NextItNet and SASRec
(DESIGN.md, measured facts): ratings <= 3, stable sort by timestamp keeping the file's order on
ties, each user's last 30, users with >= 5 clicks (907 users, 1,432 items); leave-one-out: train on
x1..x(n-2) (next item at every position), select the epoch on x(n-1), test on x(n); full ranking
over all items, seen items not masked. Only T1's train stage runs (no pruning). Prints test
MRR@5 / NDCG@5 / HR@5 per seed (and the TCN's own logits alone, when T1 has a wide part), most-popular and item co-occurrence on the same split, seconds per
epoch and training seconds to the best epoch, beside RecBole's figures; then the JSON line.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pyarrow.compute as pc
import torch

from benchmarks.common import emit

MAX_LEN, MIN_CLICKS = 30, 5
PEERS = {"NextItNet (RecBole, 256 wide, 16 convs)": 0.0145, "SASRec (RecBole, 64 wide, 2 blocks)": 0.0170,
         "most-popular (RecBole)": 0.0120}
NEXTITNET_TRAIN_S = 1632.0  # RecBole NextItNet's training time on the same 2 cores


def recbole_split():
    """TaskData of the leave-one-out split: per user a train, a valid and a test row (left-padded)."""
    from conure_core.data.movielens import bundled_tables, clicks_table
    from conure_core.data.types import TEST, TRAIN, VALID, TaskData

    ratings, _ = bundled_tables()
    t1 = clicks_table(ratings, MAX_LEN, MIN_CLICKS)
    lengths = pc.list_value_length(t1["items"]).to_numpy()
    flat = pc.list_flatten(t1["items"]).to_numpy()
    vocab = np.unique(flat)
    tokens = np.searchsorted(vocab, flat) + 1  # 1..V by sorted item id
    users = len(lengths)
    ends = np.cumsum(lengths)
    seqs = np.zeros((3 * users, MAX_LEN), dtype=np.int64)
    split = np.repeat(np.array([[TRAIN, VALID, TEST]], dtype=np.int8), users, axis=0).reshape(-1)
    for cut, offset in ((2, 0), (1, 1), (0, 2)):  # train drops the last two, valid the last one
        n = lengths - cut
        pos = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)  # position within each user's row
        src = np.repeat(ends - lengths, n) + pos
        row = np.repeat(np.arange(users) * 3 + offset, n)
        seqs[row, MAX_LEN - np.repeat(n, n) + pos] = tokens[src]
    ids = [str(u) for u in t1["user_id"].to_pylist()]
    return TaskData(name="clicks", kind="sequence", sequences=torch.from_numpy(seqs), labels=None,
                    split=torch.from_numpy(split), user_ids=[u for u in ids for _ in range(3)],
                    vocab=[str(v) for v in vocab], num_items=len(vocab), meta={"protocol": "recbole-loo"})


def train_one(task, preset, quiet: bool) -> dict:
    """Train T1 once; test metrics of the kept (best-validation) epoch and the timings."""
    from conure_core.lineage import Lineage

    stamps: dict[int, float] = {}
    started = time.perf_counter()

    def log(event: dict) -> None:
        if event.get("event") == "epoch":
            stamps[event["epoch"]] = time.perf_counter() - started
            if not quiet and event["epoch"]:
                print(f"    epoch {event['epoch']:>2} loss {event['loss']:.4f} valid mrr@5 {event['valid']:.4f} "
                      f"({stamps[event['epoch']]:.0f}s)", flush=True)

    lineage = Lineage.new(preset.model, task.num_items, list(task.vocab))
    result = lineage.train(task, preset.train_config(0), log)
    test = lineage.evaluate(task, "test")
    info = lineage.info(task.name)
    with lineage.model.deep_only(info):  # the TCN's own logits, without T1's wide part
        deep = lineage.evaluate(task, "test")["mrr@5"]
    return {"test": {k: test[k] for k in ("mrr@5", "ndcg@5", "hr@5")}, "tcn_test": deep, "wide": info.wide,
            "best_epoch": result.best_epoch,
            "best_valid": result.best_valid, "epochs_run": result.epochs_run, "train_s": result.seconds,
            "s_per_epoch": result.seconds / max(result.epochs_run, 1), "s_to_best": stamps.get(result.best_epoch, 0.0)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.peer_protocol", description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="paper", help="quick | paper | a preset JSON file")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="preset edit (repeatable)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    from benchmarks.baselines import naive, sequence_cooccurrence
    from benchmarks.overrides import load_preset
    from conure_core.config import ConfigError

    try:
        presets = [load_preset(args.preset, args.set + ["model.t1_targets=last"], s) for s in range(args.seeds)]
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    presets[0].apply_threads()
    task = recbole_split()
    users = len(task.split) // 3
    print(f"RecBole protocol: {users} users, {task.num_items} items; preset {args.preset} {' '.join(args.set)}", flush=True)
    pop, co = naive(task, "last"), sequence_cooccurrence(task, "last")
    runs = []
    for seed, preset in enumerate(presets):
        runs.append(train_one(task, preset, args.quiet))
        r = runs[-1]
        print(f"seed {seed}: test mrr@5 {r['test']['mrr@5']:.4f} ndcg@5 {r['test']['ndcg@5']:.4f} hr@5 "
              f"{r['test']['hr@5']:.4f}; best epoch {r['best_epoch']}/{r['epochs_run']} (valid {r['best_valid']:.4f}), "
              f"{r['s_per_epoch']:.1f} s/epoch, {r['s_to_best']:.0f} s to the best epoch; the TCN alone "
              f"{r['tcn_test']:.4f}" + (f", wide part {r['wide']}" if r["wide"] else ""), flush=True)
    mean = {k: float(np.mean([r["test"][k] for r in runs])) for k in ("mrr@5", "ndcg@5", "hr@5")}
    std = float(np.std([r["test"]["mrr@5"] for r in runs], ddof=1)) if len(runs) > 1 else 0.0
    print(f"ours ({args.preset}): test mrr@5 {mean['mrr@5']:.4f} +- {std:.4f}, ndcg@5 {mean['ndcg@5']:.4f}, "
          f"hr@5 {mean['hr@5']:.4f}")
    print(f"most-popular (ours): test mrr@5 {pop['test']:.4f}; item co-occurrence {co['test']:.4f} {co['params']}")
    for name, value in PEERS.items():
        print(f"{name}: test mrr@5 {value:.4f}")
    figures = {"users": users, "items": task.num_items, "mrr@5": mean["mrr@5"], "mrr@5_std": std,
               "ndcg@5": mean["ndcg@5"], "hr@5": mean["hr@5"], "popularity_mrr@5": pop["test"],
               "cooccur_mrr@5": co["test"], "tcn_mrr@5": float(np.mean([r["tcn_test"] for r in runs])),
               "s_per_epoch": float(np.mean([r["s_per_epoch"] for r in runs])),
               "s_to_best": float(np.mean([r["s_to_best"] for r in runs])),
               "train_s": float(np.mean([r["train_s"] for r in runs])),
               "best_epoch": float(np.mean([r["best_epoch"] for r in runs])),
               "valid_mrr@5": float(np.mean([r["best_valid"] for r in runs]))}
    emit("peer_protocol", figures, {"mrr@5": f">= {PEERS['SASRec (RecBole, 64 wide, 2 blocks)']}",
                                    "s_to_best": f"<= {NEXTITNET_TRAIN_S / 10:.0f}"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
