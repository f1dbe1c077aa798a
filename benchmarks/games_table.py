"""T1's sparse top-k table alone on SASRec's protocol (``benchmarks.sasrec_protocol``'s split and candidates).

The table is fitted as ``TaskModel.add_task`` fits it (``wide.fit_transitions``: the train rows'
top-k successors; shrink, decay and k on the validation rows, here their last item: the protocol's
validation target), then each user's validation / test candidates are scored with the prefix's
decayed table scores (``wide.decayed_last``), alone and with train popularity breaking its ties.
Beside it, every k of ``wide.TOPK`` at the chosen shrink and decay: the validation curve of k.

    python -m benchmarks.games_table [--data FILE]
"""
from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import emit
from benchmarks.sasrec_protocol import DEFAULT_DATA, load_protocol, popularity, ranking
from benchmarks.train_scale import peak_gib
from conure_core.wide import TOPK, decayed_last, fit_transitions, topk_transitions, transition_table


def candidate_scores(table, rows: torch.Tensor, candidates: torch.Tensor, decay: float, chunk: int = 1024) -> torch.Tensor:
    """Table scores [U, candidates] after each row's input (the row without its target)."""
    return torch.cat([decayed_last(table, rows[s:s + chunk, :-1], decay).gather(1, candidates[s:s + chunk] - 1)
                      for s in range(0, rows.shape[0], chunk)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=lambda p: __import__("pathlib").Path(p), default=DEFAULT_DATA)
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"skipped: no data file at {args.data} (pass --data FILE with 'user_id item_id' lines).")
        emit("games_table", {"skipped": 1}, {})
        return
    data = load_protocol(args.data)
    task = data.task
    train, valid = task.sequences[task.rows("train")], task.sequences[task.rows("valid")]
    started = time.perf_counter()
    fit = fit_transitions(train, valid, task.num_items, t1_targets="last")
    fit_s = time.perf_counter() - started
    print(f"{data.users:,} users, {task.num_items:,} items; fit in {fit_s:.1f} s (peak {peak_gib(torch.device('cpu')):.2f} GiB): "
          f"k {fit['k']}, shrink {fit['shrink']}, decay {fit['decay']}, validation MRR@5 (full ranking) {fit['valid']:.4f}")
    pop = popularity(data)
    tie = pop / pop.max() * 1e-20  # float64, far below any table entry: it orders zero-score candidates only
    index, counts, holders = topk_transitions(train, task.num_items, max(TOPK))
    figures = {"fit_s": fit_s, "k": fit["k"]}
    print("k      valid MRR@5 | valid HR@10 NDCG@10 (alone; +popularity) | test HR@10 NDCG@10 (alone; +popularity)")
    for k in TOPK:
        table = transition_table(index, counts, holders, fit["shrink"], k)
        out = {}
        for split in ("valid", "test"):
            scores = candidate_scores(table, data.rows[split], data.candidates[split], fit["decay"])
            out[split] = (ranking(scores), ranking(scores.double() + tie[data.candidates[split]]))
        v, t = out["valid"], out["test"]
        print(f"{k:<6} {fit.get(f'valid_k{k}', float('nan')):.4f}      | {v[0]['hr@10']:.4f} {v[0]['ndcg@10']:.4f}; "
              f"{v[1]['hr@10']:.4f} {v[1]['ndcg@10']:.4f} | {t[0]['hr@10']:.4f} {t[0]['ndcg@10']:.4f}; "
              f"{t[1]['hr@10']:.4f} {t[1]['ndcg@10']:.4f}" + ("  <- chosen" if k == fit["k"] else ""))
        figures.update({f"valid_ndcg@10_k{k}": v[1]["ndcg@10"], f"test_hr@10_k{k}": t[1]["hr@10"],
                        f"test_ndcg@10_k{k}": t[1]["ndcg@10"]})
    emit("games_table", figures, {})


if __name__ == "__main__":
    main()
