"""`conure validate`: --json, --lineage (the join to T1), exit codes; learn refuses the same bad input."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from .conftest import HOME
from .test_cli import conure

SECRET = "secret-line,do-not-print,3"


def _label_task(root: Path, name: str, users: list[int]) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "task.yaml").write_text(f"name: {name}\nkind: class\n")
    pq.write_table(pa.table({"user_id": users, "label": [i % 2 for i in range(len(users))]}), d / "data.parquet")
    return d


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _validate_json(*args: str, home: Path) -> tuple[int, dict]:
    res = conure("validate", *args, "--json", home=home)
    assert "Traceback" not in res.stderr + res.stdout
    return res.returncode, json.loads(res.stdout)


def test_validate_json_without_lineage_says_what_it_did_not_check(tmp_path):
    task = _label_task(tmp_path, "half", list(range(1, 11)) + [10**6 + i for i in range(10)])
    code, out = _validate_json(str(task), home=tmp_path / "home")
    assert code == 0 and out["ok"] is True and out["lineage"] is None
    assert (out["name"], out["kind"], out["file"], out["rows"], out["users"]) == ("half", "class", "data.parquet", 20, 20)
    [note] = out["unchecked"]
    assert "join to T1" in note and "no T1 was given" in note and "--lineage NAME" in note
    res = conure("validate", str(task), home=tmp_path / "home")
    assert res.returncode == 0 and "not checked: the join to T1" in res.stdout


def test_validate_with_lineage_checks_the_join(learned, tmp_path):
    """The same 50%-known folder passes alone, and fails against T1 once the floor is above its share."""
    head = json.loads((HOME / "lineages" / "e2e" / "HEAD.json").read_text())
    t1 = pq.read_table(HOME / head["tasks"][0]["prepared_path"] / "data.parquet", columns=["user_id"])
    known = sorted(int(u) for u in t1["user_id"].to_pylist())[:10]
    task = _label_task(tmp_path, "half", known + [10**6 + i for i in range(10)])
    before = _files(HOME / "prepared")
    code, out = _validate_json(str(task), "--lineage", "e2e", home=HOME)
    assert code == 0 and out["ok"] and out["unknown_users"] == 10 and out["unchecked"] == [], out["failures"]
    code, out = _validate_json(str(task), "--lineage", "e2e", "--floor", "0.6", home=HOME)
    assert code == 3 and not out["ok"] and out["lineage"] == "e2e"
    [failure] = out["failures"]
    assert "share of users known to T1" in failure and "observed 0.5" in failure and "allowed min 0.6" in failure
    assert _files(HOME / "prepared") == before  # validate writes nothing, not even a GX report


@pytest.mark.parametrize("case", ["symlink", "two tables"])
def test_validate_refuses_bad_folders_in_one_sentence(tmp_path, case):
    task = _label_task(tmp_path, "bad", [1, 2, 3])
    outside = tmp_path / "elsewhere.csv"
    outside.write_text(f"user_id,label\n1,2\n{SECRET}\n")
    if case == "symlink":
        (task / "data.parquet").unlink()
        (task / "data.csv").symlink_to(outside)
        needle = "data.csv: is a symbolic link"
    else:
        shutil.copy(outside, task / "data.csv")
        needle = "found 2 tables (data.csv, data.parquet)"
    home = tmp_path / "home"
    code, out = _validate_json(str(task), home=home)
    assert code == 3 and not out["ok"] and len(out["failures"]) == 1
    assert needle in out["failures"][0] and "\n" not in out["failures"][0]
    assert "secret" not in json.dumps(out)
    assert _files(home / "prepared") == [] and _files(home / "states") == []


def test_learn_refuses_a_symlinked_table_like_validate(learned, tmp_path):
    """learn shares validate's reader: same sentence, nothing prepared, the lineage untouched."""
    from data_contracts.errors import ContractError
    from flows.learn import learn_task

    task = _label_task(tmp_path, "linked", [1, 2, 3])
    outside = tmp_path / "elsewhere.csv"
    outside.write_text(f"user_id,label\n1,2\n{SECRET}\n")
    (task / "data.parquet").unlink()
    (task / "data.csv").symlink_to(outside)
    head_before = (HOME / "lineages" / "e2e" / "HEAD.json").read_text()
    with pytest.raises(ContractError) as info:
        learn_task(task_dir=str(task), lineage="e2e")
    assert "data.csv: is a symbolic link" in str(info.value) and "secret" not in str(info.value)
    assert (HOME / "lineages" / "e2e" / "HEAD.json").read_text() == head_before
    assert not (HOME / "prepared" / "linked").exists()


@pytest.mark.slow
def test_validate_exits_3_every_time(learned, tmp_path):
    """A missing column and a header-only CSV, with and without --lineage, 32 times: exit 3 each
    time (Arrow's CSV reader once held a Python callback and aborted the exit with 134 in ~1 of 8)."""
    missing, header_only = tmp_path / "missing", tmp_path / "header"
    for d, text in ((missing, "user_id,item\n1,2\n3,4\n"), (header_only, "user_id,label\n")):
        d.mkdir()
        (d / "task.yaml").write_text("name: liked\nkind: item\n")
        (d / "data.csv").write_text(text)
    codes = [conure("validate", str(d), *extra, home=HOME).returncode
             for _ in range(8) for d in (missing, header_only) for extra in ((), ("--lineage", "e2e"))]
    assert codes == [3] * 32
