"""The CUDA path (fp32 and bf16 autocast): run with `pytest -m gpu` on a machine with a GPU."""
import pytest
import torch

from conure_core.config import ModelConfig
from conure_core.lineage import Lineage
from tests.core.conftest import MODEL, cfg_for, outputs

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("bf16", [False, True])
def test_retention_is_bit_exact_on_cuda(tasks, bf16):
    lineage = Lineage.new(ModelConfig(**{**MODEL, "device": "cuda", "bf16": bf16}), tasks[0].num_items)
    assert lineage.device.type == "cuda"
    after = {}
    for i, task in enumerate(tasks):
        lineage.learn(task, cfg_for(i))
        after[task.name] = outputs(lineage, task)
    for task in tasks:
        idx, scores, metrics = outputs(lineage, task)
        assert torch.equal(idx, after[task.name][0]) and torch.equal(scores, after[task.name][1]), task.name
        assert metrics == after[task.name][2], task.name
    assert all(p.device.type == "cuda" for p in lineage.params.values())
