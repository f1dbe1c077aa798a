"""Answers for users under learned tasks (top-k items or a class): one code path for `conure predict`
and the registered MLflow model (``tasks/pyfunc_model.py``).

``Predictor`` holds one lineage state and its T1 table; every learned task of that state answers
with the weights it owned when it was learned, so a state after task n answers tasks 1..n.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from tasks import adapters
from tasks.errors import PipelineError
from tasks.store import LineageStore


class Predictor:
    """Per (user, task), the answer of the task's kind: top-k items (sequence / item tasks), a class with
    probabilities (class tasks) or a number (regression tasks)."""

    def __init__(self, state_dir: Path, t1_dir: Path, label: str = "this model"):
        t1 = adapters.load_task_data(Path(t1_dir), {"path": str(Path(t1_dir).resolve())})
        self.sequences = t1.sequences
        self.rows = {str(u): i for i, u in enumerate(t1.user_ids)}
        self.t1_name = t1.name
        self.model = adapters.load_lineage(Path(state_dir))
        self.label = label

    @property
    def tasks(self) -> list[str]:
        return list(self.model.tasks)

    def problem(self, task: str, user: str) -> str | None:
        """Why (task, user) cannot be answered, in one sentence; None when it can."""
        if task not in self.tasks:
            return (f"task '{task}' is not learned by {self.label}; it answers {', '.join(self.tasks)} "
                    f"(a version for task n answers tasks 1..n).")
        if user not in self.rows:
            return (f"user '{user}' is not in the T1 data of {self.label} ({self.t1_name}, {len(self.rows)} users); "
                    "pass a user id from that table.")
        return None

    def answer_rows(self, users: list[str], tasks: list[str], k: int = 10) -> list[dict]:
        """One answer per (user, task) row; a row that cannot be answered gets ``{"user","task","error"}``.

        The model runs once per task over all of its rows (the loop over rows is lookups only).
        """
        import torch

        if int(k) < 1:
            raise PipelineError(f"-k {k} must be at least 1.")
        users = [str(u) for u in users]
        out: list[dict] = [{}] * len(users)
        by_task: dict[str, list[int]] = {}
        for i, (user, task) in enumerate(zip(users, tasks)):
            why = self.problem(task, user)
            if why:
                out[i] = {"user": user, "task": task, "error": why}
            else:
                by_task.setdefault(task, []).append(i)
        for task, idx in by_task.items():
            rows = torch.tensor([self.rows[users[i]] for i in idx], dtype=torch.long)
            for i, answer in zip(idx, self._predict(task, self.sequences.index_select(0, rows), int(k))):
                out[i] = {"user": users[i], "task": task, **answer}
        return out

    def _predict(self, task: str, sequences, k: int) -> list[dict]:
        info = self.model.info(task)
        kind = adapters.kind_of(info.kind)
        vocab = kind.answer_vocab(info, self.model.item_vocab)
        idx, scores = self.model.predict(task, sequences, kind.answer_width(k, vocab))
        return kind.answers(idx.tolist(), scores.tolist(), vocab)


@lru_cache(maxsize=4)
def _predictor(state_dir: str, t1_dir: str, label: str) -> Predictor:
    return Predictor(Path(state_dir), Path(t1_dir), label)


def predict_user(lineage: str, task: str, user: str, k: int = 10) -> dict:
    """``{"user","task","items","scores"}`` for sequence/item tasks, ``{"user","task","label","probabilities"}``
    for class tasks, ``{"user","task","value"}`` for regression tasks, from the lineage's HEAD state; the
    user must appear in the lineage's T1 data."""
    store = LineageStore()
    head = store.require_head(lineage)
    if not head.state_digest:
        raise PipelineError(f"lineage '{lineage}' has no learned state (strategy '{head.strategy}' keeps none); "
                            "predict from a Conure lineage.")
    head.task(task)  # names the lineage's tasks when it is not one of them
    if k < 1:
        raise PipelineError(f"-k {k} must be at least 1.")
    predictor = _predictor(str(store.state_path(head.state_digest)), str(store.prepared_abs(head.tasks[0])),
                           f"lineage '{lineage}'")
    [answer] = predictor.answer_rows([str(user)], [task], k)
    if "error" in answer:
        raise PipelineError(answer["error"])
    return answer
