"""Answers for one user under one learned task (top-k items or a class), from a lineage's HEAD state."""
from __future__ import annotations

from functools import lru_cache

from tasks import adapters
from tasks.errors import PipelineError
from tasks.settings import Layout
from tasks.store import LineageStore


@lru_cache(maxsize=4)
def _user_rows(t1_path: str) -> tuple[object, dict[str, int]]:
    data = adapters.load_task_data(Layout().root, {"path": t1_path})
    return data.sequences, {u: i for i, u in enumerate(data.user_ids)}


def predict_user(lineage: str, task: str, user: str, k: int = 10) -> dict:
    """``{"user","task","items","scores"}`` for sequence/item tasks, ``{"user","task","label","probabilities"}``
    for class tasks; the user must appear in the lineage's T1 data."""
    store = LineageStore()
    head = store.require_head(lineage)
    if not head.state_digest:
        raise PipelineError(f"lineage '{lineage}' has no learned state (strategy '{head.strategy}' keeps none); "
                            "predict from a Conure lineage.")
    learned = head.task(task)
    sequences, rows = _user_rows(head.tasks[0].prepared_path)
    row = rows.get(str(user))
    if row is None:
        raise PipelineError(f"user '{user}' is not in the T1 data of lineage '{lineage}' "
                            f"({head.tasks[0].name}, {len(rows)} users); pass a user id from that table.")
    model = adapters.load_lineage(store.state_path(head.state_digest))
    info = model.info(task)
    vocab = info.vocab if info.kind != "sequence" else (model.item_vocab or info.vocab)
    if k < 1:
        raise PipelineError(f"-k {k} must be at least 1.")
    width = len(vocab) if info.kind == "class" else k
    idx, scores = model.predict(task, sequences[row:row + 1], width)
    idx, scores = idx[0].tolist(), [float(s) for s in scores[0].tolist()]
    if learned.kind == "class":
        probs = {str(vocab[i]): round(s, 6) for i, s in zip(idx, scores)}
        return {"user": str(user), "task": task, "label": str(vocab[idx[0]]), "probabilities": probs}
    return {"user": str(user), "task": task, "items": [str(vocab[i]) for i in idx],
            "scores": [round(s, 6) for s in scores]}
