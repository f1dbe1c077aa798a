"""The per-item parts at catalogue scale: T1's sparse top-k table and the sparse class bag over 1M items.

Synthetic T1 rows (``benchmarks.train_scale.sequences``: power-law popularity, variable length) over
``--items`` items. Phases, in this order so each peak is its own (process peak RSS after each):
1. fit: ``wide.fit_transitions`` as ``TaskModel.add_task`` runs it (top-k counted per source block,
   shrink / decay / k chosen on ``--valid`` held-out rows ranked from sparse scores): ``fit_s``, ``fit_peak_gib``;
2. predict: the fused head's last-position table scores (``wide.decayed_last``) of ``--batch`` prefixes,
   [batch, V] out: ``predict_rows_per_s``;
3. bag: a class head over the same vocabulary reading ``wide.bag_slots`` of ``--batch`` users
   (``ItemBag``): ``bag_rows_per_s``.
The same-run reference is what the dense parts would hold: a V x V float32 table, a [batch, V] bag.

    python -m benchmarks.wide_scale [--items 1000000] [--users 100000] [--length 20] [--valid 2000]
"""
from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import emit
from benchmarks.train_scale import GIB, peak_gib, sequences
from conure_core.heads import build_head
from conure_core.wide import bag_slots, decayed_last, fit_transitions


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000, help="T1 train rows")
    parser.add_argument("--length", type=int, default=20)
    parser.add_argument("--valid", type=int, default=2_000, help="T1 validation rows (choose shrink, decay, k)")
    parser.add_argument("--batch", type=int, default=64, help="rows scored at once in phases 2 and 3")
    parser.add_argument("--classes", type=int, default=8)
    args = parser.parse_args(argv)
    cpu = torch.device("cpu")
    v = args.items
    train = sequences(args.users, v, args.length, seed=1)
    valid = sequences(args.valid, v, args.length, seed=2)
    start_peak = peak_gib(cpu)
    print(f"{v:,} items, {args.users:,} train rows x {args.length} (+ {args.valid:,} validation rows); "
          f"start peak {start_peak:.2f} GiB; a dense V x V float32 table would be {v * v * 4 / GIB:,.0f} GiB")

    started = time.perf_counter()
    fit = fit_transitions(train, valid, v)
    fit_s = time.perf_counter() - started
    table = fit["table"]
    table_gib = (table.index.numel() * table.index.element_size() + table.value.numel() * 4) / GIB
    figures = {"items": v, "users": args.users, "fit_s": fit_s, "fit_peak_gib": peak_gib(cpu), "k": table.k,
               "table_gib": table_gib, "dense_table_gib": v * v * 4 / GIB}
    print(f"1. fit: k = {table.k}, shrink {fit['shrink']}, decay {fit['decay']}, validation MRR@5 {fit['valid']:.4f} "
          f"in {fit_s:.1f} s; table {table_gib:.3f} GiB; peak {figures['fit_peak_gib']:.2f} GiB")

    prefixes = valid[:args.batch]
    started = time.perf_counter()
    scores = decayed_last(table, prefixes, fit["decay"])
    seconds = time.perf_counter() - started
    figures.update(predict_rows_per_s=prefixes.shape[0] / seconds, predict_peak_gib=peak_gib(cpu))
    print(f"2. predict: {prefixes.shape[0]} prefixes -> [{scores.shape[0]}, {scores.shape[1]:,}] table scores in "
          f"{seconds:.2f} s = {figures['predict_rows_per_s']:,.0f} rows/s; peak {figures['predict_peak_gib']:.2f} GiB")
    del scores

    head = build_head("class", 64, args.classes, torch.Generator().manual_seed(0), bag=v)
    with torch.no_grad():
        head.bag.weight.normal_(generator=torch.Generator().manual_seed(1))
    users = torch.cat([torch.randn(args.batch, 64), bag_slots(prefixes, v)], dim=1)
    started = time.perf_counter()
    logits = head.scores(users)
    seconds = time.perf_counter() - started
    figures.update(bag_rows_per_s=args.batch / seconds, bag_peak_gib=peak_gib(cpu),
                   bag_input_mib=users.numel() * 4 / 2 ** 20, dense_bag_input_mib=args.batch * v * 4 / 2 ** 20)
    print(f"3. bag: {args.batch} users -> [{logits.shape[0]}, {logits.shape[1]}] class logits in {seconds * 1e3:.1f} ms; "
          f"user vectors {figures['bag_input_mib']:.2f} MiB (dense bag: {figures['dense_bag_input_mib']:,.0f} MiB); "
          f"peak {figures['bag_peak_gib']:.2f} GiB")
    emit("wide_scale", figures, {"fit_peak_gib": "<= 3", "items": ">= 1000000"})


if __name__ == "__main__":
    main()
