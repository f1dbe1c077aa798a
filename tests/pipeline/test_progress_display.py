"""The progress display: epoch ETA from the learner's batch events, a line when early stopping ends a stage."""
from __future__ import annotations

import io

from rich.console import Console

from conure_cli import display


def test_epoch_eta():
    assert display.epoch_eta(30.0, 0.25) == 90.0
    assert display._clock(display.epoch_eta(30.0, 0.25)) == "1:30"
    assert display._clock(display.epoch_eta(1.0, 0.0)) == "?"


def test_early_stop_line():
    end = {"event": "stage_end", "task": "clicks", "stage": "train", "best_epoch": 7, "epochs_run": 10}
    assert display.early_stop_line(end, 15) == "clicks · train: stopped early at epoch 10/15: best valid at epoch 7"
    assert display.early_stop_line({**end, "epochs_run": 15}, 15) is None  # ran every epoch
    assert display.early_stop_line({"event": "stage_end", "task": "clicks", "stage": "prune", "seconds": 1.0}, 1) is None


def test_bars_show_epoch_progress_and_early_stop(monkeypatch):
    sink = io.StringIO()
    monkeypatch.setattr(display, "console", Console(file=sink, force_terminal=True, width=160))
    bars = display.StageBars()
    bars.progress.start()
    try:
        bars({"event": "status", "text": "loading clicks for train: 943 user sequences, new lineage"})
        bars({"event": "stage_start", "task": "clicks", "stage": "train", "epochs": 15})
        bars({"event": "batch", "task": "clicks", "stage": "train", "epoch": 1, "done": 250, "rows": 1000})
        task = bars.progress.tasks[-1]
        assert task.completed == 0.25 and task.fields["info"].startswith("epoch 1: 25%, ETA ")
        for epoch in range(1, 11):
            bars({"event": "epoch", "task": "clicks", "stage": "train", "epoch": epoch, "loss": 1.0, "valid": 0.1})
        bars({"event": "stage_end", "task": "clicks", "stage": "train", "best_epoch": 7, "epochs_run": 10,
              "seconds": 3.0})
        assert (task.total, task.completed) == (10, 10)
    finally:
        bars.progress.stop()
    text = sink.getvalue()
    assert "loading clicks for train: 943 user sequences, new lineage" in text
    assert "clicks · train: stopped early at epoch 10/15: best valid at epoch 7" in text


def test_without_a_terminal_each_epoch_is_a_line(monkeypatch):
    sink = io.StringIO()
    monkeypatch.setattr(display, "console", Console(file=sink, force_terminal=False, width=160))
    monkeypatch.delenv("CONURE_PROGRESS", raising=False)
    with display.StageBars() as bars:
        assert bars.lines
        bars({"event": "stage_start", "task": "clicks", "stage": "train", "epochs": 3})
        bars({"event": "batch", "task": "clicks", "stage": "train", "epoch": 1, "done": 250, "rows": 1000})
        for epoch in (1, 2, 3):
            bars({"event": "epoch", "task": "clicks", "stage": "train", "epoch": epoch, "loss": 1.5, "valid": 0.25})
        bars({"event": "stage_end", "task": "clicks", "stage": "train", "best_epoch": 3, "epochs_run": 3,
              "seconds": 4.0})
    lines = sink.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        f"clicks · train epoch {e}/3: loss 1.5000 · valid 0.2500" for e in (1, 2, 3)] + ["clicks · train: done in 4.0 s"]
