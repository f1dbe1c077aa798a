"""One training stage on N ranks: ``torchrun --standalone --nproc-per-node N -m tasks.stage_worker SPEC``.

Started by ``tasks.steps`` when ``CONURE_NPROC`` > 1. Every rank loads the parent state (or builds
T1's fresh lineage, seeded, so identical everywhere), runs the stage data-parallel
(``conure_core.distributed``) and checks that all ranks ended with the same weights, heads and owner
maps; rank 0 then writes the state through the store (atomic, content-addressed) and the result
JSON the parent reads. Rank 0 prints progress events as ``CONURE_EVENT {json}`` lines; MLflow
logging stays in the parent process.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from conure_core import distributed
from conure_core.atomic import atomic_write_bytes
from tasks import adapters
from tasks.settings import Layout, configure_process
from tasks.store import LineageStore

EVENT = "CONURE_EVENT "


def run(spec: dict) -> None:
    distributed.init_from_env()
    store = LineageStore(Layout())
    ref, preset, stage = spec["ref"], spec["preset"], spec["stage"]
    device = distributed.rank_device(str(preset["model"].get("device", "auto")))
    model, data, cfg = adapters.stage_inputs(store, stage, spec["index"], ref, spec["parent"], preset, device)
    main = distributed.rank() == 0

    def progress(event: dict) -> None:
        if main:
            print(EVENT + json.dumps(event, default=float), flush=True)

    result = adapters.run_stage(model, stage, data, cfg, progress)
    distributed.check_identical(adapters.state_fingerprint(model), "lineage state")
    if main:
        digest = store.put_state(lambda tmp: adapters.save_lineage(model, tmp))
        result.pop("history", None)
        out = {"result": result, "state": digest, "free_capacity": model.free_capacity(),
               "world_size": distributed.world_size()}
        atomic_write_bytes(Path(spec["out"]), json.dumps(out).encode())
    distributed.shutdown()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    configure_process()  # the crash harness and quiet libraries, as in the parent's steps
    return distributed.rank_main(lambda: run(json.loads(Path(args[0]).read_text())))


if __name__ == "__main__":
    raise SystemExit(main())
