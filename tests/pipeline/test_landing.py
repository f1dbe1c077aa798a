"""Landing: a folder is learned only once complete and intact (its _SUCCESS marker, written last,
lists every file's size and SHA-256), learned folders are skipped on a stat of their files without
hashing, and a wrongly learned folder can be undone (`conure rollback`), replaced and learned again."""
from __future__ import annotations

import hashlib
import json
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
    from data_contracts.landing import land, seal
    from flows.landing import read_record, watch_landing

    clicks, liked = task_dirs[0], task_dirs[1]
    landing = tmp_path / "landing"
    land(clicks, landing)
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

    seal(arriving)  # written last
    done = watch_landing(landing=str(landing), lineage="landed", preset=preset_file)
    assert [x["task"] for x in done["learned"]] == ["liked"] and done["waiting"] == {}
    landed, direct = _head("landed")["tasks"][1], _head("e2e")["tasks"][1]
    assert landed["rows"] == direct["rows"] == len(lines) - 1 > 0
    assert landed["prepared_digest"] == direct["prepared_digest"]  # the complete table, not its half

    quiet = watch_landing(landing=str(landing), lineage="landed", preset=preset_file)
    assert (quiet["learned"], quiet["skipped"], quiet["hashed"]) == ([], 2, 0)
    record = read_record("landed")
    assert {r["status"] for r in record.values()} == {"learned"} and len(record) == 2


def test_a_folder_is_ready_only_as_its_seal_says(tmp_path):
    """Sizes are checked on every sweep (stat); content against the SHA-256 only when files changed."""
    from data_contracts.landing import mismatch, readiness, seal, signature

    d = tmp_path / "t"
    d.mkdir()
    (d / "task.yaml").write_text("name: t\nkind: class\n")
    (d / "data.csv").write_text("user_id,label\n1,a\n")
    assert "no _SUCCESS marker" in readiness(d)
    (d / MARKER).touch()  # an empty marker says nothing about the files
    assert readiness(d).startswith("_SUCCESS lists no files with their sizes and SHA-256")
    seal(d)
    assert readiness(d) is None and mismatch(d) is None
    assert json.loads((d / MARKER).read_text())["files"]["data.csv"] == {
        "size": 18, "sha256": hashlib.sha256(b"user_id,label\n1,a\n").hexdigest()}
    with open(d / "data.csv", "ab") as fh:  # more rows arrive after the seal
        fh.write(b"2,b\n")
    assert readiness(d) == ("data.csv is 22 bytes, _SUCCESS says 18 (a copy still going on, or a change after "
                            "the seal: seal it again once complete)")
    (d / "data.csv").write_text("user_id,label\n1,b\n")  # same size, other content
    assert readiness(d) is None
    assert mismatch(d) == (f"{d}: data.csv does not match the SHA-256 in its _SUCCESS (changed after the folder "
                           f"was sealed); replace the folder with a complete copy (`conure land SRC`) or seal it "
                           f"again if its content is right.")
    assert [e[0] for e in signature(d)] == ["_SUCCESS", "data.csv", "task.yaml"]


def test_rollback_undoes_a_wrongly_learned_folder(learned, task_dirs, preset_file, tmp_path):
    """The issue's case: liked cut at a line boundary, sealed and learned with half its rows; the
    complete folder is refused once (and held, not re-hashed); `conure rollback --to 1` moves HEAD,
    the registry's head alias and records an MLflow run; the next sweep learns the complete folder."""
    from mlflow import MlflowClient

    from data_contracts.landing import land
    from flows.landing import watch_landing
    from tasks.rollback import rollback

    clicks, liked = task_dirs[0], task_dirs[1]
    landing, cut = tmp_path / "landing", tmp_path / "cut" / "liked"
    cut.mkdir(parents=True)
    shutil.copy(liked / "task.yaml", cut / "task.yaml")
    lines = _csv_lines(liked / "data.parquet")
    (cut / "data.csv").write_bytes(b"".join(lines[: len(lines) // 2]))
    land(clicks, landing)
    land(cut, landing)
    first = watch_landing(landing=str(landing), lineage="undo", preset=preset_file)
    assert [x["task"] for x in first["learned"]] == ["clicks", "liked"]
    assert _head("undo")["tasks"][1]["rows"] == len(lines) // 2 - 1  # learned with half its rows

    full = tmp_path / "full" / "liked"
    shutil.copytree(liked, full)
    land(full, landing, replace=True)
    refused = watch_landing(landing=str(landing), lineage="undo", preset=preset_file)
    assert refused["learned"] == [] and "already learned 'liked' from other data" in refused["failed"][str(landing / "liked")]
    held = watch_landing(landing=str(landing), lineage="undo", preset=preset_file)
    assert (held["learned"], held["failed"], held["hashed"]) == ([], {}, 0)
    assert held["held"][str(landing / "liked")].startswith("refused: lineage 'undo' already learned 'liked'")

    states = sorted(p.name for p in (HOME / "states").iterdir())
    before = _head("undo")
    out = rollback("undo", 1)
    assert (out["from_tasks"], out["to_tasks"], out["dropped"]) == (2, 1, ["liked"])
    after = _head("undo")
    assert [t["name"] for t in after["tasks"]] == ["clicks"] and after["tasks"][0] == before["tasks"][0]
    assert after["matrix"] == [before["matrix"][0][:1]]
    assert json.loads(open(out["history"]).read())["tasks"][1]["name"] == "liked"  # the old HEAD is kept
    assert sorted(p.name for p in (HOME / "states").iterdir()) == states  # nothing deleted
    client = MlflowClient()
    assert client.get_model_version_by_alias("conure-undo", "head").tags["state_digest"] == after["tasks"][0]["state_digest"]
    run = client.get_run(out["mlflow"]["run_id"])
    assert run.data.tags["conure.flow"] == "rollback" and run.data.params["dropped"] == "liked"

    again = watch_landing(landing=str(landing), lineage="undo", preset=preset_file)
    assert [x["task"] for x in again["learned"]] == ["liked"] and again["hashed"] == 0
    relearned, direct = _head("undo")["tasks"][1], _head("e2e")["tasks"][1]
    assert relearned["rows"] == len(lines) - 1 and relearned["prepared_digest"] == direct["prepared_digest"]
    assert client.get_model_version_by_alias("conure-undo", "head").tags["state_digest"] == relearned["state_digest"]


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


def test_a_folder_changed_after_its_seal_is_held_with_its_reason_and_not_rehashed(task_dirs, preset_file, tmp_path):
    from data_contracts.landing import land
    from flows.landing import read_record, watch_landing

    landing = tmp_path / "landing"
    folder = land(task_dirs[0], landing, name="clicks_changed")
    table = folder / "data.parquet"
    data = bytearray(table.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte flipped after the seal: same size, other content
    table.write_bytes(bytes(data))
    first = watch_landing(landing=str(landing), lineage="held", preset=preset_file)
    why = (f"mismatch: {folder}: data.parquet does not match the SHA-256 in its _SUCCESS (changed after the "
           f"folder was sealed); replace the folder with a complete copy (`conure land SRC`) or seal it again "
           f"if its content is right.")
    assert (first["learned"], first["held"], first["hashed"]) == ([], {str(folder): why}, 1)
    again = watch_landing(landing=str(landing), lineage="held", preset=preset_file)
    assert (again["learned"], again["held"], again["hashed"]) == ([], {str(folder): why}, 0)
    assert read_record("held")[str(folder.resolve())]["status"] == "mismatch"
    assert not (HOME / "lineages" / "held" / "HEAD.json").exists()  # nothing learned
