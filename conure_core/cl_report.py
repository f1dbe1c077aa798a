"""The continual-learning report of one strategy run (SPEC section 5, issue 5).

``R[i][j]`` = task j's test metric after learning task i (0-based, ``None`` above the diagonal).
Definitions (Lopez-Paz & Ranzato 2017, adapted to tasks whose head only exists once learned):
- final average: mean of the last row, ``mean_j R[N-1][j]``.
- backward transfer (BWT): ``mean_{j < N-1} (R[N-1][j] - R[j][j])``; negative = forgetting.
- forgetting of task j: ``max_{i >= j} R[i][j] - R[N-1][j]`` (>= 0).
- forward transfer (FWT): ``mean_{j >= 1} (R[j][j] - b_j)`` where ``b_j`` is a reference metric of
  task j learned with no transfer (we use SinMo's, a fresh model per task); T1 is left out because
  nothing precedes it. The GEM definition (metric of task j before learning it) does not apply here:
  an unseen task has no head to evaluate.
Metrics of different tasks have different scales (MRR@5 ~0.03, accuracy ~0.6), so every average is
also given in relative form (each term divided by its reference), which weighs tasks equally.
A column whose metric is lower-is-better (a regression task's RMSE; ``metrics`` names each column's)
counts with its sign flipped, so BWT < 0 is forgetting and forgetting >= 0 for every kind of task.
"""
from __future__ import annotations

from conure_core.errors import ConureError
from conure_core.kinds import higher_is_better

import math
from dataclasses import asdict, dataclass, field

Matrix = list[list[float | None]]


class ReportError(ConureError, ValueError):
    """The accuracy matrix is malformed; the message says which row/column."""


def check_matrix(matrix: Matrix) -> int:
    """Validate a lower-triangular square matrix and return its size N."""
    n = len(matrix)
    for i, row in enumerate(matrix):
        if len(row) != n:
            raise ReportError(f"accuracy matrix row {i} has {len(row)} entries; expected {n} (one per task).")
        for j, value in enumerate(row):
            if j <= i and (value is None or not math.isfinite(value)):
                raise ReportError(f"accuracy matrix R[{i}][{j}] is {value!r}; every task learned so far needs a finite metric.")
    return n


def pad(rows: list[list[float]], n: int) -> Matrix:
    """Rows of growing length (row i: the i + 1 tasks learned so far) as an n x n lower-triangular matrix."""
    return [list(r) + [None] * (n - len(r)) for r in rows]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def signs(metrics: list[str] | None, n: int) -> list[float]:
    """+1 per column whose metric is higher-is-better (or unnamed), -1 per lower-is-better one."""
    if metrics is None:
        return [1.0] * n
    if len(metrics) != n:
        raise ReportError(f"{len(metrics)} metric names for a {n}x{n} matrix; give one per task.")
    return [1.0 if higher_is_better(m) else -1.0 for m in metrics]


def backward_transfer(matrix: Matrix, relative: bool = False, metrics: list[str] | None = None) -> float | None:
    """Mean gain of every earlier task between just after learning it and the end (None if N < 2)."""
    n = check_matrix(matrix)
    last, sign = matrix[n - 1], signs(metrics, n)
    terms = []
    for j in range(n - 1):
        base = matrix[j][j]
        diff = sign[j] * (last[j] - base)
        terms.append(diff / base if relative and base else diff)
    return _mean(terms)


def final_average(matrix: Matrix) -> float | None:
    """Mean of the last row: every task's metric after the last task (None for an empty matrix)."""
    n = check_matrix(matrix)
    return _mean([float(v) for v in matrix[n - 1]]) if n else None


def forgetting(matrix: Matrix, metrics: list[str] | None = None) -> list[float]:
    """Per task: how much worse its final metric is than the best it ever had after being learned (>= 0)."""
    n = check_matrix(matrix)
    sign = signs(metrics, n)
    return [max(sign[j] * matrix[i][j] for i in range(j, n)) - sign[j] * matrix[n - 1][j] for j in range(n)]


def forward_transfer(matrix: Matrix, reference: list[float] | None, relative: bool = False,
                     metrics: list[str] | None = None) -> float | None:
    """Mean gain of each task j >= 1 when learned (R[j][j]) over its no-transfer reference b_j."""
    n = check_matrix(matrix)
    if reference is None:
        return None
    if len(reference) != n:
        raise ReportError(f"forward-transfer reference has {len(reference)} entries; expected {n} (one per task).")
    sign = signs(metrics, n)
    terms = []
    for j in range(1, n):
        base = reference[j]
        diff = sign[j] * (matrix[j][j] - base)
        terms.append(diff / base if relative and base else diff)
    return _mean(terms)


@dataclass
class CLReport:
    """Everything the comparison tables need for one strategy on one task list."""

    strategy: str
    tasks: list[str]
    metrics: list[str]
    matrix: Matrix
    final: list[float]
    final_average: float
    bwt: float | None
    bwt_relative: float | None
    fwt: float | None
    fwt_relative: float | None
    forgetting: list[float]
    backbones: int
    storage_bytes: int
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def build_report(strategy: str, tasks: list[str], metrics: list[str], matrix: Matrix, *,
                 backbones: int, storage_bytes: int, reference: list[float] | None = None,
                 extra: dict | None = None) -> CLReport:
    """Compute every summary figure of an accuracy matrix (``reference`` = no-transfer b_j for FWT)."""
    n = check_matrix(matrix)
    if len(tasks) != n or len(metrics) != n:
        raise ReportError(f"{len(tasks)} task names and {len(metrics)} metric names for a {n}x{n} matrix; give one per task.")
    final = [float(v) for v in matrix[n - 1]]
    return CLReport(
        strategy=strategy, tasks=list(tasks), metrics=list(metrics),
        matrix=[[None if j > i else float(v) for j, v in enumerate(row)] for i, row in enumerate(matrix)],
        final=final, final_average=final_average(matrix),
        bwt=backward_transfer(matrix, metrics=metrics), bwt_relative=backward_transfer(matrix, True, metrics),
        fwt=forward_transfer(matrix, reference, metrics=metrics),
        fwt_relative=forward_transfer(matrix, reference, True, metrics),
        forgetting=forgetting(matrix, metrics), backbones=int(backbones), storage_bytes=int(storage_bytes),
        extra=dict(extra or {}),
    )
