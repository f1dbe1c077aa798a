"""Answers under learned tasks (top-k items or a class) for a stored user or a live history: one code
path for `conure predict` and the registered MLflow model (``tasks/pyfunc_model.py``).

``Predictor`` holds one lineage state and its users' stored histories (the T1 table, or a refreshed
one: `conure refresh`); every learned task of that state answers with the weights it owned when it
was learned, so a state after task n answers tasks 1..n. A row names a ``user`` (their stored
history is read) or carries ``items`` (a history, oldest first, encoded the same way): the same
history gives the same answer either way.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from tasks import adapters
from tasks.errors import PipelineError
from tasks.store import LineageStore


class Predictor:
    """Per row, the answer of the task's kind: top-k items (sequence / item tasks), a class with
    probabilities (class tasks) or a number (regression tasks)."""

    def __init__(self, state_dir: Path, t1_dir: Path, label: str = "this model"):
        t1 = adapters.load_task_data(Path(t1_dir), {"path": str(Path(t1_dir).resolve())})
        self.sequences = t1.sequences
        self.rows = {str(u): i for i, u in enumerate(t1.user_ids)}
        self.t1_name = t1.name
        self.model = adapters.load_lineage(Path(state_dir))
        self.catalogue = adapters.catalogue(self.model)
        self.label = label
        self._answers: dict[str, tuple] = {}

    @property
    def tasks(self) -> list[str]:
        return list(self.model.tasks)

    def problem(self, task: str, user: str | None, history: list | None) -> str | None:
        """Why a row cannot be answered, in one sentence; None when it can."""
        if task not in self.tasks:
            return (f"task '{task}' is not learned by {self.label}; it answers {', '.join(self.tasks)} "
                    f"(a version for task n answers tasks 1..n).")
        if history is None and user is None:
            return "the row has neither 'user' nor 'items'; send a user id or a list of item ids (oldest first)."
        if history is None and user not in self.rows:
            return (f"user '{user}' is not in the stored histories of {self.label} ({self.t1_name}, "
                    f"{len(self.rows)} users); pass a user id from that table, or their history as 'items'.")
        return None

    def history_of(self, user: str) -> list[str]:
        """A stored user's history as item ids, oldest first (what ``items`` must hold to answer as ``user``)."""
        tokens = self.sequences[self.rows[str(user)]]
        return [self.catalogue[t - 1].as_py() for t in tokens[tokens > 0].tolist()]

    def answer_rows(self, users: list | None, tasks: list[str], k: int = 10, items: list | None = None,
                    exclude_seen: bool = True) -> list[dict]:
        """One answer per row; a row that cannot be answered gets ``{"task", "error", ...}`` instead.

        ``items[i]`` (a list of item ids, oldest first) answers row i from that history, else ``users[i]``'s
        stored one is read. Ids the row's task does not know (not in T1's items nor introduced by a task up
        to it) are dropped and counted (``unknown_items``); a history with no known item is that row's error.
        ``exclude_seen``: item answers leave out items of the history. The model runs once per task over
        all of its rows (the loops over rows are lookups only).
        """
        import torch

        if int(k) < 1:
            raise PipelineError(f"-k {k} must be at least 1.")
        n = len(tasks)
        users = [None if u is None else str(u) for u in (users if users is not None else [None] * n)]
        items = list(items) if items is not None else [None] * n
        out: list[dict] = [{}] * n
        by_task: dict[str, list[int]] = {}
        for i, (user, task, history) in enumerate(zip(users, tasks, items)):
            why = self.problem(task, user, history)
            if why:
                out[i] = self._error(task, user, why)
            else:
                by_task.setdefault(task, []).append(i)
        for task, idx in by_task.items():
            tokens = torch.zeros((len(idx), self.sequences.shape[1]), dtype=torch.long)
            stored = [p for p, i in enumerate(idx) if items[i] is None]
            if stored:
                rows = torch.tensor([self.rows[users[idx[p]]] for p in stored])
                tokens[stored] = self.sequences.index_select(0, rows).long()
            unknown: dict[int, int] = {}
            hist = [p for p, i in enumerate(idx) if items[i] is not None]
            if hist:
                catalogue = self.catalogue_of(task)
                encoded = adapters.encode_histories([items[idx[p]] for p in hist], catalogue, tokens.shape[1])
                tokens[hist] = encoded.tokens.long()
                unknown = dict(zip(hist, encoded.unknown.tolist()))
                for p, known in zip(hist, encoded.known.tolist()):
                    if not known:
                        out[idx[p]] = self._error(task, users[idx[p]], (
                            f"the history has no item task '{task}' knows ({len(items[idx[p]])} item id(s), none "
                            f"in its catalogue of {len(catalogue) - 1} items); send at least one known item id."))
            answered = [p for p in range(len(idx)) if not out[idx[p]]]
            for p, answer in zip(answered, self._predict(task, tokens[answered], int(k), exclude_seen)):
                i = idx[p]
                head = {"user": users[i]} if users[i] is not None else {}
                if p in unknown:
                    head["unknown_items"] = unknown[p]
                out[i] = {**head, "task": task, **answer}
        return out

    @staticmethod
    def _error(task: str, user: str | None, why: str) -> dict:
        return {"task": task, "error": why, **({"user": user} if user is not None else {})}

    def catalogue_of(self, task: str):
        """The item ids a task reads, token t at entry t - 1 (T1's items, the separator's empty slot, then
        the items tasks up to this one introduced): later tasks' items are unknown to it."""
        return self.catalogue.slice(0, self.model.model.catalogue_size(self.model.info(task).index) + 1)

    def _predict(self, task: str, sequences, k: int, exclude_seen: bool) -> list[dict]:
        import torch

        info = self.model.info(task)
        kind = adapters.kind_of(info.kind)
        vocab, seen_map = self._labels(task)
        if not (exclude_seen and kind.ranks_items):
            idx, scores = self.model.predict(task, sequences, kind.answer_width(k, vocab))
            return kind.answers(idx.tolist(), scores.tolist(), vocab)
        # the top k + L answers hold at least k unseen ones (a history has at most L items)
        idx, scores = self.model.predict(task, sequences, kind.answer_width(k + sequences.shape[1], vocab))
        seen_pos = seen_map[sequences.long()]  # [B, L] label positions of the history, -1 for none
        seen = (idx.unsqueeze(2) == seen_pos.unsqueeze(1)).any(dim=2)
        order = torch.sort(seen.to(torch.int8), dim=1, stable=True).indices[:, :k]
        # fewer than k unseen items exist only in tiny vocabularies: such a row gets what there is
        counts = (~seen.gather(1, order)).sum(dim=1).tolist()
        positions, values = idx.gather(1, order).tolist(), scores.gather(1, order).tolist()
        return kind.answers([p[:c] for p, c in zip(positions, counts)], [v[:c] for v, c in zip(values, counts)], vocab)

    def _labels(self, task: str):
        """(answer labels, T1 token -> label position) of a task, built once."""
        if task not in self._answers:
            info = self.model.info(task)
            vocab = adapters.kind_of(info.kind).answer_vocab(info, self.model.item_vocab)
            self._answers[task] = (vocab, adapters.label_positions(self.catalogue, [str(v) for v in vocab]))
        return self._answers[task]


@lru_cache(maxsize=4)
def _predictor(state_dir: str, t1_dir: str, label: str) -> Predictor:
    return Predictor(Path(state_dir), Path(t1_dir), label)


def predict_user(lineage: str, task: str, user: str | None = None, k: int = 10, items: list[str] | None = None,
                 exclude_seen: bool = True) -> dict:
    """``{"user","task","items","scores"}`` for sequence/item tasks, ``{"user","task","label","probabilities"}``
    for class tasks, ``{"user","task","value"}`` for regression tasks, from the lineage's HEAD state: for
    ``user`` (from the lineage's stored histories) or for the history ``items`` (then ``unknown_items``
    counts the ids the task does not know)."""
    store = LineageStore()
    head = store.require_head(lineage)
    if not head.state_digest:
        raise PipelineError(f"lineage '{lineage}' has no learned state (strategy '{head.strategy}' keeps none); "
                            "predict from a Conure lineage.")
    head.task(task)  # names the lineage's tasks when it is not one of them
    if k < 1:
        raise PipelineError(f"-k {k} must be at least 1.")
    if (user is None) == (items is None):
        raise PipelineError("pass exactly one of --user (a stored user) or --items (a history, e.g. 12,54,77).")
    predictor = _predictor(str(store.state_path(head.state_digest)), str(store.histories_abs(head)),
                           f"lineage '{lineage}'")
    [answer] = predictor.answer_rows([user], [task], k, None if items is None else [items], exclude_seen)
    if "error" in answer:
        raise PipelineError(answer["error"])
    return answer
