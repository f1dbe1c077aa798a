import pytest
import torch
import torch.nn.functional as F

from conure_core.backbones.tcn import TCN, causal_conv
from conure_core.config import ConfigError, ModelConfig, TrainConfig, get_preset


def test_causal_conv_matches_conv1d():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 11, 4, generator=g)
    w = torch.randn(3 * 4, 5, generator=g)  # [k*C_in, C_out], slice i = tap i
    ours = causal_conv(x, w, kernel=3, dilation=2)
    ref_w = w.view(3, 4, 5).permute(2, 1, 0)  # [C_out, C_in, k]
    ref = F.conv1d(F.pad(x.transpose(1, 2), (4, 0)), ref_w, dilation=2).transpose(1, 2)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_tcn_is_causal_and_shaped():
    model = TCN(num_items=20, width=8, kernel=3, dilations=[1, 4], generator=torch.Generator().manual_seed(0))
    assert model.receptive_field == 1 + 2 * 3 * (1 + 4)
    assert model.prunable_names() == ["blocks.0.conv1.weight", "blocks.0.conv2.weight",
                                      "blocks.1.conv1.weight", "blocks.1.conv2.weight"]
    assert model.blocks[1].conv2.dilation == 8 and model.blocks[0].ln1.eps == 1e-8
    tokens = torch.randint(1, 21, (3, 12), generator=torch.Generator().manual_seed(1))
    out = model(tokens)
    assert out.shape == (3, 12, 8)
    changed = tokens.clone()
    changed[:, 7] = (changed[:, 7] % 20) + 1
    out2 = model(changed)
    assert torch.equal(out[:, :7], out2[:, :7])
    assert not torch.allclose(out[:, 7:], out2[:, 7:])


def test_configs_round_trip_and_overrides():
    preset = get_preset("paper")
    assert preset.model.width == 256 and preset.model.dilations == [1, 4] * 4
    assert [preset.train_config(i).prune_ratio for i in range(6)] == [0.7, 0.8, 0.9, 0.8, 0.9, 0.9]
    assert preset.train_config(0).lr == 1e-3 and preset.train_config(2).lr == 1e-4
    assert preset.train_config(0).batch_size == 32 and preset.train_config(1).batch_size == 512
    assert ModelConfig.from_dict(preset.model.to_dict()) == preset.model
    cfg = preset.train_config(1, {"prune_ratio": 0.5, "epochs": 2, "lr": None})
    assert (cfg.prune_ratio, cfg.epochs, cfg.lr) == (0.5, 2, 1e-4)
    with pytest.raises(ConfigError, match="'dropout' is not a TrainConfig field"):
        TrainConfig().with_overrides({"dropout": 0.1})
    with pytest.raises(ConfigError, match="unknown preset"):
        get_preset("huge")
    with pytest.raises(ConfigError, match="user_repr"):
        ModelConfig(user_repr="median")
