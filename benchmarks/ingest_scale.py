"""Ingest TTL-scale synthetic tasks (validate, quarantine, join, split, write) and compare with pandas.

    python -m benchmarks.ingest_scale [--scale 0.05] [--workdir DIR] [--no-pandas]

Data are generated in a child process so this process's peak RSS (ru_maxrss) is the pipeline's.
The pandas baseline runs after the pipeline in the same process (its peak is reported apart).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

TARGETS = {"wall_s": "<= 60", "peak_gib": "<= 6", "speedup_vs_pandas": ">= 1"}


def rss_gib() -> float:
    """Peak resident set size of this process so far (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def generate(dest: Path, scale: float) -> list[Path]:
    code = ("import sys; from pathlib import Path; from conure_core.data.synthetic import write_ttl_tasks; "
            f"write_ttl_tasks(Path({str(dest)!r}), scale={scale!r})")
    subprocess.run([sys.executable, "-c", code], check=True)
    return [dest / n for n in ("T1", "T2", "T3")]


def run_pipeline(folders: list[Path], out: Path) -> dict:
    from data_contracts.ingest import ingest_task

    times, refs, t1 = {}, [], None
    for folder in folders:
        t, phases = time.perf_counter(), {}
        ref = ingest_task(folder, out, t1, timings=phases)
        times[folder.name] = time.perf_counter() - t
        times.update({f"{folder.name}_{k.removesuffix('_s')}": v for k, v in phases.items()})
        t1 = ref if ref.kind == "sequence" else t1
        refs.append(ref)
        print(f"  {ref.name:3s} {ref.kind:8s} rows {ref.rows:>10,}  quarantined {ref.quarantined:>7,}  "
              f"{times[folder.name]:5.1f} s (read+validate {phases['read_validate_s']:.1f}, of which GX "
              f"{phases['gx_s']:.2f}; prepare {phases['prepare_s']:.1f}; write {phases['write_s']:.1f})  "
              f"peak {rss_gib():.2f} GiB")
    return {"times": times, "refs": refs}


def run_pandas(folders: list[Path], out: Path, max_len: int = 100, seed_key: str = "conure0000000000") -> float:
    """The same steps written plainly with pandas (checks, vocab, truncation, join, splits, write).

    Its checks are bare asserts (no GX, no reports), so it does less work than the pipeline.
    """
    import numpy as np
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def split_of(keys: pd.Series) -> np.ndarray:
        b = pd.util.hash_pandas_object(keys, index=False, hash_key=seed_key).to_numpy() % 10_000
        return np.where(b < 8000, 0, np.where(b < 8500, 1, 2)).astype(np.int8)

    t1 = pd.read_parquet(folders[0] / "data.parquet")
    assert not t1["user_id"].isna().any() and not t1["user_id"].duplicated().any()
    t1["items"] = t1["items"].map(lambda a: a[-max_len:])
    lens = t1["items"].map(len)
    assert (lens >= 2).all()
    flat = np.concatenate(t1["items"].to_numpy())
    assert flat.min() >= 0
    codes, vocab = pd.factorize(flat, sort=True)
    t1["tokens"] = np.split((codes + 1).astype(np.int32), np.cumsum(lens.to_numpy())[:-1])
    t1 = t1.sort_values("user_id").reset_index(drop=True)
    t1["split"] = split_of(t1["user_id"].astype(str))
    t1[["user_id", "tokens", "split"]].to_parquet(out / "t1.parquet")
    pd.DataFrame({"id": vocab.astype(str)}).to_parquet(out / "t1_vocab.parquet")
    t1_rows = pd.DataFrame({"user_id": t1["user_id"], "t1_row": np.arange(len(t1))})
    for folder in folders[1:]:
        df = pd.read_parquet(folder / "data.parquet")
        assert not df["user_id"].isna().any() and not df["label"].isna().any()
        known = df["user_id"].isin(t1_rows["user_id"])
        assert df.loc[known, "user_id"].nunique() / df["user_id"].nunique() >= 0.5
        df[~known].to_parquet(out / f"{folder.name}_quarantine.parquet")
        df = df[known].merge(t1_rows, on="user_id", how="inner").drop_duplicates(["user_id", "label"])
        df["label"], labels = pd.factorize(df["label"], sort=True)
        df = df.sort_values(["t1_row", "label"])
        label_str = pd.Series(labels.astype(str)).iloc[df["label"]].to_numpy()
        df["split"] = split_of(df["user_id"].astype(str) + "\x1f" + label_str)
        df.to_parquet(out / f"{folder.name}.parquet")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the TTL sizes (1.0 = full)")
    ap.add_argument("--workdir", type=Path, default=None, help="where to write (default: a temp folder)")
    ap.add_argument("--no-pandas", action="store_true", help="skip the pandas baseline")
    args = ap.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="ingest_scale-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        print(f"ingest_scale: scale {args.scale}, workdir {work}")
        t = time.perf_counter()
        folders = generate(work / "tasks", args.scale)
        print(f"generated TTL-shaped tasks in {time.perf_counter() - t:.1f} s (child process)")
        base_rss = rss_gib()
        t = time.perf_counter()
        import data_contracts.ingest  # noqa: F401
        from data_contracts import suites
        suites.context()  # GX import + context: a fixed per-process cost, reported apart
        import_s = time.perf_counter() - t
        t = time.perf_counter()
        res = run_pipeline(folders, work / "prepared")
        wall = time.perf_counter() - t
        peak = rss_gib()
        print(f"pipeline: {wall:.1f} s wall (+{import_s:.1f} s imports), peak RSS {peak:.2f} GiB")
        figures = {"scale": args.scale, "wall_s": round(wall, 2), "import_s": round(import_s, 2),
                   "peak_gib": round(peak, 3), "start_gib": round(base_rss, 3),
                   **{f"{k}_s": round(v, 2) for k, v in res["times"].items()},
                   "t1_users": res["refs"][0].rows, "quarantined": sum(r.quarantined for r in res["refs"])}
        del res
        if not args.no_pandas:
            pandas_s = run_pandas(folders, work / "pandas")
            figures["pandas_wall_s"] = round(pandas_s, 2)
            figures["speedup_vs_pandas"] = round(pandas_s / wall, 2)
            figures["peak_gib_incl_pandas"] = round(rss_gib(), 3)
            print(f"pandas baseline: {pandas_s:.1f} s wall -> speedup {pandas_s / wall:.2f}x")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    line = {"benchmark": "ingest_scale", "figures": figures, "targets": TARGETS}
    print(json.dumps(line))
    return line


if __name__ == "__main__":
    main()
