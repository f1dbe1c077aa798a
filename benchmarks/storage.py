"""Storage of a six-task Conure lineage vs six separate backbones (FineAll's cost), paper config.

The six bundled MovieLens-100K tasks give the head shapes; each task goes through train -> prune ->
retrain with zero epochs (storage does not depend on the weights' values), the state is saved with
``save_state`` and its file size compared with six separate models (a full backbone plus the task's
head each, as safetensors; the head with its buffers, e.g. T1's fitted table, as a separate T1 model
would hold it; the ratio without them is printed too). Target: ratio <= 0.25.

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
        separate = {"with": 0, "without": 0}
        for task in tasks:
            head = lineage.heads[task.name]
            for buffers in separate:
                tensors = dict(backbone)
                tensors.update({f"head.{n}": t.detach().contiguous() for n, t in
                                [*head.named_parameters(), *(head.named_buffers() if buffers == "with" else [])]})
                path = Path(tmp) / f"{task.name}.{buffers}.safetensors"
                save_file(tensors, path)
                separate[buffers] += path.stat().st_size
    backbone_bytes = sum(p.numel() * p.element_size() for p in lineage.params.values())
    owner_bytes = sum(m.numel() for m in lineage.ownership.maps.values())
    head_bytes = sum(p.numel() * p.element_size() for h in lineage.heads.values() for p in h.parameters())
    buffer_bytes = sum(b.numel() * b.element_size() for h in lineage.heads.values() for b in h.buffers())
    ratio, without = conure_bytes / separate["with"], conure_bytes / separate["without"]
    no_heads = (backbone_bytes + owner_bytes) / (len(tasks) * backbone_bytes)
    print(f"preset {preset.name}: width {preset.model.width}, {len(tasks)} tasks, free after all: "
          f"{lineage.free_capacity()['total']:.3f}")
    t1 = lineage.infos[0].wide
    print(f"backbone {backbone_bytes / 1e6:.2f} MB, owner maps {owner_bytes / 1e6:.2f} MB, heads {head_bytes / 1e6:.2f} MB"
          f" + buffers {buffer_bytes / 1e6:.2f} MB" + (f" (T1's top-k table, k = {t1['k']})" if t1 else ""))
    print(f"conure state file {conure_bytes / 1e6:.2f} MB; six separate models {separate['with'] / 1e6:.2f} MB "
          f"-> ratio {ratio:.3f} (heads without buffers: {without:.3f}; backbones only: {no_heads:.3f})")
    emit("storage", {"ratio": ratio, "ratio_without_buffers": without, "ratio_backbones_only": no_heads,
                     "conure_bytes": conure_bytes, "separate_bytes": separate["with"]}, {"ratio": "<= 0.25"})


if __name__ == "__main__":
    main()
