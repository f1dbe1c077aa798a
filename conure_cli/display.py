"""Rich rendering for the CLI: progress bars fed by the pipeline's events, the accuracy matrix."""
from __future__ import annotations

import math
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console(stderr=True)  # progress and messages on stderr; stdout stays for results / JSON
out = Console()
if not out.is_terminal:  # logs and pipes: wide enough for six task columns
    out.width = 140


class StageBars:
    """A progress bar per training stage, driven by tasks.progress events.

    Inside an epoch the learner's ``batch`` events move the bar by the epoch's share done and give
    the epoch's ETA; a stage that early stopping ends says so in one line; ``status`` events (what
    the pipeline is loading or preparing) print as lines, so a long start is never silent. Without a
    terminal (a log file, a scheduler) there are no bars: each epoch and stage end is a plain line."""

    def __init__(self) -> None:
        self.lines = not console.is_terminal and not _force()
        self.progress = Progress(TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console,
                                 disable=self.lines)
        self.current = None
        self.epoch_started = 0.0

    def __enter__(self) -> "StageBars":
        from tasks import progress

        self.progress.start()
        progress.add_sink(self)
        return self

    def __exit__(self, *exc) -> None:
        from tasks import progress

        progress.remove_sink(self)
        self.progress.stop()

    def __call__(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "status":
            self.progress.console.print(f"[dim]{event.get('text', '')}[/dim]", highlight=False)
        elif kind == "stage_start":
            self.current = self.progress.add_task(f"{event['task']} · {event['stage']}",
                                                  total=max(int(event.get("epochs") or 0), 1), info="")
            self.epoch_started = time.monotonic()
        elif kind == "batch" and self.current is not None and event.get("rows"):
            share = event["done"] / event["rows"]
            self.progress.update(self.current, completed=int(event["epoch"]) - 1 + share,
                                 info=f"epoch {event['epoch']}: {share:.0%}, "
                                      f"ETA {_clock(epoch_eta(time.monotonic() - self.epoch_started, share))}")
        elif kind == "epoch" and self.current is not None and event.get("epoch"):
            loss = event.get("loss")
            info = f"loss {loss:.4f} · valid {event.get('valid', float('nan')):.4f}" if loss is not None else ""
            self.progress.update(self.current, completed=int(event["epoch"]), info=info)
            if self.lines:
                task = self.progress.tasks[-1]
                self.progress.console.print(f"{task.description} epoch {event['epoch']}/{int(task.total)}: {info} "
                                            f"({_clock(time.monotonic() - self.epoch_started)})", highlight=False)
            self.epoch_started = time.monotonic()
        elif kind == "prune" and self.current is not None:
            self.progress.update(self.current, completed=1, info=f"free {event.get('free', 0):.1%}")
        elif kind == "stage_end" and self.current is not None:
            task = self.progress.tasks[-1]
            line = early_stop_line(event, int(task.total))
            if line:  # the bar ends where training did, and says why
                self.progress.update(self.current, total=event["epochs_run"], completed=event["epochs_run"],
                                     info=f"stopped early · best epoch {event['best_epoch']}")
                self.progress.console.print(line, highlight=False)
            else:
                self.progress.update(self.current, completed=task.total, info=f"{event.get('seconds', 0):.1f} s")
                if self.lines:
                    self.progress.console.print(f"{task.description}: done in {event.get('seconds', 0):.1f} s",
                                                highlight=False)
            self.current = None
        elif kind == "step" and event.get("state") == "Cached":
            self.progress.console.print(f"[dim]cached[/dim] {event.get('name')}", highlight=False)


def epoch_eta(elapsed: float, share: float) -> float:
    """Seconds left in an epoch ``share`` done after ``elapsed`` seconds (its validation not counted)."""
    return elapsed * (1 - share) / share if share > 0 else float("inf")


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}:{secs:02d}"


def early_stop_line(event: dict, epochs: int) -> str | None:
    """The line for a learner's ``stage_end`` that early stopping ended before ``epochs``, else None."""
    run = event.get("epochs_run")
    if not run or run >= epochs or event.get("best_epoch") is None:
        return None
    return (f"{event['task']} · {event['stage']}: stopped early at epoch {run}/{epochs}: "
            f"best valid at epoch {event['best_epoch']}")


def _force() -> bool:
    import os

    return os.environ.get("CONURE_PROGRESS") == "1"


def fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    return f"{v:.4f}"


def matrix_table(report: dict) -> Table:
    """Accuracy matrix: row i = after learning task i, column j = task j's test metric (a lower-is-better
    one, such as a regression task's RMSE, says so in its header)."""
    tasks = report["tasks"]
    table = Table(title=f"lineage '{report['lineage']}' ({report['strategy']}): test metric after each task",
                  title_justify="left")
    table.add_column("after \\ task", style="bold")
    lower = set(report.get("lower_is_better", []))
    for t in tasks:
        table.add_column(f"{t}\n{report['metric'][t]}{' (lower is better)' if t in lower else ''}", justify="right")
    table.add_column("free capacity", justify="right")
    catalogue = report.get("catalogue") or []
    if any(catalogue):
        table.add_column("catalogue", justify="right")  # items each task reads (T1's + those tasks introduced)
    for i, (t, row) in enumerate(zip(tasks, report["matrix"])):
        free = report["free_capacity"][i] if i < len(report["free_capacity"]) else None
        cells = [t, *[fmt(v) for v in row], "" if free is None else f"{free:.1%}"]
        if any(catalogue):
            cells.append("" if i >= len(catalogue) or catalogue[i] is None else f"{catalogue[i]:,}")
        table.add_row(*cells)
    return table


def capacity_table(report: dict) -> Table:
    """Per prunable tensor and in total: free now, what each task took, the average task, how many more fit."""
    cap = report["capacity"]
    tasks = report["tasks"]
    table = Table(title=f"capacity (share of each prunable tensor; more tasks of the average size that fit "
                        f"before min_free {cap['min_free']:.0%}: {'-' if cap['fits'] is None else cap['fits']})",
                  title_justify="left")
    table.add_column("tensor", style="bold")
    table.add_column("free", justify="right")
    for t in tasks:
        table.add_column(f"{t}\ntook", justify="right")
    table.add_column("average", justify="right")
    table.add_column("fits", justify="right")
    for name, v in sorted(cap["layers"].items(), key=lambda kv: kv[0] == "total"):
        table.add_row(name, f"{v['free']:.1%}", *[f"{v['taken'].get(t, 0):.1%}" for t in tasks], f"{v['average']:.1%}",
                      "-" if v["fits"] is None else str(v["fits"]))
    return table


def print_report(report: dict, file=None) -> None:
    target = Console(file=file, width=140) if file else out
    target.print(matrix_table(report))
    if (report.get("capacity") or {}).get("layers"):
        target.print(capacity_table(report))
    if report.get("state_digest"):
        target.print(f"state digest: {report['state_digest']}", highlight=False)


def error(message: str) -> None:
    """One line on stderr (never a traceback)."""
    line = " ".join(str(message).split())
    sys.stderr.write(f"conure: error: {line}\n")


def comparison_table(report: dict) -> Table:
    """This lineage against its backfilled orderings / strategies: final metrics and backward transfer."""
    tasks = report["tasks"]
    table = Table(title="comparison (final test metric per task)", title_justify="left")
    for col in ("lineage", "strategy", "order"):
        table.add_column(col)
    for t in tasks:
        table.add_column(t, justify="right")
    table.add_column("mean", justify="right")
    table.add_column("BWT", justify="right")
    rows = [{"lineage": report["lineage"], "strategy": report["strategy"], "tasks": tasks, **report}]
    rows += report.get("backfills", [])
    for r in rows:
        final = r.get("final") or {}
        table.add_row(r["lineage"], r["strategy"], ",".join(r["tasks"]), *[fmt(final.get(t)) for t in tasks],
                      fmt(r.get("final_average")), fmt(r.get("backward_transfer")))
    return table
