"""Bad input: each case fails with one clear sentence and leaves nothing but a GX report behind."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from conure_core.data.errors import DataError
from conure_core.data.prepared import load_task
from data_contracts.errors import ContractError
from data_contracts.ingest import ingest_task, validate_task_dir

from .conftest import leftovers, make_task


@pytest.fixture(scope="module")
def known(t1_ref):
    return [int(u) for u in load_task(t1_ref.path).user_ids]


def _fails(folder, out, t1=None, *, needles, report=False, **kw):
    with pytest.raises(ContractError) as info:
        ingest_task(folder, out, t1, **kw)
    msg = str(info.value)
    for needle in needles:
        assert needle in msg, msg
    assert "\n" not in msg and "Traceback" not in msg
    assert leftovers(out) == []
    reports = list(out.glob("*/reports/*/validation.json"))
    if report:
        assert info.value.report_dir is not None and reports == [info.value.report_dir / "validation.json"]
        result = json.loads(reports[0].read_text())
        assert result["success"] is False
        assert list(info.value.report_dir.glob("data_docs/**/*.html"))
    else:
        assert reports == []
    summary = validate_task_dir(folder, t1, **kw)
    assert not summary.ok and "FAILED" in str(summary)
    return info.value


def test_missing_column(tmp_path, t1_ref, known):
    f = make_task(tmp_path, "m", "class", pa.table({"user_id": known[:10], "labl": [1] * 10}))
    e = _fails(f, tmp_path / "o", t1_ref, needles=["data.parquet", "missing column 'label'", "task.yaml"])
    assert e.column == "label"


def test_wrong_type(tmp_path, t1_ref, known):
    f = make_task(tmp_path, "w", "class", pa.table({"user_id": known[:3], "label": [1.5, 2.5, 1.5]}))
    _fails(f, tmp_path / "o", t1_ref, needles=["column 'label' has type double", "1.5", "integers or strings"])


def test_text_labels_of_a_regression_task(tmp_path, t1_ref, known):
    f = make_task(tmp_path, "r", "regression", pa.table({"user_id": known[:3], "label": ["3.5", "high", "2"]}))
    e = _fails(f, tmp_path / "o", t1_ref, needles=[
        "data.parquet: column 'label' holds string values (e.g. ['3.5', 'high', '2']) but a regression task's "
        "labels must be numbers; write them as numbers, or use kind 'class' for categories."])
    assert (e.column, e.expectation) == ("label", "column_type")


def test_regression_task_with_duplicated_users(tmp_path, t1_ref, known):
    f = make_task(tmp_path, "r", "regression", pa.table({"user_id": [known[0], known[0], known[1]], "label": [1.0, 2.0, 3.0]}))
    _fails(f, tmp_path / "o", t1_ref, report=True, needles=["expect_column_values_to_be_unique", "'user_id'"])


def test_regression_task_is_ingested_as_numbers(tmp_path, t1_ref, known):
    f = make_task(tmp_path, "r", "regression", pa.table({"user_id": known[:40], "label": [0.5 * i for i in range(40)]}))
    ref = ingest_task(f, tmp_path / "o", t1_ref)
    task = load_task(ref.path)
    assert (ref.kind, task.num_labels, task.labels.dtype) == ("regression", 1, torch.float32)
    assert sorted(task.labels.tolist()) == [0.5 * i for i in range(40)]


def test_wrong_timestamp_type(tmp_path):
    csv = b"user_id,item_id,timestamp\n1,2,yes\n1,3,no\n"
    _fails(make_task(tmp_path, "ts", "sequence", csv=csv), tmp_path / "o",
           needles=["column 'timestamp' has type", "integers"])


def test_null_user_ids(tmp_path, t1_ref, known):
    f = make_task(tmp_path, "n", "item", pa.table({"user_id": [known[0], None, known[2]], "label": [1, 2, 3]}))
    _fails(f, tmp_path / "o", t1_ref, report=True,
           needles=["expect_column_values_to_not_be_null", "'user_id'", "row 2", "GX report"])


def test_null_labels(tmp_path, t1_ref, known):
    f = make_task(tmp_path, "n", "class", pa.table({"user_id": known[:4], "label": ["a", None, "b", "a"]}))
    _fails(f, tmp_path / "o", t1_ref, report=True, needles=["expect_column_values_to_not_be_null", "'label'", "row 2"])


def test_duplicated_users_in_sequence_table(tmp_path):
    t = pa.table({"user_id": [1, 2, 2], "items": [[1, 2], [3, 4], [5, 6]]})
    _fails(make_task(tmp_path, "d", "sequence", t), tmp_path / "o", report=True,
           needles=["expect_column_values_to_be_unique", "'user_id'", "[2, 2]", "one row per user"])


def test_sequence_too_short(tmp_path):
    t = pa.table({"user_id": [1, 2], "items": [[1, 2], [3]]})
    _fails(make_task(tmp_path, "s", "sequence", t), tmp_path / "o", report=True,
           needles=["sequence length", "'user_id': 2", "min_seq_len"])


@pytest.mark.parametrize("csv,needle", [(b"", "the file is empty"), (b"user_id,label\n", "the table has no rows")])
def test_empty_file(tmp_path, t1_ref, csv, needle):
    _fails(make_task(tmp_path, "e", "class", csv=csv), tmp_path / "o", t1_ref, needles=["data.csv", needle])


def test_all_users_unknown(tmp_path, t1_ref):
    f = make_task(tmp_path, "u", "item", pa.table({"user_id": [10**6 + i for i in range(20)], "label": [1] * 20}))
    _fails(f, tmp_path / "o", t1_ref, report=True,
           needles=["share of users known to T1", "observed 0", "allowed min 0.5", "known_user_floor"])


def test_some_unknown_below_floor(tmp_path, t1_ref, known):
    users = known[:3] + [10**6 + i for i in range(7)]  # 30% known < 50%
    f = make_task(tmp_path, "u", "item", pa.table({"user_id": users, "label": [1] * 10}))
    _fails(f, tmp_path / "o", t1_ref, report=True, needles=["share of users known to T1", "observed 0.3"])


def test_million_distinct_labels(tmp_path, t1_ref):
    n = 1_000_000
    f = make_task(tmp_path, "big", "class", pa.table({"user_id": np.arange(n), "label": np.arange(n)}))
    e = _fails(f, tmp_path / "o", t1_ref, report=True, known_user_floor=0.0,
               needles=["expect_column_unique_value_count_to_be_between", "observed 1000000", "max 1000",
                        "max_labels"])
    assert e.expectation == "expect_column_unique_value_count_to_be_between"


def test_non_utf8_bytes(tmp_path, t1_ref, known):
    csv = f"user_id,label\n{known[0]},ok\n{known[1]},".encode() + b"caf\xe9\n"
    _fails(make_task(tmp_path, "b", "class", csv=csv), tmp_path / "o", t1_ref,
           needles=["column 'label'", "not valid UTF-8", "re-encode"])


def test_non_utf8_manifest(tmp_path):
    f = make_task(tmp_path, "b", "class", csv=b"user_id,label\n1,a\n")
    (f / "task.yaml").write_bytes(b"name: b\xff\nkind: class\n")
    _fails(f, tmp_path / "o", needles=["task.yaml", "not valid UTF-8"])


def test_ragged_csv_row(tmp_path, t1_ref, known):
    csv = f"user_id,label\n{known[0]},1\n{known[1]},2,3\n".encode()
    _fails(make_task(tmp_path, "r", "class", csv=csv), tmp_path / "o", t1_ref,
           needles=["data.csv", "line 3 has 3 fields", "header has 2"])


@pytest.mark.parametrize("name", ["../evil", "a/b", "..", "a\\b", ".hidden"])
def test_task_name_with_path_parts(tmp_path, name):
    f = make_task(tmp_path, name, "class", csv=b"user_id,label\n1,a\n", folder="bad")
    _fails(f, tmp_path / "o", needles=["task.yaml", "name", "path separators"])
    assert not (tmp_path / "evil").exists()


def test_manifest_unknown_key(tmp_path):
    f = make_task(tmp_path, "k", "class", csv=b"user_id,label\n1,a\n",
                  manifest={"name": "k", "kind": "class", "epochz": 3})
    _fails(f, tmp_path / "o", needles=["unknown key 'epochz'", "epochs"])


def test_manifest_wrong_kind(tmp_path):
    f = make_task(tmp_path, "k", "class", csv=b"user_id,label\n1,a\n", manifest={"name": "k", "kind": "sequenze"})
    _fails(f, tmp_path / "o", needles=["kind is 'sequenze'", "sequence, item, class, regression"])


def test_truncated_parquet(tmp_path, t1_ref, known):
    f = make_task(tmp_path, "t", "class", pa.table({"user_id": known[:100], "label": [1, 2] * 50}))
    data = (f / "data.parquet").read_bytes()
    (f / "data.parquet").write_bytes(data[: len(data) // 2])
    _fails(f, tmp_path / "o", t1_ref, needles=["data.parquet", "truncated or corrupt"])


def test_negative_item_ids(tmp_path):
    t = pa.table({"user_id": [1, 2], "items": [[1, 2, 3], [4, -5, 6]]})
    _fails(make_task(tmp_path, "neg", "sequence", t), tmp_path / "o", report=True,
           needles=["smallest item id", "-5", "'user_id': 2", ">= 0"])


def test_overflowing_ids_in_csv(tmp_path):
    csv = b"user_id,item_id,timestamp\n1,5,1\n1,99999999999999999999,2\n"
    _fails(make_task(tmp_path, "ov", "sequence", csv=csv), tmp_path / "out", needles=["'item_id'", "overflow 64-bit"])


def test_overflowing_ids_in_parquet(tmp_path):
    t = pa.table({"user_id": pa.array([1, 2**64 - 1], pa.uint64()), "items": [[1, 2], [3, 4]]})
    _fails(make_task(tmp_path, "ov", "sequence", t), tmp_path / "out", needles=["'user_id'", "overflow 64-bit"])


def test_label_task_without_t1(tmp_path):
    f = make_task(tmp_path, "x", "class", csv=b"user_id,label\n1,a\n2,b\n")
    with pytest.raises(ContractError, match="no T1 was given.*pass it as t1"):
        ingest_task(f, tmp_path / "o")
    assert leftovers(tmp_path / "o") == []
    alone = validate_task_dir(f)  # `conure validate` of a lone label folder checks all but the join
    assert alone.ok and alone.rows == 2 and str(alone).startswith("x (class, data.csv): OK")


def test_null_timestamps(tmp_path):
    csv = b"user_id,item_id,timestamp\n1,2,5\n1,3,\n1,4,7\n"
    _fails(make_task(tmp_path, "nt", "sequence", csv=csv), tmp_path / "out",
           needles=["column 'timestamp' has 1 empty values (rows 2)"])


def test_manifest_model():
    from data_contracts.manifest import TaskManifest
    m = TaskManifest(name="liked", kind="item", lr=1e-4, prune_ratio=0.7)
    assert m.training_overrides() == {"lr": 1e-4, "prune_ratio": 0.7}
    assert m.label_bounds() == (1, 10_000_000)
    assert TaskManifest(name="g", kind="class").label_bounds() == (2, 1_000)


def test_sequence_task_with_a_t1(tmp_path, t1_ref):
    f = make_task(tmp_path, "s2", "sequence", pa.table({"user_id": [1, 2], "items": [[1, 2], [3, 4]]}))
    with pytest.raises(ContractError, match="kind is sequence .* but a T1 was passed"):
        ingest_task(f, tmp_path / "o", t1_ref)
    assert leftovers(tmp_path / "o") == [] and validate_task_dir(f, t1_ref).ok


def test_t1_that_is_not_prepared(tmp_path):
    f = make_task(tmp_path, "x", "class", csv=b"user_id,label\n1,a\n2,b\n")
    _fails(f, tmp_path / "out", tmp_path / "nowhere", needles=["not a prepared T1 folder", "ingest the sequence task"])


# --- paths that leave the task folder, two tables ---------------------------------------------
SECRET = "secret-line,do-not-print,3\n"


def _outside(tmp_path):
    """A file outside any task folder whose contents must never be read or shown."""
    target = tmp_path / "elsewhere" / "private.csv"
    target.parent.mkdir()
    target.write_text("user_id,label\n1,2\n" + SECRET)  # ragged: a reader would quote the line
    return target


@pytest.mark.parametrize("link", ["data.csv", "task.yaml"])
def test_symlink_out_of_the_folder_is_refused_unread(tmp_path, t1_ref, link):
    f = make_task(tmp_path, "s", "class", csv=b"user_id,label\n1,a\n2,b\n")
    (f / link).unlink()
    (f / link).symlink_to(_outside(tmp_path))
    e = _fails(f, tmp_path / "o", t1_ref, needles=[str(f / link), "is a symbolic link", "copy the file into"])
    assert "secret" not in str(e) and "do-not-print" not in str(validate_task_dir(f, t1_ref))


def test_symlink_inside_the_folder_is_refused_too(tmp_path, t1_ref, known):
    f = make_task(tmp_path, "i", "class", csv=f"user_id,label\n{known[0]},a\n{known[1]},b\n".encode())
    (f / "data.csv").rename(f / "export.txt")
    (f / "data.csv").symlink_to("export.txt")
    _fails(f, tmp_path / "o", t1_ref, needles=["data.csv: is a symbolic link"])


def _trap(path):
    """A FIFO whose writer records whether anything opened it for reading (open = read attempt)."""
    import os
    import threading

    os.mkfifo(path)
    opened = threading.Event()

    def writer():
        with open(path, "w") as fh:  # blocks until a reader opens the FIFO
            opened.set()
            fh.write(SECRET)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    return opened, thread


def _release(path, thread):
    import os

    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # lets the writer finish
    thread.join(5)
    os.close(fd)


def test_nothing_outside_the_folder_is_opened(tmp_path, t1_ref):
    from tasks.adapters import folder_digest

    target = tmp_path / "fifo.csv"
    opened, thread = _trap(target)
    f = make_task(tmp_path, "t", "class", csv=b"user_id,label\n1,a\n")
    (f / "data.csv").unlink()
    (f / "data.csv").symlink_to(target)
    try:
        _fails(f, tmp_path / "o", t1_ref, needles=["data.csv: is a symbolic link"])
        folder_digest(f)  # the pipeline's cache key is computed before ingestion: it must not read it either
        assert not opened.is_set()
    finally:
        _release(target, thread)
    assert opened.is_set()  # the trap works: opening it is noticed


def test_two_tables_are_refused(tmp_path, t1_ref, known):
    f = make_task(tmp_path, "two", "class", pa.table({"user_id": known[:4], "label": [1, 2, 1, 2]}),
                  csv=f"user_id,label\n{known[0]},1\n".encode())
    e = _fails(f, tmp_path / "o", t1_ref, needles=["found 2 tables (data.csv, data.parquet)", "exactly one table",
                                                    "remove all but one"])
    assert e.file == str(f)


def test_a_folder_named_like_a_table_is_not_a_table(tmp_path, t1_ref):
    f = make_task(tmp_path, "d", "class")
    (f / "data.csv").mkdir()
    _fails(f, tmp_path / "o", t1_ref, needles=["found no table", "add one"])


def test_list_sequence_table_without_user_column(tmp_path):
    t = pa.table({"user": [1, 2], "items": [[1, 2, 3], [2, 3, 4]]})
    _fails(make_task(tmp_path, "nu", "sequence", t), tmp_path / "o",
           needles=["missing column 'user_id' (found ['user', 'items'])", "set 'columns' in task.yaml"])


def test_csv_reader_gets_no_python_callback(tmp_path, monkeypatch):
    """Arrow releases its threaded CSV reader on one of its own threads, sometimes while the
    interpreter exits: a Python callable inside it (invalid_row_handler) then aborted the process
    with exit 134 ('terminate called without an active exception'). None may go in."""
    import pyarrow.csv as pcsv

    from conure_core.data import tables

    seen = []
    real = pcsv.read_csv

    def spy(*args, parse_options=None, **kwargs):
        seen.append(parse_options)
        return real(*args, parse_options=parse_options, **kwargs)

    monkeypatch.setattr(tables.pcsv, "read_csv", spy)
    good, ragged = tmp_path / "good.csv", tmp_path / "ragged.csv"
    good.write_text("user_id,label\n1,a\n")
    ragged.write_text('user_id,label\n1,a\n2,"b,c",d\n')
    assert tables.read_table(good).num_rows == 1
    with pytest.raises(DataError) as info:
        tables.read_table(ragged)
    assert str(info.value) == (f"{ragged}: line 3 has 3 fields where the header has 2 ('2,b,c,d'); "
                               "fix or remove that row.")
    assert seen and all(o is None or o.invalid_row_handler is None for o in seen)


def test_empty_and_whitespace_labels_are_refused_with_count_and_rows(tmp_path, t1_ref, known):
    """20 % empty-string labels used to become a class '' (issue 17)."""
    labels = ["M", "F", "M", "", "F", "M", "F", "  ", "M", "F"]
    f = make_task(tmp_path, "g", "class", pa.table({"user_id": known[:10], "label": labels}))
    e = _fails(f, tmp_path / "o", t1_ref, report=True,
               needles=["data.parquet: column 'label' has 2 empty or whitespace-only values (rows 4, 8); "
                        "fill them or drop those rows (GX report: "])
    assert e.column == "label" and e.expectation == "expect_column_max_to_be_between"


def test_ids_mixing_types_and_blank_ids_are_refused(tmp_path):
    """User ids 'u298', '4.5' and '' in one column (issue 17): each problem named with counts and examples."""
    users = ["u298", "4.5", "", "u1", "u2", "u3", "7"]
    f = make_task(tmp_path, "m", "class", pa.table({"user_id": users, "label": ["a", "b"] * 3 + ["a"]}))
    summary = validate_task_dir(f)
    assert not summary.ok
    path = str(f / "data.parquet")
    assert summary.failures == [
        f"{path}: column 'user_id' has 1 empty or whitespace-only value (rows 3); fill them or drop those rows.",
        f"{path}: column 'user_id' has ids of two types: 1 decimal number (e.g. '4.5') among 5 other ids "
        f"(e.g. 'u298', 'u1'); an id is a whole number or a text code, never a decimal: fix the export "
        f"(a number column was probably pasted into the ids) or drop those rows."]


def test_item_ids_inside_sequences_are_checked_per_user(tmp_path):
    csv = ("user_id,item_id,timestamp\n" + "".join(f"u{u},{i},{t}\n" for u in range(4) for t, i in
                                                   enumerate(["a", " ", "c"] if u == 2 else ["a", "b", "c"]))).encode()
    _fails(make_task(tmp_path, "s", "sequence", csv=csv), tmp_path / "o", report=True,
           needles=["data.csv: column 'item_id' has 1 empty or whitespace-only value (users 'u2'); fill them"])


def test_integer_and_text_ids_may_mix(tmp_path):
    """ASIN-like item ids ('0439784549' next to 'B000123') are one id type: text codes."""
    t = pa.table({"user_id": ["1", "2", "u3"], "items": [["0439784549", "B000123"], ["B0001", "12"], ["7", "x"]]})
    assert validate_task_dir(make_task(tmp_path, "a", "sequence", t)).ok
