"""The MLflow model of a registered lineage version (MLflow 3 models-from-code).

Logged by ``tasks.tracking.Tracker.log_model`` with two artifacts: ``state`` (the lineage state
after task n) and ``t1`` (the users' stored histories: T1's prepared table, or a `conure refresh` of it).
Input: rows with string column ``task`` and either ``user`` (a stored user) or ``items`` (a list of
item ids, oldest first: the user's current history); params: ``k`` (items per answer, default 10),
``exclude_seen`` (item answers leave out the history's items, default true). Each row's answer is
what ``conure predict --json`` prints for it (same code: ``tasks.serving.Predictor``); a history
row also says how many of its ids the model did not know (``unknown_items``, dropped). A row naming
an unknown user, a task this version has not learned, or a history with no known item gets
``{"task", "error": "<one sentence>"}`` (plus its ``user``) instead. Needs only the installed ``conure`` package.
"""
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class ConureModel(PythonModel):
    def load_context(self, context) -> None:
        state = Path(context.artifacts["state"])
        from tasks.serving import Predictor  # changes nothing in the serving process (no folder, no variable)

        config = context.model_config or {}
        label = f"model conure-{config.get('lineage', '?')} after {len(config.get('tasks', []))} task(s)"
        self.predictor = Predictor(state, Path(context.artifacts["t1"]), label)

    # a DataFrame hint: MLflow checks the input against the logged signature, not the hint
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> list[dict]:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        k = int((params or {}).get("k", 10))
        columns = "task" in frame.columns and {"user", "items"} & set(frame.columns)
        problem = ("input needs a column 'task' and a column 'user' or 'items' (a list of item ids); send rows "
                   "with 'task' and 'user' or 'items'." if not columns else
                   f"param k={k} must be at least 1." if k < 1 else None)
        if problem:  # one answer per input row, lined up with the request
            return [{**{c: str(row[c]) for c in ("user", "task") if c in frame.columns}, "error": problem}
                    for _, row in frame.iterrows()]
        return self.predictor.answer_rows(column(frame, "user"), frame["task"].astype(str).tolist(), k,
                                          items=column(frame, "items"),
                                          exclude_seen=bool((params or {}).get("exclude_seen", True)))


def column(frame: pd.DataFrame, name: str) -> list | None:
    """A column's values with missing ones as None (a user id as text), or None when the column is absent."""
    if name not in frame.columns:
        return None
    values = frame[name].tolist()
    if name == "user":
        return [None if v is None or v != v else str(v) for v in values]
    return [None if v is None or (isinstance(v, float) and v != v) else list(v) for v in values]


mlflow.models.set_model(ConureModel())
