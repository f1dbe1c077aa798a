"""``python -m benchmarks.sasrec_protocol [--data FILE] [--seeds 3] [--rows ...]``: T1 on SASRec's protocol.

The protocol of the SASRec paper (Kang & McAuley, ICDM 2018; its ``util.py``), on a file of
``user_id item_id`` lines (each user's lines in time order; the shared Amazon Games file by
default): per user the last item is the test target, the second-last the validation target, the
rest train (users with fewer than 3 items: train only); inputs are the last ``MAX_LEN`` items, the
test input is train + the validation item; each target is ranked against ``NEGATIVES`` items drawn
uniformly from the items the user has not interacted with in train (ALL users, one fixed seed; the
paper's code samples 10,000 users); HR@10 and NDCG@10 over users.

Rows (``--rows``): ``preset`` (the preset's T1 as ``conure learn`` trains it: train, prune, retrain;
the per-item part as the preset says), ``tcn`` (the TCN alone: train stage, no per-item part),
``transformer`` (the Transformer backbone, train stage, no per-item part), ``popular``, ``cooccur``
(item-to-item table "j after i" over holders of i, decayed over the prefix, popularity breaking ties;
shrink and decay chosen on validation). Each model row prints validation and test HR@10 / NDCG@10,
seconds to the best validation epoch and the process's peak memory; the published table beside.
Every epoch's figures go to ``benchmarks/out/sasrec_protocol.jsonl``.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import emit

MAX_LEN, NEGATIVES, K = 50, 100, 10
SELECT_USERS = 5000
CURVE_USERS = 5000  # users of the per-epoch learning curve on the protocol (validation items)
GAMES = Path("shared") / "data" / "amazon_games" / "games.txt"
# The shared data folder sits beside the repository (or beside a folder of git worktrees).
DEFAULT_DATA = next((p / GAMES for p in Path(__file__).resolve().parents[2:4] if (p / GAMES).is_file()),
                    Path(__file__).resolve().parents[2] / GAMES)
LOG = Path(__file__).resolve().parent / "out" / "sasrec_protocol.jsonl"
# The paper's Table 3, Games column (HR@10, NDCG@10).
PUBLISHED = {"PopRec": (0.4724, 0.2779), "BPR-MF": (0.4853, 0.2875), "FMC": (0.6358, 0.4456),
             "FPMC": (0.6802, 0.4680), "TransRec": (0.6838, 0.4557), "GRU4Rec+": (0.6599, 0.4759),
             "Caser": (0.5282, 0.3214), "SASRec": (0.7410, 0.5360)}
ROWS = ("preset", "tcn", "transformer", "popular", "cooccur")
# Edits that turn a preset into each model row (the preset row runs the preset as it is).
ROW_SETS = {"tcn": ["model.t1_wide=none"],
            "transformer": ["model.t1_wide=none", "model.backbone=transformer", f"model.max_len={MAX_LEN}"]}
COOC_SHRINK, COOC_DECAY = (1.0, 10.0, 100.0), (1.0, 0.8, 0.5)


class ProtocolData:
    """The split of one interaction file: T1 rows (TaskData) plus each evaluated user's candidates.

    ``task``: per user a train row (items up to the third-last; its targets are every next item),
    and for users with >= 3 items a valid row (train + validation target) and a test row (train +
    validation item + test target); rows are the last ``max_len + 1`` items, left-padded.
    ``rows[split]``: every evaluated user's valid / test row and ``candidates[split]`` its
    [U, NEGATIVES + 1] item tokens, the negatives first and the target last (so a tie ranks the target
    after the negatives, as ``metrics.target_ranks`` breaks ties). The task's own valid split, on
    which training selects its epoch (full-ranking MRR@5, ``TaskModel.evaluate``), holds the valid
    rows of ``SELECT_USERS`` users drawn with the seed: a full ranking of every user's validation
    item cost ~150 s an epoch on the loaded 2 cores; the protocol's figures use every user.
    """

    def __init__(self, task, rows: dict[str, torch.Tensor], candidates: dict[str, torch.Tensor], users: int,
                 interactions: int) -> None:
        self.task, self.rows, self.candidates = task, rows, candidates
        self.users, self.interactions = users, interactions


def read_sequences(path: Path) -> tuple[list[np.ndarray], int]:
    """Each user's items (1-based ids, file order) and the largest item id; ValueError names a bad line."""
    try:
        data = np.loadtxt(path, dtype=np.int64, ndmin=2)
    except ValueError as exc:
        raise ValueError(f"{path}: every line must be 'user_id item_id' (two integers): {exc}") from None
    if data.shape[1] != 2 or data.size == 0 or data.min() < 1:
        raise ValueError(f"{path}: every line must be 'user_id item_id', both integers from 1.")
    order = np.argsort(data[:, 0], kind="stable")  # group by user, keeping each user's file order
    _, starts = np.unique(data[order, 0], return_index=True)
    return np.split(data[order, 1], starts[1:]), int(data[:, 1].max())


def sample_negatives(rated: list[np.ndarray], num_items: int, rng: np.random.Generator, n: int = NEGATIVES) -> np.ndarray:
    """[U, n] item ids drawn uniformly (with replacement, as the paper's code) outside each user's ``rated``."""
    out = np.empty((len(rated), n), dtype=np.int64)
    for u, seen in enumerate(rated):
        picked = np.empty(0, dtype=np.int64)
        while picked.size < n:
            draw = rng.integers(1, num_items + 1, size=2 * n)
            picked = np.concatenate([picked, draw[~np.isin(draw, seen)]])
        out[u] = picked[:n]
    return out


def _row(items: np.ndarray, length: int) -> np.ndarray:
    row = np.zeros(length, dtype=np.int64)
    tail = items[-length:]
    row[length - tail.size:] = tail
    return row


def load_protocol(path: Path, max_len: int = MAX_LEN, seed: int = 0) -> ProtocolData:
    """The protocol's split of ``path`` (see ``ProtocolData``); negatives drawn with ``seed``."""
    from conure_core.data.types import TEST, TRAIN, VALID, TaskData

    sequences, num_items = read_sequences(path)
    rows, split, owners, rated = [], [], [], []
    for u, items in enumerate(sequences):
        # (items kept, split): train only below 3 items; else train / valid / test rows
        parts = [(items, TRAIN)] if items.size < 3 else [(items[:-2], TRAIN), (items[:-1], VALID), (items, TEST)]
        for kept, code in parts:
            rows.append(_row(kept, max_len + 1))
            split.append(code)
            owners.append(u)
        if items.size >= 3:
            rated.append(items[:-2])
    rng = np.random.default_rng(seed)
    seqs = torch.from_numpy(np.stack(rows))
    split_t = torch.tensor(split, dtype=torch.int8)
    evaluated = {name: torch.nonzero(split_t == code).flatten() for name, code in (("valid", VALID), ("test", TEST))}
    candidates = {}
    for name, idx in evaluated.items():
        negatives = torch.from_numpy(sample_negatives(rated, num_items, rng))
        candidates[name] = torch.cat([negatives, seqs[idx, -1:]], dim=1)
    # The task keeps only the selection users' valid rows (see ProtocolData); all test rows stay.
    select = evaluated["valid"][torch.from_numpy(rng.permutation(len(rated))[:SELECT_USERS])]
    keep = split_t != VALID
    keep[select] = True
    task = TaskData(name="games", kind="sequence", sequences=seqs[keep], labels=None, split=split_t[keep],
                    user_ids=[str(owners[i]) for i in torch.nonzero(keep).flatten().tolist()],
                    vocab=[str(i) for i in range(1, num_items + 1)], num_items=num_items, meta={"protocol": "sasrec"})
    return ProtocolData(task, {name: seqs[idx] for name, idx in evaluated.items()}, candidates, len(sequences),
                        int(sum(s.size for s in sequences)))


def ranking(scores: torch.Tensor) -> dict[str, float]:
    """HR@K and NDCG@K of scores [U, NEGATIVES + 1] whose last column is the target (ties rank it last)."""
    rank = (scores[:, :-1] >= scores[:, -1:]).sum(dim=1)
    hit = rank < K
    ndcg = torch.where(hit, 1.0 / torch.log2(rank.double() + 2.0), torch.zeros((), dtype=torch.float64))
    return {f"hr@{K}": float(hit.double().mean()), f"ndcg@{K}": float(ndcg.mean())}


@torch.no_grad()
def model_scores(learner, task_name: str, rows: torch.Tensor, candidates: torch.Tensor,
                 batch_size: int = 1024) -> torch.Tensor:
    """Scores [U, NEGATIVES + 1] of the candidates after each row's input (the row without its target)."""
    model = learner.model
    info = model.info(task_name)
    head = model.heads[info.name]
    out = []
    with learner.policy.reading(info):
        weights = learner.task_weights(info)
        for start in range(0, rows.shape[0], batch_size):
            inputs = rows[start:start + batch_size, :-1].to(model.device).long()
            h = model.encode(inputs, weights)[:, -1]
            scores = head.scores(h, head.wide_scores(inputs, last=True))
            out.append(scores.gather(1, candidates[start:start + batch_size].to(model.device) - 1).cpu())
    return torch.cat(out)


def evaluate_model(learner, data: ProtocolData) -> dict[str, dict[str, float]]:
    """HR@K / NDCG@K of a learned T1 on the validation and the test candidates."""
    return {split: ranking(model_scores(learner, data.task.name, data.rows[split], data.candidates[split]))
            for split in ("valid", "test")}


def popularity(data: ProtocolData) -> torch.Tensor:
    """Train-row item counts [V + 1] (index 0 = padding)."""
    seqs = data.task.sequences[data.task.rows("train")]
    return torch.bincount(seqs.flatten(), minlength=data.task.num_items + 1).double().index_fill_(0, torch.tensor([0]), 0)


def popular_row(data: ProtocolData) -> dict:
    pop = popularity(data)
    return {split: ranking(pop[data.candidates[split]]) for split in ("valid", "test")}


def transition_matrix(seqs: torch.Tensor, num_items: int, shrink: float) -> torch.Tensor:
    """Sparse CSR [V + 1, V + 1] indexed [j, i]: (train users with j after i) / (holders of i + shrink)."""
    size, length = num_items + 1, seqs.shape[1]
    later = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)
    keys = []
    for start in range(0, seqs.shape[0], 512):  # chunks bound the [B, L, L] pair tensor
        s = seqs[start:start + 512]
        keep = later & (s.unsqueeze(2) > 0) & (s.unsqueeze(1) > 0)
        user = torch.arange(start, start + s.shape[0]).view(-1, 1, 1).expand(-1, length, length)[keep]
        a = s.unsqueeze(2).expand(-1, -1, length)[keep]
        b = s.unsqueeze(1).expand(-1, length, -1)[keep]
        keys.append(torch.unique((user * size + a) * size + b))  # one count per user and pair
    pairs = torch.cat(keys) % (size * size)
    pair, count = torch.unique(pairs, return_counts=True)
    a, b = pair // size, pair % size
    held = torch.zeros(seqs.shape[0], size, dtype=torch.bool).scatter_(1, seqs, True)
    holders = held.sum(0).double()
    values = count.double() / (holders[a] + shrink)
    with warnings.catch_warnings():  # torch calls its sparse CSR support "beta" on every construction
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_coo_tensor(torch.stack([b, a]), values.float(), (size, size),
                                       check_invariants=True).coalesce().to_sparse_csr()


def cooccur_scores(table: torch.Tensor, rows: torch.Tensor, candidates: torch.Tensor, decay: float,
                   pop: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """Scores [U, NEGATIVES + 1]: the decayed prefix sum of the table's rows, popularity breaking ties."""
    inputs = rows[:, :-1]
    ages = decay ** torch.arange(inputs.shape[1] - 1, -1, -1, dtype=torch.float32)
    tie = pop / (pop.max() + 1.0) * 1e-9
    out = []
    for start in range(0, inputs.shape[0], chunk):
        x = inputs[start:start + chunk]
        weights = torch.zeros(x.shape[0], table.shape[0]).scatter_add_(1, x, ages.expand(x.shape[0], -1))
        weights[:, 0] = 0.0
        full = torch.sparse.mm(table, weights.t()).t()  # [B, V + 1]
        cand = candidates[start:start + chunk]
        out.append(full.gather(1, cand).double() + tie[cand])
    return torch.cat(out)


def cooccur_row(data: ProtocolData) -> dict:
    task = data.task
    pop = popularity(data)
    train = task.sequences[task.rows("train")]
    best = None
    for shrink in COOC_SHRINK:
        table = transition_matrix(train, task.num_items, shrink)
        for decay in COOC_DECAY:
            valid = ranking(cooccur_scores(table, data.rows["valid"], data.candidates["valid"], decay, pop))
            if best is None or valid[f"ndcg@{K}"] > best[0][f"ndcg@{K}"]:
                best = (valid, shrink, decay, table)
    valid, shrink, decay, table = best
    test = ranking(cooccur_scores(table, data.rows["test"], data.candidates["test"], decay, pop))
    return {"valid": valid, "test": test, "params": {"shrink": shrink, "decay": decay}}


def log_event(record: dict) -> None:
    """Append one JSON record to ``LOG`` (gitignored): every run's epochs, for the accuracy doc's tables."""
    LOG.parent.mkdir(parents=True, exist_ok=True)
    with LOG.open("a") as fh:
        fh.write(json.dumps(record) + "\n")


def peak_mib() -> float:
    """This process's peak resident memory so far (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def train_row(row: str, data: ProtocolData, preset, tag: str, quiet: bool) -> dict:
    """Train one model row (``preset``: train, prune, retrain as ``conure learn``; else the train stage)."""
    from conure_core.lineage import Lineage

    task = data.task
    started = time.perf_counter()
    stamps: dict[tuple[str, int], float] = {}

    curve_rows, curve_cands = data.rows["valid"][:CURVE_USERS], data.candidates["valid"][:CURVE_USERS]

    def progress(event: dict) -> None:
        if event.get("event") != "epoch":
            return
        stamps[(event["stage"], event["epoch"])] = time.perf_counter() - started
        # the learning curve on the protocol itself (the first CURVE_USERS users' validation item)
        curve = ranking(model_scores(lineage, task.name, curve_rows, curve_cands))
        log_event({"tag": tag, "row": row, "seed": preset.model.seed, **event, "curve_ndcg@10": curve[f"ndcg@{K}"],
                   "curve_hr@10": curve[f"hr@{K}"], "t": round(stamps[(event["stage"], event["epoch"])], 1)})
        if not quiet and event["epoch"]:
            print(f"    {event['stage']} epoch {event['epoch']:>2} loss {event['loss']:.4f} valid mrr@5 "
                  f"{event['valid']:.4f} (loss {event['valid_loss']:.4f}), protocol valid ndcg@{K} "
                  f"{curve[f'ndcg@{K}']:.4f} ({CURVE_USERS} users) {stamps[(event['stage'], event['epoch'])]:.0f}s",
                  flush=True)

    preset = preset.for_items(task.num_items)  # as `conure learn` resolves it for this catalogue
    preset.apply_threads()
    lineage = Lineage.new(preset.model, task.num_items, list(task.vocab))
    cfg = preset.train_config(0)
    results = lineage.learn(task, cfg, prune=row == "preset", progress=progress)
    metrics = evaluate_model(lineage, data)
    first = results[0]
    out = {"row": row, "seed": preset.model.seed, **{f"{s}_{m}": v for s, ms in metrics.items() for m, v in ms.items()},
           "best_epoch": first.best_epoch, "epochs_run": first.epochs_run,
           "s_to_best": stamps.get(("train", first.best_epoch), 0.0), "train_s": time.perf_counter() - started,
           "peak_mib": peak_mib(), "wide": lineage.info(task.name).wide}
    if lineage.heads[task.name].wide:  # the same model without its per-item part
        with lineage.model.deep_only(lineage.info(task.name)):
            deep = evaluate_model(lineage, data)
        out.update({f"deep_{s}_{m}": v for s, ms in deep.items() for m, v in ms.items()})
    log_event({"tag": tag, "event": "result", **out})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sasrec_protocol", description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="'user_id item_id' lines (default: %(default)s)")
    p.add_argument("--preset", default="quick", help="quick | paper | a preset JSON file")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="preset edit (repeatable)")
    p.add_argument("--tag", default="", help="a label for this run's records in the log")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    if unknown := sorted(set(rows) - set(ROWS)):
        print(f"error: --rows {unknown} unknown; choose from {','.join(ROWS)}.", file=sys.stderr)
        return 2
    if not args.data.is_file():
        print(f"skipped: no data file at {args.data} (pass --data FILE with 'user_id item_id' lines, each "
              "user's lines in time order, e.g. the SASRec paper's Games file).")
        emit("sasrec_protocol", {"skipped": 1}, {})
        return 0
    from benchmarks.overrides import load_preset
    from conure_core.config import ConfigError

    try:
        presets = {r: [load_preset(args.preset, args.set + ["model.t1_targets=last"] + ROW_SETS.get(r, []), s)
                       for s in range(args.seeds)] for r in rows if r in ROW_SETS or r == "preset"}
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        data = load_protocol(args.data)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    tag = args.tag or f"{args.preset} {' '.join(args.set)}".strip()
    print(f"SASRec protocol on {args.data}: {data.users} users ({data.candidates['test'].shape[0]} evaluated, all, "
          f"seed 0), {data.task.num_items} items, {data.interactions} interactions; max length {MAX_LEN}, "
          f"{NEGATIVES} negatives; preset {args.preset} {' '.join(args.set)}", flush=True)
    figures: dict[str, float] = {}
    for row in rows:
        if row in ("popular", "cooccur"):
            started = time.perf_counter()
            r = popular_row(data) if row == "popular" else cooccur_row(data)
            seconds = time.perf_counter() - started
            print(f"{row}: test hr@{K} {r['test'][f'hr@{K}']:.4f} ndcg@{K} {r['test'][f'ndcg@{K}']:.4f} (valid "
                  f"{r['valid'][f'ndcg@{K}']:.4f}) {r.get('params', '')} {seconds:.0f}s", flush=True)
            figures.update({f"{row}_hr@{K}": r["test"][f"hr@{K}"], f"{row}_ndcg@{K}": r["test"][f"ndcg@{K}"]})
            log_event({"tag": tag, "event": "result", "row": row, **r, "seconds": seconds})
            continue
        runs = []
        for preset in presets[row]:
            print(f"{row}, seed {preset.model.seed}:", flush=True)
            r = train_row(row, data, preset, tag, args.quiet)
            runs.append(r)
            extra = f"; without the per-item part ndcg@{K} {r['deep_test_ndcg@10']:.4f}" if "deep_test_ndcg@10" in r else ""
            print(f"{row} seed {r['seed']}: test hr@{K} {r['test_hr@10']:.4f} ndcg@{K} {r['test_ndcg@10']:.4f} "
                  f"(valid {r['valid_hr@10']:.4f} / {r['valid_ndcg@10']:.4f}); best epoch {r['best_epoch']}/"
                  f"{r['epochs_run']}, {r['s_to_best']:.0f}s to it, {r['train_s']:.0f}s in all, peak {r['peak_mib']:.0f} MiB"
                  f"{extra}", flush=True)
        for key in ("test_hr@10", "test_ndcg@10", "valid_hr@10", "valid_ndcg@10", "s_to_best", "peak_mib",
                    "deep_test_ndcg@10"):
            values = [r[key] for r in runs if key in r]
            if values:
                figures[f"{row}_{key}"] = float(np.mean(values))
                if key == "test_ndcg@10" and len(values) > 1:
                    figures[f"{row}_{key}_se"] = float(np.std(values, ddof=1) / np.sqrt(len(values)))
        print(f"{row} ({len(runs)} seeds): test hr@{K} {figures[f'{row}_test_hr@10']:.4f} ndcg@{K} "
              f"{figures[f'{row}_test_ndcg@10']:.4f}", flush=True)
    print("published (SASRec paper, Table 3, Games):")
    for name, (hr, ndcg) in PUBLISHED.items():
        print(f"  {name:<9} hr@{K} {hr:.4f} ndcg@{K} {ndcg:.4f}")
    hr, ndcg = PUBLISHED["SASRec"]
    emit("sasrec_protocol", figures, {"preset_test_ndcg@10": f">= {ndcg}", "preset_test_hr@10": f">= {hr}",
                                      "tcn_test_ndcg@10": ">= 0.50"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
