"""Landing: a folder is learned only once complete (its _SUCCESS marker written last), and learned
folders are skipped on a stat of their files, without hashing."""
from __future__ import annotations

import json
import os
import shutil

import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from .conftest import HOME

MARKER = "_SUCCESS"


def _csv_lines(parquet_path) -> list[bytes]:
    """The table as CSV lines (header first): what an exporter would write, row after row."""
    import io

    buf = io.BytesIO()
    pcsv.write_csv(pq.read_table(parquet_path), buf, pcsv.WriteOptions(quoting_style="none"))
    return buf.getvalue().splitlines(keepends=True)


def _prepared(name: str) -> set[str]:
    folder = HOME / "prepared" / name
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


def _head(lineage: str) -> dict:
    return json.loads((HOME / "lineages" / lineage / "HEAD.json").read_text())


def test_folder_landing_in_two_halves(learned, task_dirs, preset_file, tmp_path):
    """Table first (half of it, then the rest), marker later: nothing is learned before the marker,
    then the complete table is: the same prepared data as the whole file learned directly."""
    from flows.landing import read_record, watch_landing

    clicks, liked = task_dirs[0], task_dirs[1]
    landing = tmp_path / "landing"
    shutil.copytree(clicks, landing / "clicks")
    (landing / "clicks" / MARKER).touch()
    arriving = landing / "liked"
    arriving.mkdir()
    shutil.copy(liked / "task.yaml", arriving / "task.yaml")
    lines = _csv_lines(liked / "data.parquet")
    half = len(lines) // 2
    with open(arriving / "data.csv", "wb") as fh:  # a half-written CSV that parses
        fh.writelines(lines[:half])

    before = _prepared("liked")
    first = watch_landing(landing=str(landing), lineage="landed", preset=preset_file)
    assert [x["task"] for x in first["learned"]] == ["clicks"] and first["failed"] == {}
    assert list(first["waiting"]) == [str(arriving)] and MARKER in first["waiting"][str(arriving)]
    assert [t["name"] for t in _head("landed")["tasks"]] == ["clicks"]
    assert _prepared("liked") == before  # the half table was not even prepared

    with open(arriving / "data.csv", "ab") as fh:  # the copy goes on: nothing is read meanwhile
        fh.writelines(lines[half:])
    again = watch_landing(landing=str(landing), lineage="landed", preset=preset_file)
    assert again["learned"] == [] and list(again["waiting"]) == [str(arriving)]
    assert (again["skipped"], again["hashed"]) == (1, 0)  # clicks: skipped on its stat signature

    (arriving / MARKER).touch()  # written last
    done = watch_landing(landing=str(landing), lineage="landed", preset=preset_file)
    assert [x["task"] for x in done["learned"]] == ["liked"] and done["waiting"] == {}
    landed, direct = _head("landed")["tasks"][1], _head("e2e")["tasks"][1]
    assert landed["rows"] == direct["rows"] == len(lines) - 1 > 0
    assert landed["prepared_digest"] == direct["prepared_digest"]  # the complete table, not its half

    quiet = watch_landing(landing=str(landing), lineage="landed", preset=preset_file)
    assert (quiet["learned"], quiet["skipped"], quiet["hashed"]) == ([], 2, 0)
    record = read_record("landed")
    assert {r["status"] for r in record.values()} == {"learned"} and len(record) == 2


def test_a_file_changed_after_its_marker_waits(tmp_path):
    from data_contracts.landing import readiness, signature

    d = tmp_path / "t"
    d.mkdir()
    (d / "task.yaml").write_text("name: t\nkind: class\n")
    (d / "data.csv").write_text("user_id,label\n1,a\n")
    assert "no _SUCCESS marker" in readiness(d)
    (d / MARKER).touch()
    os.utime(d / "data.csv", ns=(0, 4 * 10**18))  # rewritten after the marker (far in the future)
    assert readiness(d) == "data.csv changed after _SUCCESS (write the marker again once the copy is complete)"
    os.utime(d / MARKER, ns=(0, 4 * 10**18 + 1))
    assert readiness(d) is None
    assert [e[0] for e in signature(d)] == ["_SUCCESS", "data.csv", "task.yaml"]


def test_landing_marker_is_not_part_of_the_data_digest(task_dirs, tmp_path):
    """The same folder, landed (with a marker) or learned with `conure learn`, is the same data."""
    from tasks.adapters import folder_digest

    copy = tmp_path / "liked"
    shutil.copytree(task_dirs[1], copy)
    before = folder_digest(copy)
    (copy / MARKER).write_text("done\n")
    assert folder_digest(copy) == before
    (copy / "notes.txt").write_text("x")
    assert folder_digest(copy) != before
