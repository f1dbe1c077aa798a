"""Capacity forecast of a Conure backbone: what each task took, what is free, how many more tasks fit.

Input: the free fraction of every prunable tensor (and ``total``) after each learned task, as the
ownership module reports it (``Ownership.free_capacity``). Pure Python: the report, MLflow and the
learn flow's warning all read the same numbers from here.
"""
from __future__ import annotations

import math

WHAT_TO_DO = ("prune harder (a higher prune_ratio in task.yaml or the preset), give a new lineage a wider "
              "backbone (model.width), or start a new lineage for the next tasks")


def forecast(tasks: list[str], free_after: list[dict[str, float]], min_free: float = 0.0) -> dict:
    """Per tensor and overall: ``free`` now, ``taken`` by each task (fraction of the tensor), the
    ``average`` a task after T1 took (T1's own when it is alone), and ``fits``: how many more tasks of
    that size leave at least ``min_free`` free (None when tasks took nothing).

    The overall ``fits`` is the smallest over the tensors: a task takes a share of every one.
    """
    if not free_after:
        return {"min_free": min_free, "layers": {}, "fits": None}
    layers = {}
    for name in free_after[-1]:
        before = [1.0] + [f.get(name, 1.0) for f in free_after[:-1]]
        taken = {t: round(b - f.get(name, 1.0), 6) for t, b, f in zip(tasks, before, free_after)}
        sizes = list(taken.values())[1:] or list(taken.values())
        average = sum(sizes) / len(sizes)
        free = free_after[-1][name]
        fits = None if average <= 0 else max(0, math.floor((free - min_free) / average + 1e-9))
        layers[name] = {"free": round(free, 6), "taken": taken, "average": round(average, 6), "fits": fits}
    counts = [v["fits"] for v in layers.values() if v["fits"] is not None]
    return {"min_free": min_free, "layers": layers, "fits": min(counts) if counts else None}


def expected_free(free: float, ratio: float | None, average: float) -> float:
    """The free fraction a next task is expected to leave: ``free * ratio`` for a fixed prune ratio (the
    task keeps 1 - ratio of the free weights), else (a ratio chosen on validation) ``free - average``."""
    return free * ratio if ratio is not None else free - average


def warning(task: str, free: float, ratio: float | None, average: float, min_free: float) -> str | None:
    """One sentence when learning ``task`` is expected to leave less than ``min_free`` free; else None."""
    after = expected_free(free, ratio, average)
    if after >= min_free and after > 0:
        return None
    how = f"at prune ratio {ratio}" if ratio is not None else f"at the average task size ({average:.1%})"
    return (f"capacity: learning '{task}' is expected to leave {max(after, 0.0):.1%} of the backbone's prunable "
            f"weights free ({how}; {free:.1%} free now), below min_free {min_free:.1%}; {WHAT_TO_DO}.")
