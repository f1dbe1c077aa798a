"""The MLflow model of a registered lineage version (MLflow 3 models-from-code).

Logged by ``tasks.tracking.Tracker.log_model`` with two artifacts: ``state`` (the lineage state
after task n) and ``t1`` (the prepared T1 table that maps a user to their sequence). Input: rows
with string columns ``user`` and ``task``; params: ``k`` (items per answer, default 10). Each row's
answer is what ``conure predict --json`` prints for it (same code: ``tasks.serving.Predictor``);
a row naming an unknown user or a task this version has not learned gets
``{"user", "task", "error": "<one sentence>"}`` instead. Needs only the installed ``conure`` package.
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
        missing = [c for c in ("user", "task") if c not in frame.columns]
        k = int((params or {}).get("k", 10))
        problem = (f"input has no column {', '.join(missing)}; send rows with 'user' and 'task'." if missing else
                   f"param k={k} must be at least 1." if k < 1 else None)
        if problem:  # one answer per input row, lined up with the request
            return [{**{c: str(row[c]) for c in ("user", "task") if c in frame.columns}, "error": problem}
                    for _, row in frame.iterrows()]
        return self.predictor.answer_rows(frame["user"].astype(str).tolist(), frame["task"].astype(str).tolist(), k)


mlflow.models.set_model(ConureModel())
