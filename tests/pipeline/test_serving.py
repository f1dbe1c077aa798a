"""Answers from a history (`items`) equal answers for a stored user; unknown ids, empty histories, exclude_seen.

The lineage is learned in-process (no Prefect, no MLflow) on the pipeline tests' MovieLens subset:
T1 sequences, an item task and a class task, one epoch each.
"""
from __future__ import annotations

import pytest
import torch

from tests.pipeline.conftest import HOME, tiny_preset, write_subset

USERS = ["7", "42", "300", "1", "150"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from conure_core.checkpoint import save_state
    from conure_core.config import Preset
    from conure_core.data.prepare import prepare_task_dir
    from conure_core.data.prepared import load_task
    from conure_core.lineage import Lineage
    from tasks.adapters import STATE_FILE
    from tasks.serving import Predictor

    root = tmp_path_factory.mktemp("serving")
    dirs = write_subset(root / "tasks") + [regression_task(root / "tasks" / "activity")]
    t1_dir = prepare_task_dir(dirs[0], root / "prepared")
    prepared = [t1_dir] + [prepare_task_dir(d, root / "prepared", t1_dir) for d in dirs[1:]]
    preset = Preset.from_dict(tiny_preset())
    data = [load_task(p) for p in prepared]
    lineage = Lineage.new(preset.model, data[0].num_items, list(data[0].vocab))
    for i, task in enumerate(data):
        cfg = preset.train_config(i, {"epochs": 1, "retrain_epochs": 1}, task.kind)
        lineage.learn(task, cfg)
    save_state(lineage, root / "state" / STATE_FILE)
    return Predictor(root / "state", t1_dir, "the test model")


def regression_task(dest):
    """A regression task on the subset's users: how many films each rated (a number per user)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    clicks = pq.read_table(dest.parent / "clicks" / "data.parquet")  # user_id, items (a list per user)
    dest.mkdir(parents=True)
    (dest / "task.yaml").write_text("name: activity\nkind: regression\n")
    pq.write_table(pa.table({"user_id": clicks["user_id"], "label": pc.cast(pc.list_value_length(clicks["items"]),
                                                                            pa.float64())}), dest / "data.parquet")
    return dest


def without_user(answer: dict) -> dict:
    return {k: v for k, v in answer.items() if k not in ("user", "unknown_items")}


@pytest.mark.parametrize("exclude_seen", [True, False])
def test_history_answers_equal_stored_user_answers_for_every_task_kind(served, exclude_seen):
    from conure_core.kinds import KINDS

    assert [served.model.info(t).kind for t in served.tasks] == ["sequence", "item", "class", "regression"]
    assert set(KINDS) == {served.model.info(t).kind for t in served.tasks}  # every registered kind is served
    histories = [served.history_of(u) for u in USERS]
    for task in served.tasks:
        by_user = served.answer_rows(USERS, [task] * len(USERS), 5, exclude_seen=exclude_seen)
        by_items = served.answer_rows(None, [task] * len(USERS), 5, items=histories, exclude_seen=exclude_seen)
        assert [without_user(a) for a in by_user] == [without_user(a) for a in by_items], task  # bit-exact scores
        assert all(a["unknown_items"] == 0 and "user" not in a for a in by_items)
        for user, history in zip(USERS, histories):  # one row at a time, too
            [one_user] = served.answer_rows([user], [task], 5, exclude_seen=exclude_seen)
            [one_items] = served.answer_rows(None, [task], 5, items=[history], exclude_seen=exclude_seen)
            assert without_user(one_user) == without_user(one_items), (task, user)


def test_stored_history_is_the_t1_sequence(served):
    history = served.history_of("7")
    row = served.sequences[served.rows["7"]]
    assert len(history) == int((row > 0).sum()) and history[-1] == served.catalogue[int(row[-1]) - 1].as_py()


def test_unknown_ids_are_dropped_and_counted(served):
    history = served.history_of("42")
    mixed = ["no-such-item"] + history[:3] + ["also-unknown"] + history[3:]
    [clean] = served.answer_rows(None, ["liked"], 5, items=[history])
    [noisy] = served.answer_rows(None, ["liked"], 5, items=[mixed])
    assert noisy["unknown_items"] == 2 and without_user(noisy) == without_user(clean)
    ints = served.answer_rows(None, ["clicks"], 5, items=[[int(i) for i in history]])  # JSON ints are ids too
    assert without_user(ints[0]) == without_user(served.answer_rows(None, ["clicks"], 5, items=[history])[0])


def test_empty_or_unknown_history_is_a_per_row_error(served):
    good, empty, unknown, nothing = served.answer_rows(
        [None, None, "7", None], ["gender"] * 4, 3, items=[served.history_of("7"), [], ["x", "y"], None])
    assert "label" in good
    size = served.model.model.catalogue_size(3)
    assert empty == {"task": "gender", "error": "the history has no item task 'gender' knows (0 item id(s), none in "
                     f"its catalogue of {size} items); send at least one known item id."}
    assert unknown["user"] == "7" and unknown["error"].startswith("the history has no item task 'gender' knows (2 item")
    assert nothing["error"] == "the row has neither 'user' nor 'items'; send a user id or a list of item ids (oldest first)."


def test_exclude_seen_drops_history_items_and_keeps_the_order(served):
    L = served.sequences.shape[1]
    for task in ("clicks", "liked"):
        history = served.history_of("7")
        [kept] = served.answer_rows(None, [task], 5, items=[history])
        [full] = served.answer_rows(None, [task], 5 + L, items=[history], exclude_seen=False)
        expected = [(i, s) for i, s in zip(full["items"], full["scores"]) if i not in set(history)][:5]
        assert list(zip(kept["items"], kept["scores"])) == expected, task
        assert not set(kept["items"]) & set(history)
    # the liked task's labels overlap T1's items: some of this user's history sits in its unfiltered top list
    [raw] = served.answer_rows(["7"], ["liked"], 5 + L, exclude_seen=False)
    assert set(raw["items"]) & set(served.history_of("7"))


def test_history_longer_than_t1_keeps_its_last_items(served):
    history = served.history_of("7")
    L = served.sequences.shape[1]
    longer = served.history_of("42") * 3 + history  # the model reads the last L known items
    a, b = served.answer_rows(None, ["clicks", "clicks"], 5, items=[longer, longer[-L:]])
    assert without_user(a) == without_user(b)
    assert torch.equal(served.sequences[served.rows["7"]][-len(history):],
                       torch.tensor([served.catalogue.index(i).as_py() + 1 for i in history]))


def test_items_a_later_task_introduced_are_unknown_to_earlier_tasks_only(served):
    new = served.model.info("liked").new_items  # liked's labels hold films no T1 history has
    assert new and served.model.model.catalogue_size(2) == served.model.num_items + len(new)
    history = served.history_of("7")
    with_new = history + new[:2]
    [t1_plain] = served.answer_rows(None, ["clicks"], 5, items=[history])
    [t1_new] = served.answer_rows(None, ["clicks"], 5, items=[with_new])
    assert t1_new["unknown_items"] == 2 and without_user(t1_new) == without_user(t1_plain)  # T1: dropped, counted
    for task in ("liked", "gender"):
        [plain] = served.answer_rows(None, [task], 5, items=[history])
        [fresh] = served.answer_rows(None, [task], 5, items=[with_new])
        assert fresh["unknown_items"] == 0 and without_user(fresh) != without_user(plain), task
    [liked] = served.answer_rows(None, ["liked"], 50, items=[with_new])
    assert not set(new[:2]) & set(liked["items"])  # exclude_seen covers new items too
