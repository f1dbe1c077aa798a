"""The regression kind: hand-computed metrics and floor, lower-is-better selection and reports,
a learned number beside its floor, exact retention, and contracts that refuse non-numbers."""
from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from conure_core.cl_report import backward_transfer, build_report, forgetting
from conure_core.config import ModelConfig
from conure_core.data.errors import DataError
from conure_core.data.prepare import prepare_task_dir
from conure_core.data.prepared import load_task
from conure_core.data.types import TEST, TRAIN, TaskData
from conure_core.kinds import KINDS, kind_of
from conure_core.lineage import Lineage
from conure_core.model import LineageError
from conure_core.naive import naive_baseline
from conure_core.training import Selection
from tests.core.conftest import MODEL, cfg_for, outputs


def number_task(tasks, name: str = "spend") -> TaskData:
    """One number per user of the synthetic tasks: 1 + its group (the class task's structure), exactly."""
    t1, _, cls = tasks
    groups = torch.div(t1.sequences.max(dim=1).values - 1, t1.num_items // 4, rounding_mode="floor")
    return TaskData(name, "regression", t1.sequences.clone(), 1.0 + groups.float(), t1.split.clone(),
                    list(t1.user_ids), ["value"], t1.num_items)


def test_floor_and_metrics_by_hand():
    # train labels 1, 2, 3 -> mean 2; test labels 2 and 5 -> errors 0 and 3: RMSE sqrt(9/2), MAE 1.5
    task = TaskData("n", "regression", torch.ones(5, 2, dtype=torch.long), torch.tensor([1.0, 2.0, 3.0, 2.0, 5.0]),
                    torch.tensor([TRAIN, TRAIN, TRAIN, TEST, TEST], dtype=torch.int8), list("abcde"), ["value"], 1)
    name, test = naive_baseline(task)
    assert name == "mean" and test["rmse"] == pytest.approx(math.sqrt(4.5)) and test["mae"] == 1.5
    assert test["loss"] == 4.5 and test["count"] == 2.0


def test_lower_is_better_selection_bwt_and_forgetting():
    kind = kind_of("regression")
    assert not kind.higher_is_better and kind.better(0.3, 0.4) and not kind.better(0.4, 0.3)
    assert kind.within(0.404, 0.4, 0.02) and not kind.within(0.41, 0.4, 0.02)
    w = torch.zeros(1)
    best = Selection("metric", (0.5, 0.25), [w], higher=False)
    assert best.offer((0.4, 0.16), 1) and not best.offer((0.45, 0.1), 2) and best.epoch == 1
    # task 0: accuracy 0.8 -> 0.7 (forgot 0.1); task 1: RMSE 0.4 -> 0.5 (forgot 0.1, sign flipped)
    m = [[0.8, None, None], [0.75, 0.4, None], [0.7, 0.5, 0.3]]
    metrics = ["accuracy", "rmse", "rmse"]
    assert backward_transfer(m, metrics=metrics) == pytest.approx(-0.1)
    assert forgetting(m, metrics) == pytest.approx([0.1, 0.1, 0.0])
    assert backward_transfer(m) == pytest.approx(-0.0)  # read as higher-is-better, RMSE's rise would hide it
    assert build_report("x", ["a", "b", "c"], metrics, m, backbones=1, storage_bytes=0).bwt == pytest.approx(-0.1)


def test_a_number_is_learned_beside_its_floor_and_kept_exactly(tasks):
    spend = number_task(tasks)
    lineage = Lineage.new(ModelConfig(**MODEL), tasks[0].num_items)
    lineage.learn(tasks[0], cfg_for(0))
    lineage.learn(spend, cfg_for(1))
    info = lineage.info("spend")
    assert (info.kind, info.metric, info.num_labels) == ("regression", "rmse", 1)
    before = outputs(lineage, spend)
    got, (_, floor) = before[2], naive_baseline(spend)
    assert got["rmse"] < 0.8 * floor["rmse"] and got["mae"] < floor["mae"]  # the group is in the sequence
    # predict answers a number: position 0 of the one-output vocabulary, the head's value
    seqs = spend.sequences[spend.rows("test")]
    positions, values = before[0], before[1]
    assert positions.shape == (seqs.shape[0], 1) and bool((positions == 0).all())
    errors = values[:, 0] - spend.labels[spend.rows("test")]
    assert math.sqrt(float((errors.double() ** 2).mean())) == pytest.approx(got["rmse"], rel=1e-5)
    assert kind_of("regression").answers([[0]], [[3.14159265]], ["value"]) == [{"value": 3.141593}]
    lineage.learn(tasks[2], cfg_for(2))  # a class task after it: the number's outputs stay bit-exact
    after = outputs(lineage, spend)
    assert torch.equal(after[0], before[0]) and torch.equal(after[1], before[1]) and after[2] == before[2]


def test_the_lineage_refuses_text_labels_for_a_number(tasks):
    t1 = tasks[0]
    bad = TaskData("spend", "regression", t1.sequences, torch.zeros(len(t1.user_ids), dtype=torch.long), t1.split,
                   list(t1.user_ids), ["value"], t1.num_items)
    lineage = Lineage.new(ModelConfig(**MODEL), t1.num_items)
    lineage.learn(t1, cfg_for(0))
    with pytest.raises(LineageError, match=r"^task 'spend' is a regression task: it needs one number \(a float label\) per row\.$"):
        lineage.train(bad, cfg_for(1))


def _folders(tmp_path, labels):
    t1 = tmp_path / "t1"
    t1.mkdir()
    (t1 / "task.yaml").write_text("name: t1\nkind: sequence\n")
    pq.write_table(pa.table({"user_id": [1, 2, 3], "items": [[1, 2, 3], [2, 3, 4], [3, 4, 5]]}), t1 / "data.parquet")
    num = tmp_path / "num"
    num.mkdir()
    (num / "task.yaml").write_text("name: num\nkind: regression\n")
    pq.write_table(pa.table({"user_id": [1, 2, 3], "label": labels}), num / "data.parquet")
    return t1, num


def test_prepared_numbers_round_trip(tmp_path):
    t1, num = _folders(tmp_path, [4.5, 2, 3.25])
    t1_dir = prepare_task_dir(t1, tmp_path / "prepared")
    task = load_task(prepare_task_dir(num, tmp_path / "prepared", t1_dir))
    assert task.kind == "regression" and task.vocab == ["value"] and task.num_labels == 1
    assert task.labels.dtype == torch.float32 and sorted(task.labels.tolist()) == [2.0, 3.25, 4.5]


@pytest.mark.parametrize("labels, words", [
    (["high", "low", "mid"], "column 'label' holds string values (e.g. ['high', 'low', 'mid']) but a regression "
                             "task's labels must be numbers; write them as numbers, or use kind 'class' for categories."),
    ([1.0, float("nan"), None], "column 'label' has 2 empty or non-finite values (rows 2, 3); fill them with numbers "
                                "or drop those rows."),
])
def test_contract_refuses_non_numbers_in_one_sentence(tmp_path, labels, words):
    t1, num = _folders(tmp_path, labels)
    t1_dir = prepare_task_dir(t1, tmp_path / "prepared")
    with pytest.raises(DataError) as exc:
        prepare_task_dir(num, tmp_path / "prepared", t1_dir)
    assert str(exc.value) == f"{num / 'data.parquet'}: {words}"


def test_every_kind_is_one_registered_module():
    assert list(KINDS) == ["sequence", "item", "class", "regression"]
    for name, kind in KINDS.items():
        assert kind.name == name and kind.metric in kind.metrics and type(kind).__module__.startswith("conure_core.kinds.")
