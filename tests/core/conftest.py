import pytest
import torch

from conure_core.config import ModelConfig, TrainConfig
from conure_core.lineage import Lineage
from tests.core.synthetic import make_tasks

MODEL = dict(width=16, dilations=[1, 2], device="cpu", seed=3)
FIRST = TrainConfig(lr=5e-3, batch_size=16, epochs=4, retrain_epochs=2, prune_ratio=0.5)
LATER = TrainConfig(lr=2e-2, batch_size=64, epochs=4, retrain_epochs=2, prune_ratio=0.5)


def cfg_for(index: int) -> TrainConfig:
    return FIRST if index == 0 else LATER


def outputs(lineage: Lineage, task) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Scores of the task's test users plus its test metrics: what retention must keep bit-exact."""
    seqs = task.sequences[task.rows("test")]
    idx, scores = lineage.predict(task.name, seqs, k=5)
    return idx, scores, lineage.evaluate(task)


def assert_retained(lineage: Lineage, after: dict, tasks) -> None:
    """Every task's top-k, scores and test metrics equal (bit for bit) what they were right after it was learned."""
    for task in tasks:
        idx, scores, metrics = outputs(lineage, task)
        idx0, scores0, metrics0 = after[task.name]
        assert torch.equal(idx, idx0) and torch.equal(scores, scores0), task.name
        assert metrics == metrics0, task.name


@pytest.fixture(scope="session")
def tasks():
    return make_tasks()


def learn_all(config: ModelConfig, tasks) -> tuple[Lineage, dict]:
    """A lineage after all ``tasks``, plus outputs recorded right after each task."""
    lineage = Lineage.new(config, tasks[0].num_items)
    after = {}
    for i, task in enumerate(tasks):
        lineage.learn(task, cfg_for(i))
        after[task.name] = outputs(lineage, task)
    return lineage, after


@pytest.fixture(scope="session")
def learned(tasks):
    """A lineage after all three synthetic tasks, plus outputs recorded right after each task."""
    torch.manual_seed(0)
    return learn_all(ModelConfig(**MODEL), tasks)


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """One intra-op thread: on a shared 2-core machine, spinning OpenMP threads made steps ~10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
