"""Great Expectations 1.x suites per table kind, and running them on small derived frames.

At TTL scale a sequence table holds ~147M items, so the sequence suite runs on one row per user
(user_id, seq_len, item_min, item_max, item_nulls) computed in Arrow, never on exploded rows;
label tables (a few million rows) are validated as they are, plus a derived ``known`` column
(user present in T1) whose mean is the known-user share.
"""
from __future__ import annotations

import threading
from functools import lru_cache

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# What to do when an expectation fails, by expectation type (and column where it matters).
FIXES = {
    "expect_column_values_to_not_be_null": "fill or remove the rows with an empty value",
    "expect_column_values_to_be_unique": "keep one row per user (merge the duplicates)",
    "expect_column_unique_value_count_to_be_between": "check that this is the label column, or set "
                                                       "min_labels/max_labels in task.yaml",
    "expect_column_mean_to_be_between": "check that the user ids match T1's, or lower known_user_floor",
    "expect_column_values_to_be_between": "fix or remove those rows",
    "expect_column_min_to_be_between": "fix or remove those rows",
    "expect_column_max_to_be_between": "fix or remove those rows",
}
COLUMN_FIXES = {
    "seq_len": "drop users with too few items, or lower min_seq_len in task.yaml",
    "item_min": "item ids must be >= 0: fix the export or write the ids as strings",
    "user_min": "user ids must be >= 0: fix the export or write the ids as strings",
    "item_nulls": "remove the empty item ids from those users' lists",
    "known_share": "check that the user ids match T1's, or lower known_user_floor",
}
COLUMN_MEANING = {"seq_len": "sequence length", "item_min": "smallest item id",
                  "item_nulls": "empty item ids", "known_share": "share of users known to T1"}
# Derived id-form columns: per value (label frames) or per user (sequence frames), 1 where the
# source column's value is empty / whitespace-only, or a decimal number in a column of other ids.
DECIMAL = r"^\s*[+-]?(\d+\.\d*|\.\d+)([eE][+-]?\d+)?\s*$"
FORMS = ("blank", "decimal")


_CONTEXT_LOCK = threading.Lock()


def context():
    """One ephemeral GX context per process (import + setup costs seconds), quiet, no analytics;
    thread-safe (the CLI makes it in a thread while Prefect's server boots)."""
    with _CONTEXT_LOCK:
        return _context()


@lru_cache(maxsize=1)
def _context():
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = ctx.data_sources.add_pandas("conure").add_dataframe_asset("table")
    return ctx, asset.add_batch_definition_whole_dataframe("whole")


@lru_cache(maxsize=64)
def suite(kind: str, *, min_seq_len: int = 2, label_bounds: tuple[int, int] | None = (1, 10_000_000),
          known_floor: float | None = None, int_items: bool = True, int_users: bool = False,
          unique_users: bool = False, forms: tuple[str, ...] = ()):
    """The expectation suite of one table kind with its bounds (cached per process); ``label_bounds``:
    distinct labels allowed (None: labels are numbers, not counted); ``forms``: the frame's derived
    id-form columns (``form_columns``), each expected to be 0 everywhere."""
    import great_expectations as gx
    E = gx.expectations
    ctx, _ = context()
    name = f"{kind}-{min_seq_len}-{label_bounds}-{known_floor}-{int_items}-{int_users}-{unique_users}-{forms}"
    s = ctx.suites.add(gx.ExpectationSuite(name=name))
    s.add_expectation(E.ExpectColumnValuesToNotBeNull(column="user_id"))
    for column in forms:
        s.add_expectation(E.ExpectColumnMaxToBeBetween(column=column, max_value=0))
    if kind == "sequence":
        s.add_expectation(E.ExpectColumnValuesToBeUnique(column="user_id"))
        # Column min/max aggregates, not per-value "between" checks: GX's pandas "between" calls a
        # Python function per row (seconds at 1.47M users); failures() finds the example users.
        s.add_expectation(E.ExpectColumnMinToBeBetween(column="seq_len", min_value=min_seq_len))
        s.add_expectation(E.ExpectColumnMaxToBeBetween(column="item_nulls", max_value=0))
        if int_items:
            s.add_expectation(E.ExpectColumnMinToBeBetween(column="item_min", min_value=0))
        if int_users:
            s.add_expectation(E.ExpectColumnMinToBeBetween(column="user_min", min_value=0))
    else:
        s.add_expectation(E.ExpectColumnValuesToNotBeNull(column="label"))
        if unique_users:
            s.add_expectation(E.ExpectColumnValuesToBeUnique(column="user_id"))
        if label_bounds is not None:  # None: labels are numbers, any count of distinct values
            lo, hi = label_bounds
            s.add_expectation(E.ExpectColumnUniqueValueCountToBeBetween(column="label", min_value=lo, max_value=hi))
        if known_floor is not None:
            # The share is computed in Arrow and carried as a constant column: GX's column mean
            # scans every value in Python (a Decimal check), a second per 2.7M rows; min is vectorised.
            s.add_expectation(E.ExpectColumnMinToBeBetween(column="known_share", min_value=known_floor))
    return s


def form_columns(frame: pd.DataFrame) -> tuple[str, ...]:
    """The frame's derived id-form columns (``<column>_blank``, ``<column>_decimal``)."""
    return tuple(c for c in frame.columns if c.rsplit("_", 1)[-1] in FORMS)


def id_forms(values: pa.Array, ids: bool = True) -> dict[str, pa.Array]:
    """Boolean masks of a string column's bad values: ``blank`` (empty or whitespace-only) and, for
    an id column, ``decimal`` (numbers such as '4.5' in a column that also holds other ids: two
    types mixed, usually a number column pasted into the ids). Integer-like and text ids may mix
    (e.g. Amazon ASINs). Numeric columns have none: {}."""
    if not pa.types.is_string(values.type):
        return {}
    # vectorised kernels; the regex runs only when some id holds a '.' (never on clean columns)
    blank = pc.or_(pc.equal(pc.utf8_length(values), 0), pc.utf8_is_space(values))
    out = {"blank": pc.fill_null(blank, False)}
    if ids and pc.any(pc.match_substring(values, ".")).as_py():
        decimal = pc.fill_null(pc.match_substring_regex(values, DECIMAL), False)
        n_decimal = pc.sum(decimal).as_py() or 0
        if 0 < n_decimal < len(values) - values.null_count - (pc.sum(out["blank"]).as_py() or 0):
            out["decimal"] = decimal
    return out


def _add_forms(frame: dict, attrs: dict, column: str, values: pa.Array, ids: bool, rows: bool = False,
               per_user=None) -> None:
    """Derived form columns of ``values`` into ``frame``; counts and examples into ``attrs``.

    Row-level (``per_user`` None): the column is the mask (``rows``: name file rows in examples).
    Per user (``per_user=(starts, lens, users)`` over the list values): the column counts each
    user's bad items, and the examples name their users."""
    masks = {form: mask.to_numpy(zero_copy_only=False) for form, mask in id_forms(values, ids).items()}
    for form, flags in masks.items():
        if not flags.any():
            continue
        bad = np.flatnonzero(flags)
        name = f"{column}_{form}"
        frame[name] = flags.astype(np.int32) if per_user is None else \
            _segment(np.add.reduceat, flags.astype(np.int32), *per_user[:2], 0)
        info = {"column": column, "form": form, "count": int(len(bad)),
                "values": [_py(v) for v in values.take(pa.array(bad[:3])).to_pylist()]}
        if rows:
            info["rows"] = [int(i) + 1 for i in bad[:3]]
        if per_user is not None:
            owners = np.searchsorted(per_user[0], bad[:3], side="right") - 1
            info["users"] = [_py(u) for u in per_user[2].take(pa.array(owners)).to_pylist()]
        if form == "decimal":
            others = np.flatnonzero(~flags & ~masks["blank"] & ~values.is_null().to_numpy(zero_copy_only=False))
            info["others"] = [_py(v) for v in values.take(pa.array(others[:2])).to_pylist()]
            info["other_count"] = int(len(others))
        attrs[name] = info


def sequence_frame(users: pa.Array, lists: pa.Array) -> pd.DataFrame:
    """One row per user: user_id, seq_len, item_nulls, item_min (int items), user_min (int users),
    and the id-form columns of string ids (``user_id_blank``, ``item_id_decimal``, ...)."""
    offsets = np.asarray(lists.offsets.to_numpy(), dtype=np.int64)
    lens = np.diff(offsets)
    if lists.null_count:
        lens = np.where(lists.is_null().to_numpy(zero_copy_only=False), 0, lens)
    values = lists.values.slice(offsets[0], offsets[-1] - offsets[0])
    starts = offsets[:-1] - offsets[0]
    frame = {"user_id": users.to_pandas(), "seq_len": lens}
    if values.null_count:
        nulls = values.is_null().to_numpy(zero_copy_only=False).astype(np.int32)
        frame["item_nulls"] = _segment(np.add.reduceat, nulls, starts, lens, 0)
    else:  # the common case: no pass over 10^8 items
        frame["item_nulls"] = np.zeros(len(lens), dtype=np.int32)
    if pa.types.is_integer(values.type):
        vals = (values.fill_null(0) if values.null_count else values).to_numpy()  # zero-copy, native width
        frame["item_min"] = _segment(np.minimum.reduceat, vals, starts, lens, 0)
    if pa.types.is_integer(users.type):
        frame["user_min"] = pc.fill_null(users, 0).to_numpy()
    attrs: dict = {}
    _add_forms(frame, attrs, "user_id", users, True)
    _add_forms(frame, attrs, "item_id", values, True, per_user=(starts, lens, users))
    out = pd.DataFrame(frame)
    out.attrs["forms"] = attrs
    return out


def label_frame(users: pa.Array, labels: pa.Array, known: np.ndarray | None, label_ids: bool = True) -> pd.DataFrame:
    """The label table as a frame; with T1, ``known`` (row's user is in T1) and ``known_share``
    (share of the task's distinct users known to T1, the same on every row); the id-form columns
    of string ids and labels (``label_ids``: the labels are ids, e.g. items, so types must not mix)."""
    frame = {"user_id": users.to_pandas(), "label": labels.to_pandas()}
    attrs: dict = {}
    _add_forms(frame, attrs, "user_id", users, True, rows=True)
    _add_forms(frame, attrs, "label", labels, label_ids, rows=True)
    if known is not None:
        codes = pc.dictionary_encode(users, null_encoding="encode").indices.to_numpy(zero_copy_only=False)
        user_known = np.zeros(int(codes.max()) + 1 if len(codes) else 0, dtype=bool)
        user_known[codes[known]] = True
        frame["known"] = known
        frame["known_share"] = np.full(len(codes), user_known.mean() if len(user_known) else 0.0, np.float32)
    out = pd.DataFrame(frame)
    out.attrs["forms"] = attrs
    return out


def _out_of_bounds(frame: pd.DataFrame, column: str, lo, hi) -> tuple[list, int]:
    """(up to 3 {user_id, value} examples, count) of rows outside [lo, hi] (failure path only)."""
    values = frame[column].to_numpy()
    bad = np.zeros(len(values), dtype=bool)
    if lo is not None:
        bad |= values < lo
    if hi is not None:
        bad |= values > hi
    rows = np.flatnonzero(bad)
    return [{"user_id": _py(frame["user_id"].iloc[i]), column: _py(values[i])} for i in rows[:3]], int(len(rows))


def _segment(reduce, values: np.ndarray, starts: np.ndarray, lens: np.ndarray, empty) -> np.ndarray:
    """Per-list reduction with numpy reduceat (empty lists -> ``empty``)."""
    out = np.full(len(lens), empty, dtype=values.dtype)
    nonempty = lens > 0
    if values.size and nonempty.any():
        out[nonempty] = reduce(values, starts[nonempty])
    return out


def validate(frame: pd.DataFrame, expectation_suite):
    """Run a suite on a frame; returns the GX ExpectationSuiteValidationResult."""
    _, batch_definition = context()
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
    return batch.validate(expectation_suite, result_format={"result_format": "SUMMARY",
                                                            "unexpected_index_column_names": ["user_id"]})


def failures(result, frame: pd.DataFrame | None = None) -> list[dict]:
    """Failed expectations as dicts: expectation, column, examples, observed, fix."""
    out = []
    for r in result.results:
        if r.success:
            continue
        cfg = r.expectation_config
        column = cfg.kwargs.get("column")
        res = r.result or {}
        examples = res.get("partial_unexpected_list") or []
        idx = res.get("partial_unexpected_index_list") or []
        if column in COLUMN_MEANING and idx:  # derived per-user column: name the users
            examples = [{"user_id": _py(i.get("user_id")), column: _py(v)} for i, v in zip(idx, examples)]
        form = (frame.attrs.get("forms", {}).get(column) if frame is not None else None)
        if form is not None:
            out.append({"expectation": cfg.type, "column": form["column"], "examples": form["values"],
                        "unexpected_count": form["count"], "observed": None, "kwargs": {}, "form": form,
                        "fix": FORM_FIXES[form["form"]], "exception": None})
            continue
        if cfg.type in ("expect_column_min_to_be_between", "expect_column_max_to_be_between") \
                and frame is not None and column in frame:
            if column == "known_share":  # name some unknown users, count them
                unknown = frame["user_id"][~frame["known"].to_numpy()]
                examples, count = [_py(u) for u in unknown.unique()[:3]], int(unknown.nunique())
            else:
                examples, count = _out_of_bounds(frame, column, cfg.kwargs.get("min_value"),
                                                 cfg.kwargs.get("max_value"))
            res = {**res, "unexpected_count": count}
        if cfg.type == "expect_column_values_to_not_be_null" and frame is not None:
            rows = np.flatnonzero(frame[column].isna().to_numpy())[:3]  # empty values: name the rows
            examples = [f"row {int(i) + 1}" for i in rows]
        out.append({"expectation": cfg.type, "column": column, "examples": [_py(e) for e in examples[:3]],
                    "unexpected_count": res.get("unexpected_count"), "observed": _py(res.get("observed_value")),
                    "kwargs": {k: _py(v) for k, v in cfg.kwargs.items() if k not in ("column", "batch_id")},
                    "fix": COLUMN_FIXES.get(column) or FIXES.get(cfg.type, "fix the data"),
                    "exception": (r.exception_info or {}).get("exception_message")})
    return out


FORM_FIXES = {"blank": "fill them or drop those rows",
              "decimal": "an id is a whole number or a text code, never a decimal: fix the export "
                         "(a number column was probably pasted into the ids) or drop those rows"}


def _describe_form(form: dict, file: str) -> str:
    """One sentence for bad id forms: file, column, count, examples (rows / values), what to do."""
    col, n = form["column"], form["count"]
    where = (f"rows {', '.join(map(str, form['rows']))}" if "rows" in form else
             f"users {', '.join(repr(u) for u in form['users'])}" if "users" in form else
             f"e.g. {', '.join(repr(v) for v in form['values'])}")
    if form["form"] == "blank":
        what = f"{n} empty or whitespace-only value{'s' * (n != 1)} ({where})"
    else:
        what = (f"ids of two types: {n} decimal number{'s' * (n != 1)} (e.g. "
                f"{', '.join(repr(v) for v in form['values'])}) among {form['other_count']} other ids "
                f"(e.g. {', '.join(repr(v) for v in form['others'])})")
    return f"{file}: column '{col}' has {what}; {FORM_FIXES[form['form']]}."


def describe(failure: dict, file: str) -> str:
    """One sentence for a failed expectation: file, expectation, column, examples, what to do."""
    if "form" in failure:
        return _describe_form(failure["form"], file)
    col = failure["column"]
    what = COLUMN_MEANING.get(col, f"column '{col}'")
    bounds = {k: v for k, v in failure["kwargs"].items() if k in ("min_value", "max_value") and v is not None}
    detail = []
    if failure["unexpected_count"]:
        n = failure["unexpected_count"]
        unit = "failing user" if col in COLUMN_MEANING else "failing row"
        if col == "known_share":
            unit = "unknown user"
        detail.append(f"{n} {unit}{'s' * (n != 1)}")
    if failure["observed"] is not None:
        detail.append(f"observed {_fmt(failure['observed'])}")
    if bounds:
        detail.append("allowed " + ", ".join(f"{k.split('_')[0]} {_fmt(v)}" for k, v in bounds.items()))
    if failure["examples"]:
        detail.append(f"e.g. {failure['examples']}")
    return f"{file}: {failure['expectation']} failed on {what} ({'; '.join(detail)}); {failure['fix']}."


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _py(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and np.isnan(v):
        return None
    return v


def data_docs(frame: pd.DataFrame, result, dest) -> None:
    """Render GX Data Docs HTML for a failed validation into ``dest`` (failure path only).

    Data Docs are built from stored results, so the suite is re-run through a one-off checkpoint
    (milliseconds on these frames) whose site writes to ``dest``.
    """
    import uuid

    import great_expectations as gx

    ctx, batch_definition = context()
    tag = uuid.uuid4().hex[:12]
    site = f"report-{tag}"
    ctx.add_data_docs_site(site_name=site, site_config={
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(dest)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"}})
    try:
        vd = ctx.validation_definitions.add(gx.ValidationDefinition(
            name=f"v-{tag}", data=batch_definition, suite=ctx.suites.get(result.suite_name)))
        cp = ctx.checkpoints.add(gx.Checkpoint(
            name=f"c-{tag}", validation_definitions=[vd], result_format="SUMMARY",
            actions=[gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=[site])]))
        cp.run(batch_parameters={"dataframe": frame})
        ctx.checkpoints.delete(cp.name)
        ctx.validation_definitions.delete(vd.name)
    finally:
        ctx.delete_data_docs_site(site)
