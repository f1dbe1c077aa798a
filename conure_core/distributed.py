"""Data-parallel stages with torch.distributed (gloo on CPU, NCCL on CUDA), launched by torchrun.

Pure torch + stdlib. A stage runs on N ranks that each hold the whole model:

- every rank draws the SAME seeded row order of an epoch (the stage generator advances only for
  shuffles) and takes its slice ``rows[rank::world]`` of every global batch, so a global batch is
  still ``cfg.batch_size`` rows and the number of optimiser steps equals a single-process stage;
- gradients are averaged across ranks (weighted by each rank's row count) right after backward and
  BEFORE the policy's gate, so gating zeroes the same gradients on every rank: frozen weights stay
  bit-identical everywhere, and the moved ones get identical updates;
- validation runs on rank 0 and its (metric, loss) is broadcast, so every rank keeps the same epoch;
- random draws inside the loss (negatives, dropout) come from a per-rank generator.

``StageSync.current()`` is None unless a process group of more than one rank is up: the
single-process path never touches any of this.
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import threading
from datetime import timedelta
from typing import Callable, Iterable

import torch
import torch.distributed as dist

from conure_core.errors import ConureError
from conure_core.seeding import stage_generator

BUCKET = 1 << 24  # elements per all-reduce bucket (64 MiB of fp32): bounds the extra memory


class DistributedError(ConureError, RuntimeError):
    """A rank failed, or ranks disagree on a state that must be identical."""


def active() -> bool:
    """True inside a process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def rank_device(requested: str = "auto") -> torch.device:
    """This rank's device: ``cuda:LOCAL_RANK`` when CUDA is requested (or 'auto') and present, else CPU."""
    if requested in ("auto", "cuda") and torch.cuda.is_available():
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
        return device
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise DistributedError(f"device {requested!r} was asked for but this machine has no CUDA device; "
                               "use --device cpu (gloo) or run on a GPU worker.")
    return torch.device("cpu")


def init_from_env(backend: str | None = None) -> bool:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR...); False when not under torchrun."""
    if active():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    # Ranks wait in a collective while rank 0 validates: at 646K items that can outlast NCCL's
    # 10-minute default, so the timeout is long (CONURE_DIST_TIMEOUT seconds, default 2 h).
    timeout = timedelta(seconds=float(os.environ.get("CONURE_DIST_TIMEOUT", "7200")))
    dist.init_process_group(backend=backend, timeout=timeout)
    return True


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    # NCCL moves CUDA tensors only; gloo takes CPU tensors.
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


class StageSync:
    """The cross-rank steps of one stage (see the module docstring); built by ``current()``."""

    def __init__(self) -> None:
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.is_main = self.rank == 0
        self.device = _comm_device()

    @classmethod
    def current(cls) -> "StageSync | None":
        return cls() if active() else None

    def loss_generator(self, seed: int, task_index: int, stage: str) -> torch.Generator:
        """The generator of the loss's own draws on this rank (the shuffles keep the shared one)."""
        return stage_generator(seed, task_index, f"{stage}:rank{self.rank}")

    def shard(self, batch_rows: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global batch."""
        return batch_rows[self.rank::self.world]

    @torch.no_grad()
    def average_grads(self, params: list[torch.Tensor], rows: int) -> float:
        """Replace every gradient by the ``rows``-weighted mean over ranks; returns the total of ``rows``.

        A gradient stays None only where it is None on every rank; a rank with no rows contributes
        zero; buckets of ``BUCKET`` elements bound the extra memory.
        """
        flags = torch.tensor([float(p.grad is not None) for p in params] + [float(rows)], dtype=torch.float64,
                             device=self.device)
        dist.all_reduce(flags)
        total = float(flags[-1])
        if total <= 0:
            return 0.0
        live = [p for p, f in zip(params, flags[:-1].tolist()) if f > 0]
        for p in live:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        scale = rows / total
        for bucket in _buckets(live):
            flat = torch.cat([p.grad.reshape(-1).to(self.device, torch.float32) for p in bucket])
            flat.mul_(scale)
            dist.all_reduce(flat)
            offset = 0
            for p in bucket:
                n = p.grad.numel()
                p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
                offset += n
        return total

    def mean(self, value: float, count: int) -> float:
        """The count-weighted mean of a per-rank value (e.g. an epoch's training loss)."""
        t = torch.tensor([value * count, float(count)], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t[0] / t[1]) if t[1] > 0 else float("nan")

    def broadcast_floats(self, values: tuple[float, ...]) -> tuple[float, ...]:
        """Rank 0's floats on every rank (float64, so nothing is rounded)."""
        t = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.broadcast(t, src=0)
        return tuple(float(v) for v in t.tolist())


def _buckets(params: list[torch.Tensor]) -> Iterable[list[torch.Tensor]]:
    bucket, size = [], 0
    for p in params:
        if bucket and size + p.numel() > BUCKET:
            yield bucket
            bucket, size = [], 0
        bucket.append(p)
        size += p.numel()
    if bucket:
        yield bucket


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes of a dict of tensors (CPU copies)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        # reshape(-1) first: a 0-dim tensor (a scalar parameter) cannot be viewed as bytes
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def check_identical(digest: str, what: str = "state") -> list[str]:
    """All ranks' digests (gathered); raise DistributedError on every rank if any differs."""
    if not active():
        return [digest]
    found: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(found, digest)
    if len(set(found)) != 1:
        raise DistributedError(f"the ranks ended with different {what}s ({', '.join(d[:12] for d in found)}); "
                               "data-parallel training lost sync, so nothing was saved.")
    return found


# ---- launching ---------------------------------------------------------------------------------
def torchrun_command(module: str, args: list[str], nproc: int) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc-per-node N -m MODULE ARGS`` with this interpreter."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={int(nproc)}",
            "-m", module, *args]


RANK_FAILED = "CONURE_RANK_FAILED "  # a rank's failure line on stderr (``rank_main``), read by ``launch``
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)|[A-Z]\w*Error)\b")


def rank_main(body: Callable[[], None]) -> int:
    """Run one rank's ``body``; on failure print ``RANK_FAILED rank N: Type: message`` on stderr and return 1."""
    try:
        body()
    except BaseException as exc:  # noqa: BLE001 - this rank's process ends here; launch names the cause
        import traceback

        traceback.print_exc()
        message = " ".join(str(exc).split()) or "no message"
        print(f"{RANK_FAILED}rank {os.environ.get('RANK', '?')}: {type(exc).__name__}: {message}",
              file=sys.stderr, flush=True)
        return 1
    return 0


def failure_reason(stderr: list[str]) -> str:
    """The first failing rank's exception: its ``RANK_FAILED`` line, else the first exception line
    of a traceback that is not torchrun's own summary, else the last line."""
    for line in stderr:
        if line.startswith(RANK_FAILED):
            return line[len(RANK_FAILED):].strip()
    for line in stderr:
        if _EXCEPTION_LINE.match(line) and "ChildFailedError" not in line:
            return line.strip()
    return stderr[-1].strip() if stderr else "no message"


def launch(module: str, args: list[str], nproc: int, on_line: Callable[[str], None] | None = None,
           env: dict[str, str] | None = None, cwd: str | None = None) -> list[str]:
    """Run ``module`` on ``nproc`` ranks under torchrun and wait; return its stderr tail.

    ``on_line`` gets every stdout line as it comes (rank 0 prints progress there). A non-zero exit
    (a rank died, was killed, or raised) raises DistributedError with one sentence naming the first
    failing rank's exception (``failure_reason``; ranks that run through ``rank_main`` say it exactly).
    """
    if nproc < 1:
        raise DistributedError(f"--nproc {nproc}: give at least 1 rank.")
    child_env = {**os.environ, **(env or {})}
    child_env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    proc = subprocess.Popen(torchrun_command(module, args, nproc), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=child_env, cwd=cwd)
    lines: list[str] = []
    first_failure: list[str] = []  # kept apart: the tail may have rolled past it

    def drain_stderr() -> None:
        for line in proc.stderr:
            line = line.rstrip()
            if line.startswith(RANK_FAILED) and not first_failure:
                first_failure.append(line)
            lines.append(line)
            del lines[:-400]

    reader = threading.Thread(target=drain_stderr, daemon=True)
    reader.start()
    for line in proc.stdout:
        if on_line:
            on_line(line.rstrip("\n"))
    code = proc.wait()
    reader.join(timeout=5)
    if code != 0:
        reason = failure_reason(first_failure + lines)
        raise DistributedError(f"the {nproc}-rank torchrun job `{module}` exited with code {code} ({reason[:400]}); "
                               "nothing was saved, re-run to retry.")
    return lines[-40:]
