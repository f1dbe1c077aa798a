"""``python -m benchmarks.sasrec_curves OUT.png [TAG ...]``: learning curves of ``benchmarks.sasrec_protocol`` runs.

Reads the runs' log (``benchmarks/out/sasrec_protocol.jsonl``) and plots, per run tag, the protocol's
validation NDCG@10 (the first 5,000 users' validation items) after each epoch of T1's train stage,
with most-popular on the same users for reference (those users are harder than average).
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

from benchmarks.sasrec_protocol import CURVE_USERS, DEFAULT_DATA, LOG, load_protocol, popularity, ranking


def curves(tags: list[str] | None = None) -> dict[str, list[tuple[int, float]]]:
    """(epoch, validation NDCG@10) per run tag (seed 0, train stage), in log order."""
    out: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for line in LOG.read_text().splitlines():
        r = json.loads(line)
        if r.get("event") == "epoch" and r.get("stage") == "train" and r.get("seed", 0) == 0 and "curve_ndcg@10" in r:
            if not tags or r["tag"] in tags:
                out[r["tag"]].append((r["epoch"], r["curve_ndcg@10"]))
    return dict(out)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m benchmarks.sasrec_curves OUT.png [TAG ...]", file=sys.stderr)
        return 2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for tag, points in curves(args[1:]).items():
        ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=tag)
    if DEFAULT_DATA.is_file():  # the reference on the same users: most-popular
        data = load_protocol(DEFAULT_DATA)
        pop = ranking(popularity(data)[data.candidates["valid"][:CURVE_USERS]])["ndcg@10"]
        ax.axhline(pop, color="grey", linestyle="--", label=f"most-popular, same users ({pop:.3f})")
    ax.set_xlabel("epoch of T1's train stage")
    ax.set_ylabel(f"validation NDCG@10 (100 negatives, first {CURVE_USERS:,} users)")
    ax.set_title("Amazon Games, SASRec protocol")
    ax.legend(fontsize=7)
    fig.tight_layout()
    Path(args[0]).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args[0], dpi=110)
    print(f"wrote {args[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
