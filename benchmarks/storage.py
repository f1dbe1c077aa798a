"""Storage of a six-task Conure lineage vs six separate backbones (FineAll's cost), paper config.

The six bundled MovieLens-100K tasks give the head shapes; each task goes through train -> prune ->
retrain with zero epochs (storage does not depend on the weights' values), the state is saved with
``save_state`` and its file size compared with six separate models (a full backbone plus the task's
head each, as safetensors). Target: ratio <= 0.25.

    python -m benchmarks.storage
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from safetensors.torch import save_file

from benchmarks.common import bundled_all, emit
from conure_core.checkpoint import save_state
from conure_core.config import get_preset
from conure_core.lineage import Lineage


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper")
    args = parser.parse_args(argv)
    preset = get_preset(args.preset)
    preset.model.device = "cpu"
    tasks = bundled_all()
    lineage = Lineage.new(preset.model, tasks[0].num_items)
    for i, task in enumerate(tasks):
        cfg = preset.train_config(i, {"epochs": 0, "retrain_epochs": 0})
        lineage.learn(task, cfg)
    with tempfile.TemporaryDirectory() as tmp:
        state = save_state(lineage, Path(tmp) / "lineage.safetensors")
        conure_bytes = state.stat().st_size
        backbone = {n: p.detach().contiguous() for n, p in lineage.params.items()}
        separate = 0
        for task in tasks:
            tensors = dict(backbone)
            tensors.update({f"head.{n}": p.detach() for n, p in lineage.heads[task.name].named_parameters()})
            path = Path(tmp) / f"{task.name}.safetensors"
            save_file(tensors, path)
            separate += path.stat().st_size
    backbone_bytes = sum(p.numel() * p.element_size() for p in lineage.params.values())
    owner_bytes = sum(m.numel() for m in lineage.ownership.maps.values())
    head_bytes = sum(p.numel() * p.element_size() for h in lineage.heads.values() for p in h.parameters())
    ratio = conure_bytes / separate
    no_heads = (backbone_bytes + owner_bytes) / (len(tasks) * backbone_bytes)
    print(f"preset {preset.name}: width {preset.model.width}, {len(tasks)} tasks, free after all: "
          f"{lineage.free_capacity()['total']:.3f}")
    print(f"backbone {backbone_bytes / 1e6:.2f} MB, owner maps {owner_bytes / 1e6:.2f} MB, heads {head_bytes / 1e6:.2f} MB")
    print(f"conure state file {conure_bytes / 1e6:.2f} MB; six separate models {separate / 1e6:.2f} MB "
          f"-> ratio {ratio:.3f} (backbones only: {no_heads:.3f})")
    emit("storage", {"ratio": ratio, "ratio_backbones_only": no_heads, "conure_bytes": conure_bytes,
                     "separate_bytes": separate}, {"ratio": "<= 0.25"})


if __name__ == "__main__":
    main()
