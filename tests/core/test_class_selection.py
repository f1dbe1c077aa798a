"""Class-task training options: selection on validation loss, user-vector dropout, label smoothing."""
import dataclasses

import pytest
import torch

from conure_core.config import ConfigError, ModelConfig, TrainConfig, get_preset
from conure_core.lineage import Lineage
from conure_core.naive import naive_baseline
from conure_core.training import Selection
from tests.core.conftest import MODEL, cfg_for


def _stage(select, valids):
    """Offer scripted (metric, loss) validation pairs, one per epoch, to a Selection; returns the kept epoch."""
    w = torch.nn.Parameter(torch.zeros(1))
    best = Selection(select, valids[0], [w])
    for epoch, valid in enumerate(valids[1:], start=1):
        with torch.no_grad():
            w.fill_(epoch)  # the weights of each epoch differ, so restore() shows which one was kept
        best.offer(valid, epoch)
    best.restore(epochs_run=len(valids) - 1)
    assert float(w.detach()) == best.epoch
    return best


def test_select_loss_keeps_lowest_validation_loss():
    valids = [(0.70, 0.62), (0.75, 0.64), (0.70, 0.58), (0.72, 0.60)]
    assert _stage("metric", valids).epoch == 1
    assert _stage("loss", valids).epoch == 2
    with pytest.raises(ValueError):
        _stage("nope", valids)


def test_config_checks_and_quick_classes():
    with pytest.raises(ConfigError):
        TrainConfig(select="accuracy")
    with pytest.raises(ConfigError):
        TrainConfig(user_dropout=1.0)
    classes = get_preset("quick").train_config(3, kind="class")
    assert classes.select == "loss" and classes.user_dropout > 0


def test_class_dropout_and_smoothing_replay_bit_identically(tasks):
    """Dropout masks come from the stage generator: two runs give the same bytes; and with a learnable
    class (synthetic), loss selection + dropout + smoothing still moves well past the majority class."""
    cls = next(t for t in tasks if t.kind == "class")
    cfg = dataclasses.replace(cfg_for(1), user_dropout=0.3, label_smoothing=0.1, select="loss")
    heads = []
    for _ in range(2):
        lin = Lineage.new(ModelConfig(**MODEL), tasks[0].num_items)
        lin.learn(tasks[0], cfg_for(0))
        lin.learn(cls, cfg)
        heads.append({n: p.detach().clone() for n, p in lin.heads[cls.name].named_parameters()})
        assert lin.evaluate(cls)["accuracy"] > 1.5 * naive_baseline(cls)[1]["accuracy"]
    for name in heads[0]:
        assert torch.equal(heads[0][name], heads[1][name]), name
