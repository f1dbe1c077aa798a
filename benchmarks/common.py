"""Shared benchmark helpers: the final JSON line (DESIGN.md) and a same-process fp32 matmul reference."""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch


def emit(name: str, figures: dict[str, float], targets: dict[str, str] | None = None) -> None:
    """Print the benchmark's last line: ``{"benchmark": NAME, "figures": {...}, "targets": {...}}``."""
    clean = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in figures.items()}
    print(json.dumps({"benchmark": name, "figures": clean, "targets": targets or {}}), flush=True)


def timed(fn, repeats: int, warmup: int = 2) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def timed_interleaved(fns: dict, repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds of each callable, timed round-robin so load changes hit all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {k: sorted(v)[len(v) // 2] for k, v in times.items()}


def matmul_flops(n: int = 2048, repeats: int = 5, device: str = "cpu") -> float:
    """fp32 FLOP/s of an n x n matmul in this process (the reference the throughput targets use)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device)
    b = torch.randn(n, n, generator=g).to(device)

    def run():
        a @ b
        if device != "cpu":
            torch.cuda.synchronize()

    return 2.0 * n ** 3 / timed(run, repeats)


def bundled_t1(workdir: str | None = None):
    """The bundled MovieLens-100K T1 task (clicks) as TaskData, prepared in a temp folder."""
    from conure_core.data.movielens import write_bundled_tasks
    from conure_core.data.prepared import load_task
    from conure_core.data.prepare import prepare_task_dir

    root = Path(workdir or tempfile.mkdtemp(prefix="conure-bench-"))
    folders = write_bundled_tasks(root / "tasks")
    return load_task(prepare_task_dir(folders[0], root / "prepared"))


def bundled_all(workdir: str | None = None):
    """All six bundled MovieLens-100K tasks as TaskData, in learning order."""
    from conure_core.run import bundled_tasks

    root = Path(workdir or tempfile.mkdtemp(prefix="conure-bench-"))
    return bundled_tasks(root)[0]
