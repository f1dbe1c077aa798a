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


def state_fingerprint(model) -> str:
    """Digest of everything a stage may change: backbone, heads, owner maps."""
    heads = {f"{n}.{k}": v for n, h in model.heads.items() for k, v in h.state_dict().items()}
    return distributed.tensors_digest({**{f"backbone.{k}": v for k, v in model.params.items()},
                                       **{f"owner.{k}": v for k, v in model.ownership.maps.items()}, **heads})


def run(spec: dict) -> None:
    distributed.init_from_env()
    lay = Layout()
    store = LineageStore(lay)
    ref, preset, stage = spec["ref"], spec["preset"], spec["stage"]
    data = adapters.load_task_data(lay.root, ref)
    cfg = adapters.train_config(preset, spec["index"], ref)
    device = distributed.rank_device(str(preset["model"].get("device", "auto")))
    if spec["parent"]:
        model = adapters.load_lineage(store.state_path(spec["parent"]), device=device)
    else:
        model = adapters.new_lineage(preset["model"], data, device=device)
    main = distributed.rank() == 0

    def progress(event: dict) -> None:
        if main:
            print(EVENT + json.dumps(event, default=float), flush=True)

    result = (model.train if stage == "train" else model.retrain)(data, cfg, progress=progress).to_dict()
    distributed.check_identical(state_fingerprint(model), "lineage state")
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
    run(json.loads(Path(args[0]).read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
